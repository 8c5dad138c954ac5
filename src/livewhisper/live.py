"""Live transcription: one stream of 16 kHz audio in, final text events out.

`LiveStream` is the unit a server runs once per connection, all of them sharing one
`Scheduler`; its output goes to a callback, so it knows nothing of terminals or
sockets. `Session` is what ``livewhisper listen`` runs: a source, one stream, the
sinks, and Ctrl-C handling.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import os
import signal
import statistics
import sys
import threading
import time
import wave
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TextIO

import numpy as np

from livewhisper.engine import TranscribeOptions
from livewhisper.errors import LivewhisperError, OutputError
from livewhisper.scheduler import Job, JobResult, Scheduler
from livewhisper.sources import Source
from livewhisper.transcript import Segment, TextEvent
from livewhisper.vad import (
    FRAME_SAMPLES,
    SAMPLE_RATE,
    Detector,
    Segmenter,
    SegmenterOptions,
    SpeechStarted,
    UtteranceClosed,
    webrtc_detector,
)

log = logging.getLogger(__name__)

State = Literal["listening", "speech", "transcribing"]
Emit = Callable[[TextEvent], None]
_SILENCE_DB = -100.0
_ids = itertools.count()


def _utterance_options() -> TranscribeOptions:
    return TranscribeOptions().for_utterance()


@dataclass(frozen=True)
class StreamOptions:
    """How a live stream cuts and transcribes its audio."""

    segmenter: SegmenterOptions = field(default_factory=SegmenterOptions)
    transcribe: TranscribeOptions = field(default_factory=_utterance_options)
    vad_level: int = 3


@dataclass(frozen=True)
class StreamStatus:
    """A snapshot of a stream, for a view. Times are stream seconds."""

    state: State = "listening"
    time: float = 0.0
    level_db: float = _SILENCE_DB  # loudest 30 ms frame of the last 300 ms, in dBFS
    silent_for: float = 0.0  # since speech was last heard (or since the start)
    utterances: int = 0  # finals with text
    pending: int = 0  # utterances closed but not yet transcribed
    last_latency: float | None = None
    behind: float = 0.0  # seconds of audio waiting for the engine
    overflows: int = 0


def level_db(frame: np.ndarray) -> float:
    rms = float(np.sqrt(np.mean(np.square(frame, dtype=np.float64)))) if len(frame) else 0.0
    return max(_SILENCE_DB, 20 * math.log10(rms)) if rms > 0 else _SILENCE_DB


class LiveStream:
    """Frames the audio, runs the segmenter, and sends closed utterances to the
    scheduler as final jobs. *emit* is called on the scheduler's thread with each
    final `TextEvent`; an error it raises (such as an unwritable file) is kept in
    `error` and the stream's owner decides what to do."""

    def __init__(
        self,
        scheduler: Scheduler,
        options: StreamOptions | None = None,
        emit: Emit | None = None,
        *,
        key: Hashable | None = None,
        detector: Detector | None = None,
    ) -> None:
        self.scheduler = scheduler
        self.options = options or StreamOptions()
        self.emit = emit
        self.key: Hashable = key if key is not None else f"stream-{next(_ids)}"
        detector = detector or webrtc_detector(self.options.vad_level)
        self.segmenter = Segmenter(detector, self.options.segmenter)
        self.latencies: list[float] = []
        self.error: BaseException | None = None
        self._rest = np.zeros(0, np.float32)
        self._levels: deque[float] = deque(maxlen=10)
        self._last_heard = 0.0
        self._arrived: dict[int, float] = {}
        self._utterances = 0
        self._lock = threading.Lock()

    @property
    def utterances(self) -> int:
        """Finals emitted with text so far."""
        return self._utterances

    # ------------------------------------------------------------------ input

    def feed(self, samples: np.ndarray) -> None:
        """Take 16 kHz mono float32 samples, any number at a time."""
        data = np.concatenate([self._rest, np.asarray(samples, dtype=np.float32).reshape(-1)])
        whole = len(data) - len(data) % FRAME_SAMPLES
        for i in range(0, whole, FRAME_SAMPLES):
            self._frame(data[i : i + FRAME_SAMPLES])
        self._rest = data[whole:]

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
        self._handle(self.segmenter.feed(frame))
        if self.segmenter.in_speech:
            self._last_heard = self.segmenter.time

    def _handle(self, events: list[Any]) -> None:
        for event in events:
            if isinstance(event, SpeechStarted):
                log.info("utterance %d: speech started at %.2f s", event.id, event.start)
                self._last_heard = self.segmenter.time
            elif isinstance(event, UtteranceClosed):
                log.info("utterance %d: closed at %.2f s", event.id, event.end)
                self._last_heard = event.end
                with self._lock:
                    self._arrived[event.id] = time.monotonic()
                self.scheduler.submit(
                    Job(
                        stream=self.key,
                        kind="final",
                        utterance=event.id,
                        audio=event.audio,
                        offset=event.start,
                        options=self.options.transcribe,
                        on_done=self._done,
                    )
                )
            # UtteranceDropped: too little speech to transcribe; nothing to do.

    # ------------------------------------------------------------------ output

    def _done(self, result: JobResult) -> None:
        job = result.job
        with self._lock:
            arrived = self._arrived.pop(job.utterance, job.submitted)
        if result.error is not None or result.transcription is None:
            self.error = self.error or result.error
            return
        text = result.transcription.text.strip()
        if not text:
            return  # the guards found no speech in it: no text is better than invented text
        end = job.offset + job.seconds
        event = TextEvent(
            type="final",
            id=job.utterance,
            text=text,
            start=job.offset,
            end=end,
            language=result.transcription.language,
        )
        self._utterances += 1
        try:
            if self.emit is not None:
                self.emit(event)
        except LivewhisperError as exc:
            self.error = self.error or exc
        self.latencies.append(time.monotonic() - arrived)

    def status(self) -> StreamStatus:
        with self._lock:
            pending = len(self._arrived)
        state: State = "speech" if self.segmenter.in_speech else "listening"
        if pending and state == "listening":
            state = "transcribing"
        now = self.segmenter.time
        return StreamStatus(
            state=state,
            time=now,
            level_db=max(self._levels, default=_SILENCE_DB),
            silent_for=max(0.0, now - self._last_heard) if not self.segmenter.in_speech else 0.0,
            utterances=self._utterances,
            pending=pending,
            last_latency=self.latencies[-1] if self.latencies else None,
            behind=self.scheduler.backlog(self.key).seconds,
        )


