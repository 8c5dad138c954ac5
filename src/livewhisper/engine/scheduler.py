"""The worker threads that own the engine, serving jobs from one or many live streams.

Finals (closed utterances) always run before partials (the growing audio of an
utterance still open), and streams take turns, so one busy stream cannot starve
the others. Finals are never dropped: a stream with too many queued finals makes
`submit` wait. Partials are best-effort: each stream keeps only its newest ones.

Batch jobs (the windows of an uploaded file, `engine.batch`) come after both, so
an upload uses the time live streams leave; one that has waited `batch_patience`
seconds goes next, so an upload is slowed by live work but never stopped.

When several streams have finals waiting (or partials), a worker takes up to
`live_batch` of them, one per stream, and the engine decodes them in one call
(`Engine.transcribe_many`): a GPU runs a batch for little more than one job, a CPU
for less than its jobs one by one. Only what is already waiting is batched: a lone
stream's job is never held back for company.

A local model has one worker. An engine that can take several requests at once
(a remote one) says how many in its ``concurrency`` attribute, and the scheduler
runs that many workers, under the same rules: a stream has at most one job in
flight, so its finals are decoded and handed over in order, each with the text of
the ones before; the callbacks (`Job.on_done`) are called one at a time; and
uploads' windows leave one worker to live work unless they are overdue.

When the last job is done and none waits, the workers give the C heap's free
memory back to the system (`engine.heap`), at most once a minute, so that a
session of hours does not keep the high-water mark of its longest decode.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from livewhisper.audio.pcm import SAMPLE_RATE
from livewhisper.engine.contract import Request, TranscribeOptions, Transcriber, Transcription
from livewhisper.engine.heap import HeapTrimmer

log = logging.getLogger(__name__)

JobKind = Literal["final", "partial", "batch"]


class SchedulerStopped(RuntimeError):
    """A batch job submitted to, or still queued in, a scheduler that is stopping."""


@dataclass
class Job:
    """Audio of one utterance of one stream (or one window of a batch); *on_done* is
    called on the worker thread."""

    stream: Hashable
    kind: JobKind
    utterance: int
    audio: np.ndarray
    offset: float
    options: TranscribeOptions
    on_done: Callable[[JobResult], None]
    submitted: float = field(default_factory=time.monotonic)
    #: Already known (a piece of a long utterance made of committed words): the worker
    #: hands it to *on_done* in turn with the stream's other finals, without decoding.
    result: Transcription | None = None
    #: Asked just before the job runs; a job no longer wanted is skipped (a
    #: speculative final whose utterance went on).
    wanted: Callable[[], bool] | None = None
    #: Asked just before the job runs for the options to decode it with: a live
    #: stream adds the text of its finals so far, some of which may have been
    #: decoded after this job was queued.
    prepare: Callable[[Job], TranscribeOptions] | None = None
    started: float | None = None  # when the worker took it

    @property
    def seconds(self) -> float:
        return len(self.audio) / SAMPLE_RATE


@dataclass(frozen=True)
class JobResult:
    job: Job
    transcription: Transcription | None
    error: BaseException | None = None
    waited: float = 0.0  # seconds in the queue
    ran: float = 0.0  # seconds transcribing


@dataclass(frozen=True)
class Backlog:
    """Work waiting (and running): how many jobs and how many seconds of audio."""

    finals: int = 0
    partials: int = 0
    seconds: float = 0.0
    final_seconds: float = 0.0  # of which in finals: the text that is late for sure
    batch: int = 0  # windows of uploads


@dataclass
class _Queues:
    finals: deque[Job] = field(default_factory=deque)
    partials: deque[Job] = field(default_factory=deque)
    batch: deque[Job] = field(default_factory=deque)

    def get(self, kind: JobKind) -> deque[Job]:
        return {"final": self.finals, "partial": self.partials, "batch": self.batch}[kind]


class Scheduler:
    """Runs jobs on worker threads. `start`/`stop` are idempotent; use it as a
    context manager to be sure the workers end.

    *batch_patience*: the seconds a batch job waits behind live work at most before
    it goes next (see `_next`). *workers*: how many jobs run at once; by default the
    engine's ``concurrency`` (1 for an engine without one, such as the local model,
    which one thread at a time may call). *live_batch*: the most live jobs decoded
    in one engine call; by default the engine's ``live_batch`` attribute if it has
    ``transcribe_many``, else 1 (one at a time)."""

    def __init__(
        self,
        engine: Transcriber,
        *,
        max_finals_per_stream: int = 32,
        max_partials_per_stream: int = 1,
        batch_patience: float = 10.0,
        workers: int | None = None,
        heap: HeapTrimmer | None = None,
        live_batch: int | None = None,
    ) -> None:
        if workers is None:
            workers = int(getattr(engine, "concurrency", 1))
        many: Callable[[Sequence[Request]], list[Transcription]] | None
        many = getattr(engine, "transcribe_many", None)
        if live_batch is None:
            live_batch = int(getattr(engine, "live_batch", 1)) if many else 1
        if live_batch < 1:
            raise ValueError("live_batch must be at least 1")
        if max_finals_per_stream < 1 or max_partials_per_stream < 1:
            raise ValueError("queue sizes must be at least 1")
        if batch_patience < 0:
            raise ValueError("batch_patience cannot be negative")
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.engine = engine
        self.max_finals = max_finals_per_stream
        self.max_partials = max_partials_per_stream
        self.batch_patience = batch_patience
        self.workers = workers
        self.live_batch = live_batch if many else 1
        self._many = many
        self._streams: dict[Hashable, _Queues] = {}
        self._turns: deque[Hashable] = deque()  # round-robin order of streams
        self._first: set[Hashable] = set()  # streams whose finals go before others'
        self._running: dict[Hashable, Job] = {}  # by stream: one job each at most
        self._cond = threading.Condition()
        self._done = threading.Lock()  # one callback at a time
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._heap = heap if heap is not None else HeapTrimmer()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Scheduler:
        with self._cond:
            if not any(t.is_alive() for t in self._threads):
                self._stop.clear()
                self._threads = [
                    threading.Thread(
                        target=self._work,
                        name="livewhisper-engine" + (f"-{n + 1}" if n else ""),
                        daemon=True,
                    )
                    for n in range(self.workers)
                ]
                for thread in self._threads:
                    thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Finish the queued finals, drop the partials, answer the queued batch jobs
        with `SchedulerStopped` (their owners are waiting), and end the workers
        (*timeout* for each)."""
        with self._cond:
            self._stop.set()
            for q in self._streams.values():
                q.partials.clear()
            self._cond.notify_all()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout)

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads) and not self._stop.is_set()

    def __enter__(self) -> Scheduler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ jobs

    def submit(self, job: Job, timeout: float | None = None) -> None:
        """Queue *job*. A final waits while its stream has `max_finals_per_stream`
        finals queued (TimeoutError after *timeout*); a partial replaces the stream's
        oldest queued partial when the stream has too many; a batch job is queued
        behind its stream's others, or refused with `SchedulerStopped` once stopped."""
        with self._cond:
            if self._stop.is_set() and job.kind == "partial":
                return
            if self._stop.is_set() and job.kind == "batch":
                raise SchedulerStopped("the model is shutting down")
            q = self._streams.get(job.stream)
            if q is None:
                q = self._streams[job.stream] = _Queues()
                self._turns.append(job.stream)
            if job.kind == "final":
                if not self._cond.wait_for(lambda: len(q.finals) < self.max_finals, timeout):
                    raise TimeoutError(f"stream {job.stream!r}: the final queue stayed full")
                q.finals.append(job)
            elif job.kind == "batch":
                q.batch.append(job)
            else:
                if len(q.partials) >= self.max_partials:
                    q.partials.popleft()
                q.partials.append(job)
            self._cond.notify_all()

    def prefer(self, stream: Hashable) -> None:
        """Run *stream*'s finals before other streams' finals (a session's microphone
        beside its system audio: when the engine is behind, the user's own words
        come first); preferred streams take turns among themselves."""
        with self._cond:
            self._first.add(stream)

    def discard_partials(self, stream: Hashable) -> None:
        """Drop a stream's queued partials (its utterance closed, or it went away)."""
        with self._cond:
            q = self._streams.get(stream)
            if q is not None:
                q.partials.clear()

    def forget(self, stream: Hashable) -> None:
        """Drop a stream that has ended; its queued finals still run, its queued
        partials and batch jobs do not (nobody waits for them any more)."""
        with self._cond:
            q = self._streams.get(stream)
            if q is not None:
                q.partials.clear()
                q.batch.clear()
                if not q.finals:
                    del self._streams[stream]
                    self._turns.remove(stream)
                    self._first.discard(stream)

    def wait_idle(self, stream: Hashable | None = None, timeout: float | None = None) -> bool:
        """Wait until *stream* (or every stream) has no final queued or running."""

        def idle() -> bool:
            if stream is None:
                busy = bool(self._running) or any(q.finals for q in self._streams.values())
            else:
                q = self._streams.get(stream)
                running = self._running.get(stream)
                busy = bool(q and q.finals) or (running is not None and running.kind == "final")
            return not busy

        with self._cond:
            return self._cond.wait_for(idle, timeout)

    def backlog(self, stream: Hashable | None = None) -> Backlog:
        """Queued and running work, for one stream or all: a view shows it as
        "behind by N s"."""
        with self._cond:
            jobs = [
                j
                for s, q in self._streams.items()
                if stream is None or s == stream
                for j in (*q.finals, *q.partials, *q.batch)
            ]
            jobs.extend(j for s, j in self._running.items() if stream is None or s == stream)
        return Backlog(
            finals=sum(j.kind == "final" for j in jobs),
            partials=sum(j.kind == "partial" for j in jobs),
            seconds=sum(j.seconds for j in jobs),
            final_seconds=sum(j.seconds for j in jobs if j.kind == "final"),
            batch=sum(j.kind == "batch" for j in jobs),
        )

    # ------------------------------------------------------------------ worker

    def _next(self) -> list[Job] | None:
        """The next job, streams in turn, of a stream with no job in flight, with
        the jobs of the same kind other streams have waiting when live jobs are
        batched (`live_batch`); None once stopped and nothing is left that this
        worker could take.

        Finals first, then partials, then batch jobs, except that a batch job that
        has waited `batch_patience` seconds goes before them all. What bounds the
        waits: a batch job waits at most `batch_patience`, then for the job running
        at that moment and for the windows of other uploads that are overdue too
        (one each: an upload has one window queued at a time). Live work, in turn,
        waits for at most one window of each upload in `batch_patience` seconds,
        besides the job running when it came. With several workers, windows that are
        not overdue take all but one of them, so live work never waits for a window.
        """
        with self._cond:
            while True:
                now = time.monotonic()
                windows = sum(j.kind == "batch" for j in self._running.values())
                job = (
                    self._take("batch", queued_by=now - self.batch_patience)
                    or self._take_final()
                    or self._take("partial")
                    or (self._take("batch") if windows < max(1, self.workers - 1) else None)
                )
                if job is not None:
                    jobs = [job]
                    self._running[job.stream] = job
                    while job.kind != "batch" and len(jobs) < self.live_batch:
                        more = self._take_final() if job.kind == "final" else self._take("partial")
                        if more is None:
                            break
                        jobs.append(more)
                        self._running[more.stream] = more
                    for taken in jobs:
                        taken.started = now
                    self._cond.notify_all()  # a submit may be waiting for room
                    return jobs
                if self._stop.is_set():
                    return None
                self._cond.wait()

    def _take_final(self) -> Job | None:
        """The next final: of the preferred streams (`prefer`) first."""
        return (self._first and self._take("final", among=self._first)) or self._take("final")

    def _take(
        self, kind: JobKind, queued_by: float = math.inf, among: set[Hashable] | None = None
    ) -> Job | None:
        """The first job of *kind* submitted by *queued_by* (a `time.monotonic` time)
        at the head of the queue of a stream with no job in flight (of a stream *among*
        these, if given), in the streams' turn; the streams looked at go to the back.
        Called with the lock held."""
        for _ in range(len(self._turns)):
            stream = self._turns[0]
            self._turns.rotate(-1)
            if stream in self._running or (among is not None and stream not in among):
                continue
            q = self._streams[stream].get(kind)
            if q and q[0].submitted <= queued_by:
                return q.popleft()
        return None

    def _work(self) -> None:
        while (jobs := self._next()) is not None:
            try:
                wanted = [j for j in jobs if j.wanted is None or j.wanted()]
                if wanted:
                    self._run(wanted)
            finally:
                with self._cond:
                    for job in jobs:
                        del self._running[job.stream]
                    self._cond.notify_all()
                    idle = not self._running and not any(
                        q.finals or q.partials or q.batch for q in self._streams.values()
                    )
                if idle:
                    self._heap.idle()

    def _run(self, jobs: list[Job]) -> None:
        """Decode *jobs* (several in one engine call, if the engine can) and hand
        each its result."""
        started = time.monotonic()
        results: dict[int, tuple[Transcription | None, BaseException | None]] = {}
        decode: list[tuple[int, TranscribeOptions]] = []
        for n, job in enumerate(jobs):
            if job.kind == "batch" and self._stop.is_set():
                results[n] = (None, SchedulerStopped("the model is shutting down"))
            elif job.result is not None:
                results[n] = (job.result, None)
            else:
                try:
                    decode.append((n, job.options if job.prepare is None else job.prepare(job)))
                except Exception as exc:  # handed to the job's owner, which can report it
                    results[n] = (None, exc)
        if len(decode) > 1 and self._many is not None:
            requests = [Request(jobs[n].audio, options, jobs[n].offset) for n, options in decode]
            try:
                for (n, _), transcription in zip(decode, self._many(requests), strict=True):
                    results[n] = (transcription, None)
                decode = []
            except Exception:  # one bad request must not fail the others: one by one
                log.warning("a batch of %d decodes failed; decoding them one by one", len(decode))
        for n, options in decode:
            job = jobs[n]
            try:
                results[n] = (self.engine.transcribe(job.audio, options, offset=job.offset), None)
            except Exception as exc:  # handed to the job's owner, which can report it
                results[n] = (None, exc)
        done = time.monotonic()
        for n, job in enumerate(jobs):
            transcription, error = results[n]
            result = JobResult(job, transcription, error, started - job.submitted, done - started)
            try:
                with self._done:
                    job.on_done(result)
            except Exception:
                # One stream's broken callback must not stop the others' work.
                log.exception("the result callback of stream %r failed", job.stream)
