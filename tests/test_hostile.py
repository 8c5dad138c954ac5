"""Hostile clients against the real server on a free port (docs/server.md, "Security
and limits"): random and malformed messages on every WebSocket path and every OpenAI
REST route (Hypothesis), and the targeted cases: text where audio goes, garbage
that claims to be WebM, a 100 MB message, a client that never reads, a flood past
``max_clients``, slowloris requests, tokens, origins, path traversal, uploads.

Here the streams and the engine are stand-ins that answer at once, so the protocol
and its limits are tested on their own and quickly; ``test_hostile_cli.py`` runs the
same attacks against ``livewhisper serve`` with the real model while a well-behaved
session streams real speech.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import logging
import socket
import struct
import time
import wave
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from livewhisper.engine.scheduler import Scheduler
from livewhisper.serve.openai_audio import openai_routes
from livewhisper.serve.options import ServerOptions
from livewhisper.serve.thread import ServerThread
from livewhisper.serve.ws_realtime import realtime_routes
from test_realtime import LengthEngine, scripted_streams

TOKEN = "s3cret"
MAX_MESSAGE = 64_000
MAX_CLIENTS = 3
MAX_UPLOAD_MB = 0.5
HEADER_TIMEOUT = 2.0
SEND_TIMEOUT = 2.0
ORIGIN_ALLOWED = "https://studio.example"
ORIGIN_FOREIGN = "http://evil.example"

#: The WebSocket paths, and the close codes the server may end a fuzzed client with
#: (1000: the client's own close, echoed).
WS_PATHS = {
    "/ws": {1000, 1002, 1003, 1007, 1008, 1009},
    "/ws/whisper/": {1000, 1002, 1003, 1007, 1008, 1009},
    "/ws/captions": {1000, 1002, 1009},
    "/v1/realtime?intent=transcription": {1000, 1002, 1009},
}
SETTINGS = settings(
    max_examples=20,
    deadline=None,
    derandomize=True,  # the same examples on every run: a failure is repeatable
    database=None,  # and nothing written into the working tree
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class Problems(logging.Handler):
    """Log records that must never appear: errors, and anything with a traceback."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or record.levelno >= logging.ERROR:
            self.records.append(record)

    def check(self) -> None:
        found = [f"{r.name}: {r.getMessage()}" for r in self.records]
        self.records.clear()
        assert not found, found


@pytest.fixture(scope="module")
def problems() -> Iterator[Problems]:
    handler = Problems()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


@pytest.fixture(scope="module")
def server(problems: Problems) -> Iterator[ServerThread]:
    """One server for the module: every path, token off, small limits."""
    with Scheduler(LengthEngine()) as scheduler:  # type: ignore[arg-type]
        routes = [
            *openai_routes(scheduler, token=None, max_upload_mb=MAX_UPLOAD_MB),
            *realtime_routes(scheduler, model_name="tiny.en"),
        ]
        options = ServerOptions(
            port=0,
            max_message_bytes=MAX_MESSAGE,
            max_clients=MAX_CLIENTS,
            allow_origins=(ORIGIN_ALLOWED,),
            header_timeout=HEADER_TIMEOUT,
            send_timeout=SEND_TIMEOUT,
        )
        with ServerThread(options, scripted_streams(), extra_routes=routes) as thread:
            yield thread
    problems.check()


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


def speech_like(seconds: float, rate: int = 16_000) -> bytes:
    """A loud tone then quiet: one utterance for the scripted stream."""
    n = int(seconds * rate)
    wave_ = 0.3 * np.sin(2 * np.pi * 220 * np.arange(n) / rate)
    quiet = np.zeros(int(0.6 * rate))
    return (np.concatenate([wave_, quiet]) * 32767).astype("<i2").tobytes()


def wav_bytes(seconds: float = 1.0) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16_000)
        w.writeframes(speech_like(seconds))
    return out.getvalue()


