"""``livewhisper listen``'s session: a source through one `LiveStream` into the sinks."""

from __future__ import annotations

import statistics
import threading
from dataclasses import dataclass, replace

from livewhisper.audio.sources import Source
from livewhisper.engine.scheduler import Scheduler
from livewhisper.errors import LivewhisperError
from livewhisper.live.contract import Emit, StreamStatus
from livewhisper.live.recorder import AudioRecorder
from livewhisper.live.stream import StreamOptions
from livewhisper.live.streams import Streams
from livewhisper.transcript import TextEvent


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
    gets it even if one before it fails."""

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
    ) -> None:
        self.source = source
        self.scheduler = scheduler
        self.sinks = list(sinks or [])
        self.recorder = recorder
        self.finish_timeout = finish_timeout
        self.stop = threading.Event()
        self.stream = Streams(scheduler, options).open(self._emit)

    def _emit(self, event: TextEvent) -> None:
        error: LivewhisperError | None = None
        for sink in self.sinks:  # every sink gets the line, even if one fails
            try:
                sink(event)
            except LivewhisperError as exc:
                error = error or exc
        if error is not None:
            raise error

    def status(self) -> StreamStatus:
        return replace(self.stream.status(), overflows=self.source.overflows)

    def run(self) -> SessionResult:
        error: LivewhisperError | None = None
        try:
            for block in self.source.blocks(self.stop):
                self.stream.feed(block)
                if self.recorder is not None:
                    self.recorder.write(block)
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
        summary = Summary(
            self.stream.segmenter.time, self.stream.utterances, tuple(self.stream.latencies)
        )
        return SessionResult(summary, error, self.stop.is_set())
