"""``/v1/realtime?intent=transcription``: OpenAI's Realtime transcription session
(docs/realtime.md), as a Starlette WebSocket route.

JSON events both ways. The client configures the session (``session.update``, or the
beta ``transcription_session.update``), sends base64 PCM16 with
``input_audio_buffer.append`` and, without turn detection, ends each item with
``input_audio_buffer.commit``. With server VAD, every utterance of our live stream is
an item: its partials become ``...transcription.delta`` events (the words they
commit) and its final ``...transcription.completed``. Without turn detection the
audio is buffered here and a commit decodes it as one final job of the scheduler.

Events of the scheduler's thread are handed to the event loop with
``call_soon_threadsafe`` and leave through one bounded outbox; PCM is converted,
resampled and fed in a worker thread, one message at a time.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import hmac
import itertools
import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from livewhisper.audio.pcm import SAMPLE_RATE, Resampler, from_pcm16
from livewhisper.engine.contract import TranscribeOptions
from livewhisper.engine.scheduler import Job, JobResult, Scheduler
from livewhisper.errors import LivewhisperError
from livewhisper.live.contract import AudioStream
from livewhisper.serve.close import CLOSE_INTERNAL, CLOSE_POLICY, clip
from livewhisper.serve.streams import StreamFactory, StreamRequest
from livewhisper.transcript import TextEvent

log = logging.getLogger(__name__)

OUTBOX_SIZE = 1024  # events waiting to be sent before the client counts as not reading
MIN_COMMIT_MS = 100  # OpenAI's least audio for a commit
MAX_BUFFER_SECONDS = 600.0  # audio a manual session may hold uncommitted
DRAIN_SECONDS = 60.0  # how long a retired stream's queued finals are waited for
RATES = range(8000, 48_001)

Dialect = Literal["ga", "beta"]  # session.* events, or the beta transcription_session.*
CLIENT_EVENTS = (
    "session.update",
    "transcription_session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
)


class RealtimeError(Exception):
    """A client event that cannot be done; becomes an ``error`` event, and the session
    goes on."""

    def __init__(
        self, message: str, *, code: str, param: str | None = None, kind: str = ""
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param
        self.type = kind or "invalid_request_error"


# ------------------------------------------------------------------ the session's settings


@dataclass(frozen=True)
class SessionConfig:
    """What a client may set: the PCM rate, turn detection, language and prompt."""

    rate: int = 24_000
    vad: bool = True  # server VAD; False: turn_detection null, the client commits
    language: str | None = None
    prompt: str | None = None


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    names = {float: "number", str: "string", list: "array", dict: "object"}
    return names.get(type(value), "null")


def _get(obj: dict[str, Any], key: str, kind: str, param: str) -> Any:
    """*obj*[*key*] if it is of JSON type *kind* (object, string, integer) or null;
    None when absent."""
    value = obj.get(key)
    if value is not None and _json_type(value) != kind:
        raise RealtimeError(
            f"Invalid type for '{param}': expected {_article(kind)}, "
            f"but got {_article(_json_type(value))} instead.",
            code="invalid_type",
            param=param,
        )
    return value


def _required(obj: dict[str, Any], key: str, kind: str, param: str) -> Any:
    """*obj*[*key*], which must be there, of JSON type *kind*."""
    value = _get(obj, key, kind, param)
    if value is None:
        raise RealtimeError(
            f"Missing required parameter: '{param}'.",
            code="missing_required_parameter",
            param=param,
        )
    return value


def _article(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def _invalid(value: object, param: str, supported: str) -> RealtimeError:
    return RealtimeError(
        f"Invalid value: {json.dumps(value)}. Supported values are: {supported}.",
        code="invalid_value",
        param=param,
    )


def _transcription(config: SessionConfig, t: dict[str, Any] | None, param: str) -> SessionConfig:
    if t is None:
        return config
    _get(t, "model", "string", f"{param}.model")  # any name: the server has one model
    language = _get(t, "language", "string", f"{param}.language")
    prompt = _get(t, "prompt", "string", f"{param}.prompt")
    if "language" in t:
        config = dataclasses.replace(config, language=language or None)
    if "prompt" in t:
        config = dataclasses.replace(config, prompt=prompt or None)
    return config


def _turn_detection(config: SessionConfig, session: dict[str, Any], param: str) -> SessionConfig:
    if "turn_detection" not in session:
        return config
    turn = _get(session, "turn_detection", "object", param)
    if turn is None:
        return dataclasses.replace(config, vad=False)
    kind = _get(turn, "type", "string", f"{param}.type") or "server_vad"
    if kind != "server_vad":
        raise _invalid(kind, f"{param}.type", "'server_vad' or turn_detection null")
    return dataclasses.replace(config, vad=True)


def parse_session(config: SessionConfig, message: dict[str, Any]) -> tuple[SessionConfig, Dialect]:
    """The settings after *message* (a ``session.update`` or ``transcription_session.update``),
    and the dialect to answer in; fields left out keep their value, and fields this
    server does not use (noise reduction, include, VAD thresholds) are ignored."""
    session = _required(message, "session", "object", "session")
    if message["type"] == "transcription_session.update":
        audio_format = _get(session, "input_audio_format", "string", "session.input_audio_format")
        if audio_format not in (None, "pcm16"):
            raise _invalid(audio_format, "session.input_audio_format", "'pcm16'")
        if audio_format is not None:
            config = dataclasses.replace(config, rate=24_000)
        param = "session.input_audio_transcription"
        config = _transcription(config, _get(session, param[8:], "object", param), param)
        return _turn_detection(config, session, "session.turn_detection"), "beta"
    kind = _required(session, "type", "string", "session.type")
    if kind != "transcription":
        raise _invalid(kind, "session.type", "'transcription' (this server only transcribes)")
    audio = _get(session, "audio", "object", "session.audio") or {}
    sound = _get(audio, "input", "object", "session.audio.input") or {}
    fmt = _get(sound, "format", "object", "session.audio.input.format")
    if fmt is not None:
        fmt_type = _get(fmt, "type", "string", "session.audio.input.format.type") or "audio/pcm"
        if fmt_type != "audio/pcm":
            raise _invalid(fmt_type, "session.audio.input.format.type", "'audio/pcm'")
        rate = _get(fmt, "rate", "integer", "session.audio.input.format.rate") or 24_000
        if rate not in RATES:
            raise _invalid(rate, "session.audio.input.format.rate", "24000, 16000 (8000 to 48000)")
        config = dataclasses.replace(config, rate=rate)
    t = _get(sound, "transcription", "object", "session.audio.input.transcription")
    config = _transcription(config, t, "session.audio.input.transcription")
    return _turn_detection(config, sound, "session.audio.input.turn_detection"), "ga"


def session_view(config: SessionConfig, dialect: Dialect, session_id: str, model: str) -> Any:
    """The session object of ``session.created`` / ``.updated`` (or their beta names)."""
    transcription = {"model": model, "language": config.language, "prompt": config.prompt or ""}
    turn = {"type": "server_vad"} if config.vad else None
    if dialect == "beta":
        return {
            "id": session_id,
            "object": "realtime.transcription_session",
            "input_audio_format": "pcm16",
            "input_audio_transcription": transcription,
            "turn_detection": turn,
            "input_audio_noise_reduction": None,
            "include": [],
            "modalities": ["text"],
        }
    fmt = {"type": "audio/pcm", "rate": config.rate}
    return {
        "id": session_id,
        "object": "realtime.transcription_session",
        "type": "transcription",
        "audio": {
            "input": {
                "format": fmt,
                "transcription": transcription,
                "noise_reduction": None,
                "turn_detection": turn,
            }
        },
        "include": [],
    }


# ------------------------------------------------------------------ items


def completed(item: str, transcript: str, seconds: float) -> dict[str, Any]:
    return {
        "type": "conversation.item.input_audio_transcription.completed",
        "item_id": item,
        "content_index": 0,
        "transcript": transcript,
        "usage": {"type": "duration", "seconds": round(seconds, 3)},
    }


def delta(item: str, text: str) -> dict[str, Any]:
    return {
        "type": "conversation.item.input_audio_transcription.delta",
        "item_id": item,
        "content_index": 0,
        "delta": text,
    }


class Items:
    """The session's item ids, and the last committed one (``previous_item_id``)."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._numbers = itertools.count()
        self.last: str | None = None

    def new(self) -> str:
        return f"item_{self._prefix}{next(self._numbers):04d}"

    def commit(self, item: str) -> dict[str, Any]:
        previous, self.last = self.last, item
        return {
            "type": "input_audio_buffer.committed",
            "item_id": item,
            "previous_item_id": previous,
        }


