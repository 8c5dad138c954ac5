"""PyAV's demux, decode and resample loop, shared by files (`audio.files`) and the
containers that arrive a piece at a time (`audio.containers`).

Each caller opens the container, chooses its resampler, and says what a decoding
error means for it (a problem noted on a file, a stream that fails or ends early).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np


def decoded_frames(container: Any, stream: Any) -> Iterator[Any]:
    """The audio frames of *stream*, in order, until the input ends.

    Their timestamps are cleared, so a resampler counts samples rather than
    following timestamps that may jump. A packet that cannot be demuxed or decoded
    raises its ``av.error.FFmpegError``.
    """
    import av

    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
            frames = packet.decode()
        except (StopIteration, av.error.EOFError):
            return
        for frame in frames:
            frame.pts = None
            yield frame


def resampled(frames: Iterable[Any], resampler: Any, group: int = 0) -> Iterator[np.ndarray]:
    """*frames* through *resampler* (an ``av.AudioResampler``), as flat arrays in its
    format, then what it still holds at the end. With *group*, frames are first
    gathered into pieces of at least that many samples (as faster-whisper does)."""
    for piece in _grouped(frames, group) if group else frames:
        yield from _resample(resampler, piece)
    yield from _resample(resampler, None)


def reason(exc: BaseException) -> str:
    """The short reason an error gives, for a message (``Invalid data found when
    processing input``), or the error's type when it gives none."""
    text = getattr(exc, "strerror", None) or str(exc)
    return str(text).split(":")[0].strip().rstrip(".") or type(exc).__name__


def _grouped(frames: Iterable[Any], size: int) -> Iterator[Any]:
    import av

    fifo = av.AudioFifo()
    for frame in frames:
        fifo.write(frame)
        if fifo.samples >= size:
            yield fifo.read()
    if fifo.samples:
        yield fifo.read()


def _resample(resampler: Any, frame: Any) -> Iterator[np.ndarray]:
    for out in resampler.resample(frame):
        block: np.ndarray = out.to_ndarray().reshape(-1)
        yield block
