"""The one audio format inside livewhisper: 16 kHz mono float32 in [-1, 1].

Everything that enters (a device, a file, a browser's bytes) is turned into it here,
and everything that leaves as 16-bit PCM (a WAV recording, WebRTC's VAD, an encoded
container) is turned back here.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np

SAMPLE_RATE = 16_000
SILENCE_DB = -100.0


def from_pcm16(data: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    """Little-endian signed 16-bit samples (bytes or an int16 array) as float32."""
    if isinstance(data, np.ndarray):
        return data.astype(np.float32) / 32768.0
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def to_pcm16(samples: np.ndarray) -> np.ndarray:
    """Float samples as little-endian signed 16-bit, clipped to the range."""
    out: np.ndarray = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    return out


def level_db(samples: np.ndarray) -> float:
    """The RMS level of *samples* in dBFS (`SILENCE_DB` for digital silence)."""
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if len(samples) else 0.0
    return max(SILENCE_DB, 20 * math.log10(rms)) if rms > 0 else SILENCE_DB


def frame_energy(audio: np.ndarray, frame: int) -> np.ndarray:
    """The mean square of each whole *frame* samples of *audio*, in order (what is
    left after the last whole frame is not counted)."""
    n = len(audio) // frame
    energy: np.ndarray = np.square(audio[: n * frame].reshape(n, frame)).mean(axis=1)
    return energy


def quietest(
    energy: np.ndarray,
    smooth: int = 1,
    *,
    edges: Literal["edge", "zero"] = "edge",
    voiced: np.ndarray | None = None,
) -> int:
    """The index of the quietest frame of *energy* (as from `frame_energy`).

    Each frame is scored by the mean over the *smooth* frames centred on it (an odd
    number), so that one quiet frame inside a word does not win; beyond either end
    the end frame is repeated (``edges="edge"``) or silence is assumed (``"zero"``).
    A frame flagged in *voiced* (booleans, one a frame) loses to every frame that
    is not. Among equal scores the first wins.
    """
    if smooth < 1 or smooth % 2 == 0:
        raise ValueError(f"smooth must be an odd number of frames, not {smooth}")
    padded = np.pad(energy, smooth // 2, mode="edge" if edges == "edge" else "constant")
    score = np.convolve(padded, np.ones(smooth) / smooth, mode="valid")
    if voiced is not None:
        score = score + np.where(voiced, float(score.max()) + 1.0, 0.0)
    return int(np.argmin(score))


class Resampler:
    """Downmix to mono and resample to 16 kHz with soxr's streaming HQ resampler."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._stream: Any = None
        if round(rate) != SAMPLE_RATE:
            import soxr

            self._stream = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32")

    def __call__(self, block: np.ndarray, last: bool = False) -> np.ndarray:
        mono = block.mean(axis=1) if block.ndim == 2 else block
        mono = np.ascontiguousarray(mono, dtype=np.float32)
        if self._stream is None:
            return mono
        out: np.ndarray = self._stream.resample_chunk(mono, last=last)
        return out
