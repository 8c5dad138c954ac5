"""The server as an ASGI app: mounted in another app, with routes of its own added,
stopped with sessions open, and ``livewhisper serve`` ended by signals.

The scripted stream and the client helpers are those of test_server_protocol.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import threading
from collections.abc import Iterator

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from livewhisper.serve.app import audio_route, create_app, live_state
from livewhisper.serve.options import ServerOptions
from livewhisper.serve.server import running
from livewhisper.serve.thread import ServerThread
from livewhisper.serve.ws_audio import ControlConnection
from test_server_protocol import (
    NO_MICROPHONE,
    CountingStream,
    cli_server,
    frames,
    http_get,
    messages_until_closed,
    recv_json,
    recv_until,
    run,
    tone,
)


@pytest.fixture
def parent_site() -> Iterator[int]:
    """A Starlette site of its own (``/``) with livewhisper mounted at ``/live``, served
    by uvicorn on a free port (bound first, so clients may connect at once)."""

    async def home(request: Request) -> Response:
        return PlainTextResponse("the parent site\n", headers={"Connection": "close"})

    live = create_app(ServerOptions(), CountingStream)
    site = Starlette(routes=[Route("/", home), Mount("/live", app=live)])
    sock = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(site, lifespan="off", log_config=None))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def test_mounted_under_a_prefix_the_app_serves_its_page_and_sessions(parent_site: int) -> None:
    port = parent_site
    base = f"ws://127.0.0.1:{port}/live"

    async def main() -> None:
        status, _, body = await http_get(port, "/")
        assert status == 200 and body == b"the parent site\n"
        status, headers, body = await http_get(port, "/live/")
        assert status == 200 and headers["content-type"].startswith("text/html")
        assert b"app.js" in body  # relative: the page finds its files and sockets here
        status, _, _ = await http_get(port, "/live/app.js")
        assert status == 200
        status, _, _ = await http_get(port, "/live/ws")
        assert status == 426
        status, _, _ = await http_get(port, "/live/nope")
        assert status == 404

        viewer = await connect(f"{base}/ws/captions")
        assert (await recv_json(viewer))["type"] == "ready"
        async with connect(f"{base}/ws", origin=f"http://127.0.0.1:{port}") as ws:  # type: ignore[arg-type]
            await ws.send(json.dumps({"type": "start", "partials": False}))
            sid = (await recv_json(ws))["session"]
            for frame in frames(tone(2.0)):
                await ws.send(frame)
            await ws.send(json.dumps({"type": "stop"}))
            messages = await recv_until(ws, "stopped")
        assert [(m["type"], m.get("text")) for m in messages] == [
            ("final", "2.00"),
            ("stopped", None),
        ]
        event = await recv_json(viewer)
        assert event["text"] == "2.00" and event["session"] == sid
        await viewer.close()

    run(main())


def test_stopping_the_server_sends_the_last_finals_then_closes_with_1001() -> None:
    thread = ServerThread(ServerOptions(port=0), CountingStream).start()
    assert thread.port > 0 and thread.url("/").endswith(f":{thread.port}/")

    async def main() -> None:
        url = f"ws://127.0.0.1:{thread.port}"
        viewer = await connect(f"{url}/ws/captions")
        assert (await recv_json(viewer))["type"] == "ready"
        async with connect(f"{url}/ws") as ws:
            await ws.send(json.dumps({"type": "start"}))
            assert (await recv_json(ws))["type"] == "ready"
            await ws.send(tone(1.5))
            assert (await recv_json(ws))["text"] == "1 s"  # the audio is in
            stopping = asyncio.create_task(asyncio.to_thread(thread.stop))
            messages = await messages_until_closed(ws)
            assert [m["text"] for m in messages if m["type"] == "final"] == ["1.50"]
            assert ws.close_code == 1001
        # The caption feed got that final too, then the same close.
        seen = await messages_until_closed(viewer)
        assert [m["text"] for m in seen if m["type"] == "final"] == ["1.50"]
        assert viewer.close_code == 1001
        await stopping

    run(main())
    thread.stop()  # idempotent


def test_extra_routes_come_before_the_pages_and_share_the_token() -> None:
    async def models(request: Request) -> Response:
        refused = live_state(request).admission.check_token(request)
        return refused or JSONResponse({"data": [{"id": "whisper-1"}]})

    extra = [Route("/v1/models", models), audio_route("/v1/stream", ControlConnection)]
    options = ServerOptions(port=0, token="s3cret")

    async def main() -> None:
        async with running(options, CountingStream, extra_routes=extra) as server:
            port = server.port
            status, _, _ = await http_get(port, "/v1/models", "Connection: close\r\n")
            assert status == 401
            bearer = "Authorization: Bearer s3cret\r\n"
            status, _, body = await http_get(port, "/v1/models", bearer + "Connection: close\r\n")
            assert status == 200 and json.loads(body)["data"][0]["id"] == "whisper-1"
            status, _, _ = await http_get(port, "/v1/models?token=s3cret", "Connection: close\r\n")
            assert status == 200
            status, _, _ = await http_get(port, "/")  # the page needs no token
            assert status == 200

            url = f"ws://127.0.0.1:{port}/v1/stream"
            with pytest.raises(InvalidStatus) as info:
                await connect(url)
            assert info.value.response.status_code == 401
            headers = {"Authorization": "Bearer s3cret"}
            async with connect(url, additional_headers=headers) as ws:
                await ws.send(json.dumps({"type": "start", "partials": False}))
                assert (await recv_json(ws))["type"] == "ready"
                assert len(server.audio) == 1  # counted with the other audio clients
                await ws.send(tone(1.0))
                await ws.send(json.dumps({"type": "stop"}))
                texts = [m.get("text") for m in await recv_until(ws, "stopped")]
                assert texts == ["1.00", None]

    run(main())


@pytest.mark.parametrize("ending", ["SIGTERM", "SIGHUP", "SIGINT"])
def test_serve_command_ends_cleanly_on_signals(ending: str) -> None:
    """``livewhisper serve``: no microphone; a signal ends it with status 0, and an
    open session is closed with 1001 (going away)."""
    env = {**os.environ, **NO_MICROPHONE}
    with cli_server("serve", "--port", "0", env=env) as (proc, port, before):
        assert before == []

        async def main() -> None:
            async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
                await ws.send(json.dumps({"type": "start"}))
                assert (await recv_json(ws))["type"] == "ready"
                proc.send_signal(getattr(signal, ending))
                await messages_until_closed(ws)
                assert ws.close_code == 1001

        run(main())
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "Traceback" not in err and "Aborted" not in err, err
