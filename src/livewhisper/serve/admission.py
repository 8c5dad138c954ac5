"""Who may open a WebSocket: the token, the ``Origin``, and whether there is room.

Static files need none of this (the page is not secret); every WebSocket path does.
A refusal is an HTTP answer before the upgrade: 401, 403 or 503.
"""

from __future__ import annotations

import dataclasses
import hmac
import secrets

from websockets.http11 import Request, Response

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


class Admission:
    """The checks of one server, in order: token (401), origin (403), room (503)."""

    def __init__(self, options: ServerOptions, backlog: StreamBacklog) -> None:
        self.options = options
        self.backlog = backlog

    def check(
        self,
        request: Request,
        query: dict[str, list[str]],
        *,
        viewer: bool,
        clients: int,
        viewers: int,
    ) -> Response | None:
        """None to let the upgrade go on, else the answer that refuses it. *viewer*:
        a caption connection; *clients* and *viewers*: how many there are now."""
        if not self.token_given(request, query):
            return http_response(401, "Unauthorized", b"A valid token is required.\n")
        origin = request.headers.get("Origin")
        if origin is not None and not self.origin_allowed(origin, request):
            return http_response(403, "Forbidden", b"This origin may not connect.\n")
        return self.room(viewer=viewer, clients=clients, viewers=viewers)

    def token_given(self, request: Request, query: dict[str, list[str]]) -> bool:
        """The server has no token, or the request carries it (``?token=`` or a bearer)."""
        token = self.options.token
        if token is None:
            return True
        given = (query.get("token") or [""])[0]
        auth = request.headers.get("Authorization", "")
        if auth.lower().startswith("bearer "):
            given = given or auth[7:].strip()
        return hmac.compare_digest(given.encode(), token.encode())

    def origin_allowed(self, origin: str, request: Request) -> bool:
        """The page's own origin (same scheme, host and port), or one allowed."""
        allowed = self.options.allow_origins
        if "*" in allowed or origin in allowed:
            return True
        host = request.headers.get("Host")
        scheme = "https" if self.options.tls else "http"
        return host is not None and origin == f"{scheme}://{host}"

    def room(self, *, viewer: bool, clients: int, viewers: int) -> Response | None:
        """503 when the connections are at their limit, or, for audio, while the model
        does not keep up with the sessions it has."""
        opts = self.options
        if viewer:
            if viewers >= opts.max_viewers:
                return http_response(503, "Service Unavailable", b"Too many caption viewers.\n")
        elif clients >= opts.max_clients:
            return http_response(503, "Service Unavailable", b"Server busy: too many clients.\n")
        elif self.backlog(None)[0] > opts.max_waiting_per_session * max(1, clients):
            return http_response(503, "Service Unavailable", b"Server busy: try again later.\n")
        return None
