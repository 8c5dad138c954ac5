"""The server's HTTP routes and WebSocket protocol, with real `websockets` clients.

Most tests use a scripted stream (it reports how much audio it was fed) so that the
protocol and its limits are tested on their own; the ``slow`` tests at the end run
the real model on real speech, several sessions at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import shutil
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidMessage, InvalidStatus

from livewhisper.audio.containers import encode
from livewhisper.metrics import word_error_rate as wer
from livewhisper.serve.options import ServerOptions
from livewhisper.serve.server import LiveServer, running
from livewhisper.serve.streams import StreamRequest
from livewhisper.serve.transport import Disconnected, WebSocketTransport
from livewhisper.transcript import TextEvent

T = TypeVar("T")
TIMEOUT = 60.0


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 120))


class CountingStream:
    """A stand-in for LiveStream: a partial per second of audio, a final on finish.

    Events are emitted from another thread, as the scheduler's worker does.
    """

    worker = ThreadPoolExecutor(max_workers=1)
    error: BaseException | None = None  # the stream contract (live.contract.AudioStream)

    def __init__(self, request: StreamRequest, emit: Callable[[TextEvent], None]) -> None:
        self.key = object()
        self.request = request
        self.emit = emit
        self.samples = 0
        self.next_partial = 16_000
        self.lock = threading.Lock()

    def feed(self, samples: np.ndarray) -> None:
        assert samples.dtype == np.float32 and samples.ndim == 1
        assert float(np.max(np.abs(samples), initial=0.0)) <= 1.0
        self.samples += len(samples)
        while self.request.partials and self.samples >= self.next_partial:
            t = self.next_partial / 16_000
            self.worker.submit(self.emit, TextEvent("partial", 0, f"{t:.0f} s", 0.0, t))
            self.next_partial += 16_000

    def finish(self) -> None:
        t = self.samples / 16_000
        self.worker.submit(self.emit, TextEvent("final", 0, f"{t:.2f}", 0.0, t)).result()


def tone(seconds: float, rate: int = 16_000) -> bytes:
    n = int(seconds * rate)
    wave = 0.3 * np.sin(2 * np.pi * 220 * np.arange(n) / rate)
    return (wave * 32767).astype("<i2").tobytes()


def frames(data: bytes, size: int = 3200) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def serve(**kw: Any) -> Any:
    options = ServerOptions(port=0, **kw)
    return running(options, CountingStream)


def ws_url(server: LiveServer, path: str = "/ws", query: str = "") -> str:
    return f"ws://127.0.0.1:{server.port}{path}{query}"


async def recv_json(ws: ClientConnection) -> dict[str, Any]:
    message = await asyncio.wait_for(ws.recv(), TIMEOUT)
    assert isinstance(message, str)
    data = json.loads(message)
    assert isinstance(data, dict)
    return data


async def recv_until(ws: ClientConnection, kind: str) -> list[dict[str, Any]]:
    """Messages up to and including the first of type *kind*."""
    seen = []
    while True:
        message = await recv_json(ws)
        seen.append(message)
        if message["type"] == kind:
            return seen


async def messages_until_closed(ws: ClientConnection) -> list[dict[str, Any]]:
    """Every message the server sends until it closes the connection."""
    messages = []
    with pytest.raises(ConnectionClosed):
        while True:
            messages.append(await recv_json(ws))
    return messages


async def closed_with(ws: ClientConnection) -> tuple[int, str]:
    """Wait for the server to close; the code and reason it gave."""
    await messages_until_closed(ws)
    assert ws.close_code is not None
    return ws.close_code, ws.close_reason or ""


async def http_get(port: int, path: str, headers: str = "") -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{headers}\r\n".encode())
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), TIMEOUT)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    fields = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    return status, fields, body


async def session_of(server: LiveServer, audio: bytes, **start: Any) -> list[dict[str, Any]]:
    async with connect(ws_url(server)) as ws:
        await ws.send(json.dumps({"type": "start", **start}))
        ready = await recv_json(ws)
        assert ready["type"] == "ready"
        for frame in frames(audio):
            await ws.send(frame)
        await ws.send(json.dumps({"type": "stop"}))
        return await recv_until(ws, "stopped")


@contextlib.contextmanager
def cli_server(
    *args: str, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[str], int, list[str]]]:
    """``python -m livewhisper ARGS`` once it serves: the process, its port, and the
    lines it wrote on stderr before "Serving on". Killed at the end if still running."""
    command = [sys.executable, "-m", "livewhisper", *args]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stderr is not None
        before: list[str] = []
        line = proc.stderr.readline()
        while line and not line.startswith("Serving on "):
            before.append(line)
            line = proc.stderr.readline()
        match = re.search(r"^Serving on http://127\.0\.0\.1:(\d+)/", line)
        assert match, [*before, line]
        yield proc, int(match.group(1)), before
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


# --- HTTP ------------------------------------------------------------------------------


def test_pages_and_assets_are_served_and_nothing_else() -> None:
    async def main() -> None:
        async with serve() as server:
            port = server.port
            status, headers, body = await http_get(port, "/")
            assert status == 200 and headers["content-type"].startswith("text/html")
            assert b"app.js" in body
            status, headers, body = await http_get(port, "/captions?session=local&bg=dark")
            assert status == 200 and b"ws/captions" in body
            for path, kind in [
                ("/app.js", "text/javascript"),
                ("/worklet.js", "text/javascript"),
                ("/style.css", "text/css"),
            ]:
                status, headers, body = await http_get(port, path)
                assert status == 200 and headers["content-type"].startswith(kind), path
                assert int(headers["content-length"]) == len(body) > 100
            for path in [
                "/nope",
                "/../pyproject.toml",
                "/..%2f..%2fpyproject.toml",
                "/%2e%2e/server.py",
                "/web/app.js",
                "//etc/passwd",
                "/..\\server.py",
                "/static/../../server.py",
                "/server.py",
            ]:
                status, _, _ = await http_get(port, path)
                assert status == 404, path

    run(main())


def test_websocket_paths_never_answer_404_to_plain_http() -> None:
    async def main() -> None:
        async with serve() as server:
            for path in ["/ws", "/ws/whisper/", "/ws/whisper", "/ws/captions"]:
                status, _, _ = await http_get(server.port, path)
                assert status == 426, path  # Upgrade Required

    run(main())


# --- the protocol ---------------------------------------------------------------------


def test_pcm_session_start_audio_stop() -> None:
    async def main() -> None:
        async with serve() as server:
            messages = await session_of(server, tone(3.0))
            partials = [m["text"] for m in messages if m["type"] == "partial"]
            finals = [m for m in messages if m["type"] == "final"]
            assert partials == ["1 s", "2 s", "3 s"]
            assert [m["text"] for m in finals] == ["3.00"]
            assert finals[0]["end"] == 3.0 and finals[0]["language"] is None

    run(main())


def test_other_sample_rates_are_resampled_to_16k() -> None:
    async def main() -> None:
        async with serve() as server:
            messages = await session_of(server, tone(2.0, 48_000), sample_rate=48_000)
            final = next(m for m in messages if m["type"] == "final")
            assert abs(float(final["text"]) - 2.0) < 0.02

    run(main())


def test_audio_without_start_uses_defaults() -> None:
    async def main() -> None:
        async with serve() as server, connect(ws_url(server)) as ws:
            for frame in frames(tone(1.5)):
                await ws.send(frame)
            assert (await recv_json(ws))["text"] == "1 s"

    run(main())


def test_partials_can_be_turned_off() -> None:
    async def main() -> None:
        async with serve() as server:
            messages = await session_of(server, tone(2.0), partials=False)
            assert [m["type"] for m in messages] == ["final", "stopped"]

    run(main())


def test_a_reconnecting_client_resumes_its_session() -> None:
    async def main() -> None:
        async with serve() as server:
            async with connect(ws_url(server)) as ws:
                await ws.send(json.dumps({"type": "start"}))
                sid = (await recv_json(ws))["session"]
                for frame in frames(tone(2.0)):
                    await ws.send(frame)
                while (await recv_json(ws))["text"] != "2 s":  # all of it arrived
                    pass
            # The connection dropped mid-utterance; the stream was flushed. Resume:
            async with connect(ws_url(server)) as ws:
                await ws.send(json.dumps({"type": "start", "session": sid}))
                ready = await recv_json(ws)
                assert ready["session"] == sid and ready["resumed"] is True
                assert [h["text"] for h in ready["history"]] == ["2.00"]
                first_id = ready["history"][0]["id"]
                for frame in frames(tone(1.0)):
                    await ws.send(frame)
                await ws.send(json.dumps({"type": "stop"}))
                messages = await recv_until(ws, "stopped")
            final = next(m for m in messages if m["type"] == "final")
            assert final["id"] > first_id
            assert final["start"] == 2.0 and final["end"] == 3.0  # times continue
            # An unknown session id starts a new one.
            async with connect(ws_url(server)) as ws:
                await ws.send(json.dumps({"type": "start", "session": "no-such-session"}))
                ready = await recv_json(ws)
                assert ready["resumed"] is False and ready["session"] != sid

    run(main())


def test_container_audio_on_both_paths(encoded_speech: Callable[[str, str], bytes]) -> None:
    async def main() -> None:
        async with serve() as server:
            viewer = await connect(ws_url(server, "/ws/captions"))  # follows every session
            assert (await recv_json(viewer))["type"] == "ready"
            for path in ["/ws/whisper/", "/ws"]:
                for fmt in ["webm", "ogg", "wav"]:
                    data = encoded_speech("jfk.flac", fmt)
                    async with connect(ws_url(server, path)) as ws:
                        # MediaRecorder-like: chunks where only the first has the header.
                        for chunk in frames(data, len(data) // 4 + 1):
                            await ws.send(chunk)
                    # The client left: its stream is flushed and its final published.
                    event = await recv_json(viewer)
                    while event["type"] != "final":
                        event = await recv_json(viewer)
                    assert abs(float(event["text"]) - 11.0) < 0.05, (path, fmt)
            await viewer.close()

    run(main())


def test_a_send_that_finds_the_client_gone_does_not_stop_receiving() -> None:
    # A client that sends its last audio and closes while the server is sending it
    # a partial: the send fails, and the audio it sent before closing must still be
    # received (the container test above lost its last seconds that way, now and
    # then). The ASGI server hands over the messages, then the disconnect.
    from starlette.websockets import WebSocket

    async def main() -> None:
        inbox: list[dict[str, Any]] = [
            {"type": "websocket.connect"},
            {"type": "websocket.receive", "bytes": b"last audio"},
            {"type": "websocket.receive", "text": "{}"},
            {"type": "websocket.disconnect", "code": 1000},
        ]
        sends: list[str] = []

        async def receive() -> dict[str, Any]:
            return inbox.pop(0)

        async def send(message: dict[str, Any]) -> None:
            sends.append(message["type"])
            if message["type"] == "websocket.send":
                raise OSError("the client has gone")

        websocket = WebSocket({"type": "websocket", "path": "/ws", "headers": []}, receive, send)
        await websocket.accept()
        transport = WebSocketTransport(websocket)
        with pytest.raises(Disconnected):
            await transport.send("partial")
        with pytest.raises(Disconnected):
            await transport.send("another")  # not tried again
        assert sends == ["websocket.accept", "websocket.send"]
        assert await transport.receive() == b"last audio"
        assert await transport.receive() == "{}"
        with pytest.raises(Disconnected):
            await transport.receive()
        with pytest.raises(Disconnected):
            await transport.receive()

    run(main())


def test_compat_path_asks_for_finals_only() -> None:
    async def main() -> None:
        async with serve() as server:
            viewer = await connect(ws_url(server, "/ws/captions"))
            assert (await recv_json(viewer))["type"] == "ready"
            async with connect(ws_url(server, "/ws/whisper/")) as ws:
                await ws.send(tone(2.5))
                await ws.send(b"")  # an empty chunk is harmless
            # A simple client appends every message's text: its stream makes no partials
            # (they would cost model time and be appended as text), only finals.
            final = await recv_json(viewer)
            assert final["type"] == "final" and final["text"] == "2.50"
            await viewer.close()

    run(main())


# --- bad input --------------------------------------------------------------------------


BAD_INPUTS: list[tuple[str, str, list[Any], int]] = [
    ("odd byte count", "/ws", [b"\x00\x01\x02"], 1007),
    ("text where audio is expected", "/ws", ["hello, audio"], 1003),
    ("garbage JSON", "/ws", ['{"type": "start", '], 1007),
    ("JSON that is not an object", "/ws", ['{"type": "start"} []'], 1007),
    ("unknown control message", "/ws", ['{"type": "dance"}'], 1007),
    ("bad sample rate", "/ws", ['{"type": "start", "sample_rate": "fast"}'], 1007),
    ("bad language", "/ws", ['{"type": "start", "language": 5}'], 1007),
    ("text on the audio-only path", "/ws/whisper/", ['{"type": "start"}'], 1003),
    ("garbage after a WebM header", "/ws", [b"\x1a\x45\xdf\xa3" + bytes(range(256)) * 40], 1007),
    ("oversized message", "/ws", [b"\x00" * (70_000)], 1009),
]


@pytest.mark.parametrize(
    ("path", "messages", "code"),
    [case[1:] for case in BAD_INPUTS],
    ids=[case[0] for case in BAD_INPUTS],
)
def test_bad_input_gets_its_close_code_and_others_carry_on(
    path: str, messages: list[Any], code: int
) -> None:
    async def main() -> None:
        async with serve(max_message_bytes=64_000) as server:
            good = await connect(ws_url(server))
            await good.send(json.dumps({"type": "start"}))
            await recv_json(good)
            await good.send(tone(1.0))

            async with connect(ws_url(server, path), max_size=None) as bad:
                for message in messages:
                    await bad.send(message)
                got, reason = await closed_with(bad)
                assert got == code, reason
                assert reason or code == 1009

            # The good session is undisturbed.
            await good.send(tone(1.0))
            await good.send(json.dumps({"type": "stop"}))
            messages_back = await recv_until(good, "stopped")
            assert [m["text"] for m in messages_back if m["type"] == "final"] == ["2.00"]
            await good.close()

    run(main())


def test_malformed_frames_close_with_protocol_error() -> None:
    async def main() -> None:
        async with serve() as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(
                b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            response = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
            assert response.startswith(b"HTTP/1.1 101")
            # An unmasked client frame with a reserved opcode: a protocol violation.
            writer.write(bytes([0x83, 0x02]) + b"hi")
            data = await asyncio.wait_for(reader.read(), TIMEOUT)
            writer.close()
            assert data[0] == 0x88  # a close frame
            assert int.from_bytes(data[2:4], "big") == 1002

    run(main())


def test_token_is_required_when_set() -> None:
    async def main() -> None:
        async with serve(token="s3cret") as server:
            for query in ["", "?token=wrong", "?token="]:
                with pytest.raises(InvalidStatus) as info:
                    await connect(ws_url(server, query=query))
                assert info.value.response.status_code == 401
            async with connect(ws_url(server, query="?token=s3cret")) as ws:
                await ws.send(json.dumps({"type": "start"}))
                assert (await recv_json(ws))["type"] == "ready"
            headers = {"Authorization": "Bearer s3cret"}
            async with connect(ws_url(server, "/ws/captions"), additional_headers=headers) as ws:
                assert (await recv_json(ws))["type"] == "ready"
            assert server.url().endswith("?token=s3cret")

    run(main())


def test_a_server_off_loopback_makes_a_token_unless_told_not_to() -> None:
    # The rule is the server's, so the Python API gets it as the CLI does.
    assert LiveServer(ServerOptions(), CountingStream).options.token is None
    token = LiveServer(ServerOptions(host="0.0.0.0"), CountingStream).options.token
    assert token is not None and len(token) >= 16
    given = ServerOptions(host="0.0.0.0", token="s3cret")
    assert LiveServer(given, CountingStream).options.token == "s3cret"
    open_to_all = ServerOptions(host="0.0.0.0", no_token=True)
    assert LiveServer(open_to_all, CountingStream).options.token is None


def test_pcm_is_converted_and_resampled_off_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from livewhisper.audio.pcm import Resampler
    from livewhisper.serve import intake

    threads: set[int] = set()

    class Watched(Resampler):
        def __call__(self, block: np.ndarray, last: bool = False) -> np.ndarray:
            threads.add(threading.get_ident())
            return super().__call__(block, last)

    monkeypatch.setattr(intake, "Resampler", Watched)

    async def main() -> None:
        async with serve() as server:
            messages = await session_of(server, tone(1.0, 48_000), sample_rate=48_000)
            assert [m["type"] for m in messages][-2:] == ["final", "stopped"]
        assert threads and threading.get_ident() not in threads

    run(main())


def test_origin_must_match_unless_allowed() -> None:
    async def main() -> None:
        async with serve(allow_origins=("https://studio.example",)) as server:
            own = f"http://127.0.0.1:{server.port}"
            for origin in ["https://evil.example", f"http://localhost:{server.port}"]:
                with pytest.raises(InvalidStatus) as info:
                    await connect(ws_url(server), origin=origin)  # type: ignore[arg-type]
                assert info.value.response.status_code == 403
            for origin in [own, "https://studio.example"]:
                async with connect(ws_url(server), origin=origin) as ws:  # type: ignore[arg-type]
                    await ws.send(json.dumps({"type": "start"}))
                    assert (await recv_json(ws))["type"] == "ready"

    run(main())


def test_max_clients_answers_503_and_frees_the_slot() -> None:
    async def main() -> None:
        async with serve(max_clients=2) as server:
            first = await connect(ws_url(server))
            second = await connect(ws_url(server, "/ws/whisper/"))
            with pytest.raises(InvalidStatus) as info:
                await connect(ws_url(server))
            assert info.value.response.status_code == 503
            # Caption viewers do not take audio slots.
            async with connect(ws_url(server, "/ws/captions")) as viewer:
                assert (await recv_json(viewer))["type"] == "ready"
            await first.close()
            await asyncio.wait_for(_until(lambda: len(server.audio) < 2), TIMEOUT)
            async with connect(ws_url(server)) as third:
                await third.send(json.dumps({"type": "start"}))
                assert (await recv_json(third))["type"] == "ready"
            await second.close()

    run(main())


async def _until(check: Callable[[], bool]) -> None:
    while not check():
        await asyncio.sleep(0.01)


def test_idle_clients_are_closed() -> None:
    async def main() -> None:
        async with serve(idle_timeout=0.5) as server, connect(ws_url(server)) as ws:
            await ws.send(json.dumps({"type": "start"}))
            await ws.send(tone(1.0))
            messages = await messages_until_closed(ws)
            assert ws.close_code == 1008 and "idle" in (ws.close_reason or "")
            # The open utterance was flushed before the close.
            assert [m["text"] for m in messages if m["type"] == "final"] == ["1.00"]

    run(main())


def test_session_length_is_limited() -> None:
    async def main() -> None:
        async with serve(max_session_seconds=1.0) as server, connect(ws_url(server)) as ws:
            await ws.send(json.dumps({"type": "start"}))
            with pytest.raises(ConnectionClosed):
                for _ in range(100):  # 5 s of audio, paced like a live client
                    await ws.send(tone(0.05))
                    await asyncio.sleep(0.05)
            assert ws.close_code == 1008 and "session length" in (ws.close_reason or "")

    run(main())


def test_unanswered_pings_close_the_connection() -> None:
    async def main() -> None:
        async with serve(ping_interval=0.2, ping_timeout=0.3) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(
                b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
            # Never answer: the server pings, times out, and drops the connection.
            data = await asyncio.wait_for(reader.read(), TIMEOUT)
            writer.close()
            assert data[0] == 0x89  # it did ping
            await asyncio.wait_for(_until(lambda: not server.audio), TIMEOUT)

    run(main())


def test_busy_state_and_overload() -> None:
    pressure = {"waiting": 0, "seconds": 0.0}

    def backlog(stream: object) -> tuple[int, float]:
        if stream is None:  # the whole server
            return pressure["waiting"] * 2, pressure["seconds"] * 2
        return pressure["waiting"], pressure["seconds"]

    async def main() -> None:
        options = ServerOptions(port=0, max_wait_seconds=1.5)
        async with running(options, CountingStream, backlog=backlog) as server:
            async with connect(ws_url(server)) as ws:
                await ws.send(json.dumps({"type": "start"}))
                await recv_json(ws)
                # One utterance being transcribed is normal; two waiting is "busy".
                pressure.update(waiting=1, seconds=4.0)
                pressure.update(waiting=3, seconds=12.0)
                status = await recv_json(ws)
                assert status == {"type": "status", "state": "busy", "behind": 12.0}
                # While the server does not keep up, new audio clients are turned away;
                # caption viewers may still come.
                with pytest.raises(InvalidStatus) as info:
                    await connect(ws_url(server))
                assert info.value.response.status_code == 503
                async with connect(ws_url(server, "/ws/captions")) as viewer:
                    assert (await recv_json(viewer))["type"] == "ready"
                pressure.update(waiting=0, seconds=0.0)
                assert (await recv_json(ws))["state"] == "ok"
                # Late for longer than max_wait_seconds without a break: "try again later".
                pressure.update(waiting=2, seconds=9.0)
                await ws.send(tone(1.0))
                messages = await messages_until_closed(ws)
                assert ws.close_code == 1013 and "busy" in (ws.close_reason or "")
                kinds = [m.get("state") or m["type"] for m in messages]
                # The partial of the audio and the "busy" of the backlog come from two
                # threads, in either order; the open utterance is flushed last.
                assert sorted(kinds[:-1]) == ["busy", "partial"] and kinds[-1] == "final", kinds
            pressure.update(waiting=0, seconds=0.0)
            async with connect(ws_url(server)) as ws:
                await ws.send(json.dumps({"type": "start"}))
                assert (await recv_json(ws))["type"] == "ready"

    run(main())


# --- caption viewers and the local microphone ------------------------------------------


def test_caption_viewer_follows_a_session_and_the_local_microphone() -> None:
    async def main() -> None:
        async with serve() as server:
            async with connect(ws_url(server)) as ws:
                await ws.send(json.dumps({"type": "start"}))
                sid = (await recv_json(ws))["session"]
                viewer = await connect(ws_url(server, "/ws/captions", f"?session={sid}"))
                assert (await recv_json(viewer))["type"] == "ready"
                await ws.send(tone(1.0))
                event = await recv_json(viewer)
                assert event == {**event, "type": "partial", "text": "1 s", "session": sid}
                await viewer.close()
                # Its final comes once it stops: wait for it, or the "auto" viewer
                # below (which follows every session while there is no local one)
                # could get it first.
                await ws.send(json.dumps({"type": "stop"}))
                await recv_until(ws, "stopped")

            with pytest.raises(InvalidStatus):
                await connect(ws_url(server, "/nope"))
            unknown = await connect(ws_url(server, "/ws/captions", "?session=unknown"))
            code, _ = await closed_with(unknown)
            assert code == 1008

            auto = await connect(ws_url(server, "/ws/captions"))
            assert (await recv_json(auto))["type"] == "ready"
            emit = server.local_emitter()
            threading.Thread(
                target=emit, args=(TextEvent("final", 7, "from the local microphone", 1, 2),)
            ).start()
            event = await recv_json(auto)
            assert event["text"] == "from the local microphone" and event["session"] == "local"
            await auto.close()
            # A viewer that comes later sees the recent lines first.
            late = await connect(ws_url(server, "/ws/captions", "?session=local"))
            assert (await recv_json(late))["type"] == "ready"
            assert (await recv_json(late))["text"] == "from the local microphone"
            await late.close()

    run(main())


# --- the real model on real speech ------------------------------------------------------


@pytest.fixture(scope="module")
def scheduler(engine: Any) -> Any:
    from livewhisper.engine.scheduler import Scheduler

    with Scheduler(engine) as running_scheduler:
        yield running_scheduler


def real_server(scheduler: Any, **kw: Any) -> Any:
    from livewhisper.serve.streams import live_streams

    make, backlog = live_streams(scheduler)
    return running(ServerOptions(port=0, **kw), make, backlog=backlog)


async def stream_live(ws: ClientConnection, data: bytes, chunk_seconds: float = 0.1) -> None:
    """Send 16 kHz PCM (or any bytes) paced in real time."""
    loop = asyncio.get_running_loop()
    step = int(32_000 * chunk_seconds)
    t0 = loop.time()
    for n, i in enumerate(range(0, len(data), step), 1):
        await ws.send(data[i : i + step])
        await asyncio.sleep(max(0.0, t0 + n * chunk_seconds - loop.time()))


def pcm16(samples: np.ndarray, lead: float = 0.5, tail: float = 1.0) -> bytes:
    padded = np.concatenate(
        [
            np.zeros(int(lead * 16_000), np.float32),
            samples,
            np.zeros(int(tail * 16_000), np.float32),
        ]
    )
    return (np.clip(padded, -1, 1) * 32767).astype("<i2").tobytes()


@pytest.mark.slow
def test_concurrent_sessions_each_get_their_own_transcript(
    scheduler: Any,
    speech: Callable[[str], np.ndarray],
    references: dict[str, str],
) -> None:
    names = [
        "jfk.flac",
        "librivox_sense_and_sensibility_01_austen_64kb-0880.flac",
        "goforward.flac",
    ]

    async def pcm_client(server: LiveServer, name: str) -> str:
        async with connect(ws_url(server)) as ws:
            await ws.send(json.dumps({"type": "start", "language": "en"}))
            assert (await recv_json(ws))["type"] == "ready"
            sender = asyncio.create_task(stream_live(ws, pcm16(speech(name))))
            texts: list[str] = []
            while not sender.done():  # finals arrive while the audio still streams
                with contextlib.suppress(asyncio.TimeoutError):
                    event = await asyncio.wait_for(ws.recv(), 0.2)
                    message = json.loads(event)
                    if message["type"] == "final":
                        texts.append(message["text"])
            await sender
            await ws.send(json.dumps({"type": "stop"}))
            for message in await recv_until(ws, "stopped"):
                if message["type"] == "final":
                    texts.append(message["text"])
            return " ".join(texts)

    async def tutorial_client(server: LiveServer) -> str:
        """Like the common tutorial: MediaRecorder chunks every few seconds to /ws/whisper/,
        and ``text += JSON.parse(event.data).text`` for every message."""
        # The recorder keeps running after the speech: the stream goes on with silence.
        data = encode(np.concatenate([speech("jfk.flac"), np.zeros(48_000, np.float32)]), "webm")
        text = ""
        async with connect(ws_url(server, "/ws/whisper/")) as ws:
            chunk = len(data) // 5 + 1  # about 3 s of audio each; only the first has the header
            for i in range(0, len(data), chunk):
                await asyncio.sleep(2.8)  # MediaRecorder hands out what it recorded meanwhile
                await ws.send(data[i : i + chunk])
            # It has no end of stream to wait for: read until the clip's text is in.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while wer(references["jfk.flac"], text) >= 0.2 and loop.time() < deadline:
                with contextlib.suppress(asyncio.TimeoutError):
                    message = await asyncio.wait_for(ws.recv(), max(0.1, deadline - loop.time()))
                    text += json.loads(message)["text"] + " "
        return text

    async def bad_clients(server: LiveServer) -> list[int]:
        codes = []
        for payload in [b"\x01\x02\x03", "not json", b"\x1a\x45\xdf\xa3" + bytes(5000)]:
            async with connect(ws_url(server)) as bad:
                await bad.send(payload)
                codes.append((await closed_with(bad))[0])
            await asyncio.sleep(1.0)
        return codes

    async def main() -> None:
        # Correctness, not overload: a slow CI machine must not turn these clients away.
        patient = {"max_wait_seconds": 600.0, "max_waiting_per_session": 1000.0}
        async with real_server(scheduler, **patient) as server:
            results = await asyncio.gather(
                *(pcm_client(server, name) for name in names),
                tutorial_client(server),
                bad_clients(server),
            )
        *texts, tutorial, codes = results
        assert codes == [1007, 1003, 1007]
        for name, text in zip(names, texts, strict=True):
            assert wer(references[name], text) <= 0.3, (name, text)
        # No session got another's words.
        assert "country" not in texts[1] + texts[2] and "disposed" not in texts[0] + texts[2]
        assert wer(references["jfk.flac"], tutorial) < 0.2, tutorial
        assert "undefined" not in tutorial

    run(main())


# --- TLS and the command-line options ----------------------------------------------------


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_self_signed_tls_serves_wss_and_https(tmp_path: Path) -> None:
    from livewhisper.serve import tls

    cert = tls.self_signed(["localhost", "127.0.0.1"], tmp_path)
    again = tls.self_signed(["localhost", "127.0.0.1"], tmp_path)
    assert again.fingerprint == cert.fingerprint  # reused, not made anew
    assert len(cert.fingerprint.split(":")) == 32
    client_tls = ssl.create_default_context(cafile=str(cert.certfile))

    async def main() -> None:
        options = {"certfile": str(cert.certfile), "keyfile": str(cert.keyfile)}
        async with serve(**options) as server:
            assert server.url().startswith("https://127.0.0.1:")
            url = f"wss://localhost:{server.port}/ws"
            async with connect(
                url, ssl=client_tls, origin=f"https://localhost:{server.port}"
            ) as ws:  # type: ignore[arg-type]
                await ws.send(json.dumps({"type": "start"}))
                assert (await recv_json(ws))["type"] == "ready"
            # Plain ws to the TLS port gets no HTTP answer.
            with pytest.raises(InvalidMessage):
                await connect(f"ws://127.0.0.1:{server.port}/ws", open_timeout=5)

    run(main())


def test_serve_options_make_server_options() -> None:
    import click
    from click.testing import CliRunner

    from livewhisper.cli.serve import ServeSettings, prepare, serve_options

    seen: list[ServeSettings | None] = []

    @click.command()
    @serve_options
    @click.option("--other", default="x")
    def command(other: str, serve: ServeSettings | None) -> None:
        seen.append(serve)

    runner = CliRunner()
    assert runner.invoke(command, []).exit_code == 0
    assert seen[-1] is None
    result = runner.invoke(
        command,
        [
            *["--serve", "--port", "0", "--allow-origin", "https://a.example"],
            *["--max-clients", "3", "--send-timeout", "5", "--header-timeout", "4"],
        ],
    )
    assert result.exit_code == 0, result.output
    settings = seen[-1]
    assert settings is not None
    assert settings.options.port == 0 and settings.options.max_clients == 3
    assert (settings.options.send_timeout, settings.options.header_timeout) == (5.0, 4.0)
    assert settings.options.allow_origins == ("https://a.example",)
    assert settings.options.token is None and settings.options.loopback
    assert settings.local
    runner.invoke(command, ["--serve-only"])
    assert seen[-1] is not None and not seen[-1].local
    for bad in (["--keyfile", __file__], ["--token", "a", "--no-token"], ["--token", ""]):
        result = runner.invoke(command, ["--serve", *bad])
        assert result.exit_code == 2, (bad, result.output)

    from rich.console import Console

    console = Console(file=io.StringIO())
    runner.invoke(command, ["--serve", "--host", "0.0.0.0"])
    assert seen[-1] is not None
    options = prepare(seen[-1], console)
    assert options.token is not None and len(options.token) >= 16  # generated off loopback
    runner.invoke(command, ["--serve", "--host", "0.0.0.0", "--no-token"])
    assert seen[-1] is not None
    assert prepare(seen[-1], console).token is None


@pytest.mark.slow
def test_listen_serve_captions_the_local_input_and_serves_browsers(
    speech: Callable[[str], np.ndarray], references: dict[str, str]
) -> None:
    """``listen --input FILE --serve``: the file is the server's own microphone (session
    ``local``, shown to caption viewers) while a browser-like client streams its own."""
    from pathlib import Path

    data = Path(__file__).parent / "data"
    args = ["listen", "--quiet", "--format", "jsonl", "--input", str(data / "jfk.flac")]
    with cli_server(*args, "--serve", "--port", "0") as (proc, port, before):
        assert before == []

        async def main() -> tuple[str, str]:
            captions = await connect(f"ws://127.0.0.1:{port}/ws/captions?session=local")
            assert (await recv_json(captions))["type"] == "ready"
            async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
                await ws.send(json.dumps({"type": "start"}))
                assert (await recv_json(ws))["type"] == "ready"
                for frame in frames(pcm16(speech("goforward.flac"))):
                    await ws.send(frame)
                await ws.send(json.dumps({"type": "stop"}))
                browser = " ".join(
                    m["text"] for m in await recv_until(ws, "stopped") if m["type"] == "final"
                )
            # The file ends, listen ends, and the caption feed closes: all of it came.
            events = await messages_until_closed(captions)
            assert {e["session"] for e in events} == {"local"}
            # Partial text comes too, replaced by the finals.
            return browser, " ".join(e["text"] for e in events if e["type"] == "final")

        browser, local = run(main())
        assert wer(references["goforward.flac"], browser) <= 0.3, browser
        assert wer(references["jfk.flac"], local) < 0.2, local
        out, err = proc.communicate(timeout=60)  # the file ended: listen ends, exit 0
        assert proc.returncode == 0, err
        events = [json.loads(line) for line in out.splitlines()]
        printed = [e["text"] for e in events if e["type"] == "final"]
        assert " ".join(printed) == local  # stdout and the caption feed agree


#: The sound server pointed at a socket that does not exist: no input device opens.
NO_MICROPHONE = {"PULSE_SERVER": "unix:/nonexistent/livewhisper-test"}


def test_listen_serve_without_a_microphone_serves_browsers_and_ends_on_sigterm() -> None:
    """A headless server: no input device it can open (no sound card here, and the
    sound server pointed at a socket that does not exist), so ``listen --serve``
    says so in one line and serves browsers; SIGTERM (what systemd and Docker send)
    ends it cleanly with status 0."""
    import os
    import signal

    env = {**os.environ, **NO_MICROPHONE}
    with cli_server("listen", "--serve", "--port", "0", "-q", env=env) as (proc, port, before):
        (note,) = before
        assert note.startswith("livewhisper: note: ") and "serving browsers only" in note, note

        async def main() -> None:
            async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
                await ws.send(json.dumps({"type": "start"}))
                assert (await recv_json(ws))["type"] == "ready"

        run(main())
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "Traceback" not in err, err
