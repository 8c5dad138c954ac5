"""The engine on real speech: windows over long input, the hallucination guard, cuts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from livewhisper.engine import (
    SAMPLE_RATE,
    Engine,
    FileInfo,
    TranscribeOptions,
    is_hallucination,
    quietest_cut,
)
from livewhisper.metrics import normalize, word_error_rate

LONG = "asterisk_en_60s.flac"


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine()


def blocks_of(audio: np.ndarray, size: int = 48_000) -> list[np.ndarray]:
    return [audio[i : i + size] for i in range(0, len(audio), size)]


@pytest.mark.slow
def test_windows_over_a_long_input_lose_and_repeat_nothing(
    engine: Engine, speech: Callable[[str], np.ndarray], references: dict[str, str]
) -> None:
    audio = speech(LONG)
    whole = engine.transcribe(audio).text
    info = FileInfo()
    # 20 s windows: the 75 s recording is cut three times, each in a pause.
    windowed = list(engine.transcribe_blocks(blocks_of(audio), window=20.0, info=info))
    text = " ".join(s.text for s in windowed)
    assert abs(info.duration - len(audio) / SAMPLE_RATE) < 1e-6
    assert info.language == "en"
    reference = references[LONG]
    assert word_error_rate(reference, text) <= word_error_rate(reference, whole) + 0.05
    assert word_error_rate(whole, text) <= 0.08
    starts = [s.start for s in windowed]
    assert starts == sorted(starts)
    assert windowed[-1].end <= len(audio) / SAMPLE_RATE + 1e-6
    assert windowed[-1].end > 60.0  # the last window's times are offset, not restarted


def test_quietest_cut_lands_in_the_pause() -> None:
    rng = np.random.default_rng(0)
    audio = rng.normal(0, 0.3, SAMPLE_RATE * 10).astype(np.float32)
    audio[int(7.0 * SAMPLE_RATE) : int(7.3 * SAMPLE_RATE)] = 0.0  # a 300 ms pause
    cut = quietest_cut(audio, search_from=5 * SAMPLE_RATE)
    assert 7.0 * SAMPLE_RATE <= cut <= 7.3 * SAMPLE_RATE


def test_hallucination_guard_needs_both_signs() -> None:
    class Raw:
        def __init__(self, no_speech_prob: float, avg_logprob: float) -> None:
            self.no_speech_prob = no_speech_prob
            self.avg_logprob = avg_logprob

    options = TranscribeOptions()
    assert is_hallucination(Raw(0.94, -0.94), options)  # " You" on pure silence
    assert not is_hallucination(Raw(0.45, -0.63), options)  # a quiet, real "fifteen"
    assert not is_hallucination(Raw(0.7, -0.2), options)  # confident text is kept
    assert is_hallucination(Raw(0.99, -0.55), options)  # ...unless silence is near certain


@pytest.mark.slow
def test_fitted_window_transcribes_speech_and_invents_nothing(
    engine: Engine, speech: Callable[[str], np.ndarray], references: dict[str, str]
) -> None:
    options = TranscribeOptions().for_utterance()
    assert options.fit_window
    for name in ("goforward.flac", "librivox_sense_and_sensibility_01_austen_64kb-0880.flac"):
        fitted = engine._fitted(speech(name), options, offset=2.0)
        assert fitted is not None
        full = engine.transcribe(speech(name), replace(options, fit_window=False))
        # On a short clip one word is 12-25 %: the fitted window may miss one more
        # word than the 30 s window, no more.
        one_word = 1 / len(references[name].split())
        reference = references[name]
        assert word_error_rate(reference, fitted.text) <= (
            word_error_rate(reference, full.text) + one_word + 1e-9
        ), (fitted.text, full.text)
        assert fitted.segments[0].start == 2.0
    rng = np.random.default_rng(5)
    for noise in (np.zeros(48_000), rng.normal(0, 0.003, 48_000), rng.normal(0, 0.1, 48_000)):
        result = engine.transcribe(noise.astype(np.float32), options)
        assert result.segments == [], result.text
    # Past the longest fitted window the usual 30 s decode runs.
    assert engine._fitted(np.zeros(25 * SAMPLE_RATE, np.float32), options, 0.0) is None


@pytest.mark.slow
def test_fitted_window_times_words_like_the_full_window(
    engine: Engine, speech: Callable[[str], np.ndarray]
) -> None:
    options = replace(TranscribeOptions().for_utterance().for_partial(), word_timestamps=True)
    audio = speech("jfk.flac")
    fitted = engine._fitted(audio, options, offset=3.0)
    assert fitted is not None
    full = engine.transcribe(audio, TranscribeOptions(word_timestamps=True), offset=3.0)
    got = [w for s in fitted.segments for w in s.words]
    want = [w for s in full.segments for w in s.words]
    assert [normalize(w.word) for w in got] == [normalize(w.word) for w in want]
    for g, w in zip(got, want, strict=True):
        assert abs(g.start - w.start) < 0.4 and abs(g.end - w.end) < 0.4, (g, w)
    assert 3.0 <= got[0].start and got[-1].end <= 3.0 + len(audio) / SAMPLE_RATE


@pytest.mark.slow
def test_a_partial_pass_never_falls_back_to_the_full_window(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Half a second of noise fails the fitted window's checks: a final decodes it
    # again over 30 s (seconds of work on this CPU), a partial pass gives no text.
    noise = np.random.default_rng(3).normal(0, 0.05, 8000).astype(np.float32)
    partial = TranscribeOptions().for_utterance().for_partial()
    assert engine._fitted(noise, partial, 0.0) is None
    full_decodes: list[float] = []
    stream = engine.stream

    def counted(audio: np.ndarray, *args: Any, **kwargs: Any) -> Any:
        full_decodes.append(len(audio) / SAMPLE_RATE)
        return stream(audio, *args, **kwargs)

    monkeypatch.setattr(engine, "stream", counted)
    assert engine.transcribe(noise, partial).segments == []
    assert full_decodes == []
    engine.transcribe(noise, TranscribeOptions().for_utterance())
    assert full_decodes == [0.5]


@pytest.mark.slow
def test_segments_come_lazily(engine: Engine, speech: Callable[[str], np.ndarray]) -> None:
    segments, info = engine.stream(speech(LONG))
    first = next(segments)
    assert first.start < 2.0 and info.language == "en"
