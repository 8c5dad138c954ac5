"""The scheduler with a scripted engine: order, fairness, bounds and shutdown."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Sequence

import numpy as np
import pytest

from livewhisper.engine.batch import BatchDecode, windows
from livewhisper.engine.contract import Request, TranscribeOptions, Transcription
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
    threads = s._threads
    s.start()
    assert s._threads is threads
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


# --- several workers: an engine that takes requests at once (a remote one) -------------


class Concurrent:
    """Takes `concurrency` jobs at once; a job whose label is held waits for `let`.
    Notes the order jobs start in and the most in flight, in all and per stream."""

    name = "fake"

    def __init__(self, concurrency: int, held: tuple[str, ...] = ()) -> None:
        self.concurrency = concurrency
        self.started: list[str] = []
        self.most = 0
        self.most_per_stream = 0
        self._gates = {label: threading.Event() for label in held}
        self._flight: list[str] = []
        self._cond = threading.Condition()

    def let(self, *labels: str) -> None:
        for label in labels:
            self._gates[label].set()

    def wait_started(self, count: int, timeout: float = 5) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self.started) >= count, timeout)

    def transcribe(
        self, audio: np.ndarray, options: TranscribeOptions | None = None, *, offset: float = 0.0
    ) -> Transcription:
        label = str(audio.dtype.metadata["label"])  # type: ignore[index]
        stream = label.split(":")[0]
        with self._cond:
            self.started.append(label)
            self._flight.append(stream)
            self.most = max(self.most, len(self._flight))
            self.most_per_stream = max(self.most_per_stream, self._flight.count(stream))
            self._cond.notify_all()
        gate = self._gates.get(label)
        if gate is not None:
            assert gate.wait(10), f"{label} was never let go"
        with self._cond:
            self._flight.remove(stream)
        return Transcription([Segment(offset, offset + 1, label)], "en")


def test_the_engines_concurrency_sets_the_workers() -> None:
    assert Scheduler(FakeEngine()).workers == 1  # type: ignore[arg-type]
    assert Scheduler(Concurrent(4)).workers == 4  # type: ignore[arg-type]
    assert Scheduler(Concurrent(4), workers=2).workers == 2  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Scheduler(FakeEngine(), workers=0)  # type: ignore[arg-type]


def test_several_workers_decode_different_streams_at_once() -> None:
    held = ("a:final:0", "b:final:0", "c:final:0")
    engine, done = Concurrent(3, held), Results()
    with Scheduler(engine) as s:  # type: ignore[arg-type]
        for stream in "abcd":
            s.submit(job(stream, "final", 0, done))
        assert engine.wait_started(3)
        assert not engine.wait_started(4, timeout=0.2)  # d waits for a free worker
        assert s.backlog().finals == 4
        engine.let(*held)
        assert s.wait_idle(timeout=10)
    assert engine.most == 3
    assert sorted(engine.started) == [f"{x}:final:0" for x in "abcd"]


def test_a_stream_has_one_job_in_flight_so_its_finals_keep_their_order() -> None:
    engine, done = Concurrent(4, ("a:final:0",)), Results()
    with Scheduler(engine) as s:  # type: ignore[arg-type]
        s.submit(job("a", "final", 0, done))
        assert engine.wait_started(1)
        for n in range(1, 6):
            s.submit(job("a", "final", n, done))
        s.submit(job("a", "partial", 6, done))
        s.submit(job("b", "final", 0, done))
        assert engine.wait_started(2)
        # Three workers are free, but a's queued jobs wait for its final in flight.
        assert not engine.wait_started(3, timeout=0.2)
        assert engine.started[1] == "b:final:0"
        engine.let("a:final:0")
        assert s.wait_idle(timeout=10) and done.wait(8)
    assert engine.most_per_stream == 1
    a = [r.job.utterance for r in done if r.job.stream == "a" and r.job.kind == "final"]
    assert a == [0, 1, 2, 3, 4, 5]
    # The partial, queued before b's final, still went after every final.
    assert engine.started[-1] == "a:partial:6"


def test_finals_go_before_partials_when_a_worker_comes_free() -> None:
    engine, done = Concurrent(2, ("x:final:0", "y:final:0")), Results()
    with Scheduler(engine) as s:  # type: ignore[arg-type]
        s.submit(job("x", "final", 0, done))
        s.submit(job("y", "final", 0, done))
        assert engine.wait_started(2)
        s.submit(job("p", "partial", 1, done))
        s.submit(job("q", "partial", 1, done))
        s.submit(job("f", "final", 1, done))
        engine.let("x:final:0")
        assert engine.wait_started(3)
        assert engine.started[2] == "f:final:1"
        engine.let("y:final:0")
        assert done.wait(5)
    assert sorted(engine.started[3:]) == ["p:partial:1", "q:partial:1"]


def test_streams_take_turns_among_several_workers() -> None:
    engine, done = Concurrent(2, ("other:final:0", "busy:final:0")), Results()
    with Scheduler(engine) as s:  # type: ignore[arg-type]
        s.submit(job("other", "final", 0, done))  # holds one worker throughout
        s.submit(job("busy", "final", 0, done))
        assert engine.wait_started(2)
        for n in range(1, 4):
            s.submit(job("busy", "final", n, done))
        s.submit(job("quiet", "final", 0, done))
        engine.let("busy:final:0")
        assert engine.wait_started(6)
        engine.let("other:final:0")
        assert s.wait_idle(timeout=10) and done.wait(6)
    # A stream with many finals queued does not keep another waiting: the quiet
    # one goes before the busy one's third.
    assert engine.started[2:] == ["busy:final:1", "quiet:final:0", "busy:final:2", "busy:final:3"]
    assert [r.job.utterance for r in done if r.job.stream == "busy"] == [0, 1, 2, 3]


def test_windows_of_uploads_leave_a_worker_to_live_work() -> None:
    engine, done = Concurrent(2, ("x:batch:0", "a:final:0")), Results()
    with Scheduler(engine) as s:  # type: ignore[arg-type]
        s.submit(job("x", "batch", 0, done))
        s.submit(job("y", "batch", 0, done))
        assert engine.wait_started(1)
        assert not engine.wait_started(2, timeout=0.2)  # y waits: the worker is live work's
        s.submit(job("a", "final", 0, done))
        assert engine.wait_started(2)
        assert engine.started[1] == "a:final:0"
        engine.let("x:batch:0", "a:final:0")
        assert done.wait(3)
    assert engine.started[2] == "y:batch:0"


def test_an_overdue_window_may_take_the_last_worker() -> None:
    engine, done = Concurrent(2, ("x:batch:0", "y:batch:0")), Results()
    with Scheduler(engine, batch_patience=5.0) as s:  # type: ignore[arg-type]
        s.submit(job("x", "batch", 0, done))
        assert engine.wait_started(1)
        overdue = job("y", "batch", 0, done)
        overdue.submitted -= 5.0
        s.submit(overdue)
        assert engine.wait_started(2)
        engine.let("x:batch:0", "y:batch:0")
        assert done.wait(2)


def test_callbacks_are_called_one_at_a_time() -> None:
    engine = Concurrent(4, tuple(f"{x}:final:0" for x in "abcd"))
    inside, most, lock = [0], [0], threading.Lock()
    finished = Results()

    def slow(result: JobResult) -> None:
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        threading.Event().wait(0.02)
        with lock:
            inside[0] -= 1
        finished.append(result)

    with Scheduler(engine) as s:  # type: ignore[arg-type]
        for stream in "abcdefgh":
            j = job(stream, "final", 0, [])
            j.on_done = slow
            s.submit(j)
        assert engine.wait_started(4)
        engine.let(*(f"{x}:final:0" for x in "abcd"))  # four decodes end at once
        assert s.wait_idle(timeout=10) and finished.wait(8)
    assert most[0] == 1
    assert engine.most == 4


def test_stop_drains_the_finals_of_every_worker() -> None:
    held = tuple(f"{x}:final:0" for x in "abc")
    engine, done = Concurrent(3, held), Results()
    s = Scheduler(engine).start()  # type: ignore[arg-type]
    for stream in "abc":
        for n in range(2):
            s.submit(job(stream, "final", n, done))
    assert engine.wait_started(3)
    stopper = threading.Thread(target=s.stop)
    stopper.start()
    engine.let(*held)
    stopper.join(10)
    assert not stopper.is_alive() and not s.running
    assert sorted(engine.started) == sorted(f"{x}:final:{n}" for x in "abc" for n in range(2))


class Releases:
    """A HeapTrimmer's release that records when it is called, and what was queued."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.engine: FakeEngine | None = None

    def __call__(self) -> None:
        self.calls.append(list(self.engine.calls) if self.engine else [])


