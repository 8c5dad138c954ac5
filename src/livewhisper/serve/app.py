"""The server as an ASGI app: the page, its files and the WebSocket protocols as
Starlette routes.

`create_app` gives a Starlette app that any ASGI server runs (`server.LiveServer`
runs it with uvicorn) or that a bigger app mounts (``Mount("/live", app=...)``):

* ``/``, ``/captions`` and their files (`static`), for anyone;
* ``/ws`` (`ws_audio`), ``/ws/whisper/`` (`ws_whisper`): audio in, text out, one
  `connection.AudioConnection` a client;
* ``/ws/captions`` (`ws_captions`): a read-only feed of one session's events.

`admission` decides who may open a socket, the `hub` keeps the sessions and their
viewers, and each audio connection runs one stream that the factory makes
(`streams`) over the one shared scheduler. What the routes share is the app's
`LiveState`; routes added with ``extra_routes`` find it with `live_state`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from livewhisper.live.contract import Emit
from livewhisper.serve.admission import Admission, with_token
from livewhisper.serve.close import CLOSE_GOING_AWAY, CLOSE_TRY_AGAIN, ProtocolError
from livewhisper.serve.connection import AudioConnection
from livewhisper.serve.hub import Hub
from livewhisper.serve.openai_errors import OpenAIError
from livewhisper.serve.options import AUDIO_PATH, CAPTIONS_PATH, WHISPER_PATHS, ServerOptions
from livewhisper.serve.static import Static, http_response
from livewhisper.serve.streams import StreamBacklog, StreamFactory, no_backlog
from livewhisper.serve.transport import WebSocketTransport
from livewhisper.serve.ws_audio import ControlConnection
from livewhisper.serve.ws_captions import serve_viewer
from livewhisper.serve.ws_whisper import WhisperConnection
from livewhisper.transcript import TextEvent

#: The audio protocols, by path; a new protocol is a module and a line here, or an
#: `audio_route` in ``extra_routes``.
PROTOCOLS: dict[str, type[AudioConnection]] = {
    AUDIO_PATH: ControlConnection,
    **dict.fromkeys(WHISPER_PATHS, WhisperConnection),
}


class LiveState:
    """What the routes of one app share: the options (with a token off loopback,
    `admission.with_token`), the admission, the hub, the page's files and the open
    connections. It lives on the event loop that serves the app and is not locked."""

    def __init__(
        self, options: ServerOptions, make_stream: StreamFactory, backlog: StreamBacklog
    ) -> None:
        self.options = with_token(options)
        self.make_stream = make_stream
        self.backlog = backlog
        self.hub = Hub(self.options.resume_seconds)
        self.admission = Admission(self.options, backlog)
        self.static = Static()
        self.audio: set[AudioConnection] = set()
        self.stopping = asyncio.Event()  # set by close(): caption feeds end
        self._talking: set[asyncio.Task[Any]] = set()  # the handlers of audio connections
        self._watching: set[asyncio.Task[Any]] = set()  # ...and of caption feeds

    @property
    def viewers(self) -> int:
        """Caption connections now."""
        return self.hub.viewers

    def refuse(self, conn: HTTPConnection, *, viewer: bool, token: bool = True) -> Response | None:
        """The answer that refuses a WebSocket (401, 403, 503), or None to accept it;
        ``token=False`` for a route that has checked the token its own way."""
        return self.admission.check(
            conn, viewer=viewer, clients=len(self.audio), viewers=self.viewers, token=token
        )

    async def serve_audio(self, websocket: WebSocket, protocol: type[AudioConnection]) -> None:
        """Admit *websocket* and run *protocol* on it until it ends."""
        refused = self.refuse(websocket, viewer=False)
        if refused is not None:
            await websocket.send_denial_response(refused)
            return
        await websocket.accept()
        transport = WebSocketTransport(websocket, self.options.send_timeout)
        await self.run_audio(
            protocol(transport, self.options, self.hub, self.make_stream, self.backlog)
        )

    async def run_audio(self, connection: AudioConnection) -> None:
        """Run *connection*, accepted, as one of the server's audio connections until it
        ends: counted against ``max_clients``, and ended by `close` (its last text, then
        1001). For a route that admits and accepts its clients itself."""
        if self.admission.closing:  # close() began meanwhile
            await connection.transport.close(CLOSE_GOING_AWAY, "server shutting down")
            return
        if len(self.audio) >= self.options.max_clients:  # others came in meanwhile
            await connection.transport.close(CLOSE_TRY_AGAIN, "server busy: too many clients")
            return
        self.audio.add(connection)
        try:
            with _running(self._talking):
                await connection.run()
        finally:
            self.audio.discard(connection)

    async def serve_captions(self, websocket: WebSocket) -> None:
        refused = self.refuse(websocket, viewer=True)
        if refused is not None:
            await websocket.send_denial_response(refused)
            return
        await websocket.accept()
        wanted = websocket.query_params.get("session") or "auto"
        with _running(self._watching):
            transport = WebSocketTransport(websocket, self.options.send_timeout)
            await serve_viewer(transport, self.hub, wanted, self.stopping)

    def local_emitter(self) -> Emit:
        """A callback that publishes the local stream's events as session ``local``.

        Call it on the event loop that serves the app; the callback is safe to call
        from any thread, and from the start of the stream.
        """
        loop = asyncio.get_running_loop()
        session = self.hub.local()

        def emit(event: TextEvent) -> None:
            loop.call_soon_threadsafe(self.hub.publish, session, event.to_dict())

        return emit

    async def close(self) -> None:
        """End every connection: an audio session's open utterance is transcribed and
        sent, then it closes with 1001 (going away); then each caption feed gets what
        is queued (those finals too) and closes with 1001. New connections meanwhile
        get 503. Idempotent."""
        self.admission.closing = True
        going = ProtocolError(CLOSE_GOING_AWAY, "server shutting down")
        for connection in list(self.audio):
            connection.fail(going)
        if self._talking:
            await asyncio.wait(set(self._talking))
        self.stopping.set()
        if self._watching:
            await asyncio.wait(set(self._watching))


@contextlib.contextmanager
def _running(tasks: set[asyncio.Task[Any]]) -> Iterator[None]:
    """Count the handler running now in *tasks* while the block runs."""
    task = asyncio.current_task()
    assert task is not None
    tasks.add(task)
    try:
        yield
    finally:
        tasks.discard(task)


def live_state(conn: HTTPConnection) -> LiveState:
    """The `LiveState` of the livewhisper app a request or WebSocket came to: for
    routes given to `create_app` as ``extra_routes`` (its admission, hub, streams)."""
    state = conn.app.state.livewhisper
    assert isinstance(state, LiveState), "not a route of livewhisper.serve.app.create_app"
    return state


def audio_route(path: str, protocol: type[AudioConnection]) -> WebSocketRoute:
    """A WebSocket route that admits clients (token, origin, room) and runs *protocol*
    on each: how a new audio protocol joins the app (``extra_routes``)."""

    async def endpoint(websocket: WebSocket) -> None:
        await live_state(websocket).serve_audio(websocket, protocol)

    return WebSocketRoute(path, endpoint)


async def _captions(websocket: WebSocket) -> None:
    await live_state(websocket).serve_captions(websocket)


async def _upgrade_required(request: Request) -> Response:
    """A plain GET on a WebSocket path: 426, never 404."""
    response = http_response(426, b"This path takes WebSocket connections only.\n")
    response.headers["Upgrade"] = "websocket"
    return response


async def _page(request: Request) -> Response:
    return live_state(request).static.answer("/" + request.path_params["path"])


async def _no_socket(websocket: WebSocket) -> None:
    await websocket.send_denial_response(http_response(404, b"Not found.\n"))


class _Origins:
    """Requests that a page of another site makes through its visitor's browser.

    WebSocket upgrades are `Admission`'s (403). An HTTP request whose ``Origin`` is
    neither the page's own nor allowed is answered 403 before any work, unless it
    fetches one of the page's public files; its answer allows no cross-origin
    reading. A page of an allowed origin (``allow_origins``) gets CORS: its
    preflight is answered 204, and every answer names it in
    ``Access-Control-Allow-Origin``, so its scripts can use the HTTP API.
    """

    def __init__(self, app: ASGIApp, state: LiveState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        conn = HTTPConnection(scope)
        origin = conn.headers.get("Origin")
        if scope["type"] != "http" or origin is None:
            await self.app(scope, receive, send)
            return
        path = scope["path"].removeprefix(scope.get("root_path", "")) or "/"
        method = scope["method"]
        if not self.state.admission.origin_allowed(origin, conn):
            if method in ("GET", "HEAD") and self.state.static.has(path):
                await self.app(scope, receive, send)
                return
            await _foreign(path)(scope, receive, send)
            return
        allowed = self.state.options.allow_origins
        if origin not in allowed and "*" not in allowed:  # the page's own: no CORS
            await self.app(scope, receive, send)
            return
        cors = {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
        if method == "OPTIONS" and "Access-Control-Request-Method" in conn.headers:
            preflight = {
                "Access-Control-Allow-Methods": "GET, POST",
                "Access-Control-Allow-Headers": "Authorization, Content-Type",
                "Access-Control-Max-Age": "600",
            }
            await Response(status_code=204, headers={**cors, **preflight})(scope, receive, send)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in cors.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_cors)


def _foreign(path: str) -> Response:
    """The 403 of a request from another site's page: in OpenAI's shape on ``/v1/``."""
    if path.startswith("/v1/"):
        return OpenAIError(
            "This origin may not use this server: a page of another site cannot call "
            "its API (see --allow-origin).",
            code="origin_not_allowed",
            status=403,
        ).response()
    return http_response(403, b"This origin may not use this server.\n")


def create_app(
    options: ServerOptions,
    make_stream: StreamFactory,
    *,
    backlog: StreamBacklog | None = None,
    extra_routes: Sequence[BaseRoute] = (),
) -> Starlette:
    """The server as a Starlette app: each connection gets a stream from
    *make_stream*; *backlog* tells how far the model is behind (for "busy" and 503).

    *extra_routes* come before the catch-all route of the page's files, so they may
    use any path the app does not (``/v1/...``). Off loopback without a token, one is
    generated (``live_state(...).options.token``). The app's `LiveState` is
    ``app.state.livewhisper``; ``await app.state.livewhisper.close()`` ends its
    sessions as a shutdown of `server.LiveServer` does.
    """
    state = LiveState(options, make_stream, backlog or no_backlog)
    sockets = [*PROTOCOLS, CAPTIONS_PATH]
    routes: list[BaseRoute] = [
        *(audio_route(path, protocol) for path, protocol in PROTOCOLS.items()),
        WebSocketRoute(CAPTIONS_PATH, _captions),
        *(Route(path, _upgrade_required) for path in sockets),
        *extra_routes,
        Route("/{path:path}", _page),
        WebSocketRoute("/{path:path}", _no_socket),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(_Origins, state=state)])
    app.state.livewhisper = state
    return app
