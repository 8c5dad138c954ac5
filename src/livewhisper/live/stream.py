"""Live transcription: one stream of 16 kHz audio in, text events out.

`LiveStream` is the unit every input runs (the microphone of ``listen``, each
connection of the server), all of them sharing one `Scheduler`; its output goes to
a callback, so it knows nothing of terminals or sockets.
"""

from __future__ import annotations

import itertools
import logging
import math
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from livewhisper.audio.pcm import SAMPLE_RATE, SILENCE_DB, level_db
from livewhisper.engine.contract import TranscribeOptions, Transcription
from livewhisper.engine.scheduler import Job, JobResult, Scheduler
from livewhisper.errors import EngineError, LivewhisperError
from livewhisper.live.agreement import Agreement, HypWord
from livewhisper.live.context import Context, ContextOptions
from livewhisper.live.contract import Emit, State, StreamStatus
from livewhisper.live.cuts import confirmed_stops, ends_sentence, hypothesis, quietest_gap
from livewhisper.live.segmenter import (
    FRAME_SAMPLES,
    FRAME_SECONDS,
    Detector,
    Segmenter,
    SegmenterOptions,
    SpeechPaused,
    SpeechStarted,
    UtteranceClosed,
    UtteranceDropped,
    webrtc_detector,
)
from livewhisper.transcript import TextEvent

if TYPE_CHECKING:
    from livewhisper.engine.remote import Lost

log = logging.getLogger(__name__)

_ids = itertools.count()

#: A partial pass commits no word that ends within this many seconds of the end of
#: its audio: a word cut off there ("voice" of "voicemail") can look finished to two
#: passes in a row.
COMMIT_MARGIN = 0.3


def _utterance_options() -> TranscribeOptions:
    return TranscribeOptions().for_utterance()


@dataclass(frozen=True)
class StreamOptions:
    """How a live stream cuts and transcribes its audio."""

    segmenter: SegmenterOptions = field(default_factory=SegmenterOptions)
    transcribe: TranscribeOptions = field(default_factory=_utterance_options)
    vad_level: int = 3
    #: Re-transcribe the open utterance as it grows and emit ``partial`` events.
    partials: bool = True
    #: Least new audio between two partial passes, in seconds; the interval grows
    #: with the time one pass takes (see `partial_share`).
    partial_interval: float = 0.3
    #: At most this share of the stream's time goes to partial passes: a pass that
    #: took *t* seconds is followed by the next one *t / partial_share* seconds after
    #: it started. Partial text is only a preview (the final decodes the utterance
    #: again), so it is not worth most of the machine.
    partial_share: float = 0.25
    #: No partial pass before the open utterance holds this much audio (pre-roll
    #: included): on less, Whisper hears too little speech to say anything of use.
    partial_min_audio: float = 0.8
    #: In speech without a pause, once this many seconds of an utterance are
    #: committed, the committed words are finalised as a piece, cut between words.
    piece_seconds: float = 5.0
    #: ...but only after a word that ends a sentence, until this many seconds are
    #: committed; then at the quietest gap between any two words. A piece is decoded
    #: without the speech after it, so a cut inside a sentence costs words.
    piece_any_seconds: float = 12.0
    #: Start the final when the silence begins (``tail_ms`` into it) instead of when
    #: the utterance closes; kept if no speech follows.
    speculate: bool = True
    #: Seconds of silence after the end of a sentence that end the utterance (None:
    #: only ``silence_ms`` does). A final started at a pause (`speculate`) whose text
    #: ends a sentence is kept once the pause has lasted this long, and the utterance
    #: ends there, whether the silence goes on or speech resumes: a sentence followed
    #: by a pause shorter than ``silence_ms`` is final without waiting for the next.
    #: The pause is measured from the end of speech; below the segmenter's
    #: ``tail_ms`` it acts as ``tail_ms``. The default sits between the pauses
    #: inside sentences and those between them (docs/benchmarks.md): Whisper ends
    #: almost any audio with a full stop, so the pause must say it too.
    sentence_silence: float | None = 0.3
    #: What of the stream's earlier finals each decode is given as previous text.
    context: ContextOptions = field(default_factory=ContextOptions)


