"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from vmic import private_mic, virtual_mic  # noqa: F401  (fixtures)

DATA = Path(__file__).parent / "data"


# --- encoded speech for the container and server tests ----------------------------


def encode_audio(samples: np.ndarray, fmt: str) -> bytes:
    """16 kHz float32 *samples* as a WebM/Opus, Ogg/Opus or WAV byte stream, like a browser's."""
    from livewhisper.containers import encode

    return encode(samples, fmt)  # type: ignore[arg-type]


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
