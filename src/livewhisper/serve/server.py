"""`LiveServer`: the app (`app.create_app`) served by uvicorn on this event loop.

One port carries the page (``/``), the caption view (``/captions``), their files
and the WebSocket protocols (see `app`). The port is bound here, so a port that is
taken is an ``OSError`` from `LiveServer.start`; uvicorn then serves HTTP (h11) and
WebSockets (the ``websockets`` library's protocol, sans I/O) on it, with the
limits of `ServerOptions` (message size, pings) and TLS from its certificate.
What uvicorn leaves unbounded is bounded here (`http_protocol`, `ws_protocol`): the
time a request's headers may take (slowloris), a connection left with unsent data
after its handler has ended (a client that does not read), and text frames that
are not UTF-8 (closed with 1007, not logged as an exception).
Signals stay with the program: uvicorn installs no handlers here.
`thread.ServerThread` runs it for a program that is not asyncio.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator, Sequence

import h11
import uvicorn
from starlette.routing import BaseRoute
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from livewhisper.live.contract import Emit
from livewhisper.serve.app import LiveState, create_app
from livewhisper.serve.connection import AudioConnection
from livewhisper.serve.hub import Hub
from livewhisper.serve.options import ServerOptions
from livewhisper.serve.streams import StreamBacklog, StreamFactory

#: Seconds uvicorn waits for requests still running once the sessions have closed.
SHUTDOWN_GRACE = 10


class LiveServer:
    """The HTTP and WebSocket server. Use `start` and `close`, or `running` as a context.

    Off loopback without a token, one is generated (`admission.with_token`): see
    ``options.token`` and `url`.
    """

    def __init__(
        self,
        options: ServerOptions,
        make_stream: StreamFactory,
        *,
        backlog: StreamBacklog | None = None,
        extra_routes: Sequence[BaseRoute] = (),
    ) -> None:
        self.app = create_app(options, make_stream, backlog=backlog, extra_routes=extra_routes)
        self.live: LiveState = self.app.state.livewhisper
        self.options = self.live.options
        self._uvicorn: _Uvicorn | None = None
        self._task: asyncio.Task[None] | None = None
        self._sockets: list[socket.socket] = []

    # Life cycle.

    async def start(self) -> None:
        """Bind the port and serve; an ``OSError`` if the port cannot be bound."""
        if self._task is not None:
            return
        opts = self.options
        config = uvicorn.Config(
            self.app,
            host=opts.host,
            port=opts.port,
            http=http_protocol(opts.header_timeout),  # h11 wherever it runs
            ws=ws_protocol(),  # the websockets library's protocol, sans I/O
            ws_max_size=opts.max_message_bytes,
            ws_ping_interval=opts.ping_interval,
            ws_ping_timeout=opts.ping_timeout,
            ws_per_message_deflate=False,  # audio does not compress; a stream is cheaper without
            lifespan="off",
            log_config=None,  # the program configures logging, not the library
            ssl_certfile=opts.certfile,
            ssl_keyfile=opts.keyfile,
            timeout_graceful_shutdown=SHUTDOWN_GRACE,
        )
        config.load()  # a certificate that cannot be loaded fails here
        sockets = listen_sockets(opts.host, opts.port)
        server = _Uvicorn(config)
        task = asyncio.create_task(server.serve(sockets), name="livewhisper-uvicorn")
        up = asyncio.create_task(server.up.wait())
        await asyncio.wait({task, up}, return_when=asyncio.FIRST_COMPLETED)
        if not up.done():
            up.cancel()
            for sock in sockets:
                sock.close()
            task.result()  # what stopped it
            raise RuntimeError("the server ended as it started")
        self._uvicorn, self._task, self._sockets = server, task, sockets

    async def close(self) -> None:
        """Close every connection (open utterances are transcribed and sent first, then
        1001), then stop serving. Idempotent."""
        server, task = self._uvicorn, self._task
        if server is None or task is None:
            return
        self._uvicorn = self._task = None
        await self.live.close()
        server.should_exit = True
        await task

    @property
    def port(self) -> int:
        assert self._uvicorn is not None, "the server is not started"
        return int(self._sockets[0].getsockname()[1])

    def url(self, path: str = "/", host: str | None = None) -> str:
        scheme = "https" if self.options.tls else "http"
        host = host or self.options.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        query = f"?token={self.options.token}" if self.options.token else ""
        return f"{scheme}://{host}:{self.port}{path}{query}"

    @property
    def hub(self) -> Hub:
        return self.live.hub

    @property
    def audio(self) -> set[AudioConnection]:
        """Audio connections now."""
        return self.live.audio

    @property
    def viewers(self) -> int:
        """Caption connections now."""
        return self.live.viewers

    @property
    def uvicorn(self) -> uvicorn.Server:
        """The uvicorn server, while started."""
        assert self._uvicorn is not None, "the server is not started"
        return self._uvicorn

    def local_emitter(self) -> Emit:
        """A callback that publishes the local stream's events as session ``local``.

        Safe to call from any thread, and from the start of the stream.
        """
        assert self._uvicorn is not None, "start the server first"
        return self.live.local_emitter()


class _Uvicorn(uvicorn.Server):
    """uvicorn's server without its signal handlers (the program owns the signals),
    saying when it is up."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.up = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.up.set()


