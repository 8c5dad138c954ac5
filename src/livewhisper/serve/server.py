"""`--serve`: a websockets server that is its own web server.

One port carries the page (``/``), the caption view (``/captions``), their static
files, and three WebSocket paths:

* ``/ws``: the page's protocol. JSON control messages (``start``, ``stop``), binary
  audio (16-bit little-endian mono PCM at the announced rate, or a WebM/Ogg/WAV
  stream), and the transcript's JSON events back (the same as ``--format jsonl``).
* ``/ws/whisper/``: for simple clients that send ``MediaRecorder`` chunks or raw
  16 kHz PCM and read ``JSON.parse(event.data).text``: only final events are sent.
* ``/ws/captions``: a read-only feed of one session's events for the caption view.

Each audio connection runs one stream (``LiveStream``) over the one shared scheduler
that owns the model. Streams call back from the scheduler's thread; the callbacks are
moved onto the event loop with ``loop.call_soon_threadsafe``. A session (its
transcript) outlives its connection for a while, so a page that reconnects resumes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import importlib.resources
import ipaddress
import json
import logging
import secrets
import ssl
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import parse_qs, urlsplit

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from livewhisper.audio.containers import ContainerError, ContainerKind, StreamDecoder, sniff
from livewhisper.errors import LivewhisperError
from livewhisper.transcript import TextEvent, Word

if TYPE_CHECKING:
    from livewhisper.engine.scheduler import Scheduler
    from livewhisper.live.stream import StreamOptions

T = TypeVar("T")

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000

AUDIO_PATH = "/ws"
COMPAT_PATHS = ("/ws/whisper/", "/ws/whisper")
CAPTIONS_PATH = "/ws/captions"
LOCAL_SESSION = "local"

# Close codes (RFC 6455, section 7.4.1).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_UNSUPPORTED = 1003  # text where audio is expected
CLOSE_INVALID = 1007  # bad JSON, a bad control message, odd PCM byte counts, undecodable audio
CLOSE_POLICY = 1008  # idle, session too long, a client that does not read
CLOSE_INTERNAL = 1011
CLOSE_TRY_AGAIN = 1013  # the server is full

_PAGES = {"/": "index.html", "/index.html": "index.html", "/captions": "captions.html"}
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}


@dataclass(frozen=True)
class ServerOptions:
    """Where to listen, who may connect, and the limits of each connection."""

    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None  # required on every WebSocket connection when set
    allow_origins: tuple[str, ...] = ()  # besides the page's own origin; "*" allows any
    certfile: str | None = None
    keyfile: str | None = None
    max_clients: int = 8  # audio connections at once
    max_viewers: int = 32  # caption connections at once
    max_message_bytes: int = 1 << 20
    max_session_seconds: float = 4 * 3600.0
    idle_timeout: float = 60.0  # seconds without a message from an audio client
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0
    resume_seconds: float = 300.0  # how long a disconnected session can be resumed
    busy_utterances: int = 1  # utterances of a session waiting for the model before "busy"
    #: A session whose utterances have waited for the model without a break for this
    #: long is closed with 1013 (try again later): the delay stays bounded.
    max_wait_seconds: float = 30.0
    #: New audio clients get HTTP 503 while more utterances than this per session
    #: wait for the model (the model does not keep up now).
    max_waiting_per_session: float = 2.0

    @property
    def tls(self) -> bool:
        return self.certfile is not None

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)


@dataclass(frozen=True)
class StreamRequest:
    """What a client asked for when it started a stream."""

    language: str | None = None
    partials: bool = True


class AudioStream(Protocol):
    """One live stream: 16 kHz float32 samples in, `TextEvent`s out through its callback."""

    def feed(self, samples: np.ndarray) -> None: ...

    def finish(self) -> object: ...


#: Makes a stream for a connection; the callback may be called from any thread.
StreamFactory = Callable[[StreamRequest, Callable[[TextEvent], None]], AudioStream]


class ProtocolError(Exception):
    """A client broke the protocol; carries the close code and a reason for the client."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- sessions --------------------------------------------------------------------------


@dataclass
class Session:
    """A transcript that outlives the connection that feeds it, so it can be resumed."""

    id: str
    finals: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=2000))
    next_id: int = 0
    audio_seconds: float = 0.0  # stream time of the next stream's first sample
    owner: AudioConnection | None = None
    viewers: set[asyncio.Queue[dict[str, Any]]] = field(default_factory=set)
    last_active: float = field(default_factory=time.monotonic)


