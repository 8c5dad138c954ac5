"""Who may connect: the token, the ``Origin``, and whether there is room.

Static files need none of this (the page is not secret); every WebSocket path does,
and so does any other route that uses the model or reads transcripts (`check_token`).
A refusal is an HTTP answer before the upgrade: 401, 403 or 503.
"""

from __future__ import annotations

import dataclasses
import hmac
import secrets

from starlette.requests import HTTPConnection
from starlette.responses import Response

from livewhisper.serve.options import ServerOptions
from livewhisper.serve.static import http_response
from livewhisper.serve.streams import StreamBacklog


def generate_token() -> str:
    return secrets.token_urlsafe(16)


def with_token(options: ServerOptions) -> ServerOptions:
    """*options* with a generated token when they serve off loopback without one,
    unless `ServerOptions.no_token` says to let anyone connect."""
    if options.loopback or options.token is not None or options.no_token:
        return options
    return dataclasses.replace(options, token=generate_token())


def token_given(token: str | None, conn: HTTPConnection) -> bool:
    """No *token* is needed, or the request carries it: ``?token=`` or an
    ``Authorization: Bearer`` header (as OpenAI's clients send their key)."""
    if token is None:
        return True
    given = conn.query_params.get("token", "")
    auth = conn.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        given = given or auth[7:].strip()
    return hmac.compare_digest(given.encode(), token.encode())


class Admission:
    """The checks of one server, in order: token (401), origin (403), room (503)."""

    def __init__(self, options: ServerOptions, backlog: StreamBacklog) -> None:
        self.options = options
        self.backlog = backlog
        self.closing = False  # the server is shutting down: no new connections

    def check(
        self, conn: HTTPConnection, *, viewer: bool, clients: int, viewers: int, token: bool = True
    ) -> Response | None:
        """None to let a WebSocket upgrade go on, else the answer that refuses it.
        *viewer*: a caption connection; *clients* and *viewers*: how many there are now;
        *token*: False where the route has checked the token itself."""
        refused = self.check_token(conn) if token else None
        if refused is not None:
            return refused
        origin = conn.headers.get("Origin")
        if origin is not None and not self.origin_allowed(origin, conn):
            return http_response(403, b"This origin may not connect.\n")
        return self.room(viewer=viewer, clients=clients, viewers=viewers)

    def check_token(self, conn: HTTPConnection) -> Response | None:
        """None if *conn* carries the server's token (or it has none), else 401: for
        every route that uses the model or reads transcripts."""
        if token_given(self.options.token, conn):
            return None
        return http_response(401, b"A valid token is required.\n")

    def origin_allowed(self, origin: str, conn: HTTPConnection) -> bool:
        """The page's own origin (same scheme, host and port), or one allowed."""
        allowed = self.options.allow_origins
        if "*" in allowed or origin in allowed:
            return True
        host = conn.headers.get("Host")
        secure = self.options.tls or conn.url.scheme in ("https", "wss")
        return host is not None and origin == f"{'https' if secure else 'http'}://{host}"

    def room(self, *, viewer: bool, clients: int, viewers: int) -> Response | None:
        """503 when the connections are at their limit, or, for audio, while the model
        does not keep up with the sessions it has."""
        opts = self.options
        if self.closing:
            return http_response(503, b"The server is shutting down.\n")
        if viewer:
            if viewers >= opts.max_viewers:
                return http_response(503, b"Too many caption viewers.\n")
        elif clients >= opts.max_clients:
            return http_response(503, b"Server busy: too many clients.\n")
        elif self.backlog(None)[0] > opts.max_waiting_per_session * max(1, clients):
            return http_response(503, b"Server busy: try again later.\n")
        return None