@dataclass
class _Speculation:
    """A final started when the utterance went quiet."""

    job: Job
    samples: int
    closed: bool = False  # the utterance closed with exactly this audio
    resumed: bool = False  # speech went on after the pause it was started at
    resumed_at: float = 0.0  # ...at this stream time
    result: JobResult | None = None

    @property
    def end(self) -> float:
        """Stream time its audio ends at."""
        return self.job.offset + self.samples / SAMPLE_RATE


@dataclass
class _Late:
    """A partial pass still running when its utterance closed, and what its result
    needs to be shown before the utterance's final: on a slow engine the pass often
    ends after the speaker has, and its text still comes seconds before the final."""

    job: Job
    agreement: Agreement
    start: float  # of the utterance
    shown: tuple[str, str] | None  # the last partial sent (text, stable)


#: Finals in a row the engine may fail on before the stream gives up on it.
MAX_FAILURES = 3


def _reason(exc: BaseException | None) -> str:
    """An engine's failure in a few words: ``the engine failed (RuntimeError: ...)``."""
    if isinstance(exc, LivewhisperError):
        text = str(exc).rstrip(".")
        return text[:1].lower() + text[1:]
    if exc is None:
        return "the engine gave no result"
    detail = (str(exc).strip().splitlines() or [""])[0][:120]
    return f"the engine failed ({type(exc).__name__}{': ' + detail if detail else ''})"


