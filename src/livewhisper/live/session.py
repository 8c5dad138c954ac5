"""``livewhisper listen``'s session: a source through one `LiveStream` into the sinks."""

from __future__ import annotations

import logging
import statistics
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from livewhisper.audio.sources import Source
from livewhisper.engine.scheduler import Scheduler
from livewhisper.errors import LivewhisperError, OutputError
from livewhisper.live.contract import Emit, StreamStatus
from livewhisper.live.recorder import AudioRecorder
from livewhisper.live.stream import StreamOptions
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


class Session:
    """``livewhisper listen``: a source through one `LiveStream` into the sinks.

    Setting `stop` (the command line does on Ctrl-C) ends the session normally: the
    open utterance is transcribed and written before `run` returns.

    A sink or the recorder that fails to write (a full disk: what it holds stays
    valid) is dropped, *on_notice* is told in a line, and the session goes on with
    the others; the first such error is the result's `error`. The session ends when
    the last sink fails, or when standard output's reader has gone (a broken pipe).
    """

    def __init__(
        self,
        source: Source,
        scheduler: Scheduler,
        options: StreamOptions | None = None,
        sinks: list[Emit] | None = None,
        *,
        recorder: AudioRecorder | None = None,
        finish_timeout: float | None = None,
        on_notice: Callable[[str], None] | None = None,
    ) -> None:
        self.source = source
        self.on_notice = on_notice
        self.dropped: list[OutputError] = []  # outputs that failed; the session went on
        self.scheduler = scheduler
        self.sinks = list(sinks or [])
        self.recorder = recorder
        self.finish_timeout = finish_timeout
        self.stop = threading.Event()
        self.stream = Streams(scheduler, options).open(self._emit)
        self.stream.on_notice = on_notice  # the utterances the engine failed on

    def _emit(self, event: TextEvent) -> None:
        error: LivewhisperError | None = None
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

    def run(self) -> SessionResult:
        error: LivewhisperError | None = None
        try:
            for block in self.source.blocks(self.stop):
                self.stream.feed(block)
                if self.recorder is not None:
                    self._record(block)
                if self.stream.error is not None:
                    break
        except LivewhisperError as exc:
            error = exc
        finally:
            self.source.close()
        self.stream.finish(self.finish_timeout)
        if self.recorder is not None:
            self.recorder.close()
        stream_error = self.stream.error
        if isinstance(stream_error, LivewhisperError):
            error = error or stream_error
        elif stream_error is not None:
            raise stream_error
        if self.dropped:
            error = error or self.dropped[0]
        summary = Summary(
            self.stream.segmenter.time, self.stream.utterances, tuple(self.stream.latencies)
        )
        return SessionResult(summary, error, self.stop.is_set())

    def _record(self, block: np.ndarray) -> None:
        assert self.recorder is not None
        try:
            self.recorder.write(block)
        except OutputError as exc:
            self._drop(exc, f"it holds the first {self.recorder.seconds:.1f} s of audio")
            self.recorder = None