async def good_session(port: int, path: str = "/ws") -> list[str]:
    """A well-behaved client: start, a second of audio, stop; its finals."""
    async with connect(f"ws://127.0.0.1:{port}{path}") as ws:
        if path == "/ws":
            await ws.send(json.dumps({"type": "start"}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "ready"
        audio = speech_like(1.0)
        for i in range(0, len(audio), 3200):
            await ws.send(audio[i : i + 3200])
        if path != "/ws":
            finals: list[str] = []
            while not finals:
                message = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if message["type"] == "final":
                    finals.append(message["text"])
            return finals
        await ws.send(json.dumps({"type": "stop"}))
        finals = []
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if message["type"] == "final":
                finals.append(message["text"])
            if message["type"] == "stopped":
                return finals


def check_well(server: ServerThread, problems: Problems) -> None:
    """Every connection has ended, nothing was logged, and a new session gets its text."""
    deadline = time.monotonic() + 10
    while server.server.audio and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not server.server.audio, "connections left open"
    assert run(good_session(server.port)) == ["w0 w1 w2."]
    problems.check()


# --- the property: random messages on every WebSocket path ----------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = [
    "type",
    "sample_rate",
    "language",
    "partials",
    "session",
    "audio",
    "event_id",
    "input_audio_format",
    "input_audio_transcription",
    "turn_detection",
]
KINDS = [
    "start",
    "stop",
    "session.update",
    "transcription_session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
]
sessions = st.fixed_dictionaries(
    {"type": st.sampled_from(["transcription", "other"]) | json_values},
    optional={
        "audio": st.fixed_dictionaries(
            {},
            optional={
                "input": st.fixed_dictionaries(
                    {},
                    optional={
                        "format": st.fixed_dictionaries(
                            {},
                            optional={
                                "type": st.sampled_from(["audio/pcm", "audio/wav"]) | json_values,
                                "rate": st.integers(-1, 10**12) | json_values,
                            },
                        ),
                        "turn_detection": st.none() | json_values,
                        "transcription": st.dictionaries(
                            st.sampled_from(["model", "language", "prompt"]), json_values
                        ),
                    },
                )
            },
        )
        | json_values,
        "turn_detection": st.none() | json_values,
        "input_audio_format": st.sampled_from(["pcm16", "g711"]) | json_values,
    },
)
control = st.fixed_dictionaries(
    {"type": st.sampled_from(KINDS) | json_values},
    optional={
        "sample_rate": st.sampled_from([8000, 16000, 48000, 0, 10**20]) | json_values,
        "language": st.sampled_from(["en", "auto", "xx", ""]) | json_values,
        "partials": json_values,
        "session": sessions | json_values,
        "audio": st.binary(max_size=600).map(lambda b: base64.b64encode(b).decode())
        | st.text(max_size=40)
        | json_values,
        "event_id": json_values,
    },
).map(json.dumps)
MAGIC = [b"\x1aE\xdf\xa3", b"OggS", b"RIFF\x24\x00\x00\x00WAVEfmt ", b"\x00\x00"]
messages = st.one_of(
    st.binary(max_size=4000),
    st.tuples(st.sampled_from(MAGIC), st.binary(max_size=2000)).map(lambda t: t[0] + t[1]),
    st.text(max_size=200),
    st.text(max_size=60).map(lambda t: "{" + t),
    st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6), json_values).map(json.dumps),
    control,
    json_values.map(json.dumps),
)


async def fuzz(port: int, path: str, sent: list[str | bytes]) -> tuple[int | None, list[Any]]:
    """Send *sent* on *path*, read what comes back until the server closes or is quiet
    for a moment, then close: the close code the server gave (or echoed; 1006 if it
    never answered the close) and what it sent."""
    received: list[Any] = []
    async with connect(f"ws://127.0.0.1:{port}{path}", max_size=None, close_timeout=5) as ws:
        with contextlib.suppress(ConnectionClosed, asyncio.TimeoutError):
            for message in sent:
                await ws.send(message)
            while True:
                received.append(await asyncio.wait_for(ws.recv(), 0.2))
    return ws.close_code, received


@pytest.mark.parametrize("path", list(WS_PATHS))
@SETTINGS
@given(sent=st.lists(messages, max_size=8))
def test_random_messages_on_every_websocket_path(
    server: ServerThread, problems: Problems, path: str, sent: list[str | bytes]
) -> None:
    """Whatever arrives, the server answers with a documented close code (with a
    reason) or, on the Realtime path, an ``error`` event, and goes on; no traceback."""
    code, received = run(fuzz(server.port, path, sent))
    assert code in WS_PATHS[path], (code, received)
    for message in received:
        event = json.loads(message)
        assert isinstance(event, dict) and isinstance(event.get("type"), str), event
        if event["type"] == "error":
            assert "\n" not in event["error"]["message"], event
    problems.check()