def test_the_heap_is_released_only_when_no_job_waits() -> None:
    from livewhisper.engine.heap import HeapTrimmer

    engine, done, releases = FakeEngine(hold_first=True), [], Releases()
    releases.engine = engine
    with Scheduler(engine, heap=HeapTrimmer(every=0.0, release=releases)) as s:
        s.submit(job("a", "final", 0, done))
        assert engine.started.wait(5)
        s.submit(job("a", "final", 1, done))
        s.submit(job("b", "partial", 1, done))
        engine.release.set()
        assert s.wait_idle(timeout=10)
    # One release, after the last of the three jobs, none between them.
    assert releases.calls == [["a:final:0", "a:final:1", "b:partial:1"]]


def test_the_heap_is_released_at_most_once_a_period() -> None:
    from livewhisper.engine.heap import HeapTrimmer

    now = [100.0]
    releases: list[float] = []
    trimmer = HeapTrimmer(every=60.0, release=lambda: releases.append(now[0]), clock=lambda: now[0])
    assert trimmer.idle()
    now[0] = 159.0
    assert not trimmer.idle()
    now[0] = 160.0
    assert trimmer.idle()
    assert releases == [100.0, 160.0]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_malloc_trim_gives_freed_heap_back_to_the_system() -> None:
    # Many small blocks (below glibc's mmap threshold, so they come from the heap),
    # every other one freed: the holes between live blocks stay in the heap, as the
    # freed buffers of a decode do, until trimmed.
    import ctypes

    from livewhisper.engine.heap import HeapTrimmer

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    trimmer = HeapTrimmer(every=0.0)
    assert trimmer.available
    blocks = [libc.malloc(32 * 1024) for _ in range(4096)]  # 128 MiB
    for b in blocks:
        ctypes.memset(b, 1, 32 * 1024)
    for b in blocks[::2]:
        libc.free(b)
    freed = rss()
    assert trimmer.idle()
    assert freed - rss() > 48 * 2**20, (freed, rss())  # of the 64 MiB of holes
    for b in blocks[1::2]:
        libc.free(b)


