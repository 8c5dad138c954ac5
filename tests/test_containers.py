"""Container streams arriving in pieces: sniffing, and incremental decoding with PyAV."""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import pytest

from livewhisper.audio.containers import ContainerError, StreamDecoder, sniff
from livewhisper.audio.pcm import SAMPLE_RATE


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def aligned_correlation(a: np.ndarray, b: np.ndarray, max_lag: int = 800) -> float:
    """Best normalised correlation of *a* and *b* over small lags (codec delay)."""
    n = min(len(a), len(b)) - 2 * max_lag
    best = 0.0
    ref = a[max_lag : max_lag + n]
    for lag in range(0, 2 * max_lag, 4):
        cand = b[lag : lag + n]
        c = float(np.dot(ref, cand) / (np.linalg.norm(ref) * np.linalg.norm(cand) + 1e-9))
        best = max(best, c)
    return best


class Collector:
    def __init__(self) -> None:
        self.blocks: list[np.ndarray] = []
        self.ended = threading.Event()
        self.end_reason: str | None = "not ended"
        self.lock = threading.Lock()

    def on_samples(self, block: np.ndarray) -> None:
        with self.lock:
            self.blocks.append(block.copy())

    def on_end(self, reason: str | None) -> None:
        self.end_reason = reason
        self.ended.set()

    @property
    def seconds(self) -> float:
        with self.lock:
            return sum(len(b) for b in self.blocks) / SAMPLE_RATE

    def samples(self) -> np.ndarray:
        return np.concatenate(self.blocks)


def test_sniff_recognises_containers_by_their_first_bytes(
    encoded_speech: Callable[[str, str], bytes],
) -> None:
    for fmt in ("webm", "ogg", "wav"):
        assert sniff(encoded_speech("goforward.flac", fmt)) == fmt
    pcm = (np.sin(np.arange(1600) / 5) * 8000).astype("<i2").tobytes()
    assert sniff(pcm) is None
    assert sniff(b"") is None
    assert sniff(b"RIFF\x00\x00\x00\x00AVI ") is None
    # A later Ogg page starts with the same capture pattern but is not a new stream.
    later_page = b"OggS\x00\x00" + bytes(20)
    assert sniff(later_page) is None


@pytest.mark.parametrize("fmt", ["webm", "ogg", "wav"])
def test_decodes_a_stream_cut_anywhere_into_the_same_audio(
    fmt: str,
    encoded_speech: Callable[[str, str], bytes],
    speech: Callable[[str], np.ndarray],
) -> None:
    data = encoded_speech("jfk.flac", fmt)
    reference = speech("jfk.flac")
    got = Collector()
    decoder = StreamDecoder(sniff(data) or "wav", got.on_samples, got.on_end)
    # Odd-sized pieces: only the first has the header, and blocks are cut mid-way.
    for piece in chunks(data, 4099):
        decoder.write(piece)
    decoder.close()
    assert got.ended.wait(10)
    assert got.end_reason is None
    assert abs(got.seconds - len(reference) / SAMPLE_RATE) < 0.05
    assert aligned_correlation(reference, got.samples()) > 0.95


@pytest.mark.parametrize("fmt", ["webm", "ogg"])
def test_audio_comes_out_before_the_stream_ends(
    fmt: str, encoded_speech: Callable[[str, str], bytes]
) -> None:
    data = encoded_speech("jfk.flac", fmt)  # 11 s
    got = Collector()
    enough = threading.Event()

    def on_samples(block: np.ndarray) -> None:
        got.on_samples(block)
        if got.seconds > 4.0:
            enough.set()

    decoder = StreamDecoder(fmt, on_samples, got.on_end)  # type: ignore[arg-type]
    decoder.write(data[: len(data) // 2])
    assert enough.wait(10), f"only {got.seconds:.2f} s decoded from the first half"
    assert not got.ended.is_set()
    decoder.write(data[len(data) // 2 :])
    decoder.close()
    assert got.ended.wait(10)
    assert got.seconds > 10.9


@pytest.mark.parametrize(
    "magic", [b"\x1a\x45\xdf\xa3", b"OggS\x00\x02", b"RIFF\x10\x00\x00\x00WAVE"]
)
def test_garbage_after_a_container_magic_is_an_error(magic: bytes) -> None:
    kind = sniff(magic + bytes(30))
    assert kind is not None
    got = Collector()
    decoder = StreamDecoder(kind, got.on_samples, got.on_end)
    rng = np.random.default_rng(4)
    decoder.write(magic + rng.integers(0, 256, 6000, dtype=np.uint8).tobytes())
    decoder.close()
    assert got.ended.wait(10)
    assert got.end_reason is not None and kind in got.end_reason
    assert got.blocks == []
    with pytest.raises(ContainerError):
        decoder.write(b"more")


def test_a_stream_that_breaks_off_keeps_what_was_decoded(
    encoded_speech: Callable[[str, str], bytes],
) -> None:
    data = encoded_speech("jfk.flac", "webm")
    got = Collector()
    decoder = StreamDecoder("webm", got.on_samples, got.on_end)
    decoder.write(data[: int(len(data) * 0.6)])
    decoder.close()
    assert got.ended.wait(10)
    assert got.end_reason is None
    assert 5.0 < got.seconds < 8.0


def test_pending_bytes_are_bounded() -> None:
    got = Collector()
    # The decoder waits for a full header, so nothing is consumed from this pending data.
    decoder = StreamDecoder("webm", got.on_samples, got.on_end, max_pending=10_000)
    with pytest.raises(ContainerError, match="cannot keep up"):
        for _ in range(200):
            decoder.write(b"\x1a\x45\xdf\xa3" + bytes(996))
    decoder.close()
    assert got.ended.wait(10)