#: Seconds a WebSocket connection may stay open once its handler has ended (its
#: closing handshake, the last data to flush) before it is dropped.
LINGER_SECONDS = 15.0
_TOO_SLOW = b"The request's headers came too slowly; send them at once.\n"
_TIMED_OUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_TOO_SLOW), _TOO_SLOW)
)


def http_protocol(header_timeout: float) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol with a deadline for each request's headers.

    uvicorn times only an idle keep-alive connection, and any byte that arrives
    resets that: a client sending its headers a byte at a time (slowloris) would hold
    its connection for ever. Here every request (the first, each one after a
    keep-alive answer, a WebSocket upgrade) has *header_timeout* seconds from the
    start of its wait to the end of its headers: then 408, or a plain close if
    nothing came, and the connection is closed.
    """

    class Protocol(_TimedHeaders):
        timeout = header_timeout

    return Protocol


class _TimedHeaders(H11Protocol):
    timeout = 10.0
    _deadline: asyncio.TimerHandle | None = None
    _heard = False  # some of the awaited request has come

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._wait_for_headers()

    def data_received(self, data: bytes) -> None:
        self._heard = True
        super().data_received(data)
        if self.transport.get_protocol() is not self or self.conn.their_state is not h11.IDLE:
            self._stop_waiting()  # the headers are complete (or it is a WebSocket now)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._wait_for_headers()  # the next request on this connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        super().connection_lost(exc)

    def _wait_for_headers(self) -> None:
        self._stop_waiting()
        self._heard = False
        self._deadline = self.loop.call_later(self.timeout, self._too_slow)

    def _stop_waiting(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if self.transport.is_closing() or self.transport.get_protocol() is not self:
            return
        if self.conn.their_state is h11.IDLE and self.conn.our_state is h11.IDLE:
            if self._heard:
                self.transport.write(_TIMED_OUT)
            self.transport.close()


def ws_protocol() -> type[asyncio.Protocol]:
    """uvicorn's protocol over the websockets library, with two bounds it lacks: text
    that is not UTF-8 closes with 1007 without a traceback in the log, and a
    connection whose handler has ended is dropped after `LINGER_SECONDS` if it is
    still open (a client that does not read keeps a graceful close waiting for ever
    to flush)."""
    return _BoundedWebSocket


class _BoundedWebSocket(WebSocketsSansIOProtocol):
    def send_receive_event_to_app(self) -> None:
        if self.curr_msg_data_type == "text" and not self.close_sent:
            try:
                b"".join(self.frames).decode()
            except UnicodeDecodeError:
                self.frames = []
                self.conn.send_close(1007, "text that is not UTF-8")
                self.handle_parser_exception()
                return
        super().send_receive_event_to_app()

    async def run_asgi(self) -> None:
        await super().run_asgi()
        if not self.disconnected:
            self.loop.call_later(LINGER_SECONDS, self._drop)

    def _drop(self) -> None:
        if not self.disconnected:
            self.transport.abort()


def listen_sockets(host: str, port: int) -> list[socket.socket]:
    """Listening sockets on every address *host* names ("" or "0.0.0.0": every
    interface), as asyncio binds them; with port 0 they share the first one's port."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, _, _, _, address in dict.fromkeys(infos):
            if sockets and port == 0:
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            sockets.append(socket.create_server(address, family=family))
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


@contextlib.asynccontextmanager
async def running(
    options: ServerOptions,
    make_stream: StreamFactory,
    *,
    backlog: StreamBacklog | None = None,
    extra_routes: Sequence[BaseRoute] = (),
) -> AsyncIterator[LiveServer]:
    """``async with running(options, factory) as server:`` serves until the block ends."""
    server = LiveServer(options, make_stream, backlog=backlog, extra_routes=extra_routes)
    await server.start()
    try:
        yield server
    finally:
        await server.close()
