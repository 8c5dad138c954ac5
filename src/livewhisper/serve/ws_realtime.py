"""``/v1/realtime?intent=transcription``: OpenAI's Realtime transcription session
(docs/realtime.md), a route for `app.create_app`'s ``extra_routes``.

JSON events both ways (`realtime_events`). With server VAD every utterance of a live
stream from the app's factory is an item (`realtime_items.Utterances`): its partials
become ``...transcription.delta`` events, its final ``...transcription.completed``.
Without turn detection the audio is buffered and a commit decodes it as one final
job of the scheduler. A session is one of the app's audio connections
(`connection.AudioConnection`): its admission, limits, outbox and stop (the last
text, then 1001). PCM is decoded, resampled and fed off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from starlette.responses import Response
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket

from livewhisper.audio.pcm import SAMPLE_RATE, Resampler
from livewhisper.engine.contract import TranscribeOptions
from livewhisper.engine.scheduler import Job, JobResult, Scheduler
from livewhisper.errors import LivewhisperError
from livewhisper.live.contract import AudioStream
from livewhisper.serve import openai_errors as oe
from livewhisper.serve import realtime_events as ev
from livewhisper.serve.admission import token_given
from livewhisper.serve.app import live_state
from livewhisper.serve.close import CLOSE_INTERNAL, CLOSE_POLICY, ProtocolError, clip
from livewhisper.serve.connection import AudioConnection
from livewhisper.serve.hub import Hub
from livewhisper.serve.options import ServerOptions
from livewhisper.serve.realtime_events import Dialect, RealtimeError, SessionConfig
from livewhisper.serve.realtime_items import InputBuffer, Items, Utterances
from livewhisper.serve.streams import StreamBacklog, StreamFactory, StreamRequest
from livewhisper.serve.transport import Transport, WebSocketTransport
from livewhisper.transcript import TextEvent

log = logging.getLogger(__name__)

MAX_BUFFER_SECONDS = 600.0  # audio a manual session may hold uncommitted
DRAIN_SECONDS = 60.0  # how long a stream's queued finals are waited for
API_KEY_PROTOCOL = "openai-insecure-api-key."  # the subprotocol of OpenAI's browser clients


@dataclass
class _Live:
    """A live stream of the session (server VAD) and where it sits in the session."""

    utterances: Utterances
    cleared: bool = False  # its open utterance was cleared: its partials are dropped
    reported: bool = False  # its failure has been told to the client
    stream: AudioStream = field(init=False)


class RealtimeConnection(AudioConnection):
    """One client's transcription session. *scheduler* decodes its manual commits with
    *transcribe* (and the session's language and prompt); *model_name* is the model
    the session reports; *dialect*: GA ``session.*`` events or the beta ones."""

    def __init__(
        self,
        transport: Transport,
        options: ServerOptions,
        hub: Hub,
        make_stream: StreamFactory,
        backlog: StreamBacklog,
        *,
        scheduler: Scheduler,
        model_name: str,
        transcribe: TranscribeOptions,
        dialect: Dialect,
    ) -> None:
        super().__init__(transport, options, hub, make_stream, backlog)
        self.scheduler = scheduler
        self.model_name = model_name
        self.transcribe = transcribe
        self.dialect = dialect
        prefix = secrets.token_hex(4)
        self.id = f"sess_{prefix}"
        self.items = Items(prefix)
        self._event_ids = itertools.count()
        self.config = SessionConfig()
        self.resampler = Resampler(self.config.rate)
        self.carry = b""  # an odd byte, the first half of the next append's sample
        self.position = 0  # 16 kHz samples the session has taken
        self.live: _Live | None = None
        self.buffer = InputBuffer(MAX_BUFFER_SECONDS)  # manual mode: not yet committed
        self.key = f"realtime-{self.id}"  # the scheduler's name for manual commits
        self.commits = itertools.count()
        self.closed = False  # read on the scheduler's thread: emit no more
        self._drains: set[asyncio.Task[None]] = set()

    def send(self, message: dict[str, Any]) -> None:
        event_id = f"event_{self.id[5:]}{next(self._event_ids):05d}"
        super().send({"type": message["type"], "event_id": event_id, **message})

    def _session_event(self, what: Literal["created", "updated"], dialect: Dialect) -> None:
        self.send(ev.session_event(what, self.config, dialect, self.id, self.model_name))

    # The connection's life.

    async def run(self) -> None:
        self._session_event("created", self.dialect)
        await super().run()

    async def on_audio(self, data: bytes) -> None:
        self.send(ev.error_event(ev.binary_frame()))

    async def on_text(self, text: str) -> None:
        event_id = None
        try:
            message = ev.decode_event(text)
            event_id = message.get("event_id")
            kind = ev.event_type(message)
            if kind.endswith("update"):
                await self.update(message)
            elif kind == "input_audio_buffer.append":
                await self.append(message)
            elif kind == "input_audio_buffer.commit":
                await self.commit()
            else:
                await self.clear()
        except RealtimeError as exc:
            self.send(ev.error_event(exc, event_id))

    async def end_stream(self) -> None:
        """The connection ends. With the client still there (the server stops, a limit
        is reached), the open utterance and the commits waiting for the model are
        transcribed and sent first; then nothing more is decoded for it."""
        await self._offload.settle()  # an append or commit cut short by fail()
        if self.closing is not None:
            if self.live is not None:
                await self._finish(self.live)
            await asyncio.to_thread(self.scheduler.wait_idle, self.key, DRAIN_SECONDS)
            await asyncio.sleep(0)  # the results the commits queued on the loop
        self.closed = True
        await self._retire_all()

    # The client's events.

    async def update(self, message: dict[str, Any]) -> None:
        config, dialect = ev.parse_session(self.config, message)
        if config.language != self.config.language:
            try:
                self.scheduler.engine.check(ev.commit_options(self.transcribe, config))
            except LivewhisperError as exc:
                param = ev.language_param(dialect)
                raise RealtimeError(str(exc), code=oe.INVALID_VALUE, param=param) from None
        live, old = self.live, self.config
        if live is not None and (
            not config.vad or (config.language, config.prompt) != (old.language, old.prompt)
        ):
            await self._finish(live)  # its open utterance is transcribed and sent first
        if config.rate != old.rate:
            self.resampler = Resampler(config.rate)
            self.carry = b""
        self.config = config
        if config.vad and not old.vad and len(self.buffer):
            start = self.buffer.start
            await self._feed_live(self.buffer.take(), start)
        self._session_event("updated", dialect)

    async def append(self, message: dict[str, Any]) -> None:
        audio = ev.required(message, "audio", "string", "audio")
        samples, self.carry = await self._offload.run(
            ev.append_samples, self.resampler, self.carry, audio
        )
        if not len(samples):
            return
        at = self.position
        if self.config.vad:
            self.position += len(samples)
            await self._feed_live(samples, at)
            return
        self.buffer.add(samples, at)
        self.position += len(samples)

    async def commit(self) -> None:
        # What the resampler holds back belongs to the audio committed.
        resampler, self.resampler, self.carry = self.resampler, Resampler(self.config.rate), b""
        tail = await self._offload.run(resampler, np.zeros(0, np.float32), True)
        if self.config.vad:
            await self._commit_live(tail)
        else:
            await self._commit_buffer(tail)

    async def clear(self) -> None:
        self.buffer.clear()
        self.carry = b""
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

    async def _commit_buffer(self, tail: np.ndarray) -> None:
        self.buffer.add(tail, self.position, bounded=False)
        self.position += len(tail)
        start = self.buffer.start / SAMPLE_RATE
        audio = self.buffer.commit()
        item = self.items.new()
        self.send(self.items.commit(item))
        job = Job(
            stream=self.key,
            kind="final",
            utterance=next(self.commits),
            audio=audio,
            offset=start,
            options=ev.commit_options(self.transcribe, self.config),
            on_done=lambda result: self._threadsafe(self._committed_done, item, result),
            wanted=lambda: not self.closed,
        )
        await self._offload.run(self.scheduler.submit, job)  # waits while the queue is full

    def _committed_done(self, item: str, result: JobResult) -> None:  # on the loop
        if result.error is not None or result.transcription is None:
            log.error("session %s: transcribing %s failed: %s", self.id, item, result.error)
            self.send(ev.failed(item, clip(str(result.error))))
            return
        text = result.transcription.text.strip()
        if text:
            self.send(ev.delta(item, text))
        self.send(ev.completed(item, text, result.job.seconds))

    # Server VAD: the live stream.

    def _threadsafe(self, func: Callable[..., None], *args: Any) -> None:
        """Call *func* on the loop (from the scheduler's thread); nothing once the
        session has ended."""
        if self.closed:
            return
        with contextlib.suppress(RuntimeError):  # the loop has closed
            self.loop.call_soon_threadsafe(func, *args)

    def _open_live(self, at: int) -> _Live:
        """A stream for the session's audio from sample *at* on."""
        live = _Live(Utterances(self.items, base=at / SAMPLE_RATE))

        def emit(event: TextEvent) -> None:  # the scheduler's thread
            self._threadsafe(self._on_text_event, live, event)

        config = self.config
        request = StreamRequest(language=config.language, partials=True, prompt=config.prompt)
        try:
            live.stream = self.make_stream(request, emit)
        except LivewhisperError as exc:
            param = ev.language_param(self.dialect)
            raise RealtimeError(str(exc), code=oe.INVALID_VALUE, param=param) from None
        return live

    async def _feed_live(self, samples: np.ndarray, at: int) -> None:
        """Feed *samples*, the session's audio from sample *at* on, to the live stream."""
        if self.live is None:
            self.live = self._open_live(at)
        live = self.live
        await self._offload.run(live.stream.feed, samples)
        self._check(live)

    async def _commit_live(self, tail: np.ndarray) -> None:
        """A commit with server VAD: the utterance in progress ends now."""
        live = self.live
        if live is None:
            raise ev.commit_empty(0.0)
        await self._feed_live(tail, self.position)
        self.position += len(tail)
        if live.stream.status().state != "speech":
            raise ev.commit_empty(0.0)
        await self._finish(live)  # its utterance is the item committed

    def _on_text_event(self, live: _Live, event: TextEvent) -> None:  # on the loop
        if live.cleared and event.type == "partial":
            return
        for e in live.utterances.on_event(event):
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
        if error is None or live.reported:
            return
        live.reported = True
        log.error("session %s: the stream failed: %s", self.id, error)
        self.send(ev.error_event(ev.stream_failed(error)))
        self.fail(ProtocolError(CLOSE_INTERNAL, f"transcription failed: {error}"))

    async def _finish(self, live: _Live) -> None:
        """End *live*'s audio: its open utterance is transcribed, and every final sent."""
        self.live = None
        await self._offload.run(live.stream.finish, DRAIN_SECONDS)
        await asyncio.sleep(0)  # events that finish() queued with call_soon_threadsafe
        self._without_text(live)
        self._check(live)

    async def _drain(self, live: _Live) -> None:
        """Let a stream fed no more deliver the finals it has queued, then forget it."""
        key = live.stream.key
        await asyncio.to_thread(self.scheduler.wait_idle, key, DRAIN_SECONDS)
        self.scheduler.forget(key)

    async def _retire_all(self) -> None:
        """The session has ended: drop what is still to decode for it."""
        live, self.live = self.live, None
        if live is not None:
            self.scheduler.discard_partials(live.stream.key)
            self._drains.add(asyncio.ensure_future(self._drain(live)))
        await asyncio.to_thread(self.scheduler.wait_idle, self.key, DRAIN_SECONDS)
        self.scheduler.forget(self.key)
        if self._drains:
            await asyncio.wait(self._drains)


# ------------------------------------------------------------------ the route


def _authorized(token: str | None, ws: WebSocket) -> bool:
    """No token is needed, or the client gives it: as every route of the server takes
    it (`admission.token_given`), or as the subprotocol
    ``openai-insecure-api-key.<token>`` that OpenAI's browser clients send."""
    if token is None or token_given(token, ws):
        return True
    offered = [
        p[len(API_KEY_PROTOCOL) :]
        for p in ws.scope.get("subprotocols", [])
        if p.startswith(API_KEY_PROTOCOL)
    ]
    return any(hmac.compare_digest(p.encode(), token.encode()) for p in offered)


async def _refuse(ws: WebSocket, response: Response) -> None:
    """*response* before the upgrade where the server can answer with HTTP; else a close
    before accepting, which the server turns into 403."""
    if "websocket.http.response" in ws.scope.get("extensions", {}):
        await ws.send_denial_response(response)
    else:
        await ws.close(CLOSE_POLICY)


def realtime_routes(
    scheduler: Scheduler,
    *,
    model_name: str | None = None,
    transcribe: TranscribeOptions | None = None,
    path: str = "/v1/realtime",
) -> list[BaseRoute]:
    """The Realtime transcription route, for `app.create_app`'s ``extra_routes``.

    A session is one of the app's audio connections: the app's token (a client
    without it is refused with an OpenAI-shaped 401 before the upgrade), origin
    check, room (``max_clients``) and limits, its stream factory for server VAD, and
    its stop. Manual commits are decoded on *scheduler* with *transcribe* (the
    settings for one utterance by default) and the session's language and prompt.
    *model_name* is the transcription model the session reports (the engine's name
    by default).
    """
    options = transcribe or TranscribeOptions().for_utterance()
    model = model_name or scheduler.engine.name

    async def endpoint(ws: WebSocket) -> None:
        state = live_state(ws)
        if not _authorized(state.options.token, ws):
            await _refuse(ws, oe.invalid_api_key().response())
            return
        refused = state.refuse(ws, viewer=False, token=False)
        if refused is not None:
            await _refuse(ws, refused)
            return
        protocols = ws.scope.get("subprotocols", [])
        beta = "openai-beta.realtime-v1" in protocols or "realtime=v1" in ws.headers.get(
            "openai-beta", ""
        )
        await ws.accept(subprotocol="realtime" if "realtime" in protocols else None)
        connection = RealtimeConnection(
            WebSocketTransport(ws, state.options.send_timeout),
            state.options,
            state.hub,
            state.make_stream,
            state.backlog,
            scheduler=scheduler,
            model_name=model,
            transcribe=options,
            dialect="beta" if beta else "ga",
        )
        await state.run_audio(connection)

    return [WebSocketRoute(path, endpoint, name="realtime")]
