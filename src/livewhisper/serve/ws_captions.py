"""``/ws/captions?session=ID|local|auto``: the read-only feed of the caption view.

A ``ready`` message, the last few finals of the session, then every event of the
session with a ``session`` field added. What the viewer sends is read and ignored.
When the server shuts down, what is queued is sent and the feed closes with 1001.
"""

from __future__ import annotations

import asyncio
import json

from livewhisper.serve.close import CLOSE_GOING_AWAY, CLOSE_POLICY
from livewhisper.serve.hub import Feed, Hub
from livewhisper.serve.options import LOCAL_SESSION
from livewhisper.serve.transport import Disconnected, Transport

RECENT_FINALS = 5  # sent to a viewer that comes later
QUEUE_SIZE = 256  # messages waiting for a viewer before it is closed as too slow


async def serve_viewer(
    transport: Transport, hub: Hub, wanted: str, stopping: asyncio.Event
) -> None:
    """Follow the session *wanted* names ("auto": ``local`` if there is one, else
    every session) until the viewer goes or *stopping* is set; an unknown session
    closes with 1008."""
    session = None if wanted == "auto" else hub.get(wanted)
    if wanted == LOCAL_SESSION and session is None:
        session = hub.create(LOCAL_SESSION)
    if wanted != "auto" and session is None:
        await transport.close(CLOSE_POLICY, "no such session")
        return
    queue: Feed = asyncio.Queue(maxsize=QUEUE_SIZE)
    hub.follow(session, queue)
    shown = session or hub.sessions.get(LOCAL_SESSION)
    try:
        await transport.send(json.dumps({"type": "ready", "session": wanted}))
        if shown is not None:
            for final in list(shown.finals)[-RECENT_FINALS:]:
                await transport.send(json.dumps({**final, "session": shown.id}))
        await _forward(transport, queue, stopping)
    except Disconnected:
        pass
    finally:
        hub.unfollow(session, queue)


async def _forward(transport: Transport, queue: Feed, stopping: asyncio.Event) -> None:
    """Send what the hub queues until the viewer goes, or close one that falls behind;
    at shutdown, send what is queued and close with 1001."""
    reader = asyncio.create_task(_drain(transport))
    stop = asyncio.create_task(stopping.wait())
    try:
        while not reader.done():
            getter = asyncio.create_task(queue.get())
            await asyncio.wait({getter, reader, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                getter.cancel()
                break
            if queue.full():
                await transport.close(CLOSE_POLICY, "the viewer does not keep up")
                return
            await transport.send(json.dumps(getter.result(), ensure_ascii=False))
        if stop.done() and not reader.done():
            while not queue.empty():
                await transport.send(json.dumps(queue.get_nowait(), ensure_ascii=False))
            await transport.close(CLOSE_GOING_AWAY, "server shutting down")
    finally:
        reader.cancel()
        stop.cancel()


async def _drain(transport: Transport) -> None:
    """Read and ignore what a viewer sends, until it goes."""
    try:
        while True:
            await transport.receive()
    except Disconnected:
        pass
