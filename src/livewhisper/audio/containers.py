"""Audio containers arriving a piece at a time: WebM/Matroska, Ogg and WAV over a socket.

A browser's ``MediaRecorder`` sends a WebM (Chromium) or Ogg (Firefox) stream cut into
chunks; only the first chunk carries the container header, and a chunk may end in the
middle of a block. `sniff` recognises the container from its first bytes, and
`StreamDecoder` demuxes and decodes the growing byte stream with PyAV as it arrives,
into 16 kHz mono float32 samples.

PyAV reads from a file object synchronously, so each decoder owns one thread whose
reads wait for the next chunk; `close` marks the end of the input and the decoder
drains what is left. Samples are handed to ``on_samples`` on that thread.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Literal

import numpy as np

from livewhisper.audio.decoding import decoded_frames, reason, resampled
from livewhisper.audio.pcm import SAMPLE_RATE, to_pcm16

log = logging.getLogger(__name__)

ContainerKind = Literal["webm", "ogg", "wav"]

#: The demuxer PyAV is asked for, so that it does not probe a stream that is still short.
_DEMUXERS: dict[str, str] = {"webm": "matroska", "ogg": "ogg", "wav": "wav"}

_EBML_MAGIC = b"\x1a\x45\xdf\xa3"
_OGG_MAGIC = b"OggS"
_OGG_BEGIN_OF_STREAM = 0x02


def sniff(data: bytes) -> ContainerKind | None:
    """The container that *data* starts with, or None for anything else (raw PCM)."""
    if data.startswith(_EBML_MAGIC):
        return "webm"
    # An Ogg stream starts with a page flagged "beginning of stream"; later pages start
    # with the same capture pattern, so the flag is what marks a new stream.
    if data.startswith(_OGG_MAGIC) and len(data) > 5 and data[5] & _OGG_BEGIN_OF_STREAM:
        return "ogg"
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "wav"
    return None


class ContainerError(Exception):
    """The byte stream is not a container that can be decoded, or it broke off."""


class _Pipe:
    """A file object whose ``read`` waits until data is written or the pipe is closed."""

    def __init__(self, limit: int) -> None:
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._limit = limit
        self._closed = False
        self._cond = threading.Condition()

    def write(self, data: bytes) -> None:
        with self._cond:
            if self._closed:
                raise ContainerError("the stream has already ended")
            if self._size + len(data) > self._limit:
                raise ContainerError(
                    f"more than {self._limit} bytes are waiting to be decoded; "
                    "the decoder cannot keep up"
                )
            self._chunks.append(bytes(data))
            self._size += len(data)
            self._cond.notify()

    def close(self, discard: bool = False) -> None:
        with self._cond:
            self._closed = True
            if discard:
                self._chunks.clear()
                self._size = 0
            self._cond.notify()

    def read(self, size: int = -1) -> bytes:
        with self._cond:
            while not self._chunks and not self._closed:
                self._cond.wait()
            if not self._chunks:
                return b""  # end of input
            if size < 0:
                size = self._size
            out = bytearray()
            while self._chunks and len(out) < size:
                chunk = self._chunks.popleft()
                take = size - len(out)
                if len(chunk) > take:
                    self._chunks.appendleft(chunk[take:])
                    chunk = chunk[:take]
                out += chunk
            self._size -= len(out)
            return bytes(out)


class StreamDecoder:
    """Decode one growing container byte stream into 16 kHz mono float32, on a thread.

    ``on_samples`` gets each decoded block; ``on_end`` is called once, last, with None
    when the input ended cleanly or with a one-line reason when it could not be decoded.
    Both run on the decoder's thread.
    """

    def __init__(
        self,
        kind: ContainerKind,
        on_samples: Callable[[np.ndarray], None],
        on_end: Callable[[str | None], None] | None = None,
        *,
        max_pending: int = 8 * 2**20,
        name: str = "container",
    ) -> None:
        self.kind = kind
        self._on_samples = on_samples
        self._on_end = on_end
        self._pipe = _Pipe(max_pending)
        self.error: str | None = None
        self.decoded = 0.0  # seconds of 16 kHz audio produced so far
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"decode-{name}", daemon=True)
        self._thread.start()

    def write(self, data: bytes) -> None:
        """Queue the next piece of the stream; raises ContainerError if decoding failed."""
        if self.error is not None:
            raise ContainerError(self.error)
        self._pipe.write(data)

    def close(self) -> None:
        """Mark the end of the input: the rest is decoded, then ``on_end`` runs. Idempotent."""
        self._pipe.close()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the decoder to finish; True if it did."""
        return self.done.wait(timeout)

    def _run(self) -> None:
        try:
            for block in self._decode():
                self.decoded += len(block) / SAMPLE_RATE
                self._on_samples(block)
        except ContainerError as exc:
            self.error = str(exc)
        finally:
            self._pipe.close(discard=True)  # nothing will read what is left
            self.done.set()
            if self._on_end is not None:
                self._on_end(self.error)

    def _decode(self) -> Iterator[np.ndarray]:
        import av

        try:
            container = av.open(
                self._pipe,
                mode="r",
                format=_DEMUXERS[self.kind],
                options={"analyzeduration": "0", "probesize": "32768"},
                metadata_errors="ignore",
            )
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise ContainerError(f"not a decodable {self.kind} stream ({reason(exc)})") from exc
        try:
            if not container.streams.audio:
                raise ContainerError(f"the {self.kind} stream has no audio track")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
            for out in resampled(self._frames(container, stream), resampler):
                block = out.astype(np.float32, copy=False)
                if len(block):
                    yield block
        finally:
            container.close()

    def _frames(self, container: Any, stream: Any) -> Iterator[Any]:
        import av

        try:
            yield from decoded_frames(container, stream)
        except av.error.FFmpegError as exc:
            if self.decoded == 0.0:
                raise ContainerError(
                    f"the {self.kind} stream cannot be decoded ({reason(exc)})"
                ) from exc
            # A stream that broke off after good audio: keep what was decoded.
            log.info("%s stream ended early: %s", self.kind, reason(exc))


def encode(samples: np.ndarray, kind: ContainerKind) -> bytes:
    """16 kHz mono float32 *samples* as a whole WebM/Opus, Ogg/Opus or WAV byte stream,
    the formats browsers record; for simulated clients in tests and benchmarks."""
    import io

    import av

    codec, rate = {"webm": ("libopus", 48_000), "ogg": ("libopus", 48_000)}.get(
        kind, ("pcm_s16le", SAMPLE_RATE)
    )
    buf = io.BytesIO()
    with av.open(buf, "w", format=kind) as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        resampler = av.AudioResampler(format=stream.format.name, layout="mono", rate=rate)
        pcm = to_pcm16(samples).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        for piece in [*resampler.resample(frame), *resampler.resample(None)]:
            for packet in stream.encode(piece):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()
