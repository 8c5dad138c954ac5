"""The finals of several inputs as one transcript: in time order, and without the
echoes of a loudspeaker heard by a microphone.

Each input's finals come in the order its utterances end, and one input's final
can be decoded before another input's earlier speech is. So a final is held while
another input may still send a final that started before it (its open utterance
began earlier, or it has utterances waiting for the engine), at most `Merge.hold`
seconds, and what is released goes out by its start time.

The same speech heard twice (a call played on a loudspeaker into an open
microphone) would be transcribed twice, as two speakers. A microphone final that
says what a system-audio final said at the same moment is such an echo and is
left out: the other side of the call is transcribed once, as itself. The system
audio of that moment may not be transcribed yet (a long utterance of the other
side closes after the microphone's shorter ones), so a microphone final is held
until it is, at most `Merge.echo_hold` seconds (the longest utterance and its
decode, when the engine is behind).

Pure but for the clock and the question it is given.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from difflib import SequenceMatcher

from livewhisper.transcript import TextEvent

#: What an input has not transcribed yet: whether finals of it are waiting for the
#: engine, and the stream time its open utterance started at (None: none open).
Unfinished = tuple[bool, float | None]

_WORD = re.compile(r"[\w']+")


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def repeated(part: str, whole: str) -> float:
    """The share of *part*'s words that *whole* says too, in the same order: 1.0
    when *part* is a stretch of *whole*. Two inputs cut the same speech into
    utterances at different places, so a microphone's echo can be half of a
    system line, or span two."""
    x, y = words(part), words(whole)
    if not x or not y:
        return 0.0
    blocks = SequenceMatcher(None, x, y, autojunk=False).get_matching_blocks()
    return sum(b.size for b in blocks) / len(x)


@dataclass
class Merge:
    """Takes the events of a session's inputs and gives those to send now.

    *labels* are the inputs; *system* those that carry what the computer plays;
    *unfinished(label)* says what that input has not transcribed yet.
    Partials go out at once; finals as described in the module's docstring. A
    final of an input that is not system audio is an echo when the system finals
    that overlap it in time (give or take *slack* seconds) say at least
    *similarity* of its words, in order (`repeated`); it is held up to
    *echo_hold* seconds while system audio of its moment is not transcribed yet.
    """

    labels: tuple[str, ...]
    system: frozenset[str] = frozenset()
    unfinished: Callable[[str], Unfinished] = lambda label: (False, None)
    hold: float = 2.5
    echo_hold: float = 30.0
    similarity: float = 0.6
    slack: float = 1.5
    clock: Callable[[], float] = time.monotonic
    dropped: list[TextEvent] = field(default_factory=list)
    _heard: deque[TextEvent] = field(default_factory=lambda: deque(maxlen=32))
    _held: list[tuple[float, TextEvent]] = field(default_factory=list)
    _last_end: dict[str, float] = field(default_factory=dict)  # of each input's finals

    def take(self, event: TextEvent) -> list[TextEvent]:
        if event.type != "final":
            return [event, *self._release(force=False)]
        if event.source is not None:
            self._last_end[event.source] = max(self._last_end.get(event.source, 0.0), event.end)
        if event.source in self.system:
            self._heard.append(event)
        if self._echo(event):
            self.dropped.append(event)
        else:
            self._held.append((self.clock(), event))
        return self._release(force=False)

    def tick(self) -> list[TextEvent]:
        """What is no longer held, now that time has passed."""
        return self._release(force=False)

    def flush(self) -> list[TextEvent]:
        """Everything held: the session is over."""
        return self._release(force=True)

    def _echo(self, event: TextEvent) -> bool:
        if not self.system or event.source in self.system:
            return False
        near = sorted(
            (
                heard
                for heard in self._heard
                if heard.start - self.slack <= event.end and event.start <= heard.end + self.slack
            ),
            key=lambda heard: heard.start,
        )
        said = " ".join(heard.text for heard in near)
        return bool(near) and repeated(event.text, said) >= self.similarity

    def _blocked(self, event: TextEvent, since: float) -> bool:
        waited = self.clock() - since
        if waited < self.hold and any(
            self._may_precede(label, event.start) for label in self.labels if label != event.source
        ):
            return True
        # System speech of more than its last *slack* seconds not transcribed yet may
        # be the copy it echoes; speech that began at its very end (the other side
        # answering in turn) is not waited for.
        return (
            waited < self.echo_hold
            and event.source not in self.system
            and any(self._may_precede(label, event.end - self.slack) for label in self.system)
        )

    def _may_precede(self, label: str, start: float) -> bool:
        """Whether input *label* may still send a final that starts before *start*.
        Its waiting finals start after its last final ended, at the earliest."""
        waiting, open_since = self.unfinished(label)
        if waiting and self._last_end.get(label, 0.0) < start:
            return True
        return open_since is not None and open_since < start

    def _release(self, *, force: bool) -> list[TextEvent]:
        out: list[TextEvent] = []
        self._held.sort(key=lambda held: held[1].start)
        while self._held:
            since, event = self._held[0]
            if self._echo(event):  # its system copy came while it was held
                self.dropped.append(event)
            elif not force and self._blocked(event, since):
                break  # and so is everything that started after it
            else:
                out.append(event)
            self._held.pop(0)
        return out
