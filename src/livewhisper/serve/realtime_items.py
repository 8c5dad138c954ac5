"""The bookkeeping of a Realtime transcription session (docs/realtime.md), with no
socket, thread or clock: the item ids, a live stream's utterances as items, and a
manual session's audio until it is committed. The events come from
`realtime_events`; `ws_realtime` runs a connection over these.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from livewhisper.audio.pcm import SAMPLE_RATE
from livewhisper.serve.realtime_events import (
    MIN_COMMIT_MS,
    buffer_full,
    commit_empty,
    completed,
    delta,
)
from livewhisper.transcript import TextEvent


class Items:
    """The session's item ids, and the last committed one (``previous_item_id``)."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._numbers = itertools.count()
        self.last: str | None = None

    def new(self) -> str:
        return f"item_{self._prefix}{next(self._numbers):04d}"

    def commit(self, item: str) -> dict[str, Any]:
        """``input_audio_buffer.committed`` for *item*, after the last one."""
        previous, self.last = self.last, item
        return {
            "type": "input_audio_buffer.committed",
            "item_id": item,
            "previous_item_id": previous,
        }


@dataclass
class _Open:
    item: str
    start: float
    end: float
    sent: str = ""  # what the deltas have said


@dataclass
class Utterances:
    """One live stream's utterances as items (`TextEvent` in, events out).

    An utterance's first event starts its item (``speech_started``); each partial
    sends the words it newly commits as a delta (committed words stay, so the deltas
    only ever add); the final stops, commits and completes it with its whole text.
    Times are stream seconds, placed in the session by *base* seconds.
    """

    items: Items
    base: float = 0.0
    open: dict[int, _Open] = field(default_factory=dict)
    done: int = -1  # the newest utterance completed

    def _ms(self, t: float) -> int:
        return round((self.base + t) * 1000)

    def on_event(self, event: TextEvent) -> list[dict[str, Any]]:
        if event.id <= self.done and event.id not in self.open:
            return []  # a late partial of an utterance already completed
        out: list[dict[str, Any]] = []
        u = self.open.get(event.id)
        if u is None:
            u = self.open[event.id] = _Open(self.items.new(), event.start, event.end)
            out.append(
                {
                    "type": "input_audio_buffer.speech_started",
                    "item_id": u.item,
                    "audio_start_ms": self._ms(event.start),
                }
            )
        u.end = max(u.end, event.end)
        if event.type == "partial":
            if event.stable.startswith(u.sent) and len(event.stable) > len(u.sent):
                out.append(delta(u.item, event.stable[len(u.sent) :]))
                u.sent = event.stable
            return out
        return out + self._complete(event.id, event.text)

    def _complete(self, uid: int, text: str) -> list[dict[str, Any]]:
        u = self.open.pop(uid)
        self.done = max(self.done, uid)
        out = [
            {
                "type": "input_audio_buffer.speech_stopped",
                "item_id": u.item,
                "audio_end_ms": self._ms(u.end),
            },
            self.items.commit(u.item),
        ]
        if u.sent and text.startswith(u.sent) and len(text) > len(u.sent):
            out.append(delta(u.item, text[len(u.sent) :]))
        out.append(completed(u.item, text, u.end - u.start))
        return out

    def without_text(self, before: int | None = None) -> list[dict[str, Any]]:
        """Complete, with no transcript, the items of utterances (before *before*, or
        all) that ended without a final: the guards found no speech in them, or the
        segmenter dropped them."""
        ids = sorted(i for i in self.open if before is None or i < before)
        return [e for i in ids for e in self._complete(i, "")]


class InputBuffer:
    """A manual session's audio not yet committed: 16 kHz samples, at most *limit*
    seconds, and the session sample where they start."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.start = 0
        self._chunks: list[np.ndarray] = []
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, samples: np.ndarray, at: int, *, bounded: bool = True) -> None:
        """*samples*, the session's from sample *at* on; *bounded*: refused past the
        limit (the resampler's tail at a commit is not)."""
        if bounded and (self._size + len(samples)) / SAMPLE_RATE > self.limit:
            raise buffer_full(self.limit)
        if not self._size:
            self.start = at
        self._chunks.append(samples)
        self._size += len(samples)

    def commit(self) -> np.ndarray:
        """The audio, for a commit: at least `MIN_COMMIT_MS` of it, or `commit_empty`
        (and the audio stays)."""
        ms = self._size / SAMPLE_RATE * 1000
        if ms < MIN_COMMIT_MS:
            raise commit_empty(ms)
        return self.take()

    def take(self) -> np.ndarray:
        """All the audio; the buffer is empty after."""
        audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.float32)
        self.clear()
        return audio

    def clear(self) -> None:
        self._chunks, self._size = [], 0