class Hub:
    """The sessions of one server, and the caption viewers following them."""

    def __init__(self, resume_seconds: float, max_sessions: int = 256) -> None:
        self.sessions: dict[str, Session] = {}
        self.followers: set[asyncio.Queue[dict[str, Any]]] = set()  # viewers of "auto"
        self.resume_seconds = resume_seconds
        self.max_sessions = max_sessions

    def create(self, session_id: str | None = None) -> Session:
        self.expire()
        sid = session_id or secrets.token_urlsafe(12)
        session = Session(sid)
        self.sessions[sid] = session
        return session

    def get(self, session_id: str) -> Session | None:
        self.expire()
        return self.sessions.get(session_id)

    def expire(self) -> None:
        now = time.monotonic()
        idle = [
            s
            for s in self.sessions.values()
            if s.owner is None and not s.viewers and s.id != LOCAL_SESSION
        ]
        idle.sort(key=lambda s: s.last_active)
        surplus = len(self.sessions) - self.max_sessions
        for i, s in enumerate(idle):
            if i < surplus or now - s.last_active > self.resume_seconds:
                del self.sessions[s.id]

    def publish(self, session: Session, message: dict[str, Any]) -> None:
        """Record a final and pass a text event on to the session's viewers."""
        session.last_active = time.monotonic()
        if message["type"] == "final":
            session.finals.append(message)
        tagged = {**message, "session": session.id}
        targets = set(session.viewers)
        if session.id == LOCAL_SESSION or LOCAL_SESSION not in self.sessions:
            targets |= self.followers
        for queue in targets:
            _offer(queue, tagged)


def _offer(queue: asyncio.Queue[dict[str, Any]], message: dict[str, Any]) -> None:
    """Queue a message for a viewer; a viewer too slow to keep up loses old partials."""
    if queue.full():
        return  # the viewer's sender closes it; see Viewer.run
    queue.put_nowait(message)


def shift_event(event: TextEvent, id_base: int, offset: float) -> TextEvent:
    """An event of one stream placed in its session: ids and times continue the session's."""
    if not id_base and not offset:
        return event
    return dataclasses.replace(
        event,
        id=event.id + id_base,
        start=event.start + offset,
        end=event.end + offset,
        words=tuple(
            Word(w.start + offset, w.end + offset, w.word, w.probability) for w in event.words
        ),
    )


# --- audio connections -----------------------------------------------------------------


