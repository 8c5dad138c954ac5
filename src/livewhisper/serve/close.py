"""How a WebSocket connection ends: the close codes, and the error that carries one."""

from __future__ import annotations

# Close codes (RFC 6455, section 7.4.1).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_UNSUPPORTED = 1003  # text where audio is expected
CLOSE_INVALID = 1007  # bad JSON, a bad control message, odd PCM byte counts, undecodable audio
CLOSE_POLICY = 1008  # idle, session too long, a client that does not read
CLOSE_TOO_BIG = 1009  # a message over the limit
CLOSE_INTERNAL = 1011
CLOSE_TRY_AGAIN = 1013  # the server is full


class ProtocolError(Exception):
    """A client broke the protocol; carries the close code and a reason for the client."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def clip(reason: str) -> str:
    """A close reason, or an event message, cut to the 123 bytes a close frame
    allows (`WebSocketTransport.close` cuts every reason it sends)."""
    data = reason.encode()
    return reason if len(data) <= 123 else data[:120].decode(errors="ignore") + "..."
