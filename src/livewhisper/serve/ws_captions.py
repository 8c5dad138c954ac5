"""``/ws/captions?session=ID|local|auto``: the read-only feed of the caption view.

A ``ready`` message, the last few finals of the session, then every event of the
session with a ``session`` field added. What the viewer sends is read and ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from livewhisper.serve.close import CLOSE_POLICY
from livewhisper.serve.hub import Feed, Hub
from livewhisper.serve.options import LOCAL_SESSION

RECENT_FINALS = 5  # sent to a viewer that comes later
QUEUE_SIZE = 256  # messages waiting for a viewer before it is closed as too slow


async def serve_viewer(ws: ServerConnection, hub: Hub, query: dict[str, list[str]]) -> None:
    """Follow the session the query names ("auto": ``local`` if there is one, else
    every session) until the viewer goes; an unknown session closes with 1008."""
    wanted = (query.get("session") or ["auto"])[0]
    session = None if wanted == "auto" else hub.get(wanted)
    if wanted == LOCAL_SESSION and session is None:
        session = hub.create(LOCAL_SESSION)
    if wanted != "auto" and session is None:
        await ws.close(CLOSE_POLICY, "no such session")
        return
    queue: Feed = asyncio.Queue(maxsize=QUEUE_SIZE)
    hub.follow(session, queue)
    shown = session or hub.sessions.get(LOCAL_SESSION)
    try:
        await ws.send(json.dumps({"type": "ready", "session": wanted}))
        if shown is not None:
            for final in list(shown.finals)[-RECENT_FINALS:]:
                await ws.send(json.dumps({**final, "session": shown.id}))
        await _forward(ws, queue)
    except ConnectionClosed:
        pass
    finally:
        hub.unfollow(session, queue)


async def _forward(ws: ServerConnection, queue: Feed) -> None:
    """Send what the hub queues until the viewer goes, or close one that falls behind."""
    reader = asyncio.create_task(_drain(ws))
    while not reader.done():
        getter = asyncio.create_task(queue.get())
        await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
        if not getter.done():
            getter.cancel()
            break
        if queue.full():
            await ws.close(CLOSE_POLICY, "the viewer does not keep up")
            break
        await ws.send(json.dumps(getter.result(), ensure_ascii=False))


async def _drain(ws: ServerConnection) -> None:
    """Read and ignore what a viewer sends, until it goes."""
    with contextlib.suppress(ConnectionClosed):
        async for _ in ws:
            pass
