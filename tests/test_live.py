"""LiveStream and the view, with a scripted engine and with the real model."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from rich.console import Console

from livewhisper.engine import Engine, TranscribeOptions, Transcription
from livewhisper.errors import OutputError
from livewhisper.live import LiveStream, Session, StreamOptions, StreamStatus, Summary
from livewhisper.scheduler import Scheduler
from livewhisper.transcript import Segment, TextEvent
from livewhisper.vad import SegmenterOptions
from livewhisper.view import LiveView


class EchoEngine:
    """Transcribes any audio to its length in seconds."""

    def transcribe(
        self, audio: np.ndarray, options: TranscribeOptions | None = None, *, offset: float = 0.0
    ) -> Transcription:
        text = f"{len(audio) / 16000:.2f} s" if np.abs(audio).max() > 0.05 else ""
        return Transcription([Segment(offset, offset + 1, text)] if text else [], "en")


def loud(frame: np.ndarray) -> bool:
    return bool(np.abs(frame).max() > 0.05)


def beeps(*pattern: tuple[float, float]) -> np.ndarray:
    """(seconds of silence, seconds of sound) pairs."""
    parts = []
    for gap, sound in pattern:
        parts.append(np.zeros(int(gap * 16000), np.float32))
        parts.append(np.full(int(sound * 16000), 0.3, np.float32))
    return np.concatenate(parts)


@pytest.fixture
def scheduler() -> Iterator[Scheduler]:
    with Scheduler(EchoEngine()) as s:
        yield s


OPTIONS = StreamOptions(segmenter=SegmenterOptions(silence_ms=300, pre_roll_ms=150))


def test_stream_emits_finals_with_stream_times(scheduler: Scheduler) -> None:
    events: list[TextEvent] = []
    stream = LiveStream(scheduler, OPTIONS, events.append, detector=loud)
    audio = np.concatenate([beeps((1.0, 1.5), (1.0, 0.9)), np.zeros(16000, np.float32)])
    for i in range(0, len(audio), 333):  # blocks of any size
        stream.feed(audio[i : i + 333])
    assert stream.finish(timeout=10)
    assert [e.id for e in events] == [0, 1]
    assert all(e.type == "final" and e.language == "en" for e in events)
    first, second = events
    assert first.start == pytest.approx(0.84, abs=0.04)  # 150 ms pre-roll before 1.0 s
    assert first.end == pytest.approx(2.52 + 0.24, abs=0.04)  # plus the kept tail
    assert second.start == pytest.approx(3.33, abs=0.04)
    assert stream.utterances == 2 and len(stream.latencies) == 2
    assert stream.status().state == "listening"


def test_finish_transcribes_the_open_utterance(scheduler: Scheduler) -> None:
    events: list[TextEvent] = []
    stream = LiveStream(scheduler, OPTIONS, events.append, detector=loud)
    stream.feed(beeps((0.5, 1.0)))
    assert stream.status().state == "speech"
    assert events == []
    assert stream.finish(timeout=10)
    assert len(events) == 1 and events[0].end == pytest.approx(1.5, abs=0.04)


def test_no_text_no_event(scheduler: Scheduler) -> None:
    events: list[TextEvent] = []
    # Speech by the detector's account, but the engine hears nothing in it.
    stream = LiveStream(scheduler, OPTIONS, events.append, detector=lambda f: True)
    stream.feed(np.full(16000, 0.01, np.float32))
    assert stream.finish(timeout=10)
    assert events == [] and stream.utterances == 0


def test_a_failing_sink_is_kept_as_the_stream_error(scheduler: Scheduler) -> None:
    def full_disk(event: TextEvent) -> None:
        raise OutputError("Cannot write out.txt: No space left on device.")

    stream = LiveStream(scheduler, OPTIONS, full_disk, detector=loud)
    stream.feed(beeps((0.5, 1.0), (1.0, 0.0)))
    assert stream.finish(timeout=10)
    assert isinstance(stream.error, OutputError)


def test_streams_share_one_scheduler(scheduler: Scheduler) -> None:
    got: dict[str, list[str]] = {"a": [], "b": []}
    streams = {
        k: LiveStream(scheduler, OPTIONS, lambda e, k=k: got[k].append(e.text), detector=loud)
        for k in got
    }
    threads = [
        threading.Thread(target=s.feed, args=(beeps((0.5, 1.0), (0.5, 2.0)),))
        for s in streams.values()
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in streams.values():
        assert s.finish(timeout=10)
    assert got["a"] == got["b"] and len(got["a"]) == 2


class ListSource:
    name = "test"
    overflows = 3

    def __init__(self, blocks: list[np.ndarray]) -> None:
        self._blocks = blocks

    def blocks(self, stop: threading.Event) -> Iterator[np.ndarray]:
        yield from self._blocks

    def close(self) -> None:
        pass


def test_session_runs_a_source_to_the_sinks(scheduler: Scheduler) -> None:
    lines: list[str] = []
    session = Session(
        ListSource([beeps((0.5, 1.0), (1.0, 0.8))]),
        scheduler,
        OPTIONS,
        [lambda e: lines.append(e.text)],
    )
    session.stream.segmenter.detector = loud
    result = session.run()
    assert result.error is None and not result.interrupted
    assert len(lines) == 2
    assert result.summary.utterances == 2 and result.summary.duration == pytest.approx(
        3.3, abs=0.04
    )
    assert session.status().overflows == 3
    assert str(result.summary).startswith("Listened 0:03.3, 2 utterances, median latency")


def test_summary_wording() -> None:
    assert str(Summary(75.0, 1, (0.5, 0.7, 0.9))) == (
        "Listened 1:15.0, 1 utterance, median latency 0.70 s."
    )
    assert str(Summary(2.0, 0, ())) == "Listened 0:02.0, 0 utterances."


# --------------------------------------------------------------------------- view


def render(status: StreamStatus, **kwargs: object) -> str:
    console = Console(width=100, force_terminal=True, color_system=None, record=True)
    view = LiveView(
        console,
        lambda: status,
        model="tiny.en",
        device="pulse (ALSA, 44100 Hz)",
        auto_refresh=False,
        **kwargs,
    )  # type: ignore[arg-type]
    view.add_final(TextEvent("final", 0, "Hello there.", 0.0, 1.0))
    console.print(view.render())
    return console.export_text()


def test_view_shows_status_level_model_device_and_latency() -> None:
    text = render(StreamStatus(state="speech", level_db=-20.0, last_latency=0.42, time=65.0))
    assert "hearing speech" in text
    assert "-20 dBFS" in text and "▮" in text
    assert "tiny.en · pulse (ALSA, 44100 Hz) · 1:05" in text
    assert "last 0.42 s" in text
    assert "Hello there." in text
    assert "Nothing heard" not in text


def test_view_warns_when_nothing_is_heard() -> None:
    text = render(
        StreamStatus(state="listening", level_db=-85.0, silent_for=12.0, overflows=2, behind=3.0)
    )
    assert "Nothing heard for 12 s: check the microphone (level -85 dBFS" in text
    assert "overflows 2" in text and "behind by 3 s" in text


def test_view_without_lines_when_stdout_is_the_terminal() -> None:
    assert "Hello there." not in render(StreamStatus(), show_lines=False)


def test_view_runs_live_on_a_terminal() -> None:
    console = Console(width=80, force_terminal=True, color_system=None, record=True)
    view = LiveView(
        console,
        lambda: StreamStatus(state="transcribing"),
        model="m",
        device="d",
        auto_refresh=False,
    )
    with view:
        view.print_line("a finished line")
        view.refresh()
    out = console.export_text()
    assert "a finished line" in out and "transcribing" in out


# --------------------------------------------------------------------------- real model


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine()


@pytest.mark.slow
def test_real_speech_through_a_live_stream(
    engine: Engine, speech: Callable[[str], np.ndarray], references: dict[str, str]
) -> None:
    events: list[TextEvent] = []
    with Scheduler(engine) as scheduler:
        stream = LiveStream(scheduler, StreamOptions(), events.append)
        audio = speech("jfk.flac")
        for i in range(0, len(audio), 1600):
            stream.feed(audio[i : i + 1600])
        assert stream.finish(timeout=120)
    text = " ".join(e.text for e in events).lower()
    assert "fellow americans" in text and "for your country" in text
    assert events[-1].end == pytest.approx(11.0, abs=0.4)


@pytest.mark.slow
@pytest.mark.parametrize("what", ["noise", "silence", "hiss"])
def test_real_model_invents_nothing(
    engine: Engine, speech: Callable[[str], np.ndarray], what: str
) -> None:
    rng = np.random.default_rng(0)
    audio = {
        "noise": np.concatenate([speech("alsa_Noise_noise_only.flac")] * 2),
        "silence": np.zeros(16000 * 3, np.float32),
        "hiss": rng.normal(0, 0.05, 16000 * 3).astype(np.float32),
    }[what]
    events: list[TextEvent] = []
    with Scheduler(engine) as scheduler:
        # VAD level 0 lets the noise through the first gate: the model's guards must hold.
        stream = LiveStream(scheduler, StreamOptions(vad_level=0), events.append)
        stream.feed(audio)
        assert stream.finish(timeout=120)
    assert events == []