class AudioConnection:
    """One client sending audio: its stream, its decoder and its outgoing messages.

    ``LiveStream.feed`` may wait when the model is far behind (the scheduler bounds
    each stream's queue), so it never runs on the event loop: PCM is fed through
    ``asyncio.to_thread`` one message at a time (the next message is not read until
    then, which pushes back on the client), and container audio is fed on the
    decoder's own thread.
    """

    def __init__(self, server: LiveServer, ws: ServerConnection, compat: bool) -> None:
        self.server = server
        self.ws = ws
        self.compat = compat
        self.loop = asyncio.get_running_loop()
        self.outbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=1024)
        self.session: Session | None = None
        self.stream: AudioStream | None = None
        self.request = StreamRequest(partials=not compat)
        self.rate = SAMPLE_RATE
        self.resampler: Any = None
        self.decoder: StreamDecoder | None = None
        self.mode: str | None = None  # "pcm" or a container kind, fixed by the first frame
        self.id_base = 0
        self.offset = 0.0
        self.fed = 0  # 16 kHz samples fed to the current stream
        self.closing: ProtocolError | None = None
        self.busy = False
        self.started = time.monotonic()
        self._ending = asyncio.Lock()
        self._receiver: asyncio.Task[None] | None = None
        self._in_thread: asyncio.Future[Any] | None = None  # the feed or join running now

    # The connection's life.

    async def run(self) -> None:
        sender = asyncio.create_task(self._send_loop())
        monitor = asyncio.create_task(self._watch_backlog())
        self._receiver = asyncio.create_task(self._receive_loop())
        try:
            await self._receiver
        except ProtocolError as exc:
            self.closing = self.closing or exc
        except ConnectionClosed:
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
            await self.outbox.put(None)
            with contextlib.suppress(ConnectionClosed, asyncio.CancelledError):
                await sender
        if self.closing is not None:
            await self.ws.close(self.closing.code, self.closing.reason)

    async def _receive_loop(self) -> None:
        opts = self.server.options
        while True:
            left = opts.max_session_seconds - (time.monotonic() - self.started)
            if left <= 0:
                raise ProtocolError(
                    CLOSE_POLICY, f"session length limit ({opts.max_session_seconds:.0f} s) reached"
                )
            try:
                message = await asyncio.wait_for(self.ws.recv(), min(left, opts.idle_timeout))
            except asyncio.TimeoutError:
                if time.monotonic() - self.started >= opts.max_session_seconds:
                    continue  # reported at the top of the loop
                raise ProtocolError(
                    CLOSE_POLICY, f"no message for {opts.idle_timeout:.0f} s (idle timeout)"
                ) from None
            if self.closing is not None:
                raise self.closing
            if isinstance(message, str):
                await self._on_text(message)
            else:
                await self._on_audio(message)

    async def _send_loop(self) -> None:
        while True:
            message = await self.outbox.get()
            if message is None:
                return
            await self.ws.send(json.dumps(message, ensure_ascii=False))

    def send(self, message: dict[str, Any]) -> None:
        if self.outbox.full():
            self.fail(ProtocolError(CLOSE_POLICY, "the client does not read its messages"))
            return
        self.outbox.put_nowait(message)

    def fail(self, error: ProtocolError) -> None:
        """End the connection from a callback: the receive loop stops, the open utterance
        is transcribed and sent, then the connection closes with *error*."""
        if self.closing is None:
            self.closing = error
            if self._receiver is not None:
                self._receiver.cancel()

    async def _thread(self, func: Callable[..., T], *args: Any) -> T:
        """Run *func* off the loop. A cancelled caller does not stop it: `end_stream`
        waits for it, so the stream is never fed and finished at the same time."""
        future = asyncio.ensure_future(asyncio.to_thread(func, *args))
        self._in_thread = future
        return await asyncio.shield(future)

    async def _watch_backlog(self) -> None:
        """Tell the client when its utterances queue up behind the model ("busy").

        One utterance being transcribed is normal; a second one waiting behind it
        means the text falls behind the speech.
        """
        limit = self.server.options.busy_utterances
        max_wait = self.server.options.max_wait_seconds
        behind_since: float | None = None
        while True:
            await asyncio.sleep(0.25)
            stream = self.stream
            waiting, seconds = self.server.backlog(stream) if stream is not None else (0, 0.0)
            now = time.monotonic()
            behind_since = (behind_since or now) if waiting else None
            busy = waiting > limit
            if busy != self.busy:
                self.busy = busy
                if not self.compat:
                    state = "busy" if busy else "ok"
                    self.send({"type": "status", "state": state, "behind": round(seconds, 1)})
            if behind_since is not None and now - behind_since > max_wait:
                self.fail(
                    ProtocolError(
                        CLOSE_TRY_AGAIN,
                        f"server busy: the text has been late for {max_wait:.0f} s; "
                        "try again later",
                    )
                )
                return

    # Control messages.

    async def _on_text(self, text: str) -> None:
        if self.compat:
            raise ProtocolError(CLOSE_UNSUPPORTED, "this path takes binary audio only")
        if not text.lstrip().startswith("{"):
            raise ProtocolError(
                CLOSE_UNSUPPORTED,
                "text where audio was expected: send audio as binary frames "
                "and control messages as JSON objects",
            )
        try:
            message = json.loads(text)
        except ValueError:
            raise ProtocolError(CLOSE_INVALID, "control message is not valid JSON") from None
        if not isinstance(message, dict):
            raise ProtocolError(CLOSE_INVALID, "control message is not a JSON object")
        kind = message.get("type")
        if kind == "start":
            await self.start(message)
        elif kind == "stop":
            await self.end_stream()
            self.send({"type": "stopped", "session": self.session.id if self.session else None})
        else:
            raise ProtocolError(CLOSE_INVALID, f"unknown control message type {kind!r}")

    async def start(self, message: dict[str, Any]) -> None:
        rate = message.get("sample_rate", SAMPLE_RATE)
        if not isinstance(rate, int) or isinstance(rate, bool) or not 8000 <= rate <= 192_000:
            raise ProtocolError(CLOSE_INVALID, "sample_rate must be an integer, 8000 to 192000")
        language = message.get("language")
        if language in ("", "auto"):
            language = None
        if language is not None and (not isinstance(language, str) or len(language) > 8):
            raise ProtocolError(CLOSE_INVALID, "language must be a language code or null")
        partials = message.get("partials", True)
        if not isinstance(partials, bool):
            raise ProtocolError(CLOSE_INVALID, "partials must be true or false")
        resume = message.get("session")
        if resume is not None and not isinstance(resume, str):
            raise ProtocolError(CLOSE_INVALID, "session must be a string")
        await self.end_stream()
        self.request = StreamRequest(language=language, partials=partials)
        self.rate = rate
        resumed = False
        if self.session is None or (resume and resume != self.session.id):
            self.detach()
            session = self.server.hub.get(resume) if resume else None
            resumed = session is not None
            if session is not None and session.owner is not None:
                await session.owner.hand_over()
            if session is None:
                session = self.server.hub.create()
            session.owner = self
            self.session = session
        self._open_stream()
        history = list(self.session.finals) if resumed else []
        self.send(
            {
                "type": "ready",
                "session": self.session.id,
                "resumed": resumed,
                "sample_rate": self.rate,
                "history": history,
            }
        )

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

    def _open_stream(self) -> None:
        session = self.session
        assert session is not None and self.stream is None
        self.id_base = session.next_id
        self.offset = session.audio_seconds
        self.fed = 0
        self.mode = None
        try:
            self.stream = self.server.make_stream(self.request, self._event_callback(session))
        except LivewhisperError as exc:
            raise ProtocolError(CLOSE_INVALID, _clip(str(exc))) from None

    # Audio.

    async def _on_audio(self, data: bytes) -> None:
        if self.session is None:  # audio first: a simple client, defaults for everything
            self.session = self.server.hub.create()
            self.session.owner = self
        if self.stream is None:
            self._open_stream()
        if not data:
            return
        kind = sniff(data)
        if self.mode is None:
            self.mode = kind or "pcm"
        elif self.mode != "pcm" and kind is not None:
            # A new recording (a client that restarted its MediaRecorder): decode it anew.
            await self._close_decoder()
            self.mode = kind
        if self.mode == "pcm":
            await self._feed_pcm(data)
            return
        if self.decoder is None:
            self.decoder = self._new_decoder(self.mode)  # type: ignore[arg-type]
        try:
            self.decoder.write(data)
        except ContainerError as exc:
            raise ProtocolError(CLOSE_INVALID, _clip(f"audio stream: {exc}")) from None

    async def _feed_pcm(self, data: bytes) -> None:
        if len(data) % 2:
            raise ProtocolError(
                CLOSE_INVALID, f"odd byte count ({len(data)}) in 16-bit PCM audio frame"
            )
        samples = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
        if self.rate != SAMPLE_RATE:
            if self.resampler is None:
                import soxr

                self.resampler = soxr.ResampleStream(self.rate, SAMPLE_RATE, 1, dtype="float32")
            samples = self.resampler.resample_chunk(samples)
        await self._feed(samples)

    async def _feed(self, samples: np.ndarray) -> None:
        stream = self.stream
        if stream is None or not len(samples):
            return
        await self._thread(stream.feed, samples)
        self.fed += len(samples)
        self._check_stream(stream)

    def _check_stream(self, stream: AudioStream) -> None:
        error = getattr(stream, "error", None)
        if error is not None:
            log.error("stream of session %s failed: %s", self.session_id, error)
            raise ProtocolError(CLOSE_INTERNAL, _clip(f"transcription failed: {error}"))

    @property
    def session_id(self) -> str | None:
        return self.session.id if self.session else None

    def _new_decoder(self, kind: ContainerKind) -> StreamDecoder:
        stream = self.stream
        assert stream is not None
        loop = self.loop

        def on_samples(block: np.ndarray) -> None:  # decoder thread
            stream.feed(block)
            loop.call_soon_threadsafe(self._count, len(block))

        def on_end(reason: str | None) -> None:  # decoder thread
            if reason is not None:
                error = ProtocolError(CLOSE_INVALID, _clip(f"audio stream: {reason}"))
                loop.call_soon_threadsafe(self.fail, error)

        return StreamDecoder(
            kind,
            on_samples,
            on_end,
            max_pending=4 * self.server.options.max_message_bytes,
            name=self.session_id or "container",
        )

    def _count(self, samples: int) -> None:
        self.fed += samples

    def _event_callback(self, session: Session) -> Callable[[TextEvent], None]:
        loop = self.loop
        id_base, offset = self.id_base, self.offset  # where this stream sits in the session

        def on_event(event: TextEvent) -> None:  # scheduler thread
            placed = shift_event(event, id_base, offset)
            loop.call_soon_threadsafe(self._on_event, session, placed)

        return on_event

    def _on_event(self, session: Session, event: TextEvent) -> None:
        if event.type == "partial" and not self.request.partials:
            return
        session.next_id = max(session.next_id, event.id + 1)
        message = event.to_dict()
        self.server.hub.publish(session, message)
        if session.owner is self and (event.type == "final" or not self.compat):
            self.send(message)

    async def _close_decoder(self) -> None:
        if self.decoder is not None:
            decoder, self.decoder = self.decoder, None
            decoder.close()
            await self._thread(decoder.join)
            await asyncio.sleep(0)  # let the counts it queued on the loop run

    async def end_stream(self) -> None:
        """Flush the open utterance: its final is delivered before this returns."""
        async with self._ending:
            if self._in_thread is not None:
                await asyncio.wait([self._in_thread])  # a feed cut short by fail()
            await self._close_decoder()
            if self.resampler is not None:
                tail = self.resampler.resample_chunk(np.zeros(0, np.float32), last=True)
                self.resampler = None
                await self._feed(tail)
            stream, self.stream = self.stream, None
            if stream is None:
                return
            await self._thread(stream.finish)
            await asyncio.sleep(0)  # events that finish() queued with call_soon_threadsafe
            if self.session is not None:
                self.session.audio_seconds = self.offset + self.fed / SAMPLE_RATE
            self.mode = None
            self._check_stream(stream)


