"""Decoding audio and video files with PyAV into 16 kHz mono float32 blocks, streaming.

Decoding is lazy: blocks are produced as the file is read, so an input of any length
is never held in memory whole. The conversion is the same as faster-whisper's own
(PyAV's resampler to signed 16-bit mono at 16 kHz, then scaled to float32), so a file
transcribed here gives the same samples, and the same text, as faster-whisper given
the path.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from livewhisper.audio.decoding import decoded_frames, reason, resampled
from livewhisper.audio.pcm import SAMPLE_RATE, from_pcm16
from livewhisper.errors import AudioError

_GROUP_SAMPLES = 500_000  # frames are regrouped before resampling, as faster-whisper does


@dataclass
class AudioFile:
    """An opened input. Iterate `blocks()` once; then `problem` says if decoding stopped early."""

    name: str
    container: Any
    stream: Any
    declared_duration: float | None
    decoded: float = 0.0
    problem: str | None = None

    def blocks(self) -> Iterator[np.ndarray]:
        import av

        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        try:
            for out in resampled(self._frames(), resampler, group=_GROUP_SAMPLES):
                block = from_pcm16(out)
                self.decoded += len(block) / SAMPLE_RATE
                yield block
        finally:
            self.close()
        if self.problem is None and self.declared_duration:
            if self.decoded < self.declared_duration - max(0.5, 0.02 * self.declared_duration):
                self.problem = (
                    f"only {self.decoded:.1f} s of {self.declared_duration:.1f} s could be "
                    "decoded; the file is truncated"
                )

    def _frames(self) -> Iterator[Any]:
        import av

        started = False
        try:
            for frame in decoded_frames(self.container, self.stream):
                started = True
                yield frame
        except av.error.FFmpegError as exc:
            if self.decoded == 0.0 and not started:
                self.problem = f"cannot be decoded ({reason(exc)})"
            else:
                self.problem = f"is corrupt or truncated ({reason(exc)})"

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> AudioFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def display_name(source: str | os.PathLike[str]) -> str:
    return "<stdin>" if str(source) == "-" else str(source)


def open_audio(source: str | os.PathLike[str] | IO[bytes]) -> AudioFile:
    """Open a path, ``-`` for standard input, or a binary file object.

    Raises AudioError with a one-line message naming the input.
    """
    import av

    target: str | IO[bytes]
    if isinstance(source, (str, os.PathLike)):
        name = display_name(source)
        if str(source) == "-":
            target = sys.stdin.buffer
        else:
            path = Path(source)
            if path.is_dir():
                raise AudioError(f"{name}: is a directory; pass audio or video files.")
            if not path.exists():
                raise AudioError(f"{name}: no such file.")
            try:
                if path.stat().st_size == 0:
                    raise AudioError(f"{name}: the file is empty (0 bytes).")
            except OSError as exc:
                raise AudioError(f"{name}: cannot read it ({exc.strerror}).") from exc
            target = str(path)
    else:
        name = getattr(source, "name", "<stream>")
        target = source
    try:
        container = av.open(target, mode="r", metadata_errors="ignore")
    except PermissionError as exc:
        raise AudioError(f"{name}: permission denied.") from exc
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise AudioError(
            f"{name}: not an audio or video file that can be decoded ({reason(exc)})."
        ) from exc
    if not container.streams.audio:
        container.close()
        raise AudioError(f"{name}: has no audio stream.")
    stream = container.streams.audio[0]
    declared = None
    if stream.duration is not None and stream.time_base is not None:
        declared = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        declared = container.duration / 1_000_000
    return AudioFile(name, container, stream, declared)


def read_all(source: str | os.PathLike[str]) -> np.ndarray:
    """Decode a whole input into one array (for short inputs and tests)."""
    with open_audio(source) as audio:
        blocks = list(audio.blocks())
        if audio.problem:
            raise AudioError(f"{audio.name}: {audio.problem}.")
    return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)