def test_after_the_fuzzing_a_good_client_gets_its_text(
    server: ServerThread, problems: Problems
) -> None:
    check_well(server, problems)
    assert run(good_session(server.port, "/ws/whisper/")) == ["w0 w1 w2."]


# --- the property: random bodies on the OpenAI REST routes ----------------------------

REST_FIELDS = [
    "model",
    "language",
    "prompt",
    "temperature",
    "response_format",
    "timestamp_granularities[]",
    "stream",
    "chunking_strategy",
    "include[]",
    "keywords[]",
]
field_values = st.sampled_from(
    ["whisper-1", "tiny.en", "json", "text", "srt", "vtt", "verbose_json", "true", "en"]
) | st.text(max_size=30)
files = st.one_of(
    st.binary(max_size=3000),
    st.tuples(st.sampled_from(MAGIC), st.binary(max_size=2000)).map(lambda t: t[0] + t[1]),
    st.just(b""),
    st.integers(0, 20).map(lambda n: wav_bytes(0.5)[: n * 100] if n else wav_bytes(0.5)),
)
file_types = st.sampled_from(["audio/wav", "audio/webm", "application/octet-stream", "text/plain"])
file_names = st.sampled_from(["a.wav", "a.webm", "../../etc/passwd", "", "a"]) | st.text(
    max_size=12
)


