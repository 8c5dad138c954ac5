"""`--serve`: a websockets server that is its own web server.

One port carries the page (``/``), the caption view (``/captions``), their static
files (`static`), and the WebSocket paths, each a protocol in a module of its own:

* ``/ws`` (`ws_audio`): the page's protocol, JSON control messages and binary audio.
* ``/ws/whisper/`` (`ws_whisper`): for simple clients that send ``MediaRecorder``
  chunks or raw 16 kHz PCM and read ``JSON.parse(event.data).text``.
* ``/ws/captions`` (`ws_captions`): a read-only feed of one session's events.

`LiveServer` wires them together: `admission` decides who may open a socket, the
`hub` keeps the sessions and their viewers, and each audio connection runs one
stream that the factory makes (`streams`) over the one shared scheduler.
`thread.ServerThread` runs it for a program that is not asyncio.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from livewhisper.live.contract import Emit
from livewhisper.serve import tls
from livewhisper.serve.admission import Admission, with_token
from livewhisper.serve.close import CLOSE_TRY_AGAIN
from livewhisper.serve.connection import AudioConnection
from livewhisper.serve.hub import Hub
from livewhisper.serve.options import AUDIO_PATH, CAPTIONS_PATH, WHISPER_PATHS, ServerOptions
from livewhisper.serve.static import Static
from livewhisper.serve.streams import StreamBacklog, StreamFactory, no_backlog
from livewhisper.serve.ws_audio import ControlConnection
from livewhisper.serve.ws_captions import serve_viewer
from livewhisper.serve.ws_whisper import WhisperConnection
from livewhisper.transcript import TextEvent

#: The audio protocols, by path; a new protocol is a module and a line here.
PROTOCOLS: dict[str, type[AudioConnection]] = {
    AUDIO_PATH: ControlConnection,
    **dict.fromkeys(WHISPER_PATHS, WhisperConnection),
}


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
    ) -> None:
        self.options = with_token(options)
        self.make_stream = make_stream
        self.backlog = backlog or no_backlog
        self.hub = Hub(options.resume_seconds)
        self.admission = Admission(self.options, self.backlog)
        self.static = Static()
        self.audio: set[AudioConnection] = set()
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
            ssl=None if opts.certfile is None else tls.server_context(opts.certfile, opts.keyfile),
        )

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

    @property
    def viewers(self) -> int:
        """Caption connections now."""
        return self.hub.viewers

    def local_emitter(self) -> Emit:
        """A callback that publishes the local stream's events as session ``local``.

        Safe to call from any thread, and from the start of the stream.
        """
        loop = self._loop
        assert loop is not None, "start the server first"
        session = self.hub.local()

        def emit(event: TextEvent) -> None:
            loop.call_soon_threadsafe(self.hub.publish, session, event.to_dict())

        return emit

    # Routing.

    def _process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        """Static files are answered here; a WebSocket path goes on to the upgrade
        if `admission` lets it (a plain GET there gets 426 from websockets)."""
        url = urlsplit(request.path)
        if url.path != CAPTIONS_PATH and url.path not in PROTOCOLS:
            return self.static.answer(url.path)
        return self.admission.check(
            request,
            parse_qs(url.query),
            viewer=url.path == CAPTIONS_PATH,
            clients=len(self.audio),
            viewers=self.viewers,
        )

    async def _handler(self, ws: ServerConnection) -> None:
        url = urlsplit(ws.request.path if ws.request else "/")
        if url.path == CAPTIONS_PATH:
            await serve_viewer(ws, self.hub, parse_qs(url.query))
            return
        if len(self.audio) >= self.options.max_clients:
            await ws.close(CLOSE_TRY_AGAIN, "server busy: too many clients")
            return
        protocol = PROTOCOLS.get(url.path, ControlConnection)
        connection = protocol(ws, self.options, self.hub, self.make_stream, self.backlog)
        self.audio.add(connection)
        try:
            await connection.run()
        finally:
            self.audio.discard(connection)


@contextlib.asynccontextmanager
async def running(
    options: ServerOptions,
    make_stream: StreamFactory,
    *,
    backlog: StreamBacklog | None = None,
) -> AsyncIterator[LiveServer]:
    """``async with running(options, factory) as server:`` serves until the block ends."""
    server = LiveServer(options, make_stream, backlog=backlog)
    await server.start()
    try:
        yield server
    finally:
        await server.close()
