"""Shared fixtures."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from vmic import private_mic, virtual_mic  # noqa: F401  (fixtures)

DATA = Path(__file__).parent / "data"


# --- encoded speech for the container and server tests ----------------------------


def encode_audio(samples: np.ndarray, fmt: str) -> bytes:
    """16 kHz float32 *samples* as a WebM/Opus, Ogg/Opus or WAV byte stream, like a browser's."""
    import av

    codec, rate = {
        "webm": ("libopus", 48_000),
        "ogg": ("libopus", 48_000),
        "wav": ("pcm_s16le", 16_000),
    }[fmt]
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        resampler = av.AudioResampler(format=stream.format.name, layout="mono", rate=rate)
        pcm = (np.clip(samples, -1, 1) * 32767).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = 16_000
        for piece in [*resampler.resample(frame), *resampler.resample(None)]:
            for packet in stream.encode(piece):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


@pytest.fixture(scope="session")
def speech() -> Callable[[str], np.ndarray]:
    """Decoded 16 kHz float32 samples of a file in tests/data, cached."""
    from livewhisper.audiofile import read_all

    cache: dict[str, np.ndarray] = {}

    def load(name: str) -> np.ndarray:
        if name not in cache:
            cache[name] = read_all(DATA / name)
        return cache[name]

    return load


@pytest.fixture(scope="session")
def encoded_speech(speech: Callable[[str], np.ndarray]) -> Callable[[str, str], bytes]:
    """``encoded_speech("jfk.flac", "webm")``: the file re-encoded as a container stream."""
    cache: dict[tuple[str, str], bytes] = {}

    def get(name: str, fmt: str) -> bytes:
        if (name, fmt) not in cache:
            cache[name, fmt] = encode_audio(speech(name), fmt)
        return cache[name, fmt]

    return get


@pytest.fixture(scope="session")
def references() -> dict[str, str]:
    """Reference transcripts from tests/data/transcripts.tsv, by file name."""
    out: dict[str, str] = {}
    for line in (DATA / "transcripts.tsv").read_text(encoding="utf-8").splitlines():
        if "\t" in line:
            name, text = line.split("\t", 1)
            out[name] = text
    return out
