"""``livewhisper listen``'s session: each input through a `LiveStream` of its own into
the sinks."""

from __future__ import annotations

import logging
import statistics
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from livewhisper.audio.sources import Source
from livewhisper.engine.scheduler import Scheduler
from livewhisper.errors import LivewhisperError, OutputError
from livewhisper.live.contract import Emit, StreamStatus
from livewhisper.live.merge import Merge
from livewhisper.live.recorder import AudioRecorder
from livewhisper.live.stream import LiveStream, StreamOptions
from livewhisper.live.streams import Streams
from livewhisper.transcript import TextEvent

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Partials:
    """Who gets partial text in a session."""

    stream: bool  # the local stream makes partial passes at all
    stdout: bool  # partial events are written to standard output
    served: bool  # the server's sessions make them


def partials_for(asked: bool | None, fmt: str, *, view: bool) -> Partials:
    """``--partials`` / ``--no-partials``, or neither (*asked* None): JSON events on
    stdout carry partials unless turned off; plain text has only finals; a live view
    always wants them; ``--no-partials`` turns them off everywhere, browsers
    included. Partial passes cost CPU, so the stream makes them only when someone
    shows them."""
    stdout = asked if asked is not None else fmt == "jsonl"
    return Partials(
        stream=asked is not False and (stdout or view), stdout=stdout, served=asked is not False
    )


@dataclass
class Outputs:
    """A session's outputs. Every event goes to each in this order (standard output
    first, so a pipe sees a line before anything else is done with it), and each
    gets it even if one before it fails. One that fails (a full disk) is dropped and
    the session goes on with the others (`Session`)."""

    stdout: Emit | None = None
    transcript: Emit | None = None  # the -o file
    server: Emit | None = None  # the local stream's captions, with --serve
    view: Emit | None = None

    def sinks(self) -> list[Emit]:
        order = (self.stdout, self.transcript, self.server, self.view)
        return [emit for emit in order if emit is not None]


@dataclass(frozen=True)
class Summary:
    duration: float  # stream seconds
    utterances: int
    latencies: tuple[float, ...]  # seconds from the end of each utterance's speech to its final

    @property
    def median_latency(self) -> float | None:
        return statistics.median(self.latencies) if self.latencies else None

    def __str__(self) -> str:
        minutes, seconds = divmod(self.duration, 60)
        line = f"Listened {int(minutes)}:{seconds:04.1f}, {self.utterances} utterance"
        line += "" if self.utterances == 1 else "s"
        if self.median_latency is not None:
            line += f", text {self.median_latency:.2f} s after speech ended (median)"
        return line + "."


@dataclass(frozen=True)
class SessionResult:
    summary: Summary
    error: LivewhisperError | None = None  # what ended the session early, if anything
    interrupted: bool = False  # ended by Ctrl-C
    #: Inputs that ended before the session did, with why (several inputs only).
    ended: tuple[tuple[str, LivewhisperError], ...] = ()


@dataclass(frozen=True)
class Input:
    """One input of a session: a source and its label on the events (None: the only
    input, whose events carry no label)."""

    source: Source
    label: str | None = None


#: Called with an input's label and the error that ended it while others go on.
InputEnded = Callable[[str, LivewhisperError], None]


class _Feed:
    """One input's source through its stream, on a thread of its own."""

    def __init__(self, item: Input, stream: LiveStream) -> None:
        self.input = item
        self.stream = stream
        self.error: LivewhisperError | None = None
        self.thread: threading.Thread | None = None

    def run(self, stop: threading.Event, record: Callable[[np.ndarray], None] | None) -> None:
        source = self.input.source
        try:
            for block in source.blocks(stop):
                self.stream.feed(block)
                if record is not None:
                    record(block)
                if self.stream.error is not None:
                    break
        except LivewhisperError as exc:
            self.error = exc
        finally:
            source.close()