# --- the server --------------------------------------------------------------------------


class LiveServer:
    """The HTTP and WebSocket server. Use `start` and `close`, or `serve` as a context."""

    def __init__(
        self,
        options: ServerOptions,
        make_stream: StreamFactory,
        *,
        backlog: Callable[[AudioStream | None], tuple[int, float]] | None = None,
    ) -> None:
        self.options = options
        self.make_stream = make_stream
        self.backlog = backlog or _no_backlog
        self.hub = Hub(options.resume_seconds)
        self.audio: set[AudioConnection] = set()
        self.viewers = 0
        self.assets = load_assets()
        self._server: Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # Life cycle.

    async def start(self) -> None:
        opts = self.options
        self._loop = asyncio.get_running_loop()
        self._server = await serve(
            self._handler,
            opts.host,
            opts.port,
            process_request=self._process_request,
            max_size=opts.max_message_bytes,
            ping_interval=opts.ping_interval,
            ping_timeout=opts.ping_timeout,
            compression=None,  # audio does not compress, and a stream is cheaper without
            ssl=self._ssl_context(),
        )

    def _ssl_context(self) -> ssl.SSLContext | None:
        if self.options.certfile is None:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.options.certfile, self.options.keyfile)
        return context

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    @property
    def port(self) -> int:
        assert self._server is not None, "the server is not started"
        return int(self._server.sockets[0].getsockname()[1])

    def url(self, path: str = "/", host: str | None = None) -> str:
        scheme = "https" if self.options.tls else "http"
        host = host or self.options.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        query = f"?token={self.options.token}" if self.options.token else ""
        return f"{scheme}://{host}:{self.port}{path}{query}"

    # The server's own microphone.

    def local_emitter(self) -> Callable[[TextEvent], None]:
        """A callback that publishes the local stream's events as session ``local``.

        Safe to call from any thread, and from the start of the stream.
        """
        loop = self._loop
        assert loop is not None, "start the server first"
        session = self.hub.sessions.get(LOCAL_SESSION) or self.hub.create(LOCAL_SESSION)

        def emit(event: TextEvent) -> None:
            loop.call_soon_threadsafe(self.hub.publish, session, event.to_dict())

        return emit

    # HTTP.

    def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        path = url.path
        if path == AUDIO_PATH or path in COMPAT_PATHS or path == CAPTIONS_PATH:
            return self._check_websocket(ws, request, path, parse_qs(url.query))
        name = _PAGES.get(path) or path.removeprefix("/")
        asset = self.assets.get(name)
        if asset is None:
            return _http(404, "Not Found", b"Not found.\n", "text/plain; charset=utf-8")
        content_type, body = asset
        return _http(200, "OK", body, content_type)

    def _check_websocket(
        self, ws: ServerConnection, request: Request, path: str, query: dict[str, list[str]]
    ) -> Response | None:
        opts = self.options
        if opts.token is not None:
            given = (query.get("token") or [""])[0]
            auth = request.headers.get("Authorization", "")
            if auth.lower().startswith("bearer "):
                given = given or auth[7:].strip()
            if not hmac.compare_digest(given.encode(), opts.token.encode()):
                return _http(401, "Unauthorized", b"A valid token is required.\n")
        origin = request.headers.get("Origin")
        if origin is not None and not self._origin_allowed(origin, request):
            return _http(403, "Forbidden", b"This origin may not connect.\n")
        if path == CAPTIONS_PATH:
            if self.viewers >= opts.max_viewers:
                return _http(503, "Service Unavailable", b"Too many caption viewers.\n")
        elif len(self.audio) >= opts.max_clients:
            return _http(503, "Service Unavailable", b"Server busy: too many clients.\n")
        elif self.backlog(None)[0] > opts.max_waiting_per_session * max(1, len(self.audio)):
            return _http(503, "Service Unavailable", b"Server busy: try again later.\n")
        return None

    def _origin_allowed(self, origin: str, request: Request) -> bool:
        allowed = self.options.allow_origins
        if "*" in allowed or origin in allowed:
            return True
        host = request.headers.get("Host")
        scheme = "https" if self.options.tls else "http"
        return host is not None and origin == f"{scheme}://{host}"

    # WebSocket.

    async def _handler(self, ws: ServerConnection) -> None:
        url = urlsplit(ws.request.path if ws.request else "/")
        if url.path == CAPTIONS_PATH:
            await self._viewer(ws, parse_qs(url.query))
            return
        if len(self.audio) >= self.options.max_clients:
            await ws.close(CLOSE_TRY_AGAIN, "server busy: too many clients")
            return
        connection = AudioConnection(self, ws, compat=url.path in COMPAT_PATHS)
        self.audio.add(connection)
        try:
            await connection.run()
        finally:
            self.audio.discard(connection)

    async def _viewer(self, ws: ServerConnection, query: dict[str, list[str]]) -> None:
        wanted = (query.get("session") or ["auto"])[0]
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=256)
        session = None if wanted == "auto" else self.hub.get(wanted)
        if wanted == LOCAL_SESSION and session is None:
            session = self.hub.create(LOCAL_SESSION)
        if wanted != "auto" and session is None:
            await ws.close(CLOSE_POLICY, "no such session")
            return
        self.viewers += 1
        if session is None:
            self.hub.followers.add(queue)
            shown = self.hub.sessions.get(LOCAL_SESSION)
        else:
            session.viewers.add(queue)
            shown = session
        try:
            await ws.send(json.dumps({"type": "ready", "session": wanted}))
            if shown is not None:
                for final in list(shown.finals)[-5:]:
                    await ws.send(json.dumps({**final, "session": shown.id}))
            reader = asyncio.create_task(_drain(ws))
            while not reader.done():
                getter = asyncio.create_task(queue.get())
                await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    break
                if queue.full():
                    await ws.close(CLOSE_POLICY, "the viewer does not keep up")
                    break
                await ws.send(json.dumps(getter.result(), ensure_ascii=False))
        except ConnectionClosed:
            pass
        finally:
            self.viewers -= 1
            self.hub.followers.discard(queue)
            if session is not None:
                session.viewers.discard(queue)


