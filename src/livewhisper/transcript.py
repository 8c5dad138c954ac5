"""The transcript data model: words, segments and the events a live session emits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

EventType = Literal["partial", "final"]


@dataclass(frozen=True)
class Word:
    start: float
    end: float
    word: str
    probability: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "word": self.word,
            "probability": round(self.probability, 4),
        }


@dataclass(frozen=True)
class Segment:
    """A stretch of transcribed speech; times are seconds from the start of the input."""

    start: float
    end: float
    text: str
    words: tuple[Word, ...] = ()
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0
    compression_ratio: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "text": self.text.strip(),
        }
        if self.words:
            out["words"] = [w.to_dict() for w in self.words]
        return out


@dataclass(frozen=True)
class TextEvent:
    """A line of live text.

    ``partial`` events show the current hypothesis of an utterance that is still
    open; the ``final`` event with the same ``id`` replaces them for good.
    ``stable`` is the prefix of ``text`` that will not change any more.
    Times are seconds since the stream started. ``source`` names the input it
    was heard on when a session has more than one (None: the only one).
    """

    type: EventType
    id: int
    text: str
    start: float
    end: float
    language: str | None = None
    stable: str = ""
    words: tuple[Word, ...] = field(default=())
    source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": self.type,
            "id": self.id,
            "text": self.text,
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "language": self.language,
        }
        if self.type == "partial":
            out["stable"] = self.stable
        if self.words:
            out["words"] = [w.to_dict() for w in self.words]
        if self.source is not None:
            out["source"] = self.source
        return out
