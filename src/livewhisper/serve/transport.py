"""What a protocol needs of a WebSocket, and that over Starlette's.

The protocol modules (`connection`, `ws_audio`, `ws_whisper`, `ws_captions`) speak
to a `Transport`: messages in as text or bytes, messages out, a close with a code,
and who is at the other end. `WebSocketTransport` is the one over an accepted
Starlette ``WebSocket``, so a protocol does not care which ASGI server runs it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from starlette.websockets import WebSocket, WebSocketDisconnect


class Disconnected(Exception):
    """The connection is gone: the client closed it, went away, or it was closed here."""

    def __init__(self, code: int | None = None, reason: str = "") -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


class Transport(Protocol):
    """One WebSocket connection, as a protocol sees it."""

    @property
    def remote(self) -> str | None:
        """The client's address (``host:port``), if known."""
        ...

    @property
    def headers(self) -> Mapping[str, str]:
        """The request's headers (case-insensitive names)."""
        ...

    async def receive(self) -> str | bytes:
        """The next message; `Disconnected` once the connection is gone."""
        ...

    async def send(self, message: str | bytes) -> None:
        """Send a text or binary message; `Disconnected` if the connection is gone."""
        ...

    async def close(self, code: int, reason: str = "") -> None:
        """Close with *code*; nothing if the connection is already gone."""
        ...


class WebSocketTransport:
    """A `Transport` over an accepted Starlette ``WebSocket``."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self._gone: Disconnected | None = None  # received a disconnect, or sent a close

    @property
    def remote(self) -> str | None:
        client = self.websocket.client
        return None if client is None else f"{client.host}:{client.port}"

    @property
    def headers(self) -> Mapping[str, str]:
        return self.websocket.headers

    async def receive(self) -> str | bytes:
        if self._gone is not None:
            raise self._gone
        message = await self.websocket.receive()
        if message["type"] == "websocket.disconnect":
            self._gone = Disconnected(message.get("code", 1005), message.get("reason") or "")
            raise self._gone
        text = message.get("text")
        if text is not None:
            return str(text)
        return bytes(message.get("bytes") or b"")

    async def send(self, message: str | bytes) -> None:
        if self._gone is not None:
            raise self._gone
        try:
            if isinstance(message, str):
                await self.websocket.send_text(message)
            else:
                await self.websocket.send_bytes(message)
        except (WebSocketDisconnect, OSError) as exc:
            self._gone = Disconnected(getattr(exc, "code", 1006))
            raise self._gone from None

    async def close(self, code: int, reason: str = "") -> None:
        if self._gone is not None:
            return
        self._gone = Disconnected(code, reason)
        try:
            await self.websocket.close(code, reason)
        except (WebSocketDisconnect, OSError):
            pass  # the client went first
