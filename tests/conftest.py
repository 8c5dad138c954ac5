"""Shared fixtures."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vmic import private_mic, virtual_mic  # noqa: F401  (fixtures)

DATA = Path(__file__).parent / "data"

#: CPU threads for every model the tests load, in this process and in the CLI they
#: run (0, the default, lets CTranslate2 choose). Set it to check that no test
#: depends on how many threads the model's kernels use.
THREADS = "LIVEWHISPER_TEST_THREADS"

#: What CTranslate2 reads to choose its kernels, shown in the report header.
_CT2_SETTINGS = ("CT2_USE_MKL", "CT2_FORCE_CPU_ISA", THREADS)


def model_threads() -> int:
    value = os.environ.get(THREADS, "0")
    if not value.isdigit():
        raise pytest.UsageError(f"{THREADS}={value!r}: give a number of threads (0: any).")
    return int(value)


def pytest_report_header() -> str:
    settings = [f"{k}={os.environ[k]}" for k in _CT2_SETTINGS if os.environ.get(k)]
    return "model kernels: " + (", ".join(settings) or "CTranslate2's own choice")


@pytest.fixture(scope="session", autouse=True)
def _cli_model_threads() -> Iterator[None]:
    """The CLI commands the tests run take the same number of threads (click reads
    ``--threads`` of ``file`` and ``listen`` from these variables)."""
    threads = model_threads()
    with pytest.MonkeyPatch.context() as mp:
        if threads:
            for command in ("FILE", "LISTEN"):
                mp.setenv(f"LIVEWHISPER_{command}_THREADS", str(threads))
        yield


@pytest.fixture(scope="session")
def engine() -> Any:
    """The embedded tiny.en, loaded once for every test that runs the model in process.
    One thread at a time uses it: a test, or the scheduler a test starts."""
    from livewhisper.engine.local import Engine, ModelOptions

    return Engine(ModelOptions(threads=model_threads()))


# --- encoded speech for the container and server tests ----------------------------


def encode_audio(samples: np.ndarray, fmt: str) -> bytes:
    """16 kHz float32 *samples* as a WebM/Opus, Ogg/Opus or WAV byte stream, like a browser's."""
    from livewhisper.audio.containers import encode

    return encode(samples, fmt)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def speech() -> Callable[[str], np.ndarray]:
    """Decoded 16 kHz float32 samples of a file in tests/data, cached."""
    from livewhisper.audio.files import read_all

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
