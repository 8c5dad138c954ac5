"""The server's settings, and the paths it answers on."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

AUDIO_PATH = "/ws"  # the page's protocol (`ws_audio`)
WHISPER_PATHS = ("/ws/whisper/", "/ws/whisper")  # the tutorial clients' (`ws_whisper`)
CAPTIONS_PATH = "/ws/captions"  # the caption feed (`ws_captions`)
LOCAL_SESSION = "local"  # the session of the server's own microphone


@dataclass(frozen=True)
class ServerOptions:
    """Where to listen, who may connect, and the limits of each connection."""

    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None  # required on every WebSocket connection when set
    allow_origins: tuple[str, ...] = ()  # besides the page's own origin; "*" allows any
    certfile: str | None = None
    keyfile: str | None = None
    max_clients: int = 8  # audio connections at once
    max_viewers: int = 32  # caption connections at once
    max_message_bytes: int = 1 << 20
    max_session_seconds: float = 4 * 3600.0
    idle_timeout: float = 60.0  # seconds without a message from an audio client
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0
    #: Seconds a message to a client may wait for it to read; then the connection
    #: is given up as a client that does not read.
    send_timeout: float = 20.0
    #: Seconds a request's headers may take to arrive (slowloris): then 408 and the
    #: connection closed. Only where `server.LiveServer` runs the app.
    header_timeout: float = 10.0
    resume_seconds: float = 300.0  # how long a disconnected session can be resumed
    busy_utterances: int = 1  # utterances of a session waiting for the model before "busy"
    #: A session whose utterances have waited for the model without a break for this
    #: long is closed with 1013 (try again later): the delay stays bounded.
    max_wait_seconds: float = 30.0
    #: New audio clients get HTTP 503 while more utterances than this per session
    #: wait for the model (the model does not keep up now).
    max_waiting_per_session: float = 2.0
    #: Off loopback without a *token*, one is generated (`admission.with_token`)
    #: unless this is set: then anyone who can reach the port may connect.
    no_token: bool = False

    @property
    def tls(self) -> bool:
        return self.certfile is not None

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