def multipart(
    fields: list[tuple[str, str]], file: tuple[str, bytes, str] | None, boundary: str = "xYz"
) -> bytes:
    out = io.BytesIO()
    for name, value in fields:
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode())
        out.write(value.encode(errors="surrogatepass") + b"\r\n")
    if file is not None:
        filename, data, kind = file
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"'
        out.write(f"{head}\r\nContent-Type: {kind}\r\n\r\n".encode(errors="surrogatepass"))
        out.write(data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue()


bodies = st.one_of(
    st.builds(
        multipart,
        st.lists(
            st.tuples(st.sampled_from(REST_FIELDS) | st.text(max_size=8), field_values), max_size=6
        ),
        st.none() | st.tuples(file_names, files, file_types),
    ),
    st.binary(max_size=2000),
)
content_types = st.sampled_from(
    [
        "multipart/form-data; boundary=xYz",
        "multipart/form-data",
        "multipart/form-data; boundary=other",
        "application/json",
        "application/x-www-form-urlencoded",
        "",
    ]
)
REST_PATHS = ["/v1/audio/transcriptions", "/v1/audio/translations"]


@SETTINGS
@given(
    path=st.sampled_from(REST_PATHS),
    body=bodies,
    content_type=content_types,
    truncate=st.none() | st.integers(0, 400),
)
def test_random_bodies_on_the_openai_routes(
    server: ServerThread,
    problems: Problems,
    path: str,
    body: bytes,
    content_type: str,
    truncate: int | None,
) -> None:
    """Any body gets 200 or a 4xx in OpenAI's error shape, with a one-line message;
    never a 500, never a traceback."""
    if truncate is not None:
        body = body[:truncate]
    headers = {"Content-Type": content_type} if content_type else {}
    answer = httpx.post(
        f"http://127.0.0.1:{server.port}{path}", content=body, headers=headers, timeout=30
    )
    assert answer.status_code == 200 or 400 <= answer.status_code < 500, answer.text
    if answer.status_code != 200:
        error = answer.json()["error"]
        assert error["message"] and "\n" not in error["message"], error
        assert error["type"] == "invalid_request_error", error
    problems.check()


# --- targeted cases: WebSocket ---------------------------------------------------------


async def closed_after(port: int, path: str, sent: list[str | bytes]) -> tuple[int | None, str]:
    async with connect(f"ws://127.0.0.1:{port}{path}", max_size=None) as ws:
        with contextlib.suppress(ConnectionClosed):
            for message in sent:
                await ws.send(message)
            while True:
                await asyncio.wait_for(ws.recv(), 10)
    return ws.close_code, ws.close_reason or ""


def test_text_where_audio_is_expected_is_1003(server: ServerThread, problems: Problems) -> None:
    code, reason = run(closed_after(server.port, "/ws/whisper/", ["hello"]))
    assert code == 1003 and "binary" in reason
    code, reason = run(closed_after(server.port, "/ws", ["hello"]))
    assert code == 1003 and "binary" in reason
    check_well(server, problems)


def test_a_reason_quoting_a_long_message_still_fits_its_close_frame(
    server: ServerThread, problems: Problems
) -> None:
    # A close frame's reason is at most 123 bytes (RFC 6455, 5.5): one that quotes
    # what the client sent (here a "type" of 200 three-byte characters) is cut to fit.
    sent = json.dumps({"type": {"\u20ac" * 200: None}}, ensure_ascii=False)
    code, reason = run(closed_after(server.port, "/ws", [sent]))
    assert code == 1007 and reason.startswith("unknown control message type"), (code, reason)
    assert len(reason.encode()) <= 123
    check_well(server, problems)


GARBAGE = {
    "webm": b"\x1aE\xdf\xa3" + bytes(range(256)) * 40,  # EBML's magic, then nonsense
    "ogg": b"OggS" + b"\xff" * 9000,
    "wav-then-webm": b"RIFF\x24\x00\x00\x00WAVE" + b"\x1aE\xdf\xa3" + b"\x00" * 5000,
}


@pytest.mark.parametrize("kind", list(GARBAGE))
def test_garbage_that_claims_a_container_is_1007(
    server: ServerThread, problems: Problems, kind: str
) -> None:
    """Bytes that start like a container but are not one: 1007 as soon as the decoder
    knows (at once for WebM's header, at the latest when the stream ends)."""
    garbage = GARBAGE[kind]
    chunks: list[str | bytes] = [garbage[i : i + 4000] for i in range(0, len(garbage), 4000)]
    start, stop = json.dumps({"type": "start"}), json.dumps({"type": "stop"})
    code, reason = run(closed_after(server.port, "/ws", [start, *chunks, stop]))
    assert code == 1007 and reason.startswith("audio stream"), (code, reason)
    if kind == "webm":  # no stop on this path: the header alone is enough
        code, reason = run(closed_after(server.port, "/ws/whisper/", chunks))
        assert code == 1007 and reason.startswith("audio stream"), (code, reason)
    check_well(server, problems)


def raw_upgrade(
    port: int, path: str = "/ws", extra: str = "", receive_buffer: int | None = None
) -> socket.socket:
    """A WebSocket opened by hand (for frames no client library sends); with
    *receive_buffer*, a socket that holds only that many bytes the client has not
    read (for a client that never reads)."""
    sock = socket.socket()
    sock.settimeout(10)
    if receive_buffer is not None:  # before connecting: it sets the TCP window
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.connect(("127.0.0.1", port))
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"Sec-WebSocket-Version: 13\r\n{extra}\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def frame_head(opcode: int, length: int) -> bytes:
    """A masked client frame's header (mask of zeros: the payload goes as it is)."""
    if length < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    return head + b"\x00\x00\x00\x00"


def read_close(sock: socket.socket, timeout: float = 10) -> int | None:
    """The code of the close frame the server sends (None: the socket just ended)."""
    sock.settimeout(timeout)
    data = b""
    with contextlib.suppress(OSError):
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            at = data.find(b"\x88")
            if at >= 0 and len(data) >= at + 4:
                return int.from_bytes(data[at + 2 : at + 4], "big")
    return None


@pytest.mark.parametrize("path", list(WS_PATHS))
def test_a_100_mb_message_is_closed_with_1009_before_it_arrives(
    server: ServerThread, problems: Problems, path: str
) -> None:
    """The frame announces 100 MB: the server closes at the header, having read a few
    kilobytes of it, whatever the path."""
    sock = raw_upgrade(server.port, path)
    try:
        sock.sendall(frame_head(0x2, 100 * 1 << 20))
        sent = 0
        with contextlib.suppress(OSError):
            sock.settimeout(5)
            while sent < 100 << 20:
                sock.sendall(b"\x00" * 65536)
                sent += 65536
        assert sent < 20 << 20, "the server read on past the limit"
        assert read_close(sock) in (1009, None)
    finally:
        sock.close()
    check_well(server, problems)


def test_a_message_just_over_the_limit_is_1009(server: ServerThread, problems: Problems) -> None:
    code, _ = run(closed_after(server.port, "/ws", [b"\x00" * (MAX_MESSAGE + 2)]))
    assert code == 1009
    check_well(server, problems)


def test_malformed_frames_close_with_1002(server: ServerThread, problems: Problems) -> None:
    for bad in [
        bytes([0x83, 0x80, 0, 0, 0, 0]),  # a reserved opcode
        bytes([0x82, 0x02]) + b"hi",  # not masked
        bytes([0xC2, 0x80, 0, 0, 0, 0]),  # RSV1 without an extension
        frame_head(0x9, 200) + b"\x00" * 200,  # a control frame over 125 bytes
        frame_head(0x1, 2) + b"\xff\xfe",  # text that is not UTF-8: 1007
    ]:
        sock = raw_upgrade(server.port, "/ws")
        try:
            sock.sendall(bad)
            assert read_close(sock) in (1002, 1007), bad
        finally:
            sock.close()
    check_well(server, problems)


def test_a_client_that_never_reads_is_dropped(
    server: ServerThread, problems: Problems, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It asks for an answer (a ``session.update``, answered with the session's
    settings) thousands of times and never reads one: its socket fills, the server
    stops reading from it (backpressure), a message waits at most ``send_timeout``
    to be taken, then its slot is freed and, once its handler has ended, the
    connection is dropped (`server.LINGER_SECONDS`)."""
    from livewhisper.serve import server as server_module

    monkeypatch.setattr(server_module, "LINGER_SECONDS", 2.0)
    sock = raw_upgrade(server.port, "/v1/realtime?intent=transcription", receive_buffer=4096)
    update = json.dumps({"type": "session.update", "session": {"type": "transcription"}})
    frame = frame_head(0x1, len(update)) + update.encode()
    deadline = time.monotonic() + 10
    while not server.server.audio and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.server.audio, "not admitted"
    sock.settimeout(0.5)
    started = time.monotonic()
    pending = b""
    try:
        while server.server.audio and time.monotonic() - started < 60:
            if not pending:
                pending = frame * 100
            try:
                pending = pending[sock.send(pending) :]
            except TimeoutError:
                pass  # the server stopped reading: it is pushing back
            except OSError:
                break  # it dropped the connection
        freed = time.monotonic() - started
        assert not server.server.audio, "the connection is still held"
        assert freed < 30, freed
        # Reading now, it gets what was buffered, then the connection ends.
        sock.settimeout(10)
        with contextlib.suppress(OSError):
            while sock.recv(65536):
                pass
        assert time.monotonic() - started < freed + 20
    finally:
        sock.close()
    check_well(server, problems)


def test_a_flood_past_max_clients_is_refused_with_503_and_the_admitted_work(
    server: ServerThread, problems: Problems
) -> None:
    async def main() -> None:
        admitted = [await connect(f"ws://127.0.0.1:{server.port}/ws") for _ in range(MAX_CLIENTS)]
        refused = 0
        for _ in range(20):
            with pytest.raises(InvalidStatus) as info:
                await connect(f"ws://127.0.0.1:{server.port}/ws/whisper/")
            assert info.value.response.status_code == 503
            refused += 1
        with pytest.raises(InvalidStatus) as info:
            await connect(f"ws://127.0.0.1:{server.port}/v1/realtime?intent=transcription")
        assert info.value.response.status_code == 503
        # The admitted ones still work.
        for ws in admitted:
            await ws.send(json.dumps({"type": "start"}))
            assert json.loads(await ws.recv())["type"] == "ready"
            audio = speech_like(1.0)
            for i in range(0, len(audio), 3200):
                await ws.send(audio[i : i + 3200])
            await ws.send(json.dumps({"type": "stop"}))
            kinds = []
            while "stopped" not in kinds:
                kinds.append(json.loads(await asyncio.wait_for(ws.recv(), 10))["type"])
            assert "final" in kinds
        for ws in admitted:
            await ws.close()
        assert refused == 20

    run(main())
    check_well(server, problems)


def test_a_slowloris_request_does_not_hold_its_connection(server: ServerThread) -> None:
    """Headers one byte at a time: the connection is closed once the header
    deadline passes, however slowly the bytes keep coming."""
    request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 1000
    sock = socket.create_connection(("127.0.0.1", server.port))
    started = time.monotonic()
    answer = b""
    try:
        sock.settimeout(0.25)
        for byte in request:
            try:
                sock.send(bytes([byte]))
                data = sock.recv(100)
            except TimeoutError:
                continue
            except OSError:
                break
            answer += data
            if not data:
                break
        elapsed = time.monotonic() - started
        assert elapsed < HEADER_TIMEOUT + 3, elapsed
        assert answer.startswith(b"HTTP/1.1 408"), answer
        head, _, body = answer.partition(b"\r\n\r\n")
        assert f"content-length: {len(body)}".encode() in head, answer
    finally:
        sock.close()


def test_a_slow_websocket_upgrade_and_a_silent_connection_are_cut_off_too(
    server: ServerThread,
) -> None:
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
    sock.settimeout(HEADER_TIMEOUT + 5)
    started = time.monotonic()
    with contextlib.suppress(OSError):
        while sock.recv(1000):
            pass
    assert time.monotonic() - started < HEADER_TIMEOUT + 3
    sock.close()
    # A connection that sends nothing at all, and one that dawdles after an answer.
    silent = socket.create_connection(("127.0.0.1", server.port))
    silent.settimeout(HEADER_TIMEOUT + 5)
    assert silent.recv(100) == b""
    silent.close()


def test_headers_still_incomplete_past_16_kib_are_400(server: ServerThread) -> None:
    """What a slow client's unfinished headers may hold of the server's memory."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000)
        data = sock.recv(65536)
    finally:
        sock.close()
    assert data.startswith(b"HTTP/1.1 400"), data[:200]


def test_a_slow_upload_body_is_408(server: ServerThread, monkeypatch: pytest.MonkeyPatch) -> None:
    """An upload whose body stops arriving frees its slot: 408."""
    from livewhisper.serve import openai_audio

    monkeypatch.setattr(openai_audio, "BODY_TIMEOUT", 1.0)
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        sock.sendall(
            b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: multipart/form-data; boundary=xYz\r\n"
            b"Content-Length: 5000\r\n\r\n--xYz\r\n"
        )
        data = b""
        while b"stopped arriving" not in data and (chunk := sock.recv(65536)):
            data += chunk
    finally:
        sock.close()
    assert data.startswith(b"HTTP/1.1 408"), data[:200]
    assert b"stopped arriving" in data


# --- targeted cases: tokens and origins ------------------------------------------------


@pytest.fixture(scope="module")
def guarded(problems: Problems) -> Iterator[ServerThread]:
    """A server with a token."""
    with Scheduler(LengthEngine()) as scheduler:  # type: ignore[arg-type]
        routes = [
            *openai_routes(scheduler, token=TOKEN, max_upload_mb=MAX_UPLOAD_MB),
            *realtime_routes(scheduler, model_name="tiny.en"),
        ]
        options = ServerOptions(port=0, token=TOKEN, allow_origins=(ORIGIN_ALLOWED,))
        with ServerThread(options, scripted_streams(), extra_routes=routes) as thread:
            yield thread
    problems.check()


async def ws_status(port: int, path: str, headers: dict[str, str] | None = None) -> int:
    """101 if the server accepts the WebSocket, else its HTTP status."""
    try:
        async with connect(f"ws://127.0.0.1:{port}{path}", additional_headers=headers):
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


WS_GUARDED = ["/ws", "/ws/whisper/", "/ws/captions", "/v1/realtime?intent=transcription"]


@pytest.mark.parametrize("path", WS_GUARDED)
def test_wrong_and_missing_tokens_are_401_on_every_websocket_path(
    guarded: ServerThread, path: str
) -> None:
    join = "&" if "?" in path else "?"
    port = guarded.port
    assert run(ws_status(port, path)) == 401
    assert run(ws_status(port, f"{path}{join}token=wrong")) == 401
    assert run(ws_status(port, f"{path}{join}token=")) == 401
    assert run(ws_status(port, path, {"Authorization": "Bearer wrong"})) == 401
    assert run(ws_status(port, path, {"Authorization": "Basic czNjcmV0"})) == 401
    assert run(ws_status(port, f"{path}{join}token={TOKEN}")) == 101
    assert run(ws_status(port, path, {"Authorization": f"Bearer {TOKEN}"})) == 101


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/audio/transcriptions"),
        ("POST", "/v1/audio/translations"),
        ("GET", "/v1/models"),
        ("GET", "/v1/models/whisper-1"),
    ],
)
def test_wrong_and_missing_tokens_are_401_on_the_openai_routes(
    guarded: ServerThread, method: str, path: str
) -> None:
    url = f"http://127.0.0.1:{guarded.port}{path}"
    files = {"file": ("a.wav", wav_bytes(), "audio/wav")}
    data = {"model": "whisper-1"}
    kw: dict[str, Any] = {"files": files, "data": data} if method == "POST" else {}
    for headers in [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Bearer"}]:
        answer = httpx.request(method, url, headers=headers, timeout=30, **kw)
        assert answer.status_code == 401, answer.text
        assert answer.json()["error"]["code"] == "invalid_api_key"
    answer = httpx.request(method, url, headers={"Authorization": f"Bearer {TOKEN}"}, **kw)
    assert answer.status_code == 200, answer.text


def test_the_page_needs_no_token(guarded: ServerThread) -> None:
    assert httpx.get(f"http://127.0.0.1:{guarded.port}/").status_code == 200


@pytest.mark.parametrize("path", WS_GUARDED)
def test_a_foreign_origin_is_403_on_every_websocket_path(guarded: ServerThread, path: str) -> None:
    join = "&" if "?" in path else "?"
    url = f"{path}{join}token={TOKEN}"
    port = guarded.port
    assert run(ws_status(port, url, {"Origin": ORIGIN_FOREIGN})) == 403
    assert run(ws_status(port, url, {"Origin": "null"})) == 403
    assert run(ws_status(port, url, {"Origin": f"http://127.0.0.1:{port}.evil.example"})) == 403
    assert run(ws_status(port, url, {"Origin": f"http://127.0.0.1:{port}"})) == 101
    assert run(ws_status(port, url, {"Origin": ORIGIN_ALLOWED})) == 101


def test_a_foreign_origin_is_403_on_the_openai_routes_and_gets_no_cors(
    guarded: ServerThread,
) -> None:
    """A page of another site cannot use the model through a visitor's browser: its
    request (or the browser's preflight) is refused before any work, and the answer
    allows no cross-origin reading. An allowed origin's page may read the answers."""
    base = f"http://127.0.0.1:{guarded.port}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    files = {"file": ("a.wav", wav_bytes(), "audio/wav")}
    data = {"model": "whisper-1"}
    for origin in (ORIGIN_FOREIGN, "null"):
        answer = httpx.post(
            f"{base}/v1/audio/transcriptions?token={TOKEN}",
            files=files,
            data=data,
            headers={"Origin": origin},
        )
        assert answer.status_code == 403, answer.text
        assert answer.json()["error"]["message"]
        assert "access-control-allow-origin" not in answer.headers
        answer = httpx.get(f"{base}/v1/models", headers={**auth, "Origin": origin})
        assert answer.status_code == 403
        preflight = httpx.options(
            f"{base}/v1/audio/transcriptions",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert preflight.status_code == 403
        assert "access-control-allow-origin" not in preflight.headers
    # The page's own origin, and an allowed one.
    own = httpx.get(f"{base}/v1/models", headers={**auth, "Origin": base})
    assert own.status_code == 200
    preflight = httpx.options(
        f"{base}/v1/audio/transcriptions",
        headers={
            "Origin": ORIGIN_ALLOWED,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == ORIGIN_ALLOWED
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    allowed = httpx.post(
        f"{base}/v1/audio/transcriptions",
        files=files,
        data=data,
        headers={**auth, "Origin": ORIGIN_ALLOWED},
    )
    assert allowed.status_code == 200, allowed.text
    assert allowed.headers["access-control-allow-origin"] == ORIGIN_ALLOWED
    # The page's files are public: any origin may fetch them.
    assert httpx.get(f"{base}/", headers={"Origin": ORIGIN_FOREIGN}).status_code == 200


# --- targeted cases: static files ------------------------------------------------------

TRAVERSALS = [
    "/../pyproject.toml",
    "/../../../../etc/passwd",
    "/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
    "/..%2f..%2f..%2fetc%2fpasswd",
    "/%252e%252e/etc/passwd",
    "//etc/passwd",
    "/etc/passwd",
    "/..\\..\\etc\\passwd",
    "/%5c..%5c..%5capp.py",
    "/web/../app.py",
    "/app.py",
    "/static.py",
    "/__init__.py",
    "/web/index.html",
    "/index.html%00.js",
    "/./index.html/../../app.py",
    "/C:/Windows/win.ini",
    "/captions/../../options.py",
]


@pytest.mark.parametrize("target", TRAVERSALS)
def test_path_traversal_on_static_files_is_404(server: ServerThread, target: str) -> None:
    """Only the page's own files are served (they are read once, by name): anything
    else is 404, or 400 where the request line itself is not valid HTTP."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        data = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                data += chunk
    finally:
        sock.close()
    status = int(data.split(b" ", 2)[1])
    assert status in (400, 404), data[:200]
    body = data.partition(b"\r\n\r\n")[2]
    assert b"root:" not in body and b"import" not in body and b"[project]" not in body


# --- targeted cases: uploads -----------------------------------------------------------


def post(server: ServerThread, files: Any, data: dict[str, str]) -> httpx.Response:
    return httpx.post(
        f"http://127.0.0.1:{server.port}/v1/audio/transcriptions",
        files=files,
        data=data,
        timeout=60,
    )


def test_upload_limits_and_bad_fields(server: ServerThread, problems: Problems) -> None:
    big = b"\x00" * int(MAX_UPLOAD_MB * 1_000_000 + 1000)
    cases: list[tuple[Any, dict[str, str], int, str | None]] = [
        ({"file": ("a.wav", big, "audio/wav")}, {"model": "whisper-1"}, 413, "file_too_large"),
        ({"file": ("a.wav", b"", "audio/wav")}, {"model": "whisper-1"}, 400, None),
        ({"file": ("a.wav", wav_bytes(), "audio/wav")}, {"model": "gpt-9"}, 404, "model_not_found"),
        ({"file": ("a.wav", wav_bytes(), "audio/wav")}, {}, 400, None),
        (
            {"file": ("a.wav", wav_bytes(), "audio/wav")},
            {"model": "whisper-1", "response_format": "xml"},
            400,
            "unsupported_value",
        ),
        (
            {"file": ("a.wav", b"\x1aE\xdf\xa3" * 100, "audio/wav")},
            {"model": "whisper-1"},
            400,
            None,
        ),
        (
            {"file": ("a.wav", b"RIFF" + b"\x00" * 100, "audio/wav")},
            {"model": "whisper-1"},
            400,
            None,
        ),
        (None, {"model": "whisper-1"}, 400, None),
    ]
    for files, data, status, code in cases:
        answer = post(server, files, data)
        assert answer.status_code == status, (data, answer.text)
        error = answer.json()["error"]
        assert error["message"] and "\n" not in error["message"]
        if code is not None:
            assert error["code"] == code
    # WebM content under a WAV name and type is decoded for what it is.
    from livewhisper.audio.containers import encode

    samples = np.frombuffer(speech_like(1.0), "<i2").astype(np.float32) / 32768
    webm = encode(samples, "webm")
    answer = post(server, {"file": ("a.wav", webm, "audio/wav")}, {"model": "whisper-1"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["text"].endswith("seconds")
    problems.check()


def test_a_declared_100_mb_upload_is_413_at_once(server: ServerThread) -> None:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        sock.sendall(
            b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: multipart/form-data; boundary=xYz\r\n"
            b"Content-Length: 104857600\r\n\r\n"
        )
        data = sock.recv(65536)
    finally:
        sock.close()
    assert data.startswith(b"HTTP/1.1 413"), data[:200]