@dataclass
class _Open:
    item: str
    start: float
    end: float
    sent: str = ""  # what the deltas have said


@dataclass
class Utterances:
    """One live stream's utterances as items (pure: `TextEvent` in, events out).

    An utterance's first event starts its item (``speech_started``); each partial
    sends the words it newly commits as a delta (committed words stay, so the deltas
    only ever add); the final stops, commits and completes it with its whole text.
    Times are stream seconds, placed in the session by *base* seconds.
    """

    items: Items
    base: float = 0.0
    open: dict[int, _Open] = field(default_factory=dict)
    done: int = -1  # the newest utterance completed

    def _ms(self, t: float) -> int:
        return round((self.base + t) * 1000)

    def on_event(self, event: TextEvent) -> list[dict[str, Any]]:
        if event.id <= self.done and event.id not in self.open:
            return []  # a late partial of an utterance already completed
        out: list[dict[str, Any]] = []
        u = self.open.get(event.id)
        if u is None:
            u = self.open[event.id] = _Open(self.items.new(), event.start, event.end)
            out.append(
                {
                    "type": "input_audio_buffer.speech_started",
                    "item_id": u.item,
                    "audio_start_ms": self._ms(event.start),
                }
            )
        u.end = max(u.end, event.end)
        if event.type == "partial":
            if event.stable.startswith(u.sent) and len(event.stable) > len(u.sent):
                out.append(delta(u.item, event.stable[len(u.sent) :]))
                u.sent = event.stable
            return out
        return out + self._complete(event.id, event.text)

    def _complete(self, uid: int, text: str) -> list[dict[str, Any]]:
        u = self.open.pop(uid)
        self.done = max(self.done, uid)
        out = [
            {
                "type": "input_audio_buffer.speech_stopped",
                "item_id": u.item,
                "audio_end_ms": self._ms(u.end),
            },
            self.items.commit(u.item),
        ]
        if u.sent and text.startswith(u.sent) and len(text) > len(u.sent):
            out.append(delta(u.item, text[len(u.sent) :]))
        out.append(completed(u.item, text, u.end - u.start))
        return out

    def without_text(self, before: int | None = None) -> list[dict[str, Any]]:
        """Complete, with no transcript, the items of utterances (before *before*, or
        all) that ended without a final: the guards found no speech in them, or the
        segmenter dropped them."""
        ids = sorted(i for i in self.open if before is None or i < before)
        return [e for i in ids for e in self._complete(i, "")]


