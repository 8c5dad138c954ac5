"""``/ws``: the page's protocol (docs/server.md).

JSON control messages (``start``, ``stop``) as text, audio as binary (PCM at the
announced rate or a container stream), and back: ``ready``, the transcript's text
events (as ``--format jsonl`` writes them), ``status`` when busy, ``stopped``.
"""

from __future__ import annotations

import json
from typing import Any

from livewhisper.audio.pcm import SAMPLE_RATE
from livewhisper.serve.close import CLOSE_INVALID, CLOSE_UNSUPPORTED, ProtocolError
from livewhisper.serve.connection import AudioConnection
from livewhisper.serve.streams import StreamRequest


class ControlConnection(AudioConnection):
    """A client that starts and stops its streams, resumes sessions and hears it is busy."""

    async def on_text(self, text: str) -> None:
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
            self.send({"type": "stopped", "session": self.session_id})
        else:
            raise ProtocolError(CLOSE_INVALID, f"unknown control message type {kind!r}")

    async def start(self, message: dict[str, Any]) -> None:
        """End the stream there is, if any, and start a new one as *message* asks, in
        the session it names (resumed) or in this connection's own."""
        rate, request, resume = parse_start(message)
        await self.end_stream()
        self.request = request
        self.rate = rate
        resumed = await self.join(resume)
        assert self.session is not None
        self.open_stream()
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

    def tell_busy(self, busy: bool, seconds: float) -> None:
        state = "busy" if busy else "ok"
        self.send({"type": "status", "state": state, "behind": round(seconds, 1)})


def parse_start(message: dict[str, Any]) -> tuple[int, StreamRequest, str | None]:
    """The sample rate, the stream and the session to resume that a ``start`` asks for;
    `ProtocolError` (1007) for a field that is not valid."""
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
    return rate, StreamRequest(language=language, partials=partials), resume
