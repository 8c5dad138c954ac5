"""``livewhisper listen``'s session: a source through one `LiveStream` into the sinks."""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from livewhisper.audio.sources import Source
from livewhisper.engine.scheduler import Scheduler
from livewhisper.errors import LivewhisperError
from livewhisper.live.contract import Emit, StreamStatus
from livewhisper.live.recorder import AudioRecorder
from livewhisper.live.stream import LiveStream, StreamOptions
from livewhisper.transcript import TextEvent


@dataclass(frozen=True)
class Summary:
    duration: float  # stream seconds
    utterances: int
    latencies: tuple[float, ...]

    @property
    def median_latency(self) -> float | None:
        return statistics.median(self.latencies) if self.latencies else None

    def __str__(self) -> str:
        minutes, seconds = divmod(self.duration, 60)
        line = f"Listened {int(minutes)}:{seconds:04.1f}, {self.utterances} utterance"
        line += "" if self.utterances == 1 else "s"
        if self.median_latency is not None:
            line += f", median latency {self.median_latency:.2f} s"
        return line + "."


@dataclass(frozen=True)
class SessionResult:
    summary: Summary
    error: LivewhisperError | None = None  # what ended the session early, if anything
    interrupted: bool = False  # ended by Ctrl-C


class Session:
    """``livewhisper listen``: a source through one `LiveStream` into the sinks.

    The first Ctrl-C ends the session normally (the open utterance is transcribed
    and written); a second one exits at once with status 130.
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
        self.stream = LiveStream(scheduler, options, self._emit)
        self.on_force: Callable[[], None] | None = None  # called before a forced exit

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
        with self._sigint():
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

    @contextlib.contextmanager
    def _sigint(self) -> Iterator[None]:
        """Own SIGINT for the session (only possible on the main thread)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: Any) -> None:
            if not self.stop.is_set():
                self.stop.set()
                return
            if self.on_force is not None:
                with contextlib.suppress(Exception):
                    self.on_force()
            os._exit(130)

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)
