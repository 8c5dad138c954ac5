"""What every audio protocol shares: one client sending audio over a WebSocket.

`AudioConnection` runs the connection's life (a receiver, a sender with a bounded
outbox, a watch on the model's backlog), its limits (idle timeout, session length,
a client that does not read, a session that stays behind), its session in the hub
and the stream it feeds (`intake.AudioIntake`), over a `transport.Transport`, so it
does not care which server runs it. A protocol is a subclass that says what text
messages mean, whether the client is told it is busy, and which events it is sent:
`ws_audio` (``/ws``) and `ws_whisper` (``/ws/whisper/``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from livewhisper.audio.pcm import SAMPLE_RATE
from livewhisper.errors import LivewhisperError
from livewhisper.live.contract import Emit
from livewhisper.serve.close import (
    CLOSE_INVALID,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_TOO_BIG,
    CLOSE_TRY_AGAIN,
    CLOSE_UNSUPPORTED,
    ProtocolError,
)
from livewhisper.serve.hub import Hub, HubSession, shift_event
from livewhisper.serve.intake import AudioIntake, Offload, check_stream
from livewhisper.serve.options import ServerOptions
from livewhisper.serve.streams import StreamBacklog, StreamFactory, StreamRequest
from livewhisper.serve.transport import NOT_READING, Disconnected, Transport
from livewhisper.transcript import TextEvent

OUTBOX_SIZE = 1024  # messages waiting to be sent before the client counts as not reading


class AudioConnection:
    """One client sending audio: its session, its stream and its outgoing messages.

    A stream's ``feed`` may wait when the model is far behind (the scheduler bounds
    each stream's queue), so feeding never runs on the event loop (see `intake`).
    Events come from the scheduler's thread and are moved onto the loop.
    """

    #: The stream a client gets before (or without) asking for one.
    default_request = StreamRequest()

    def __init__(
        self,
        transport: Transport,
        options: ServerOptions,
        hub: Hub,
        make_stream: StreamFactory,
        backlog: StreamBacklog,
    ) -> None:
        self.transport = transport
        self.options = options
        self.hub = hub
        self.make_stream = make_stream
        self.backlog = backlog
        self.loop = asyncio.get_running_loop()
        self.outbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=OUTBOX_SIZE)
        self.session: HubSession | None = None
        self.intake: AudioIntake | None = None  # the stream being fed, and its audio
        self.request = self.default_request
        self.rate = SAMPLE_RATE
        self.id_base = 0
        self.offset = 0.0
        self.closing: ProtocolError | None = None
        self.busy = False
        self.started = time.monotonic()
        self._offload = Offload()
        self._ending = asyncio.Lock()
        self._receiver: asyncio.Task[None] | None = None

    # What a protocol decides.

    async def on_text(self, text: str) -> None:
        """A text message from the client."""
        raise ProtocolError(CLOSE_UNSUPPORTED, "this path takes binary audio only")

    def tell_busy(self, busy: bool, seconds: float) -> None:
        """The session's utterances started or stopped queueing up behind the model."""

    def delivers(self, event: TextEvent) -> bool:
        """Whether the client is sent *event* (caption viewers get every event)."""
        return True

    # The connection's life.

    async def run(self) -> None:
        sender = asyncio.create_task(self._send_loop())
        monitor = asyncio.create_task(self._watch_backlog())
        self._receiver = asyncio.create_task(self._receive_loop())
        try:
            await self._receiver
        except ProtocolError as exc:
            self.closing = self.closing or exc
        except Disconnected:
            pass
        except asyncio.CancelledError:
            if self.closing is None or not self._receiver.cancelled():
                raise  # cancelled from outside, not by fail()
        finally:
            monitor.cancel()
            try:
                await self.end_stream()
            except ProtocolError as exc:
                self.closing = self.closing or exc
            self.detach()
            if self.outbox.full():
                sender.cancel()  # the client does not read: what it was not sent is dropped
            else:
                self.outbox.put_nowait(None)  # the sender sends what is queued, then ends
            with contextlib.suppress(Disconnected, asyncio.CancelledError):
                await sender
        if self.closing is not None:
            await self.transport.close(self.closing.code, self.closing.reason)

    async def _receive_loop(self) -> None:
        opts = self.options
        while True:
            left = opts.max_session_seconds - (time.monotonic() - self.started)
            if left <= 0:
                raise ProtocolError(
                    CLOSE_POLICY, f"session length limit ({opts.max_session_seconds:.0f} s) reached"
                )
            try:
                message = await asyncio.wait_for(
                    self.transport.receive(), min(left, opts.idle_timeout)
                )
            except asyncio.TimeoutError:
                if time.monotonic() - self.started >= opts.max_session_seconds:
                    continue  # reported at the top of the loop
                raise ProtocolError(
                    CLOSE_POLICY, f"no message for {opts.idle_timeout:.0f} s (idle timeout)"
                ) from None
            if self.closing is not None:
                raise self.closing
            if len(message) > opts.max_message_bytes:  # where the ASGI server does not bound it
                raise ProtocolError(CLOSE_TOO_BIG, "message too big")
            if isinstance(message, str):
                await self.on_text(message)
            else:
                await self.on_audio(message)

    async def _send_loop(self) -> None:
        while True:
            message = await self.outbox.get()
            if message is None:
                return
            try:
                await self.transport.send(json.dumps(message, ensure_ascii=False))
            except Disconnected as exc:
                if exc.reason == NOT_READING:  # the rest of the connection ends too
                    self.fail(ProtocolError(CLOSE_POLICY, NOT_READING))
                raise

    def send(self, message: dict[str, Any]) -> None:
        if self.outbox.full():
            self.fail(ProtocolError(CLOSE_POLICY, NOT_READING))
            return
        self.outbox.put_nowait(message)

    def fail(self, error: ProtocolError) -> None:
        """End the connection from a callback: the receive loop stops, the open utterance
        is transcribed and sent, then the connection closes with *error*."""
        if self.closing is None:
            self.closing = error
            if self._receiver is not None:
                self._receiver.cancel()

    async def _watch_backlog(self) -> None:
        """Note when the session's utterances queue up behind the model ("busy").

        One utterance being transcribed is normal; a second one waiting behind it
        means the text falls behind the speech. Behind for too long closes with 1013.
        """
        limit = self.options.busy_utterances
        max_wait = self.options.max_wait_seconds
        behind_since: float | None = None
        while True:
            await asyncio.sleep(0.25)
            intake = self.intake
            waiting, seconds = self.backlog(intake.stream) if intake is not None else (0, 0.0)
            now = time.monotonic()
            behind_since = (behind_since or now) if waiting else None
            busy = waiting > limit
            if busy != self.busy:
                self.busy = busy
                self.tell_busy(busy, seconds)
            if behind_since is not None and now - behind_since > max_wait:
                self.fail(
                    ProtocolError(
                        CLOSE_TRY_AGAIN,
                        f"server busy: the text has been late for {max_wait:.0f} s; "
                        "try again later",
                    )
                )
                return

    # The session.

    @property
    def session_id(self) -> str | None:
        return self.session.id if self.session else None

    async def join(self, resume: str | None) -> bool:
        """Take the session *resume* names, if the hub has it (its connection hands it
        over), else a new one; keep this connection's own. True if resumed."""
        if self.session is not None and not (resume and resume != self.session.id):
            return False
        self.detach()
        session = self.hub.get(resume) if resume else None
        resumed = session is not None
        if session is not None and session.owner is not None:
            await session.owner.hand_over()
        if session is None:
            session = self.hub.create()
        session.owner = self
        self.session = session
        return resumed

    async def hand_over(self) -> None:
        """Another connection resumed this one's session: finish here and step aside."""
        await self.end_stream()
        self.detach()
        self.fail(ProtocolError(CLOSE_NORMAL, "session resumed by another connection"))

    def detach(self) -> None:
        if self.session is not None and self.session.owner is self:
            self.session.owner = None
            self.session.last_active = time.monotonic()
        self.session = None

    # The stream.

    async def on_audio(self, data: bytes) -> None:
        if self.session is None:  # audio first: a simple client, defaults for everything
            self.session = self.hub.create()
            self.session.owner = self
        if self.intake is None:
            self.open_stream()
        assert self.intake is not None
        await self.intake.write(data)

    def open_stream(self) -> None:
        session = self.session
        assert session is not None and self.intake is None
        self.id_base = session.next_id
        self.offset = session.audio_seconds
        try:
            stream = self.make_stream(self.request, self._event_callback(session))
        except LivewhisperError as exc:
            raise ProtocolError(CLOSE_INVALID, str(exc)) from None
        self.intake = AudioIntake(
            stream,
            self.rate,
            self._offload,
            fail=self.fail,
            max_pending=4 * self.options.max_message_bytes,
            session_id=session.id,
        )

    async def end_stream(self) -> None:
        """Flush the open utterance: its final is delivered before this returns."""
        async with self._ending:
            await self._offload.settle()  # a feed cut short by fail()
            intake = self.intake
            if intake is None:
                return
            await intake.close()
            self.intake = None
            await self._offload.run(intake.stream.finish)
            await asyncio.sleep(0)  # events that finish() queued with call_soon_threadsafe
            if self.session is not None:
                self.session.audio_seconds = self.offset + intake.fed / SAMPLE_RATE
            check_stream(intake.stream, self.session_id)

    def _event_callback(self, session: HubSession) -> Emit:
        loop = self.loop
        id_base, offset = self.id_base, self.offset  # where this stream sits in the session

        def on_event(event: TextEvent) -> None:  # scheduler thread
            placed = shift_event(event, id_base, offset)
            loop.call_soon_threadsafe(self._on_event, session, placed)

        return on_event

    def _on_event(self, session: HubSession, event: TextEvent) -> None:
        if event.type == "partial" and not self.request.partials:
            return
        session.next_id = max(session.next_id, event.id + 1)
        message = event.to_dict()
        self.hub.publish(session, message)
        if session.owner is self and self.delivers(event):
            self.send(message)
