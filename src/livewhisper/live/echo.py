"""The same speech heard twice: a loudspeaker playing the call into an open
microphone. A microphone's final that says what a system-audio final said at the
same moment is an echo, and is dropped: the other side of the call is transcribed
once, as itself.

Pure but for the clock it is given: events in, the events to send out.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from difflib import SequenceMatcher

from livewhisper.transcript import TextEvent

_WORD = re.compile(r"[\w']+")


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def similar(a: str, b: str) -> float:
    """How alike two texts are, word by word: 1.0 the same words in order."""
    x, y = words(a), words(b)
    if not x or not y:
        return 0.0
    return SequenceMatcher(None, x, y, autojunk=False).ratio()


@dataclass
class Echo:
    """Drops the microphone finals that repeat a system final of the same moment.

    *system* names the inputs that carry what the computer plays. A microphone
    final that matches none of the system finals so far is held while *pending*
    says a system input still has speech it has not transcribed (its copy may come
    next), for at most *hold* seconds; each event taken, and `flush`, sends what is
    no longer held.
    """

    system: frozenset[str]
    pending: Callable[[], bool] = lambda: False
    similarity: float = 0.6  # the share of words alike, in order
    slack: float = 1.5  # seconds the two copies' times may differ by
    hold: float = 3.0
    clock: Callable[[], float] = time.monotonic
    dropped: list[TextEvent] = field(default_factory=list)
    _heard: deque[TextEvent] = field(default_factory=lambda: deque(maxlen=32))
    _held: list[tuple[float, TextEvent]] = field(default_factory=list)

    def take(self, event: TextEvent) -> list[TextEvent]:
        out: list[TextEvent] = []
        if event.type == "final" and event.source in self.system:
            self._heard.append(event)
            out.append(event)
        elif event.type == "final":
            if self._echo(event):
                self.dropped.append(event)
            else:
                self._held.append((self.clock(), event))
        else:
            out.append(event)
        return self._release(out, force=False)

    def flush(self) -> list[TextEvent]:
        return self._release([], force=True)

    def _echo(self, event: TextEvent) -> bool:
        return any(
            heard.start - self.slack <= event.end
            and event.start <= heard.end + self.slack
            and similar(heard.text, event.text) >= self.similarity
            for heard in self._heard
        )

    def _release(self, out: list[TextEvent], *, force: bool) -> list[TextEvent]:
        waiting = not force and self.pending()
        now = self.clock()
        kept: list[tuple[float, TextEvent]] = []
        for since, event in self._held:
            if self._echo(event):
                self.dropped.append(event)
            elif waiting and now - since < self.hold:
                kept.append((since, event))
            else:
                out.append(event)
        self._held = kept
        # What was held was heard before what released it: the transcript stays in
        # time order.
        return sorted(out, key=lambda e: (e.type != "final", e.start))
