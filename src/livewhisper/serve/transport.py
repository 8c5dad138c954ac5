"""What a protocol needs of a WebSocket, and that over Starlette's.

The protocol modules (`connection`, `ws_audio`, `ws_whisper`, `ws_captions`) speak
to a `Transport`: messages in as text or bytes, messages out, a close with a code,
and who is at the other end. `WebSocketTransport` is the one over an accepted
Starlette ``WebSocket``, so a protocol does not care which ASGI server runs it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Protocol

from starlette.websockets import WebSocket, WebSocketDisconnect

from livewhisper.serve.close import clip


class Disconnected(Exception):
    """The connection is gone: the client closed it, went away, or it was closed here."""

    def __init__(self, code: int | None = None, reason: str = "") -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


#: The reason of the `Disconnected` of a send the client did not take in time.
NOT_READING = "the client does not read its messages"


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
    """A `Transport` over an accepted Starlette ``WebSocket``.

    A message (or the close) that the client has not taken within *send_timeout*
    seconds, because it does not read and the socket's buffers are full, gives the
    connection up: `Disconnected` (1006), and the handler ends instead of waiting
    for ever.

    A send that finds the client gone ends sending, not receiving: what the client
    sent before it closed (the last seconds of its audio) is still received, up to
    the disconnect the server hands over after it.
    """

    def __init__(self, websocket: WebSocket, send_timeout: float = 20.0) -> None:
        self.websocket = websocket
        self.send_timeout = send_timeout
        self._gone: Disconnected | None = None  # received a disconnect, or sent a close
        self._unsendable: Disconnected | None = None  # a send found the client gone

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
        gone = self._gone or self._unsendable
        if gone is not None:
            raise gone
        try:
            if isinstance(message, str):
                sending = self.websocket.send_text(message)
            else:
                sending = self.websocket.send_bytes(message)
            await asyncio.wait_for(sending, self.send_timeout)
        except asyncio.TimeoutError:
            self._gone = Disconnected(1006, NOT_READING)
            raise self._gone from None
        except (WebSocketDisconnect, OSError) as exc:
            self._unsendable = Disconnected(getattr(exc, "code", 1006))
            raise self._unsendable from None
        except RuntimeError:  # the server's protocol has closed it (a frame too big)
            self._gone = Disconnected(1006)
            raise self._gone from None

    async def close(self, code: int, reason: str = "") -> None:
        if self._gone is not None:
            return
        reason = clip(reason)  # a reason quoting what the client sent can be any length
        self._gone = Disconnected(code, reason)
        try:
            await asyncio.wait_for(self.websocket.close(code, reason), self.send_timeout)
        except (WebSocketDisconnect, OSError, RuntimeError, asyncio.TimeoutError):
            pass  # the client went first, the protocol closed it, or it does not read
