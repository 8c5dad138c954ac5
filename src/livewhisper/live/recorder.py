"""The audio of a live session, kept as a WAV file (``listen --save-audio``)."""

from __future__ import annotations

import contextlib
import os
import wave
from pathlib import Path

import numpy as np

from livewhisper.audio.pcm import SAMPLE_RATE, to_pcm16
from livewhisper.errors import cannot_write


class AudioRecorder:
    """The session's 16 kHz audio, as a 16-bit mono WAV file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self._wav = wave.open(str(self.path), "wb")  # noqa: SIM115
        except OSError as exc:
            raise cannot_write(self.path, exc) from exc
        self._wav.setnchannels(1)
        self._wav.setsampwidth(2)
        self._wav.setframerate(SAMPLE_RATE)

    def write(self, samples: np.ndarray) -> None:
        try:
            self._wav.writeframes(to_pcm16(samples).tobytes())
        except OSError as exc:
            raise cannot_write(self.path, exc) from exc

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._wav.close()