class LiveStream:
    """Frames the audio, runs the segmenter, and sends closed utterances to the
    scheduler as final jobs and, with partials on, the open utterance as partial
    jobs. *emit* is called on the scheduler's thread with each `TextEvent`; an error
    it raises (such as an unwritable file) is kept in `error` and the stream's owner
    decides what to do.

    Partial text follows `partials.Agreement`: words two passes agree on are
    committed and stay for the rest of the utterance's partials. The final is the
    decode of the whole utterance, and replaces them. In speech without a pause,
    committed words choose where the speech is cut into pieces
    (`StreamOptions.piece_seconds`); each piece is decoded as a final and the
    segmenter goes on with the rest of the audio as the next utterance.

    Every decode gets the text of the stream's last finals as context
    (`context.Context`), as a file's decode has the words before each window."""

    def __init__(
        self,
        scheduler: Scheduler,
        options: StreamOptions | None = None,
        emit: Emit | None = None,
        *,
        key: Hashable | None = None,
        detector: Detector | None = None,
        source: str | None = None,
        ids: Iterator[int] | None = None,
        on_notice: Callable[[str], None] | None = None,
    ) -> None:
        self.scheduler = scheduler
        self.options = options or StreamOptions()
        self.emit = emit
        self.key: Hashable = key if key is not None else f"stream-{next(_ids)}"
        self.source = source  # the input's name on its events, when there are several
        detector = detector or webrtc_detector(self.options.vad_level)
        self.segmenter = Segmenter(detector, self.options.segmenter, ids=ids)
        # Written on the scheduler's thread, read anywhere: guarded by _lock.
        self._latencies: list[float] = []
        self._runs: deque[float] = deque(maxlen=5)  # seconds the last finals took to decode
        self._error: BaseException | None = None
        self._losses: list[Lost] = []  # finals the engine failed on
        self._failures = 0  # ... in a row
        self.on_notice = on_notice
        self._rest = np.zeros(0, np.float32)
        self._fed = 0  # samples fed so far
        self._levels: deque[float] = deque(maxlen=10)
        self._last_heard = 0.0
        self._arrived: dict[int, float] = {}  # utterance -> when it closed (monotonic)
        self._spoken: dict[int, float] = {}  # utterance -> stream time its speech ended
        # (stream time at the end of a block fed, when it was fed): when speech ended,
        # in the wall clock, for the latency of its final.
        self._fed_at: deque[tuple[float, float]] = deque(maxlen=8192)
        self._utterances = 0
        self._lock = threading.Lock()
        # Word times place the cuts between the pieces of a long utterance.
        self._partial_options = replace(self.options.transcribe.for_partial(), word_timestamps=True)
        # The open utterance, as the partial machinery sees it (guarded by _lock).
        self._open_id: int | None = None
        self._open_start = 0.0
        self._agreement = Agreement()
        self._context = Context(self.options.context)  # earlier finals (guarded by _lock)
        self._partial_job: Job | None = None
        self._late: _Late | None = None  # a pass that outlived its utterance
        # Stream time the last partial pass was submitted at, in any utterance: the
        # interval spaces the passes of the stream, so an utterance that starts long
        # after the last pass has its first one as soon as it holds enough audio,
        # however slow the engine (a slow one's interval can be longer than most
        # utterances).
        self._partial_mark = -math.inf
        self._interval = self.options.partial_interval
        self._heard_until = 0.0  # stream time up to which text has been produced
        self._last_partial: tuple[str, str] | None = None
        self._changed = False  # committed words changed since the last cut check
        self._speculation: dict[int, _Speculation] = {}
        self._latest: list[HypWord] = []  # the words of the last partial pass (_lock)
        # A speculative final that ended a sentence, for the audio thread to cut at.
        self._sentence_end: _Speculation | None = None
        self._language: str | None = None  # the last one heard, for pieces

    @property
    def utterances(self) -> int:
        """Finals emitted with text so far."""
        with self._lock:
            return self._utterances

    @property
    def open_since(self) -> float | None:
        """Stream time the open utterance started at, or None; safe from any thread."""
        with self._lock:
            return self._open_start if self._open_id is not None else None

    @property
    def latencies(self) -> list[float]:
        """Seconds from the end of each utterance's speech to its final, by the wall
        clock (as `bench/latency.py` measures them)."""
        with self._lock:
            return list(self._latencies)

    @property
    def error(self) -> BaseException | None:
        """The first error of an output or of the engine; the stream's owner decides
        what to do about it."""
        with self._lock:
            return self._error

    @property
    def losses(self) -> list[Lost]:
        """The utterances the engine failed on, by their stream seconds."""
        with self._lock:
            return list(self._losses)

    def _fail(self, exc: BaseException | None) -> None:
        """Keep *exc* as the stream's error unless it already has one (lock held)."""
        if self._error is None:
            self._error = exc

    # ------------------------------------------------------------------ input

    def feed(self, samples: np.ndarray) -> None:
        """Take 16 kHz mono float32 samples, any number at a time."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        self._fed += len(samples)
        with self._lock:
            self._fed_at.append((self._fed / SAMPLE_RATE, time.monotonic()))
        data = np.concatenate([self._rest, samples])
        whole = len(data) - len(data) % FRAME_SAMPLES
        for i in range(0, whole, FRAME_SAMPLES):
            self._frame(data[i : i + FRAME_SAMPLES])
        self._rest = data[whole:]

    def _real_end(self, job: Job) -> float:
        """Where a job's audio ends in the stream, not counting the silence that
        pads the last frame at the end of input."""
        return min(job.offset + job.seconds, self._fed / SAMPLE_RATE)

    def finish(self, timeout: float | None = None) -> bool:
        """End of input: transcribe the open utterance and wait for every final of
        this stream. False if *timeout* passed first."""
        if len(self._rest):
            pad = np.zeros(FRAME_SAMPLES - len(self._rest), np.float32)
            self._frame(np.concatenate([self._rest, pad]))
            self._rest = np.zeros(0, np.float32)
        self._handle(self.segmenter.flush())
        done = self.scheduler.wait_idle(self.key, timeout)
        self.scheduler.forget(self.key)
        return done

    def _frame(self, frame: np.ndarray) -> None:
        self._levels.append(level_db(frame))
        self._end_sentence()
        self._handle(self.segmenter.feed(frame))
        if not self.segmenter.in_speech:
            return
        self._last_heard = self.segmenter.time
        if self.options.speculate and self.segmenter.quiet_for == 0.0:
            with self._lock:
                # Speech resumed: a final started at the pause will not be the final
                # of the whole utterance, but it may still end a sentence.
                speculation = self._speculation.get(self._open_id)  # type: ignore[arg-type]
                if speculation is not None and not speculation.resumed:
                    if self._sentence_end is speculation or (
                        self.options.sentence_silence is not None and speculation.result is None
                    ):
                        speculation.resumed = True
                        speculation.resumed_at = self.segmenter.time - FRAME_SECONDS
                    else:
                        del self._speculation[speculation.job.utterance]
        if self.options.partials:
            self._maybe_cut()
            self._maybe_partial()

    def _handle(self, events: list[Any]) -> None:
        for event in events:
            if isinstance(event, SpeechStarted):
                log.info("utterance %d: speech started at %.2f s", event.id, event.start)
                self._last_heard = self.segmenter.time
                with self._lock:
                    self._open_id, self._open_start = event.id, event.start
                    self._last_partial = None
            elif isinstance(event, SpeechPaused):
                if self.options.speculate:
                    self._speculate(event)
            elif isinstance(event, UtteranceClosed):
                log.info("utterance %d: closed at %.2f s", event.id, event.end)
                self._last_heard = event.end
                self._closed(event)
            elif isinstance(event, UtteranceDropped):
                with self._lock:
                    self._forget_open(event.id)
                    self._speculation.pop(event.id, None)

    def _forget_open(self, uid: int) -> None:
        """The open utterance *uid* ended: its partial work is of no more use."""
        if self._open_id == uid:
            self._open_id = None
        self._partial_job = None
        self.scheduler.discard_partials(self.key)

    def _closed(self, event: UtteranceClosed) -> None:
        with self._lock:
            self._arrived[event.id] = time.monotonic()
            # Closed by silence, it holds a tail of it; cut at the length limit, its
            # speech runs to the cut.
            tail = 0.0 if event.forced else self.options.segmenter.tail_ms / 1000
            self._spoken[event.id] = event.end - tail
            if event.forced:
                # Cut at the length limit in mid-speech: the committed words spoken
                # after the cut stay committed in the next utterance's partials.
                committed = self._agreement.committed
                self._agreement.cut(sum(1 for w in committed if (w.start + w.end) / 2 < event.end))
                self._agreement.tail = []
            else:
                running = self._partial_job
                if running is not None and running.started is not None:
                    self._late = _Late(running, self._agreement, event.start, self._last_partial)
                self._agreement = Agreement()
            speculation = self._speculation.get(event.id)
            self._forget_open(event.id)
            job: Job
            if speculation is not None and speculation.samples == len(event.audio):
                speculation.closed = True
                if speculation.result is None:
                    return  # still to come: its result is the final
                del self._speculation[event.id]
                job = self._job(event.id, event.audio, event.start, known=speculation.result)
            else:
                self._speculation.pop(event.id, None)
                job = self._job(event.id, event.audio, event.start)
        self.scheduler.submit(job)

    def _job(
        self,
        uid: int,
        audio: np.ndarray,
        start: float,
        *,
        known: JobResult | None = None,
        on_done: Callable[[JobResult], None] | None = None,
    ) -> Job:
        """A final job for utterance *uid*; *known* is a result it already has (then
        the caller holds the lock)."""
        job = Job(
            stream=self.key,
            kind="final",
            utterance=uid,
            audio=audio,
            offset=start,
            options=self.options.transcribe,
            on_done=on_done or self._done,
            prepare=self._with_context,
        )
        if known is not None and known.error is None:
            job.result = known.transcription
            job.submitted = known.job.submitted
        # A speculation the engine failed on is decoded again, as the final.
        return job

    def _with_context(self, job: Job) -> TranscribeOptions:
        """The job's options with the stream's earlier finals as context, taken when
        the job runs: the finals before it have been decoded by then."""
        with self._lock:
            prompt = self._context.prompt(job.offset, job.options.language)
            language = self._context.language
        if prompt is None:
            return job.options
        return replace(job.options, context=prompt, context_language=language)

    def _speculate(self, event: SpeechPaused) -> None:
        job = self._job(event.id, event.audio, event.start, on_done=self._speculated)
        speculation = _Speculation(job, len(event.audio))

        def wanted() -> bool:
            with self._lock:
                return self._speculation.get(event.id) is speculation

        job.wanted = wanted
        with self._lock:
            self._speculation[event.id] = speculation
        self.scheduler.submit(job)

    def _speculated(self, result: JobResult) -> None:
        uid = result.job.utterance
        event: TextEvent | None = None
        with self._lock:
            speculation = self._speculation.get(uid)
            final = False
            if speculation is None or speculation.job is not result.job:
                # Dropped when the speaker went on.
                event = self._resumed_hypothesis(result)
            elif (
                not speculation.closed
                and self.options.sentence_silence is not None
                and self._open_id == uid
                and result.transcription is not None
                and ends_sentence(result.transcription.text)
            ):
                # The audio thread cuts the utterance there with its next frame.
                speculation.result = result
                self._sentence_end = speculation
                return
            elif speculation.resumed:
                del self._speculation[uid]
                event = self._resumed_hypothesis(result)
            elif not speculation.closed:
                # Not final yet, but a hypothesis of the whole utterance so far.
                speculation.result = result
                if self.options.partials and self._open_id == uid and result.transcription:
                    event = self._hypothesis(result, result.transcription, complete=True)
            else:
                del self._speculation[uid]
                final = True
        if final:
            self._done(result)
        else:
            self._send(event)

    def _resumed_hypothesis(self, result: JobResult) -> TextEvent | None:
        """A final started at a pause came back after the speaker went on: not the
        final, but still a hypothesis of the open utterance up to that pause, and
        on a slow engine often the only one (called with the lock held)."""
        job = result.job
        if not self.options.partials or result.transcription is None:
            return None
        if job.offset + job.seconds < self._heard_until:
            return None  # a later pass has been heard already
        return self._hypothesis(result, result.transcription, complete=True)

    # ------------------------------------------------------------------ partials

    def _maybe_partial(self) -> None:
        now = self.segmenter.time
        if self.options.speculate and self.segmenter.quiet_for > 0:
            # The speaker may be pausing: a pass started now would still hold the
            # engine when the final of this utterance starts, and delay it.
            return
        with self._lock:
            if self._open_id is None or now - self._partial_mark < self._interval:
                return
            if now - self._open_start < self.options.partial_min_audio:
                return  # (the open audio spans _open_start..now)
            running = self._partial_job
            if running is not None and running.started is not None:
                return  # one pass in flight per stream
            speculation = self._speculation.get(self._open_id)
            if speculation is not None and not speculation.resumed:
                return  # a final of the same audio is on its way
        opened = self.segmenter.open_utterance()
        if opened is None:
            return
        uid, audio, start = opened
        job = Job(
            stream=self.key,
            kind="partial",
            utterance=uid,
            audio=audio,
            offset=start,
            options=self._partial_options,
            on_done=self._partial_done,
            prepare=self._with_context,
        )
        with self._lock:
            self._partial_job = job
            self._partial_mark = now
        self.scheduler.submit(job)  # replaces a pass still queued

    def _partial_done(self, result: JobResult) -> None:
        with self._lock:
            late = self._late if self._late is not None and result.job is self._late.job else None
            if result.job is not self._partial_job and late is None:
                return  # its utterance has been cut or dropped since, or its pass skipped
            if late is None:
                self._partial_job = None
            else:
                self._late = None
            self._interval = max(
                self.options.partial_interval, result.ran / self.options.partial_share
            )
            if result.error is not None or result.transcription is None:
                # Best effort: the final of the utterance will say if the engine fails.
                log.info("a partial pass failed: %r", result.error)
                return
            if late is None:
                event = self._hypothesis(result, result.transcription)
            else:
                event = self._late_hypothesis(late, result, result.transcription)
        self._send(event)

    def _hypothesis(
        self, result: JobResult, transcription: Transcription, *, complete: bool = False
    ) -> TextEvent | None:
        """A new hypothesis of the open utterance (called with the lock held): the
        partial event to send once the lock is released, if the text changed."""
        job = result.job
        if job.utterance != self._open_id:
            return None
        self._heard_until = max(self._heard_until, job.offset + job.seconds)
        self._language = transcription.language or self._language  # for pieces
        words = hypothesis(transcription)
        self._latest = words  # for where a piece may be cut
        if self._agree(self._agreement, job, transcription, words, complete=complete):
            self._changed = True
        event = self._partial_event(
            self._agreement, job, transcription, self._open_start, self._last_partial
        )
        if event is not None:
            self._last_partial = (event.text, event.stable or "")
        return event

    def _late_hypothesis(
        self, late: _Late, result: JobResult, transcription: Transcription
    ) -> TextEvent | None:
        """The partial event of a pass that outlived its utterance, unless the final
        has come back first (called with the lock held)."""
        job = result.job
        if job.utterance not in self._arrived:
            return None  # its final has come back
        self._agree(late.agreement, job, transcription, hypothesis(transcription))
        return self._partial_event(late.agreement, job, transcription, late.start, late.shown)

    @staticmethod
    def _agree(
        agreement: Agreement,
        job: Job,
        transcription: Transcription,
        words: list[HypWord],
        *,
        complete: bool = False,
    ) -> bool:
        """Update *agreement* with a pass's words; whether it committed any."""
        timed = any(s.words for s in transcription.segments)
        horizon = job.offset + job.seconds - COMMIT_MARGIN if timed else None
        return bool(agreement.update(words, complete=complete, timed=timed, horizon=horizon))

    def _partial_event(
        self,
        agreement: Agreement,
        job: Job,
        transcription: Transcription,
        start: float,
        shown: tuple[str, str] | None,
    ) -> TextEvent | None:
        """The partial event *agreement* now makes, unless it says what *shown* did."""
        text, stable = agreement.text, agreement.committed_text
        if not text or (text, stable) == shown:
            return None
        return TextEvent(
            type="partial",
            id=job.utterance,
            text=text,
            start=start,
            end=self._real_end(job),
            language=transcription.language,
            stable=stable,
            source=self.source,
        )

    def _end_sentence(self) -> None:
        """On the audio thread: once the pause after a speculative final that ends a
        sentence has lasted `StreamOptions.sentence_silence`, end the open utterance
        where that final was started, and make it the final."""
        if self._sentence_end is None:
            return
        assert self.options.sentence_silence is not None
        with self._lock:
            speculation = self._sentence_end
            if speculation is None or self._speculation.get(self._open_id) is not speculation:  # type: ignore[arg-type]
                self._sentence_end = None
                return  # the utterance closed or was cut since
            uid = speculation.job.utterance
            tail = self.options.segmenter.tail_ms / 1000
            paused = speculation.end - tail
            heard = speculation.resumed_at if speculation.resumed else self.segmenter.time
            if heard - paused < self.options.sentence_silence - 1e-6:
                if speculation.resumed:  # a pause too short to end the sentence
                    self._sentence_end = None
                    del self._speculation[uid]
                return
            self._sentence_end = None
        events = self.segmenter.split(speculation.end)
        closed = next((e for e in events if isinstance(e, UtteranceClosed)), None)
        if closed is None or closed.id != uid or len(closed.audio) != speculation.samples:
            # Not the audio it decoded (cannot happen while the ids agree): let the
            # utterance run its course.
            self._handle(events)
            return
        with self._lock:
            del self._speculation[uid]
            self._arrived[uid] = time.monotonic()  # waiting for its turn: pending
            self._spoken[uid] = closed.end - self.options.segmenter.tail_ms / 1000
            committed = self._agreement.committed
            # Words committed after the cut stay committed in the next utterance.
            self._agreement.cut(sum(1 for w in committed if (w.start + w.end) / 2 < closed.end))
            self._agreement.tail = []
            self._forget_open(uid)
            # Its result is handed to the scheduler, which sends it in turn with the
            # stream's other finals, on its own thread like every event.
            job = self._job(uid, closed.audio, closed.start, known=speculation.result)
        log.info("utterance %d: a sentence ends at %.2f s", uid, closed.end)
        self.scheduler.submit(job)
        self._handle([e for e in events if e is not closed])

    def _maybe_cut(self) -> None:
        """Finalise a piece of a long utterance: its committed words up to the
        quietest gap between two of them."""
        with self._lock:
            if not self._changed:
                return
            self._changed = False
            committed = confirmed_stops(list(self._agreement.committed), self._latest)
            start = self._open_start
        span = committed[-1].end - start if committed else 0.0
        if len(committed) < 2 or span < self.options.piece_seconds:
            return
        opened = self.segmenter.open_utterance()
        if opened is None or opened[0] != self._open_id:
            return
        uid, audio, start = opened
        cut = quietest_gap(
            audio,
            start,
            committed,
            min_piece=self.options.piece_seconds / 2,
            sentences=span < self.options.piece_any_seconds,
        )
        if cut is None:
            return
        n, at = cut
        events = self.segmenter.split(at)
        closed = next((e for e in events if isinstance(e, UtteranceClosed)), None)
        if closed is None:
            self._handle(events)
            return
        with self._lock:
            self._agreement.cut(n)
            self._arrived[uid] = time.monotonic()
            self._spoken[uid] = closed.end
            self._forget_open(uid)
            # The piece is decoded whole, with its context, like any final: the
            # partial passes only chose where to cut it.
            job = self._job(uid, closed.audio, closed.start)
        log.info("utterance %d: a piece of %d words cut at %.2f s", uid, n, at)
        self.scheduler.submit(job)
        self._handle([e for e in events if e is not closed])

    # ------------------------------------------------------------------ output

    def _send(self, event: TextEvent | None) -> None:
        """Hand *event* to the output: on the scheduler's thread, never with the
        lock held, so an output that blocks (a full pipe) holds up only the text,
        not the audio."""
        if event is None or self.emit is None:
            return
        try:
            self.emit(event)
        except LivewhisperError as exc:
            with self._lock:
                self._fail(exc)

    def _done(self, result: JobResult) -> None:
        job = result.job
        with self._lock:
            self._arrived.pop(job.utterance, None)
            spoken = self._spoken.pop(job.utterance, None)
            said = job.submitted if spoken is None else self._when_fed(spoken)
            self._heard_until = max(self._heard_until, job.offset + job.seconds)
            if result.ran:
                self._runs.append(result.ran)
        if result.error is not None or result.transcription is None:
            self._lose(job, result.error)
            return
        with self._lock:
            self._failures = 0
        # The final is the decode of the whole utterance with its context, whatever
        # the partial passes settled on: they saw less audio, so they are right less
        # often, and what they got wrong must not stay.
        text = result.transcription.text.strip()
        if not text:
            return  # the guards found no speech in it: no text is better than invented text
        with self._lock:
            language = result.transcription.language or self._language
            self._language = language
            self._context.add(text, start=job.offset, end=self._real_end(job), language=language)
        event = TextEvent(
            type="final",
            id=job.utterance,
            text=text,
            start=job.offset,
            end=self._real_end(job),
            language=language,
            source=self.source,
        )
        with self._lock:
            self._utterances += 1
            self._latencies.append(max(0.0, time.monotonic() - said))
        self._send(event)

    def _lose(self, job: Job, exc: BaseException | None) -> None:
        """The engine failed on a final: its span is lost, said in a line (*on_notice*
        or the log), and the stream goes on with the next utterance. An engine that
        fails `MAX_FAILURES` finals in a row is broken: that ends the stream."""
        from livewhisper.engine.remote import Lost  # the remote engine's record of a loss

        reason = _reason(exc)
        lost = Lost(job.offset, self._real_end(job), reason)
        with self._lock:
            self._losses.append(lost)
            self._failures += 1
            if self._failures >= MAX_FAILURES:
                self._fail(
                    EngineError(
                        f"The engine failed on {self._failures} utterances in a row "
                        f"({reason}); see 'livewhisper check', or choose another --model."
                    )
                )
        line = f"Not transcribed: {lost.span()}: {reason}."
        if self.on_notice is not None:
            self.on_notice(line)
        else:
            log.warning("%s", line)

    def _when_fed(self, at: float) -> float:
        """When stream time *at* was heard, by the wall clock (lock held): the block
        holding it came at the moment its last sample was captured, and the sample
        was not heard before the block before it came (input faster than real time)."""
        before = None
        for end, when in self._fed_at:
            if end >= at:
                heard = when - (end - at)
                return heard if before is None else max(before, heard)
            before = when
        return time.monotonic()

    def status(self) -> StreamStatus:
        with self._lock:
            pending = len(self._arrived)
            oldest = min(self._arrived.values(), default=None)
            usual = statistics.median(self._runs) if self._runs else 0.0
            heard_until = self._heard_until
            open_id = self._open_id
            utterances = self._utterances
            last_latency = self._latencies[-1] if self._latencies else None
        state: State = "speech" if self.segmenter.in_speech else "listening"
        if pending and state == "listening":
            state = "transcribing"
        now = self.segmenter.time
        behind = 0.0
        if oldest is not None:
            # How long the oldest closed utterance has waited for its final, beyond
            # what a final usually takes.
            behind = time.monotonic() - oldest - usual
        if self.options.partials and open_id is not None:
            # Seconds of the open utterance no pass has covered, beyond a pass's usual lag.
            lag = now - max(heard_until, self._open_start) - 2 * self._interval
            behind = max(behind, lag)
        return StreamStatus(
            state=state,
            time=now,
            level_db=max(self._levels, default=SILENCE_DB),
            silent_for=max(0.0, now - self._last_heard) if not self.segmenter.in_speech else 0.0,
            utterances=utterances,
            pending=pending,
            last_latency=last_latency,
            behind=max(0.0, behind),
        )