def _no_backlog(stream: AudioStream | None) -> tuple[int, float]:
    return 0, 0.0


async def _drain(ws: ServerConnection) -> None:
    """Read and ignore what a viewer sends, until it goes."""
    with contextlib.suppress(ConnectionClosed):
        async for _ in ws:
            pass


def _http(
    status: int, reason: str, body: bytes, content_type: str = "text/plain; charset=utf-8"
) -> Response:
    headers = Headers(
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-cache"),
            ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "no-referrer"),
            ("Connection", "close"),
        ]
    )
    return Response(status, reason, headers, body)


def _clip(reason: str) -> str:
    """A close reason fits in 123 bytes."""
    data = reason.encode()
    return reason if len(data) <= 123 else data[:120].decode(errors="ignore") + "..."


def load_assets() -> dict[str, tuple[str, bytes]]:
    """The page's files, read once: only these names are ever served."""
    assets: dict[str, tuple[str, bytes]] = {}
    web = importlib.resources.files("livewhisper.serve") / "web"
    for entry in web.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1] if "." in entry.name else ""
        if entry.is_file() and suffix in _TYPES:
            assets[entry.name] = (_TYPES[suffix], entry.read_bytes())
    return assets


@contextlib.asynccontextmanager
async def running(
    options: ServerOptions,
    make_stream: StreamFactory,
    *,
    backlog: Callable[[AudioStream | None], tuple[int, float]] | None = None,
) -> AsyncIterator[LiveServer]:
    """``async with running(options, factory) as server:`` serves until the block ends."""
    server = LiveServer(options, make_stream, backlog=backlog)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