class Session:
    """``livewhisper listen``: each input through a `LiveStream` of its own into the
    sinks. The streams share the scheduler and one sequence of utterance ids; the
    events of all of them go to the same sinks, finals in time order and without
    a microphone's echoes of the system audio (`merge.Merge`).

    Setting `stop` (the command line does on Ctrl-C) ends the session normally: the
    open utterances are transcribed and written before `run` returns. An input that
    ends on its own (a device unplugged) ends its stream; the others go on, and
    *on_input_end* is told. With several inputs, each is read on a thread of its
    own; a single input is read on the caller's.

    A sink or the recorder that fails to write (a full disk: what it holds stays
    valid) is dropped, *on_notice* is told in a line, and the session goes on with
    the others; the first such error is the result's `error`. The session ends when
    the last sink fails, or when standard output's reader has gone (a broken pipe).
    """

    def __init__(
        self,
        source: Source | Sequence[Input],
        scheduler: Scheduler,
        options: StreamOptions | None = None,
        sinks: list[Emit] | None = None,
        *,
        recorder: AudioRecorder | None = None,
        finish_timeout: float | None = None,
        on_input_end: InputEnded | None = None,
        on_notice: Callable[[str], None] | None = None,
        system: frozenset[str] = frozenset(),
    ) -> None:
        inputs = [Input(source)] if not isinstance(source, Sequence) else list(source)
        if not inputs:
            raise ValueError("a session needs an input")
        if len(inputs) > 1 and recorder is not None:
            raise ValueError("a session with several inputs cannot record one audio file")
        self.inputs = inputs
        self.source = inputs[0].source
        self.scheduler = scheduler
        self.sinks = list(sinks or [])
        self.recorder = recorder
        self.finish_timeout = finish_timeout
        self.on_input_end = on_input_end
        self.on_notice = on_notice
        self.dropped: list[OutputError] = []  # outputs that failed; the session went on
        self.stop = threading.Event()
        streams = Streams(scheduler, options)
        self._feeds = [_Feed(i, streams.open(self._emit, source=i.label)) for i in inputs]
        for feed in self._feeds:
            feed.stream.on_notice = on_notice  # the utterances the engine failed on
        self.stream = self._feeds[0].stream
        # Every output is called under this lock: from the scheduler's worker, and
        # from `run`'s thread for finals held back by `merge`.
        self._emit_lock = threading.Lock()
        self._merge_error: LivewhisperError | None = None
        self.merge: Merge | None = None
        if len(inputs) > 1:
            labels = tuple(i.label or "" for i in inputs)
            self.merge = Merge(labels, system, unfinished=self._unfinished)
            for feed in self._feeds:  # when the engine is behind, the user's words first
                if system and feed.input.label not in system:
                    scheduler.prefer(feed.stream.key)

    @property
    def streams(self) -> list[tuple[str | None, LiveStream]]:
        return [(f.input.label, f.stream) for f in self._feeds]

    def _unfinished(self, label: str) -> tuple[bool, float | None]:
        """Whether input *label* has finals waiting for the engine, and when its open
        utterance started."""
        for feed in self._feeds:
            if feed.input.label == label:
                return feed.stream.status().pending > 0, feed.stream.open_since
        return False, None

    def _emit(self, event: TextEvent) -> None:
        with self._emit_lock:
            self._send([event] if self.merge is None else self.merge.take(event))

    def _release(self, *, force: bool = False) -> None:
        """Send the finals `merge` no longer holds (on `run`'s thread)."""
        assert self.merge is not None
        with self._emit_lock:
            try:
                self._send(self.merge.flush() if force else self.merge.tick())
            except LivewhisperError as exc:
                self._merge_error = self._merge_error or exc

    def _send(self, events: list[TextEvent]) -> None:
        error: LivewhisperError | None = None
        for event in events:
            for sink in list(self.sinks):  # every sink gets the line, even if one fails
                try:
                    sink(event)
                except LivewhisperError as exc:
                    if len(self.sinks) == 1 or isinstance(exc.__cause__, BrokenPipeError):
                        error = error or exc  # nothing would take the text: the session ends
                        continue
                    self.sinks.remove(sink)
                    self._drop(exc, f"the text from {event.start:.1f} s on is not in it")
        if error is not None:
            raise error

    def _drop(self, exc: LivewhisperError, holds: str) -> None:
        """An output that failed is left out from now on; say so, once."""
        message = f"{str(exc).rstrip('.')}; {holds}"
        self.dropped.append(OutputError(message + "."))
        line = message + ", and the session goes on without it."
        if self.on_notice is not None:
            self.on_notice(line)
        else:
            log.warning("%s", line)

    def status(self) -> StreamStatus:
        return replace(self.stream.status(), overflows=self.source.overflows)

    def statuses(self) -> list[tuple[str | None, StreamStatus, bool]]:
        """Each input's label, status and whether it is still running, for a view."""
        return [
            (
                f.input.label,
                replace(f.stream.status(), overflows=f.input.source.overflows),
                f.thread is None or f.thread.is_alive(),
            )
            for f in self._feeds
        ]

    def run(self) -> SessionResult:
        if len(self._feeds) == 1:
            self._feeds[0].run(self.stop, None if self.recorder is None else self._record)
        else:
            self._run_all()
        for feed in self._feeds:
            feed.stream.finish(self.finish_timeout)
        if self.merge is not None:
            self._release(force=True)
        if self.recorder is not None:
            self.recorder.close()
        errors: list[LivewhisperError] = []
        for feed in self._feeds:
            stream_error = feed.stream.error
            if stream_error is not None and not isinstance(stream_error, LivewhisperError):
                raise stream_error
            errors += [e for e in (feed.error, stream_error) if e is not None]
        ended = tuple((f.input.label or "", f.error) for f in self._feeds if f.error is not None)
        # The session failed when an output or the engine did, or when every input
        # ended on its own; one input of several going away is not a failure.
        outputs = [f.stream.error for f in self._feeds if f.stream.error is not None]
        outputs += [self._merge_error] if self._merge_error is not None else []
        every = all(f.error is not None for f in self._feeds)
        error = (outputs[0] if outputs else None) or (errors[-1] if every and errors else None)
        assert error is None or isinstance(error, LivewhisperError)
        if self.dropped:
            error = error or self.dropped[0]
        summary = Summary(
            max(f.stream.segmenter.time for f in self._feeds),
            sum(f.stream.utterances for f in self._feeds),
            tuple(x for f in self._feeds for x in f.stream.latencies),
        )
        return SessionResult(summary, error, self.stop.is_set(), ended)

    def _record(self, block: np.ndarray) -> None:
        if self.recorder is None:
            return  # it failed before: the session went on without it
        try:
            self.recorder.write(block)
        except OutputError as exc:
            self._drop(exc, f"it holds the first {self.recorder.seconds:.1f} s of audio")
            self.recorder = None

    def _run_all(self) -> None:
        for feed in self._feeds:
            feed.thread = threading.Thread(
                target=feed.run,
                args=(self.stop, None),
                name=f"input-{feed.input.label}",
                daemon=True,
            )
            feed.thread.start()
        told: set[int] = set()
        while True:
            alive = [f for f in self._feeds if f.thread is not None and f.thread.is_alive()]
            for i, feed in enumerate(self._feeds):
                if feed not in alive and feed.error is not None and i not in told:
                    told.add(i)
                    if self.on_input_end is not None and alive and not self.stop.is_set():
                        self.on_input_end(feed.input.label or "", feed.error)
            if not alive:
                return
            self._release()
            # An output that failed ends every input: nothing more can be written.
            if self._merge_error is not None or any(f.stream.error for f in self._feeds):
                self.stop.set()
            alive[0].thread.join(0.1)  # type: ignore[union-attr]
