"""The sessions of one server and the caption viewers that follow them.

A session is a transcript that outlives the connection feeding it, so a page that
reconnects resumes it (ids and times go on). Viewers get the session's events
through a bounded queue each; the hub lives on the event loop and is not locked.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from livewhisper.serve.options import LOCAL_SESSION
from livewhisper.transcript import TextEvent, Word

#: A viewer's queue of messages (text events with a ``session`` field).
Feed = asyncio.Queue[dict[str, Any]]


class SessionOwner(Protocol):
    """The connection feeding a session."""

    async def hand_over(self) -> None:
        """Another connection resumes the session: finish the stream and step aside."""
        ...


@dataclass
class HubSession:
    """A transcript that outlives the connection that feeds it, so it can be resumed."""

    id: str
    finals: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=2000))
    next_id: int = 0
    audio_seconds: float = 0.0  # stream time of the next stream's first sample
    owner: SessionOwner | None = None
    viewers: set[Feed] = field(default_factory=set)
    last_active: float = field(default_factory=time.monotonic)


class Hub:
    """The sessions of one server, and the caption viewers following them."""

    def __init__(self, resume_seconds: float, max_sessions: int = 256) -> None:
        self.sessions: dict[str, HubSession] = {}
        self.followers: set[Feed] = set()  # viewers of "auto"
        self.viewers = 0  # caption connections following a session or "auto"
        self.resume_seconds = resume_seconds
        self.max_sessions = max_sessions

    def create(self, session_id: str | None = None) -> HubSession:
        self.expire()
        sid = session_id or secrets.token_urlsafe(12)
        session = HubSession(sid)
        self.sessions[sid] = session
        return session

    def get(self, session_id: str) -> HubSession | None:
        self.expire()
        return self.sessions.get(session_id)

    def local(self) -> HubSession:
        """The session of the server's own microphone."""
        return self.sessions.get(LOCAL_SESSION) or self.create(LOCAL_SESSION)

    def expire(self) -> None:
        now = time.monotonic()
        idle = [
            s
            for s in self.sessions.values()
            if s.owner is None and not s.viewers and s.id != LOCAL_SESSION
        ]
        idle.sort(key=lambda s: s.last_active)
        surplus = len(self.sessions) - self.max_sessions
        for i, s in enumerate(idle):
            if i < surplus or now - s.last_active > self.resume_seconds:
                del self.sessions[s.id]

    def publish(self, session: HubSession, message: dict[str, Any]) -> None:
        """Record a final and pass a text event on to the session's viewers."""
        session.last_active = time.monotonic()
        if message["type"] == "final":
            session.finals.append(message)
        tagged = {**message, "session": session.id}
        targets = set(session.viewers)
        if session.id == LOCAL_SESSION or LOCAL_SESSION not in self.sessions:
            targets |= self.followers
        for queue in targets:
            _offer(queue, tagged)

    def follow(self, session: HubSession | None, queue: Feed) -> None:
        """*queue* gets the events of *session*, or with None those of "auto"."""
        self.viewers += 1
        (self.followers if session is None else session.viewers).add(queue)

    def unfollow(self, session: HubSession | None, queue: Feed) -> None:
        self.viewers -= 1
        (self.followers if session is None else session.viewers).discard(queue)


def _offer(queue: Feed, message: dict[str, Any]) -> None:
    """Queue a message for a viewer; a viewer too slow to keep up loses old partials."""
    if queue.full():
        return  # the viewer's sender closes it; see ws_captions
    queue.put_nowait(message)


def shift_event(event: TextEvent, id_base: int, offset: float) -> TextEvent:
    """An event of one stream placed in its session: ids and times continue the session's."""
    if not id_base and not offset:
        return event
    return dataclasses.replace(
        event,
        id=event.id + id_base,
        start=event.start + offset,
        end=event.end + offset,
        words=tuple(
            Word(w.start + offset, w.end + offset, w.word, w.probability) for w in event.words
        ),
    )