def generate_token() -> str:
    return secrets.token_urlsafe(16)


# --- running the server beside the live stream -----------------------------------------


def live_streams(
    scheduler: Scheduler, options: StreamOptions | None = None
) -> tuple[StreamFactory, Callable[[AudioStream | None], tuple[int, float]]]:
    """A factory of `LiveStream`s over *scheduler* (one per connection), and their backlog
    (of one stream, or of all with None): utterances queued or running, and their seconds
    of audio.

    A client's ``language`` replaces the one in *options*; the engine checks it first,
    so a language the model does not know is refused when the stream starts.
    """
    from livewhisper.live.stream import LiveStream, StreamOptions

    base = options or StreamOptions()
    check = getattr(scheduler.engine, "check", None)

    makes_partials = any(f.name == "partials" for f in dataclasses.fields(base))

    def make(request: StreamRequest, emit: Callable[[TextEvent], None]) -> AudioStream:
        stream_options = base
        if request.language is not None:
            transcribe = dataclasses.replace(base.transcribe, language=request.language)
            if check is not None:
                check(transcribe)
            stream_options = dataclasses.replace(stream_options, transcribe=transcribe)
        if makes_partials and not request.partials:
            # Partial text costs model time: only for clients that ask for it.
            off: dict[str, Any] = {"partials": False}
            stream_options = dataclasses.replace(stream_options, **off)
        return LiveStream(scheduler, stream_options, emit)

    def backlog(stream: AudioStream | None) -> tuple[int, float]:
        """Of one stream, or of every stream when *stream* is None."""
        key = getattr(stream, "key", None)
        if stream is not None and key is None:
            return 0, 0.0
        waiting = scheduler.backlog(key)
        return waiting.finals, waiting.seconds

    return make, backlog


