"""The context rules: what of a stream's finals is carried into its next decode."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest

from livewhisper.audio.pcm import SAMPLE_RATE
from livewhisper.engine.contract import TranscribeOptions
from livewhisper.engine.local import Engine
from livewhisper.live.context import Context, ContextOptions


def test_the_newest_words_are_carried_up_to_the_limit() -> None:
    context = Context(ContextOptions(words=5))
    assert context.prompt(0.0) is None
    context.add("one two three", start=0.0, end=1.0, language="en")
    assert context.prompt(1.5) == "one two three"
    context.add("four five six seven", start=1.5, end=3.0, language="en")
    assert context.prompt(3.5) == "three four five six seven"


def test_a_long_silence_drops_the_context() -> None:
    context = Context(ContextOptions(reset_after=30.0))
    context.add("before the break", start=0.0, end=2.0, language="en")
    assert context.prompt(31.0) == "before the break"
    assert context.prompt(32.5) is None
    context.add("after it", start=33.0, end=34.0, language="en")
    assert context.prompt(35.0) == "after it"


def test_another_language_starts_afresh() -> None:
    context = Context()
    context.add("good morning", start=0.0, end=1.0, language="en")
    assert context.prompt(2.0, "es") is None  # a decode known to be Spanish
    assert context.language == "en"
    context.add("buenos dias", start=2.0, end=3.0, language="es")
    assert context.prompt(4.0) == "buenos dias"
    assert context.language == "es"


def test_a_loop_is_not_carried() -> None:
    context = Context()
    context.add("a fine start", start=0.0, end=1.0, language="en")
    context.add("thank you. " * 20, start=1.0, end=5.0, language="en")
    assert context.prompt(6.0) is None
    context.add("a new sentence", start=6.0, end=7.0, language="en")
    assert context.prompt(8.0) == "a new sentence"


def test_a_lower_case_start_after_a_sentence_end_drops_the_context() -> None:
    # Whisper starts a new sentence with a capital; one that does not is following
    # the prompt's style, and remembered, it would make the next prompt more so.
    context = Context()
    context.add("Your passwords have been changed.", start=0.0, end=2.0, language="en")
    context.add("message.", start=3.0, end=4.0, language="en")
    assert context.prompt(5.0) is None
    context.add("Press 1 to record.", start=5.0, end=6.0, language="en")
    assert context.prompt(7.0) == "Press 1 to record."
    # The rule can be turned off, to measure what it does (bench/context_options.py).
    carried = Context(ContextOptions(restart_on_lower_case=False))
    carried.add("Your passwords have been changed.", start=0.0, end=2.0, language="en")
    carried.add("message.", start=3.0, end=4.0, language="en")
    assert carried.prompt(5.0) == "Your passwords have been changed. message."


def test_a_sentence_that_goes_on_in_lower_case_is_carried() -> None:
    context = Context()
    context.add("So we went down to the", start=0.0, end=2.0, language="en")
    context.add("market and bought bread.", start=2.5, end=4.0, language="en")
    assert context.prompt(5.0) == "So we went down to the market and bought bread."
    context.add("I met Mr.", start=5.0, end=6.0, language="en")  # a title ends no sentence
    context.add("smith there.", start=6.5, end=7.0, language="en")
    assert context.prompt(8.0) == (
        "So we went down to the market and bought bread. I met Mr. smith there."
    )
    context.add("4 of them came.", start=8.0, end=9.0, language="en")  # no case to judge
    assert context.prompt(10.0) is not None and context.prompt(10.0).endswith("4 of them came.")


def test_zero_words_is_no_context() -> None:
    context = Context(ContextOptions(words=0))
    context.add("anything", start=0.0, end=1.0, language="en")
    assert context.prompt(1.0) is None


def test_options_are_checked() -> None:
    with pytest.raises(ValueError):
        ContextOptions(words=-1)
    with pytest.raises(ValueError):
        ContextOptions(reset_after=0)


@pytest.mark.slow
def test_context_in_another_language_is_not_given_to_the_model(engine: Engine) -> None:
    options = TranscribeOptions(initial_prompt="Dashwood.", context="dial one", language="en")
    assert engine._prompt(options, "en") == "Dashwood. dial one"
    assert engine._prompt(replace(options, context_language="en"), "en") == "Dashwood. dial one"
    assert engine._prompt(replace(options, context_language="fr"), "en") == "Dashwood."
    assert (
        engine._prompt(replace(options, initial_prompt=None, context_language="fr"), "en") is None
    )


@pytest.mark.slow
def test_real_speech_a_menu_read_on_is_understood_only_with_what_came_before(
    engine: Engine, speech: Callable[[str], np.ndarray]
) -> None:
    # The end of a real telephone menu: "... dial 3 to send this caller to the
    # torture menu." then, after a pause, "Dial 4 to send this caller to a polite
    # don't call menu." Decoded alone, the second utterance's first words are
    # ambiguous ("dial forward"); decoded with the text of the first as the live
    # stream carries it, the menu goes on with its next number.
    from livewhisper.engine.scheduler import Scheduler
    from livewhisper.live.stream import LiveStream, StreamOptions

    audio = speech("asterisk_en_60s.flac")[int(56.5 * SAMPLE_RATE) :]
    events = []
    with Scheduler(engine) as scheduler:
        stream = LiveStream(scheduler, StreamOptions(partials=False), events.append)
        for i in range(0, len(audio), 1600):
            stream.feed(audio[i : i + 1600])
        assert stream.finish(timeout=120)
    assert len(events) == 2, [e.text for e in events]
    first, last = (e.text.lower() for e in events)
    assert "dial 3" in first or "dial three" in first
    assert last.startswith(("dial 4", "dial four")), last


def test_a_run_of_words_said_twice_is_a_loop() -> None:
    from livewhisper.engine.guards import repeats_itself

    assert repeats_itself("Press 2 to call the person. Press 2 to call the person.")
    assert repeats_itself("and then we went home and then we went home")
    assert not repeats_itself("Please try again. You are the only participant.")
    assert not repeats_itself("Press 1 to mute. Press 2 to lock the conference.")
    assert not repeats_itself("no no no")  # short repeats are speech, not a loop


def test_a_sentence_said_twice_in_a_row_is_a_loop() -> None:
    from livewhisper.engine.guards import repeats_itself

    assert repeats_itself("Message. Message.")
    assert repeats_itself("telephone number. telephone number.")
    assert repeats_itself("Please hold. Z. Z.")
    assert repeats_itself("Is it you? is it you?")
    assert not repeats_itself("Thank you. Thank you very much.")
    assert not repeats_itself("No. Yes. No.")
    assert not repeats_itself("Message.")


def test_a_decode_that_repeats_itself_with_context_is_decoded_without(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from livewhisper.engine.contract import Transcription
    from livewhisper.transcript import Segment

    engine = Engine.__new__(Engine)  # the retry rule only: no model needed
    seen: list[str | None] = []

    def decode(
        audio: np.ndarray, options: TranscribeOptions, offset: float, fitted: object
    ) -> Transcription:
        seen.append(options.context)
        text = (
            "dial four to leave. dial four to leave." if options.context else "dial four to leave."
        )
        return Transcription([Segment(offset, offset + 1, text)], "en")

    monkeypatch.setattr(engine, "_complete", decode)
    audio = np.zeros(SAMPLE_RATE, np.float32)
    assert engine.transcribe(audio, TranscribeOptions(context="dial three")).text == (
        "dial four to leave."
    )
    assert seen == ["dial three", None]
    seen.clear()
    assert engine.transcribe(audio, TranscribeOptions()).text == "dial four to leave."
    assert seen == [None]


def test_a_loop_is_not_remembered() -> None:
    context = Context()
    context.add("press two to call. press two to call.", start=0.0, end=2.0, language="en")
    assert context.prompt(3.0) is None