class BatchingEngine(FakeEngine):
    """A FakeEngine that also decodes several jobs in one call, as the local model
    does (`Engine.transcribe_many`); each call's labels are kept in `batches`."""

    live_batch = 3

    def __init__(self, hold_first: bool = False) -> None:
        super().__init__(hold_first)
        self.batches: list[list[str]] = []

    def transcribe_many(self, requests: Sequence[Request]) -> list[Transcription]:
        labels = [str(r.audio.dtype.metadata["label"]) for r in requests]  # type: ignore[index]
        if self.fail_on in labels:
            raise RuntimeError("engine broke")
        self.batches.append(labels)
        return [
            Transcription([Segment(r.offset, r.offset + 1, label)], "en")
            for r, label in zip(requests, labels, strict=True)
        ]


def test_waiting_finals_of_several_streams_are_decoded_in_one_call() -> None:
    engine, done = BatchingEngine(hold_first=True), []
    with Scheduler(engine, max_partials_per_stream=2) as s:
        assert s.live_batch == 3  # the engine's
        s.submit(job("a", "final", 0, done))
        assert engine.started.wait(5)  # alone: decoded at once, on its own
        for stream in "abcd":
            s.submit(job(stream, "partial", 1, done))
        s.submit(job("a", "final", 1, done))
        s.submit(job("a", "final", 2, done))
        s.submit(job("b", "final", 1, done))
        s.submit(job("c", "final", 1, done))
        s.submit(job("d", "final", 1, done))
        engine.release.set()
        assert s.wait_idle(timeout=10)
        s.stop()
    # Finals first, at most live_batch in a call, one per stream (a stream's
    # second final waits for its first), streams in turn; then the partials.
    assert engine.batches[:2] == [
        ["a:final:1", "b:final:1", "c:final:1"],
        ["d:final:1", "a:final:2"],
    ]
    partials = [label for batch in engine.batches[2:] for label in batch] + engine.calls[1:]
    assert sorted(partials) == [f"{stream}:partial:1" for stream in "abcd"]
    assert engine.calls[0] == "a:final:0" and max(map(len, engine.batches)) <= 3
    # Every job's owner hears of its own result, a stream's finals in order.
    assert len(done) == 10
    for r in done:
        assert r.transcription is not None
        assert r.transcription.text == f"{r.job.stream}:{r.job.kind}:{r.job.utterance}"
    a_finals = [r.job.utterance for r in done if r.job.stream == "a" and r.job.kind == "final"]
    assert a_finals == [0, 1, 2]


def test_a_lone_stream_is_never_held_back_for_a_batch() -> None:
    engine, done = BatchingEngine(), []
    with Scheduler(engine) as s:
        for n in range(3):
            s.submit(job("a", "final", n, done))
            assert s.wait_idle(timeout=10)
    assert engine.calls == ["a:final:0", "a:final:1", "a:final:2"]  # each alone, at once
    assert engine.batches == []


def test_a_batch_that_fails_is_decoded_one_by_one() -> None:
    engine, done = BatchingEngine(hold_first=True), []
    engine.fail_on = "b:final:1"
    with Scheduler(engine) as s:
        s.submit(job("a", "final", 0, done))
        assert engine.started.wait(5)
        for stream in "abc":
            s.submit(job(stream, "final", 1, done))
        engine.release.set()
        assert s.wait_idle(timeout=10)
    assert engine.batches == []  # the batch raised
    assert engine.calls[1:] == ["a:final:1", "b:final:1", "c:final:1"]
    by_label = {f"{r.job.stream}:{r.job.utterance}": r for r in done}
    assert isinstance(by_label["b:1"].error, RuntimeError)
    assert by_label["a:1"].transcription is not None and by_label["c:1"].transcription is not None


def test_live_batch_one_decodes_every_job_alone() -> None:
    engine, done = BatchingEngine(hold_first=True), []
    with Scheduler(engine, live_batch=1) as s:
        s.submit(job("a", "final", 0, done))
        assert engine.started.wait(5)
        for stream in "abc":
            s.submit(job(stream, "final", 1, done))
        engine.release.set()
        assert s.wait_idle(timeout=10)
    assert engine.batches == []
    assert engine.calls == ["a:final:0", "a:final:1", "b:final:1", "c:final:1"]
    with pytest.raises(ValueError):
        Scheduler(engine, live_batch=0)
    assert Scheduler(FakeEngine()).live_batch == 1  # an engine without transcribe_many