class ServerThread:
    """The server on its own event loop thread, for a program that is not asyncio.

    ``start`` returns once the port is bound (or raises what stopped it); ``stop``
    closes every connection (their open utterances are transcribed) and ends the
    thread. Both are idempotent; it is also a context manager.
    """

    def __init__(
        self,
        options: ServerOptions,
        make_stream: StreamFactory,
        *,
        backlog: Callable[[AudioStream | None], tuple[int, float]] | None = None,
    ) -> None:
        self.server = LiveServer(options, make_stream, backlog=backlog)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> ServerThread:
        if self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._run, name="livewhisper-server", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            await self.server.start()
        except BaseException as exc:
            self._error = exc
            self._started.set()
            return
        self._started.set()
        try:
            await self._stop.wait()
        finally:
            await self.server.close()

    def stop(self, timeout: float | None = 30.0) -> None:
        loop, stop, thread = self._loop, self._stop, self._thread
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop has just ended
                loop.call_soon_threadsafe(stop.set)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The server's event loop, for `asyncio.run_coroutine_threadsafe`."""
        assert self._loop is not None, "start the server first"
        return self._loop

    def url(self, path: str = "/", host: str | None = None) -> str:
        return self.server.url(path, host)

    def local_emitter(self) -> Callable[[TextEvent], None]:
        loop = self._loop
        assert loop is not None, "start the server first"
        future = asyncio.run_coroutine_threadsafe(_call(self.server.local_emitter), loop)
        return future.result()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _call(func: Callable[[], T]) -> T:
    return func()
