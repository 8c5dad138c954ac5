"""The segmenter on scripted frames, and on real speech with WebRTC's VAD."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from livewhisper.audio.pcm import SAMPLE_RATE, frame_energy, quietest
from livewhisper.live.segmenter import (
    FRAME_SAMPLES,
    Segmenter,
    SegmenterOptions,
    SpeechPaused,
    SpeechStarted,
    UtteranceClosed,
    UtteranceDropped,
    webrtc_detector,
)


def scripted(
    pattern: str, loud: float = 0.5, quiet: float = 0.0
) -> tuple[list[np.ndarray], Callable[[np.ndarray], bool]]:
    """Frames for a pattern such as ``"__SSSS__"``: S is speech, _ is silence. Each
    frame is filled with its index so tests can tell which frames an utterance holds;
    the detector reads the speech flag from a loud first sample."""
    frames = []
    for i, c in enumerate(pattern):
        frame = np.full(FRAME_SAMPLES, i / 10_000, np.float32)
        frame[0] = loud if c == "S" else quiet
        frames.append(frame)
    return frames, lambda frame: bool(frame[0] >= loud)


def frame_ids(audio: np.ndarray) -> list[int]:
    return [round(float(f[1]) * 10_000) for f in audio.reshape(-1, FRAME_SAMPLES)]


def run(seg: Segmenter, frames: list[np.ndarray], *, paused: bool = False) -> list[object]:
    """The events of *frames*; `SpeechPaused` ones only with *paused*."""
    events: list[object] = []
    for f in frames:
        events += [e for e in seg.feed(f) if paused or not isinstance(e, SpeechPaused)]
    return events


OPTS = SegmenterOptions(
    pre_roll_ms=90, start_ms=90, start_ratio=0.6, silence_ms=120, tail_ms=60, min_speech_ms=90
)


def test_utterance_with_pre_roll_and_tail() -> None:
    frames, detect = scripted("_____SSSSSS______")
    seg = Segmenter(detect, OPTS)
    events = run(seg, frames)
    started, closed = events
    assert isinstance(started, SpeechStarted) and isinstance(closed, UtteranceClosed)
    # Starts when 2 of the last 3 frames are speech (frame 6); the 3-frame pre-roll
    # reaches back from the first speech frame (5) to frame 2.
    assert frame_ids(closed.audio) == [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
    assert started.start == closed.start == pytest.approx(2 * 0.03)
    assert closed.end == pytest.approx(13 * 0.03)
    assert not closed.forced and closed.id == started.id == 0
    assert seg.open_utterance() is None


def test_short_gaps_do_not_end_an_utterance() -> None:
    frames, detect = scripted("__SSSS___SSSS_____")
    events = run(Segmenter(detect, OPTS), frames)
    closed = [e for e in events if isinstance(e, UtteranceClosed)]
    assert len(closed) == 1
    assert frame_ids(closed[0].audio)[:1] == [0]


def test_too_little_speech_is_dropped() -> None:
    frames, detect = scripted("___SS________")
    events = run(
        Segmenter(
            detect,
            SegmenterOptions(
                pre_roll_ms=90, start_ms=60, silence_ms=120, tail_ms=60, min_speech_ms=120
            ),
        ),
        frames,
    )
    assert [type(e) for e in events] == [SpeechStarted, UtteranceDropped]


def test_lone_speech_frames_do_not_start() -> None:
    frames, detect = scripted("__S__S__S__S__")
    assert run(Segmenter(detect, OPTS), frames) == []


def test_flush_closes_the_open_utterance_and_open_utterance_shows_it() -> None:
    frames, detect = scripted("___SSSSS")
    seg = Segmenter(detect, OPTS)
    run(seg, frames)
    uid, audio, start = seg.open_utterance()  # type: ignore[misc]
    assert uid == 0 and start == 0.0
    assert frame_ids(audio) == [0, 1, 2, 3, 4, 5, 6, 7]
    (closed,) = seg.flush()
    assert isinstance(closed, UtteranceClosed)
    assert frame_ids(closed.audio) == [0, 1, 2, 3, 4, 5, 6, 7]
    assert seg.flush() == []


def test_long_speech_is_cut_at_the_quietest_point_near_the_limit() -> None:
    # 40 frames (1.2 s) limit, searched over the last 10 frames (0.3 s).
    opts = SegmenterOptions(
        pre_roll_ms=30,
        start_ms=30,
        silence_ms=300,
        tail_ms=60,
        min_speech_ms=30,
        max_utterance_s=1.2,
        cut_search_s=0.3,
    )
    frames, detect = scripted("S" * 60)
    for i, f in enumerate(frames):
        f[2:] = 0.001 if i in (34, 35, 36) else 0.2  # a 90 ms pause between words
    seg = Segmenter(detect, opts)
    events = run(seg, frames)
    closed = [e for e in events if isinstance(e, UtteranceClosed)]
    assert len(closed) == 1 and closed[0].forced
    assert closed[0].end == pytest.approx(35 * 0.03)  # in the middle of the pause
    # What follows the cut is the next utterance, already open, with no audio lost.
    uid, audio, start = seg.open_utterance()  # type: ignore[misc]
    assert uid == 1 and start == pytest.approx(closed[0].end)
    assert len(closed[0].audio) + len(audio) == 60 * FRAME_SAMPLES


def test_a_silent_frame_wins_the_cut_over_a_quiet_speech_frame() -> None:
    opts = SegmenterOptions(
        pre_roll_ms=30,
        start_ms=30,
        silence_ms=300,
        tail_ms=60,
        min_speech_ms=30,
        max_utterance_s=1.2,
        cut_search_s=0.3,
    )
    frames, detect = scripted("S" * 34 + "_" + "S" * 10, quiet=0.3)
    for f in frames:
        f[2:] = 0.2
    events = run(Segmenter(detect, opts), frames)
    closed = [e for e in events if isinstance(e, UtteranceClosed)]
    assert closed[0].end == pytest.approx(34 * 0.03)


def test_quietest_smooths_over_its_neighbours_and_puts_voiced_frames_last() -> None:
    audio = np.repeat(np.array([0.5, 0.5, 0.0, 0.5, 0.5, 0.1, 0.1, 0.1], np.float32), 4)
    energy = frame_energy(np.concatenate([audio, np.zeros(3, np.float32)]), 4)
    assert np.allclose(energy, [0.25, 0.25, 0.0, 0.25, 0.25, 0.01, 0.01, 0.01])
    assert quietest(energy) == 2  # a lone quiet frame wins unsmoothed...
    assert quietest(energy, smooth=3) == 6  # ...but not over three frames
    assert quietest(energy, smooth=3, edges="zero") == 7  # beyond the end is silence
    voiced = np.array([True] * 6 + [False, True])
    assert quietest(energy, smooth=3, voiced=voiced) == 6
    with pytest.raises(ValueError, match="odd"):
        quietest(energy, smooth=2)


def test_times_count_frames_not_the_clock() -> None:
    frames, detect = scripted("_" * 100 + "SSSS" + "_" * 10)
    seg = Segmenter(detect, OPTS)
    events = run(seg, frames)
    assert seg.time == pytest.approx(114 * 0.03)
    assert events[0].start == pytest.approx(97 * 0.03)  # 3 frames before the speech  # type: ignore[attr-defined]


def test_frames_must_be_30_ms() -> None:
    seg = Segmenter(lambda f: False)
    with pytest.raises(ValueError, match="480"):
        seg.feed(np.zeros(160, np.float32))


def test_webrtc_detector_levels() -> None:
    with pytest.raises(ValueError):
        webrtc_detector(4)
    detect = webrtc_detector(3)
    assert detect(np.zeros(FRAME_SAMPLES, np.float32)) is False


def segment(audio: np.ndarray, level: int = 3) -> list[object]:
    seg = Segmenter(webrtc_detector(level))
    padded = np.concatenate([audio, np.zeros(SAMPLE_RATE, np.float32)])
    events: list[object] = []
    for i in range(0, len(padded) - FRAME_SAMPLES + 1, FRAME_SAMPLES):
        events += seg.feed(padded[i : i + FRAME_SAMPLES])
    return events + seg.flush()


def test_real_speech_five_read_utterances(speech: Callable[[str], np.ndarray]) -> None:
    # Five LibriVox utterances joined with 0.5 s gaps.
    closed = [
        e
        for e in segment(speech("pocketsphinx_librivox_austen_5utt.flac"))
        if isinstance(e, UtteranceClosed)
    ]
    assert len(closed) == 5
    assert closed[0].start == 0.0
    for a, b in zip(closed, closed[1:], strict=False):
        assert a.end <= b.start
        assert not a.forced
    assert 26.5 < closed[-1].end < 27.6


def test_real_speech_is_cut_at_pauses_when_too_long(speech: Callable[[str], np.ndarray]) -> None:
    seg = Segmenter(webrtc_detector(3), SegmenterOptions(max_utterance_s=4.0, cut_search_s=2.0))
    audio = speech("jfk.flac")
    events: list[object] = []
    for i in range(0, len(audio) - FRAME_SAMPLES + 1, FRAME_SAMPLES):
        events += seg.feed(audio[i : i + FRAME_SAMPLES])
    closed = [e for e in events + seg.flush() if isinstance(e, UtteranceClosed)]
    assert any(c.forced for c in closed)
    assert all(c.end - c.start <= 4.0 + 1e-6 for c in closed)
    for c in closed:
        if c.forced:  # cut where it is quiet: well below the utterance's loudness
            tail = c.audio[-480:]
            assert np.sqrt(np.mean(tail**2)) < 0.5 * np.sqrt(np.mean(c.audio**2))


def test_silence_starts_nothing() -> None:
    events = segment(np.zeros(SAMPLE_RATE * 3, np.float32))
    assert events == []


def test_speech_paused_carries_the_audio_the_utterance_will_close_with() -> None:
    frames, detect = scripted("_____SSSSSS______")
    events = run(Segmenter(detect, OPTS), frames, paused=True)
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["SpeechStarted", "SpeechPaused", "UtteranceClosed"]
    paused, closed = events[1], events[2]
    assert isinstance(paused, SpeechPaused) and isinstance(closed, UtteranceClosed)
    assert np.array_equal(paused.audio, closed.audio) and paused.end == closed.end


def test_speech_resuming_after_a_pause_continues_the_utterance() -> None:
    frames, detect = scripted("_____SSSS___SSSS______")
    events = run(Segmenter(detect, OPTS), frames, paused=True)
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["SpeechStarted", "SpeechPaused", "SpeechPaused", "UtteranceClosed"]
    assert len(events[3].audio) > len(events[1].audio)  # type: ignore[attr-defined]


def test_split_hands_every_frame_to_exactly_one_utterance() -> None:
    frames, detect = scripted("___" + "S" * 20 + "______")
    seg = Segmenter(detect, OPTS)
    events = run(seg, frames[:18])
    assert seg.split(99.0) == [] and seg.split(0.0) == []  # outside the open utterance
    events = seg.split(10 * 0.03)
    closed, started = events
    assert isinstance(closed, UtteranceClosed) and closed.forced
    assert isinstance(started, SpeechStarted) and started.start == pytest.approx(closed.end)
    assert frame_ids(closed.audio) == list(range(0, 10))
    rest = run(seg, frames[18:])
    last = rest[-1]
    assert isinstance(last, UtteranceClosed)
    assert frame_ids(last.audio) == list(range(10, 25))


def test_split_with_only_silence_after_closes_as_silence_does() -> None:
    frames, detect = scripted("___SSSSSS___SSSS______")
    seg = Segmenter(detect, OPTS)
    run(seg, frames[:11])  # two frames into the pause: not yet closed
    assert seg.in_speech
    (closed,) = seg.split(10 * 0.03)
    assert isinstance(closed, UtteranceClosed) and not closed.forced
    assert frame_ids(closed.audio) == list(range(0, 10)) and not seg.in_speech
    # The frame after the cut is pre-roll of the next utterance, which starts anew.
    started, after = run(seg, frames[11:])
    assert isinstance(started, SpeechStarted) and isinstance(after, UtteranceClosed)
    assert frame_ids(after.audio)[0] == 10
