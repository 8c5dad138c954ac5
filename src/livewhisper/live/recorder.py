"""The audio of a live session, kept as a WAV file (``listen --save-audio``)."""

from __future__ import annotations

import contextlib
import os
import struct
from pathlib import Path

import numpy as np

from livewhisper.audio.pcm import SAMPLE_RATE, to_pcm16
from livewhisper.errors import cannot_write

HEADER_BYTES = 44


def wav_header(data_bytes: int) -> bytes:
    """The 44-byte header of a 16-bit mono WAV file at the one sample rate."""
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + data_bytes,
        b"WAVE",
        b"fmt ",
        16,
        1,  # PCM
        1,  # mono
        SAMPLE_RATE,
        SAMPLE_RATE * 2,
        2,
        16,
        b"data",
        data_bytes,
    )


class AudioRecorder:
    """The session's 16 kHz audio, as a 16-bit mono WAV file.

    The file is valid at every moment that matters: its header is brought up to date
    about once a second and at the end, and a block that cannot be written whole (a
    full disk) is cut off again, so a recording that stopped there keeps every block
    before it. After such an error the recorder is closed and `seconds` says how much
    it holds."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.frames = 0  # samples written whole
        self._headed = 0  # samples the header counts
        try:
            self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        except OSError as exc:
            raise cannot_write(self.path, exc) from exc
        try:
            _write_all(self._fd, wav_header(0))
        except OSError as exc:
            self.close()
            raise cannot_write(self.path, exc) from exc

    @property
    def seconds(self) -> float:
        return self.frames / SAMPLE_RATE

    def write(self, samples: np.ndarray) -> None:
        if self._fd is None:
            return
        data = to_pcm16(samples).tobytes()
        try:
            _write_all(self._fd, data)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, HEADER_BYTES + 2 * self.frames)
            self.close()
            raise cannot_write(self.path, exc) from exc
        self.frames += len(data) // 2
        if self.frames - self._headed >= SAMPLE_RATE:
            self._update_header()

    def _update_header(self) -> None:
        assert self._fd is not None
        with contextlib.suppress(OSError):  # in place: it needs no new space
            os.pwrite(self._fd, wav_header(2 * self.frames), 0)
            self._headed = self.frames

    def close(self) -> None:
        if self._fd is None:
            return
        self._update_header()
        with contextlib.suppress(OSError):
            os.close(self._fd)
        self._fd = None


def _write_all(fd: int, data: bytes) -> None:
    done = 0
    while done < len(data):
        done += os.write(fd, data[done:])
