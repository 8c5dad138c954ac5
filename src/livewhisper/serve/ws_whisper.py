"""``/ws/whisper/``: for clients written like the common tutorial.

They send ``MediaRecorder`` chunks (or raw 16 kHz PCM) as binary messages, with no
``start``, and append ``JSON.parse(event.data).text`` for every message: so they are
sent final events only, their streams make no partial text, and text from them
closes with 1003.
"""

from __future__ import annotations

from livewhisper.serve.connection import AudioConnection
from livewhisper.serve.streams import StreamRequest
from livewhisper.transcript import TextEvent


class WhisperConnection(AudioConnection):
    """Binary audio in, finals out; nothing else either way."""

    default_request = StreamRequest(partials=False)

    def delivers(self, event: TextEvent) -> bool:
        return event.type == "final"