# --------------------------------------------------------------------------- sinks


def format_event(event: TextEvent, fmt: str = "text") -> str:
    """One line for *event*: its text, or its JSON (``fmt="jsonl"``; see docs/listen.md)."""
    if fmt == "jsonl":
        return json.dumps(event.to_dict(), ensure_ascii=False)
    return event.text


def line_sink(fmt: str = "text", out: TextIO | None = None) -> Emit:
    """One line per event on *out* (the current stdout if None), flushed each time."""

    def emit(event: TextEvent) -> None:
        _write_line(out or sys.stdout, format_event(event, fmt))

    return emit


def _write_line(out: TextIO, line: str) -> None:
    try:
        out.write(line + "\n")
        out.flush()
    except OSError as exc:
        name = "standard output" if out is sys.stdout else getattr(out, "name", "output")
        raise OutputError(f"Cannot write {name}: {exc.strerror or exc}.") from exc


def transcript_sink(transcript: Any) -> Emit:
    """Append each final to a `writers.AppendingTranscript` (synced to disk per line)."""

    def emit(event: TextEvent) -> None:
        extra = {"type": event.type, "id": event.id, "language": event.language}
        transcript.write(Segment(event.start, event.end, event.text), extra)

    return emit


class AudioRecorder:
    """The session's 16 kHz audio, as a 16-bit mono WAV file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self._wav = wave.open(str(self.path), "wb")  # noqa: SIM115
        except OSError as exc:
            raise OutputError(f"Cannot write {self.path}: {exc.strerror or exc}.") from exc
        self._wav.setnchannels(1)
        self._wav.setsampwidth(2)
        self._wav.setframerate(SAMPLE_RATE)

    def write(self, samples: np.ndarray) -> None:
        pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
        try:
            self._wav.writeframes(pcm.tobytes())
        except OSError as exc:
            raise OutputError(f"Cannot write {self.path}: {exc.strerror or exc}.") from exc

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._wav.close()


# --------------------------------------------------------------------------- session


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
