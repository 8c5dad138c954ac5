"""The scheduler with a scripted engine: order, fairness, bounds and shutdown."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from livewhisper.engine.batch import BatchDecode, windows
from livewhisper.engine.contract import TranscribeOptions, Transcription
from livewhisper.engine.scheduler import Job, JobResult, Scheduler, SchedulerStopped
from livewhisper.transcript import Segment

OPTS = TranscribeOptions().for_utterance()


class FakeEngine:
    """Transcribes to "<stream>:<kind>:<utterance>"; the first job can be held."""

    def __init__(self, hold_first: bool = False) -> None:
        self.calls: list[str] = []
        self.release = threading.Event()
        self.started = threading.Event()
        if not hold_first:
            self.release.set()
        self.fail_on: str | None = None

    def transcribe(
        self, audio: np.ndarray, options: TranscribeOptions | None = None, *, offset: float = 0.0
    ) -> Transcription:
        label = str(audio.dtype.metadata["label"])  # type: ignore[index]
        self.started.set()
        self.release.wait(10)
        self.calls.append(label)
        if label == self.fail_on:
            raise RuntimeError("engine broke")
        return Transcription([Segment(offset, offset + 1, label)], "en")


def job(stream: str, kind: str, n: int, done: list[JobResult], seconds: float = 1.0) -> Job:
    label = f"{stream}:{kind}:{n}"
    audio = np.zeros(int(seconds * 16000), dtype=np.dtype(np.float32, metadata={"label": label}))
    return Job(stream, kind, n, audio, float(n), OPTS, done.append)  # type: ignore[arg-type]


def test_finals_before_partials_and_streams_take_turns() -> None:
    engine, done = FakeEngine(hold_first=True), []
    with Scheduler(engine, max_partials_per_stream=2) as s:
        s.submit(job("a", "final", 0, done))
        assert engine.started.wait(5)  # a:final:0 is running; the rest queue up
        s.submit(job("a", "partial", 1, done))
        s.submit(job("a", "final", 1, done))
        s.submit(job("a", "final", 2, done))
        s.submit(job("b", "partial", 1, done))
        s.submit(job("b", "final", 1, done))
        s.submit(job("c", "final", 1, done))
        engine.release.set()
        assert s.wait_idle(timeout=10)
    assert engine.calls[0] == "a:final:0"
    finals, partials = engine.calls[1:5], engine.calls[5:]
    # Round robin: a's second queued final waits for b's and c's.
    assert finals == ["a:final:1", "b:final:1", "c:final:1", "a:final:2"]
    assert sorted(partials) == ["a:partial:1", "b:partial:1"]
    assert [r.job.utterance for r in done if r.job.stream == "a" and r.job.kind == "final"] == [
        0,
        1,
        2,
    ]


def test_newer_partial_replaces_older() -> None:
    engine, done = FakeEngine(hold_first=True), []
    with Scheduler(engine) as s:
        s.submit(job("a", "final", 0, done))
        assert engine.started.wait(5)
        for n in range(1, 5):
            s.submit(job("a", "partial", n, done))
        assert s.backlog("a").partials == 1
        engine.release.set()
        assert s.wait_idle(timeout=10)
        s.stop()
    assert engine.calls == ["a:final:0", "a:partial:4"]


def test_finals_are_never_dropped_a_full_queue_makes_submit_wait() -> None:
    engine, done = FakeEngine(hold_first=True), []
    with Scheduler(engine, max_finals_per_stream=2) as s:
        s.submit(job("a", "final", 0, done))
        assert engine.started.wait(5)
        s.submit(job("a", "final", 1, done))
        s.submit(job("a", "final", 2, done))
        with pytest.raises(TimeoutError):
            s.submit(job("a", "final", 3, done), timeout=0.2)
        waiter = threading.Thread(target=s.submit, args=(job("a", "final", 3, done),))
        waiter.start()
        engine.release.set()
        waiter.join(10)
        assert s.wait_idle("a", timeout=10)
    assert engine.calls == ["a:final:0", "a:final:1", "a:final:2", "a:final:3"]


def test_stop_finishes_queued_finals_drops_partials_and_answers_batch_jobs() -> None:
    engine, done = FakeEngine(hold_first=True), []
    s = Scheduler(engine).start()
    s.submit(job("a", "final", 0, done))
    assert engine.started.wait(5)
    s.submit(job("a", "final", 1, done))
    s.submit(job("a", "partial", 2, done))
    s.submit(job("up", "batch", 0, done))
    stopper = threading.Thread(target=s.stop)
    stopper.start()
    engine.release.set()
    stopper.join(10)
    assert not stopper.is_alive() and not s.running
    assert engine.calls == ["a:final:0", "a:final:1"]
    # The upload waiting for its window hears that it will not come.
    (stopped,) = [r for r in done if r.job.kind == "batch"]
    assert isinstance(stopped.error, SchedulerStopped) and stopped.transcription is None
    s.stop()  # idempotent
    s.submit(job("a", "partial", 3, done))  # ignored once stopped
    with pytest.raises(SchedulerStopped):
        s.submit(job("up", "batch", 1, done))
    assert engine.calls == ["a:final:0", "a:final:1"]


def test_start_is_idempotent_and_restartable() -> None:
    engine, done = FakeEngine(), []
    s = Scheduler(engine)
    s.start()
    thread = s._thread
    s.start()
    assert s._thread is thread
    s.stop()
    s.start()
    s.submit(job("a", "final", 0, done))
    assert s.wait_idle(timeout=5)
    s.stop()
    assert engine.calls == ["a:final:0"]


def test_errors_reach_the_callback_and_the_worker_goes_on() -> None:
    engine, done = FakeEngine(), []
    engine.fail_on = "a:final:0"
    with Scheduler(engine) as s:
        s.submit(job("a", "final", 0, done))
        s.submit(job("a", "final", 1, done))
        assert s.wait_idle(timeout=5)
    assert isinstance(done[0].error, RuntimeError) and done[0].transcription is None
    assert done[1].error is None and done[1].transcription is not None
    assert done[1].transcription.text == "a:final:1"


def test_a_failing_callback_does_not_stop_other_streams(caplog: pytest.LogCaptureFixture) -> None:
    engine, done = FakeEngine(), []

    def broken(result: JobResult) -> None:
        raise ValueError("sink broke")

    with Scheduler(engine) as s:
        bad = job("a", "final", 0, done)
        bad.on_done = broken
        s.submit(bad)
        s.submit(job("b", "final", 0, done))
        assert s.wait_idle(timeout=5)
    assert [r.job.stream for r in done] == ["b"]
    assert "sink broke" in caplog.text


def test_backlog_counts_queued_and_running_audio() -> None:
    engine, done = FakeEngine(hold_first=True), []
    with Scheduler(engine) as s:
        s.submit(job("a", "final", 0, done, seconds=2.0))
        assert engine.started.wait(5)
        s.submit(job("a", "final", 1, done, seconds=3.0))
        s.submit(job("b", "partial", 1, done, seconds=0.5))
        total, only_b = s.backlog(), s.backlog("b")
        engine.release.set()
        assert s.wait_idle(timeout=5)
    assert (total.finals, total.partials, total.seconds) == (2, 1, 5.5)
    assert (only_b.finals, only_b.partials, only_b.seconds) == (0, 1, 0.5)


# --- batch jobs: the windows of uploads ---------------------------------------------


class Results(list[JobResult]):
    """Job results, as `on_done` hands them over; `wait` for a count of them (batch
    jobs run after the finals, so `wait_idle` may return before they do)."""

    def __init__(self) -> None:
        super().__init__()
        self._cond = threading.Condition()

    def append(self, result: JobResult) -> None:
        with self._cond:
            super().append(result)
            self._cond.notify_all()

    def wait(self, count: int, timeout: float = 10) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self) >= count, timeout)


def test_batch_jobs_come_after_finals_and_partials() -> None:
    engine, done = FakeEngine(hold_first=True), Results()
    with Scheduler(engine) as s:
        s.submit(job("a", "final", 0, done))
        assert engine.started.wait(5)
        s.submit(job("up", "batch", 0, done, seconds=30.0))
        s.submit(job("a", "partial", 1, done))
        s.submit(job("b", "final", 1, done))
        assert s.backlog().batch == 1 and s.backlog("up").seconds == 30.0
        engine.release.set()
        assert done.wait(4)
    assert engine.calls == ["a:final:0", "b:final:1", "a:partial:1", "up:batch:0"]


def test_a_batch_job_that_waited_its_patience_goes_first() -> None:
    engine, done = FakeEngine(hold_first=True), Results()
    with Scheduler(engine, batch_patience=5.0) as s:
        s.submit(job("a", "final", 0, done))
        assert engine.started.wait(5)
        overdue = job("up", "batch", 0, done)
        overdue.submitted -= 5.0  # queued 5 s ago, behind live work all the time
        s.submit(overdue)
        s.submit(job("a", "final", 1, done))
        s.submit(job("fresh", "batch", 0, done))
        engine.release.set()
        assert done.wait(4)
    assert engine.calls == ["a:final:0", "up:batch:0", "a:final:1", "fresh:batch:0"]


def test_uploads_take_turns() -> None:
    engine, done = FakeEngine(hold_first=True), Results()
    with Scheduler(engine) as s:
        s.submit(job("a", "final", 0, done))
        assert engine.started.wait(5)
        for n in range(2):
            s.submit(job("x", "batch", n, done))
        s.submit(job("y", "batch", 0, done))
        engine.release.set()
        assert done.wait(4)
    assert engine.calls == ["a:final:0", "x:batch:0", "y:batch:0", "x:batch:1"]


def test_forget_drops_a_streams_queued_batch_jobs() -> None:
    engine, done = FakeEngine(hold_first=True), []
    with Scheduler(engine) as s:
        s.submit(job("a", "final", 0, done))
        assert engine.started.wait(5)
        s.submit(job("up", "batch", 0, done))
        s.forget("up")
        assert s.backlog("up").batch == 0
        engine.release.set()
        assert s.wait_idle(timeout=10)
    assert engine.calls == ["a:final:0"]


def test_windows_are_cut_in_pauses_and_lose_nothing() -> None:
    rng = np.random.default_rng(0)
    audio = rng.normal(0, 0.3, 100 * 16000).astype(np.float32)
    pauses = (24.0, 51.0, 77.5)  # one in the last 10 s of each 30 s window
    for at in pauses:
        audio[int(at * 16000) : int((at + 0.3) * 16000)] = 0.0
    blocks = [audio[i : i + 50_000] for i in range(0, len(audio), 50_000)]
    pieces = list(windows(blocks, window=30.0, search=10.0))
    assert np.array_equal(np.concatenate(pieces), audio)
    assert all(len(p) <= 30 * 16000 for p in pieces)
    cuts = np.cumsum([len(p) for p in pieces])[:-1] / 16000
    assert len(cuts) == len(pauses)
    assert all(at <= cut <= at + 0.3 for at, cut in zip(pauses, cuts, strict=True))


class Languages:
    """Hears nothing in the first window, then German: "text N" for window N."""

    name = "fake"

    def __init__(self) -> None:
        self.asked: list[TranscribeOptions] = []

    def transcribe(
        self, audio: np.ndarray, options: TranscribeOptions | None = None, *, offset: float = 0.0
    ) -> Transcription:
        assert options is not None
        self.asked.append(options)
        n = len(self.asked)
        segments = [Segment(offset, offset + 1, f"text {n}")] if n > 1 else []
        return Transcription(segments, "de" if n > 1 else "en")


def test_a_batch_decode_goes_on_from_each_window_in_its_language() -> None:
    engine = Languages()
    with Scheduler(engine) as s:  # type: ignore[arg-type]
        decode = BatchDecode(s, TranscribeOptions())
        results = [decode.submit(np.zeros(16000, np.float32)).result(10) for _ in range(4)]
        decode.close()
    assert [r.segments[0].start if r.segments else None for r in results] == [None, 1, 2, 3]
    # The language of the first window with speech, and the text of the one before.
    assert [o.language for o in engine.asked] == [None, None, "de", "de"]
    assert [o.context for o in engine.asked] == [None, None, "text 2", "text 3"]
    assert decode.offset == 4.0


def test_a_cancelled_window_is_not_decoded() -> None:
    engine, done = FakeEngine(hold_first=True), []
    with Scheduler(engine) as s:
        s.submit(job("a", "final", 0, done))
        assert engine.started.wait(5)
        decode = BatchDecode(s, OPTS)
        future = decode.submit(np.zeros(16000, np.float32))
        assert future.cancel()
        engine.release.set()
        assert s.wait_idle(timeout=10)
        decode.close()
    assert engine.calls == ["a:final:0"]