# ------------------------------------------------------------------ a connection


@dataclass
class _Live:
    """A live stream of the session (server VAD) and where it sits in the session."""

    utterances: Utterances
    cleared: bool = False  # its open utterance was cleared: its partials are dropped
    stream: AudioStream = field(init=False)


class _Closing(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class RealtimeConnection:
    """One client's transcription session."""

    def __init__(
        self,
        ws: WebSocket,
        make_stream: StreamFactory,
        scheduler: Scheduler,
        *,
        model_name: str,
        transcribe: TranscribeOptions,
        dialect: Dialect,
    ) -> None:
        self.ws = ws
        self.make_stream = make_stream
        self.scheduler = scheduler
        self.model_name = model_name
        self.transcribe = transcribe
        self.dialect = dialect
        self.loop = asyncio.get_running_loop()
        self.outbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=OUTBOX_SIZE)
        prefix = secrets.token_hex(4)
        self.id = f"sess_{prefix}"
        self.items = Items(prefix)
        self._event_ids = itertools.count()
        self.config = SessionConfig()
        self.resampler = Resampler(self.config.rate)
        self.carry = b""  # an odd byte, the first half of the next append's sample
        self.position = 0  # 16 kHz samples the session has taken
        self.live: _Live | None = None
        self.buffer: list[np.ndarray] = []  # manual mode: audio not yet committed
        self.buffered = 0
        self.buffer_start = 0
        self.key = f"realtime-{self.id}"  # the scheduler's name for manual commits
        self.commits = itertools.count()
        self.closing: _Closing | None = None
        self.closed = False  # read on the scheduler's thread: emit no more
        self._receiver: asyncio.Task[None] | None = None
        self._drains: set[asyncio.Task[None]] = set()

    # Sending.

    def send(self, event: dict[str, Any]) -> None:
        if self.closing is not None:
            return
        if self.outbox.full():
            self.fail(_Closing(CLOSE_POLICY, "the client does not read its events"))
            return
        self.outbox.put_nowait({"type": event["type"], "event_id": self._event_id(), **event})

    def _event_id(self) -> str:
        return f"event_{self.id[5:]}{next(self._event_ids):05d}"

    def send_error(self, error: RealtimeError, event_id: object = None) -> None:
        body = {
            "type": error.type,
            "code": error.code,
            "message": error.message,
            "param": error.param,
            "event_id": event_id if isinstance(event_id, str) else None,
        }
        self.send({"type": "error", "error": body})

    def fail(self, closing: _Closing) -> None:
        if self.closing is None:
            self.closing = closing
            if self._receiver is not None:
                self._receiver.cancel()

    async def _send_loop(self) -> None:
        while (event := await self.outbox.get()) is not None:
            await self.ws.send_text(json.dumps(event, ensure_ascii=False))

    # The connection's life.

    async def run(self) -> None:
        created = "transcription_session.created" if self.dialect == "beta" else "session.created"
        self.send({"type": created, "session": self._view(self.dialect)})
        sender = asyncio.create_task(self._send_loop())
        self._receiver = asyncio.create_task(self._receive_loop())
        try:
            await self._receiver
        except asyncio.CancelledError:
            if self.closing is None or not self._receiver.cancelled():
                raise  # cancelled from outside, not by fail()
        finally:
            self.closed = True
            await self._retire_all()
            await self.outbox.put(None)
            with contextlib.suppress(WebSocketDisconnect, OSError, asyncio.CancelledError):
                await sender
        if self.closing is not None:
            with contextlib.suppress(RuntimeError, OSError):
                await self.ws.close(self.closing.code, self.closing.reason)

    async def _receive_loop(self) -> None:
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                self.send_error(
                    RealtimeError(
                        "Binary frames are not part of this protocol: send audio as "
                        "input_audio_buffer.append events with base64 PCM16.",
                        code="invalid_value",
                    )
                )
                continue
            await self.on_text(text)

    async def on_text(self, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError as exc:
            self.send_error(
                RealtimeError(f"The event is not valid JSON: {exc}.", code="invalid_json")
            )
            return
        event_id = message.get("event_id") if isinstance(message, dict) else None
        try:
            if not isinstance(message, dict):
                raise RealtimeError("The event must be a JSON object.", code="invalid_type")
            kind = _required(message, "type", "string", "type")
            if kind not in CLIENT_EVENTS:
                raise _invalid(kind, "type", ", ".join(f"'{k}'" for k in CLIENT_EVENTS))
            if kind.endswith("update"):
                await self.update(message)
            elif kind == "input_audio_buffer.append":
                await self.append(message)
            elif kind == "input_audio_buffer.commit":
                await self.commit()
            else:
                await self.clear()
        except RealtimeError as exc:
            self.send_error(exc, event_id)

    # The client's events.

    async def update(self, message: dict[str, Any]) -> None:
        config, dialect = parse_session(self.config, message)
        if config.language != self.config.language:
            try:
                self.scheduler.engine.check(self._options(config))
            except LivewhisperError as exc:
                raise RealtimeError(
                    str(exc), code="invalid_value", param=_language_param(dialect)
                ) from None
        live = self.live
        if live is not None and (not config.vad or config.language != self.config.language):
            await self._finish(live)  # its open utterance is transcribed and sent first
        if config.rate != self.config.rate:
            self.resampler = Resampler(config.rate)
            self.carry = b""
        was_vad = self.config.vad
        self.config = config
        if config.vad and not was_vad and self.buffered:
            pending, self.buffer, self.buffered = self.buffer, [], 0
            await self._feed_live(np.concatenate(pending), self.buffer_start)
        updated = "transcription_session.updated" if dialect == "beta" else "session.updated"
        self.send({"type": updated, "session": self._view(dialect)})

    async def append(self, message: dict[str, Any]) -> None:
        audio = _required(message, "audio", "string", "audio")
        try:
            samples, self.carry = await asyncio.to_thread(
                _samples, self.resampler, self.carry, audio
            )
        except binascii.Error:
            raise RealtimeError(
                "Invalid 'audio': expected base64-encoded PCM16 bytes.",
                code="invalid_value",
                param="audio",
            ) from None
        if not len(samples):
            return
        at = self.position
        if self.config.vad:
            self.position += len(samples)
            await self._feed_live(samples, at)
            return
        if (self.buffered + len(samples)) / SAMPLE_RATE > MAX_BUFFER_SECONDS:
            raise RealtimeError(
                f"The input audio buffer is full ({MAX_BUFFER_SECONDS:.0f} s): "
                "commit or clear it before appending more.",
                code="input_audio_buffer_full",
                param="audio",
            )
        if not self.buffered:
            self.buffer_start = at
        self.buffer.append(samples)
        self.buffered += len(samples)
        self.position += len(samples)

    async def commit(self) -> None:
        # What the resampler holds back belongs to the audio committed.
        resampler, self.resampler, self.carry = self.resampler, Resampler(self.config.rate), b""
        tail = await asyncio.to_thread(resampler, np.zeros(0, np.float32), True)
        if self.config.vad:
            live = self.live
            if live is None:
                raise _commit_empty(0.0)
            await self._feed_live(tail, self.position)
            self.position += len(tail)
            if live.stream.status().state != "speech":
                raise _commit_empty(0.0)
            await self._finish(live)  # ends the utterance now: it is the item committed
            return
        if not self.buffered:
            self.buffer_start = self.position
        self.position += len(tail)
        self.buffer.append(tail)
        self.buffered += len(tail)
        ms = self.buffered / SAMPLE_RATE * 1000
        if ms < MIN_COMMIT_MS:
            raise _commit_empty(ms)
        audio = np.concatenate(self.buffer)
        start = self.buffer_start / SAMPLE_RATE
        self.buffer, self.buffered = [], 0
        item = self.items.new()
        self.send(self.items.commit(item))
        job = Job(
            stream=self.key,
            kind="final",
            utterance=next(self.commits),
            audio=audio,
            offset=start,
            options=self._options(self.config),
            on_done=lambda result: self._threadsafe(self._committed_done, item, result),
            wanted=lambda: not self.closed,
        )
        await asyncio.to_thread(self.scheduler.submit, job)  # waits while the queue is full

    async def clear(self) -> None:
        self.buffer, self.buffered, self.carry = [], 0, b""
        self.resampler = Resampler(self.config.rate)
        live = self.live
        if live is not None and live.stream.status().state == "speech":
            # The open utterance is dropped untranscribed: its stream is fed no more,
            # and the utterances that ended before are still transcribed.
            live.cleared = True
            self.live = None
            self.scheduler.discard_partials(live.stream.key)
            task = asyncio.create_task(self._drain(live))
            self._drains.add(task)
            task.add_done_callback(self._drains.discard)
        self.send({"type": "input_audio_buffer.cleared"})

    # Manual commits.

    def _options(self, config: SessionConfig) -> TranscribeOptions:
        return dataclasses.replace(
            self.transcribe,
            language=config.language or self.transcribe.language,
            initial_prompt=config.prompt or self.transcribe.initial_prompt,
            vad_filter=True,  # the client's buffer is not cut out of silence as utterances are
        )

    def _committed_done(self, item: str, result: JobResult) -> None:  # on the loop
        if result.error is not None or result.transcription is None:
            log.error("session %s: transcribing %s failed: %s", self.id, item, result.error)
            error = {"type": "server_error", "code": None, "message": clip(str(result.error))}
            self.send(
                {
                    "type": "conversation.item.input_audio_transcription.failed",
                    "item_id": item,
                    "content_index": 0,
                    "error": error,
                }
            )
            return
        text = result.transcription.text.strip()
        if text:
            self.send(delta(item, text))
        self.send(completed(item, text, result.job.seconds))

    # Server VAD: the live stream.

    def _threadsafe(self, func: Callable[..., None], *args: Any) -> None:
        """Call *func* on the loop (from the scheduler's thread); nothing once the client
        has gone."""
        if self.closed:
            return
        with contextlib.suppress(RuntimeError):  # the loop has closed
            self.loop.call_soon_threadsafe(func, *args)

    def _open_live(self, at: int) -> _Live:
        """A stream for the session's audio from sample *at* on."""
        live = _Live(Utterances(self.items, base=at / SAMPLE_RATE))

        def emit(event: TextEvent) -> None:  # the scheduler's thread
            self._threadsafe(self._on_text_event, live, event)

        request = StreamRequest(language=self.config.language, partials=True)
        try:
            live.stream = self.make_stream(request, emit)
        except LivewhisperError as exc:
            raise RealtimeError(
                str(exc), code="invalid_value", param=_language_param(self.dialect)
            ) from None
        return live

    async def _feed_live(self, samples: np.ndarray, at: int) -> None:
        """Feed *samples*, the session's audio from sample *at* on, to the live stream."""
        if self.live is None:
            self.live = self._open_live(at)
        live = self.live
        await asyncio.to_thread(live.stream.feed, samples)
        self._check(live)

    def _on_text_event(self, live: _Live, event: TextEvent) -> None:  # on the loop
        if live.cleared and event.type == "partial":
            return
        events = live.utterances.on_event(event)
        for e in events:
            self.send(e)
        older = [i for i in live.utterances.open if i < event.id]
        if older and not self.scheduler.backlog(live.stream.key).finals:
            # No final of this stream is waiting, and those already sent are queued on
            # the loop before this call: the older items will get none.
            self.loop.call_soon(self._without_text, live, event.id)

    def _without_text(self, live: _Live, before: int | None = None) -> None:
        for e in live.utterances.without_text(before):
            self.send(e)

    def _check(self, live: _Live) -> None:
        error = live.stream.error
        if error is not None:
            log.error("session %s: the stream failed: %s", self.id, error)
            self.send_error(
                RealtimeError(
                    clip(f"Transcription failed: {error}"), code="server_error", kind="server_error"
                )
            )
            self.fail(_Closing(CLOSE_INTERNAL, clip(f"transcription failed: {error}")))

    async def _finish(self, live: _Live) -> None:
        """End *live*'s audio: its open utterance is transcribed, and every final sent."""
        self.live = None
        await asyncio.to_thread(live.stream.finish, DRAIN_SECONDS)
        await asyncio.sleep(0)  # events that finish() queued with call_soon_threadsafe
        self._without_text(live)
        self._check(live)

    async def _drain(self, live: _Live) -> None:
        """Let a stream fed no more deliver the finals it has queued, then forget it."""
        key = live.stream.key
        await asyncio.to_thread(self.scheduler.wait_idle, key, DRAIN_SECONDS)
        self.scheduler.forget(key)

    async def _retire_all(self) -> None:
        """The client has gone: drop what is still to decode for it."""
        live, self.live = self.live, None
        if live is not None:
            self.scheduler.discard_partials(live.stream.key)
            self._drains.add(asyncio.ensure_future(self._drain(live)))
        await asyncio.to_thread(self.scheduler.wait_idle, self.key, DRAIN_SECONDS)
        self.scheduler.forget(self.key)
        if self._drains:
            await asyncio.wait(self._drains)

    def _view(self, dialect: Dialect) -> Any:
        return session_view(self.config, dialect, self.id, self.model_name)


def _samples(resampler: Resampler, carry: bytes, audio: str) -> tuple[np.ndarray, bytes]:
    """Base64 PCM16 after *carry* (the odd byte of the last append) as 16 kHz samples,
    and the odd byte of this one."""
    data = carry + base64.b64decode(audio, validate=True)
    cut = len(data) - len(data) % 2
    if not cut:
        return np.zeros(0, np.float32), data
    return resampler(from_pcm16(data[:cut])), data[cut:]


def _commit_empty(ms: float) -> RealtimeError:
    return RealtimeError(
        "Error committing input audio buffer: buffer too small. Expected at least "
        f"{MIN_COMMIT_MS}ms of audio, but buffer only has {ms:.2f}ms of audio.",
        code="input_audio_buffer_commit_empty",
    )


def _language_param(dialect: Dialect) -> str:
    if dialect == "beta":
        return "session.input_audio_transcription.language"
    return "session.audio.input.transcription.language"


# ------------------------------------------------------------------ the route


def _offered_token(ws: WebSocket) -> str:
    """The token a client gives: ``Authorization: Bearer``, ``?token=``, or the
    ``openai-insecure-api-key.<token>`` subprotocol OpenAI's browser client sends."""
    auth = ws.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    given = ws.query_params.get("token")
    if given:
        return given
    for protocol in ws.scope.get("subprotocols", []):
        if protocol.startswith("openai-insecure-api-key."):
            return str(protocol.split(".", 1)[1])
    return ""


def _unauthorized() -> Response:
    body = {
        "error": {
            "message": "A valid token is required: send it as 'Authorization: Bearer <token>'.",
            "type": "invalid_request_error",
            "code": "invalid_api_key",
            "param": None,
        }
    }
    return JSONResponse(body, status_code=401, headers={"WWW-Authenticate": "Bearer"})


async def _refuse(ws: WebSocket, response: Response) -> None:
    """*response* before the upgrade where the server can answer with HTTP; else a close
    before accepting, which the server turns into 403."""
    if "websocket.http.response" in ws.scope.get("extensions", {}):
        await ws.send_denial_response(response)
    else:
        await ws.close(CLOSE_POLICY)


def realtime_routes(
    make_stream: StreamFactory,
    scheduler: Scheduler,
    *,
    token: str | None,
    model_name: str,
    transcribe: TranscribeOptions | None = None,
    admit: Callable[[WebSocket], Response | None] | None = None,
    path: str = "/v1/realtime",
) -> list[BaseRoute]:
    """The Realtime transcription route: server VAD sessions run streams of
    *make_stream*; manual commits are decoded on *scheduler* with *transcribe* (the
    settings for one utterance by default) and the session's language and prompt.
    With a *token*, a client without it is refused with 401 before the upgrade; then
    *admit*, if given, may refuse it with the answer it returns (a server's origin
    and capacity checks). *model_name* is the transcription model the session reports."""
    options = transcribe or TranscribeOptions().for_utterance()

    async def endpoint(ws: WebSocket) -> None:
        if token is not None and not hmac.compare_digest(
            _offered_token(ws).encode(), token.encode()
        ):
            await _refuse(ws, _unauthorized())
            return
        refused = admit(ws) if admit is not None else None
        if refused is not None:
            await _refuse(ws, refused)
            return
        protocols = ws.scope.get("subprotocols", [])
        beta = "openai-beta.realtime-v1" in protocols or "realtime=v1" in ws.headers.get(
            "openai-beta", ""
        )
        await ws.accept(subprotocol="realtime" if "realtime" in protocols else None)
        connection = RealtimeConnection(
            ws,
            make_stream,
            scheduler,
            model_name=model_name,
            transcribe=options,
            dialect="beta" if beta else "ga",
        )
        await connection.run()

    return [WebSocketRoute(path, endpoint, name="realtime")]
