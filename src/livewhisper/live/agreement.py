"""Stable partial text: which words of a growing utterance are settled.

While an utterance is being spoken its audio is transcribed again and again. Each
pass gives a hypothesis: the words heard so far. A word is *committed* when two
consecutive hypotheses agree on it and on every word before it (the
LocalAgreement-2 rule of streaming Whisper policies); committed words never change
again while the utterance is spoken, and only the tail after them may. They are
what a view can show as settled; the final transcription of the whole utterance,
which hears all of it, replaces them when the utterance ends.

Pure logic: no threads, no clock, no model.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class HypWord:
    """A word of a hypothesis; times are seconds from the start of the stream."""

    text: str
    start: float = 0.0
    end: float = 0.0


def key(word: str) -> str:
    """The form two hypotheses are compared in: no case, accents or punctuation."""
    folded = unicodedata.normalize("NFKD", word.lower())
    folded = "".join(c for c in folded if not unicodedata.combining(c))
    return re.sub(r"[^\w]", "", folded)


def join(words: Sequence[HypWord]) -> str:
    return " ".join(w.text.strip() for w in words if w.text.strip())


def align_after(prefix: Sequence[str], words: Sequence[str]) -> int:
    """How many of *words* correspond to *prefix* (both compared by `key`).

    The hypothesis usually starts with the committed words, and then this is
    ``len(prefix)``. When the model has changed its mind about them, the end of
    the committed part is found by edit-distance alignment: the cut in *words*
    whose beginning is closest to *prefix* (the longest such, on ties).
    """
    n = len(prefix)
    if list(words[:n]) == list(prefix):
        return n
    # distance[j]: edit distance between the whole prefix and words[:j]
    previous = list(range(len(words) + 1))
    for i in range(1, n + 1):
        current = [i] + [0] * len(words)
        for j in range(1, len(words) + 1):
            current[j] = min(
                previous[j] + 1,
                current[j - 1] + 1,
                previous[j - 1] + (prefix[i - 1] != words[j - 1]),
            )
        previous = current
    best = min(previous)
    return max(j for j, d in enumerate(previous) if d == best)


@dataclass
class Agreement:
    """The committed words and current tail of one utterance."""

    committed: list[HypWord] = field(default_factory=list)
    tail: list[HypWord] = field(default_factory=list)
    _previous_tail: list[str] | None = None

    @property
    def committed_text(self) -> str:
        return join(self.committed)

    @property
    def text(self) -> str:
        return join([*self.committed, *self.tail])

    def update(
        self,
        hypothesis: Sequence[HypWord],
        *,
        complete: bool = False,
        timed: bool = False,
        horizon: float | None = None,
    ) -> list[HypWord]:
        """Take a new hypothesis of the whole utterance so far; return the words it
        newly commits (possibly none).

        The audio of a pass usually ends inside a word, and two passes can agree on
        the same cut-off word ("count" for "country"): the last word of a hypothesis
        is only committed when *complete* says its audio ended in silence. With
        *timed* (the hypothesis has word timings, not just its segment's), committed
        words it repeats word for word take its times: later passes hear more of the
        audio and time the words better. A word that ends after *horizon* (stream
        seconds) is not committed yet either: it is too close to where the pass's
        audio stops to be sure it was heard whole."""
        keys = [key(w.text) for w in hypothesis]
        committed_keys = [key(w.text) for w in self.committed]
        start = align_after(committed_keys, keys)
        if timed and keys[:start] == committed_keys:
            self.committed = [
                HypWord(old.text, new.start, new.end)
                for old, new in zip(self.committed, hypothesis[:start], strict=True)
            ]
        rest = [w for w in hypothesis[start:] if key(w.text)]
        rest_keys = [key(w.text) for w in rest]
        newly: list[HypWord] = []
        candidates = rest if complete else rest[:-1]
        if horizon is not None and not complete:
            candidates = list(itertools.takewhile(lambda w: w.end <= horizon, candidates))
        if self._previous_tail is not None:
            for word, k, before in zip(candidates, rest_keys, self._previous_tail, strict=False):
                if k != before:
                    break
                newly.append(word)
        self.committed.extend(newly)
        self.tail = rest[len(newly) :]
        self._previous_tail = rest_keys[len(newly) :]
        return newly

    def cut(self, words: int) -> list[HypWord]:
        """Hand over the first *words* committed words (a piece finalised on its own,
        in a long monologue) and forget them; the rest stays committed."""
        piece, self.committed = self.committed[:words], self.committed[words:]
        return piece
