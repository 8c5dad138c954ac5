"""Where a live stream may cut speech: the words of a hypothesis with their times,
the quietest gap between two committed words, and the end of a sentence.

Pure functions of text, times and samples.
"""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np

from livewhisper.audio.pcm import frame_energy, quietest
from livewhisper.engine.contract import Transcription
from livewhisper.live.agreement import HypWord, key
from livewhisper.live.segmenter import FRAME_SAMPLES, FRAME_SECONDS
from livewhisper.transcript import Word


def hypothesis(transcription: Transcription) -> list[HypWord]:
    """The words of a transcription, with their times when it has them.

    Words are always the text split at spaces: Whisper's timed words can split one
    ("re" and "-record" of "re-record"), and a hypothesis with word times must
    compare with one without (a final, a speculative pass) word for word."""
    out: list[HypWord] = []
    for segment in transcription.segments:
        if segment.words:
            out += _spaced_words(segment.words)
        else:
            out += [HypWord(t, segment.start, segment.end) for t in segment.text.split()]
    return [w for w in out if key(w.text)]


def _spaced_words(words: tuple[Word, ...]) -> list[HypWord]:
    """Timed words regrouped at spaces; each takes the times of the pieces it joins."""
    text, owner = "", []
    for i, w in enumerate(words):
        text += w.word
        owner += [i] * len(w.word)
    return [
        HypWord(m.group(), words[owner[m.start()]].start, words[owner[m.end() - 1]].end)
        for m in re.finditer(r"\S+", text)
    ]


def quietest_gap(
    audio: np.ndarray,
    start: float,
    committed: list[HypWord],
    *,
    min_piece: float,
    sentences: bool = False,
) -> tuple[int, float] | None:
    """Where to cut committed speech: ``(words before the cut, stream time)``.

    Between every two committed words (the first piece at least *min_piece* long)
    the quietest boundary between two 30 ms frames near their gap is found (the
    quietest pair of frames around it); the quietest of those wins, so a breath or
    a pause is preferred to a join inside a phrase, and neither side of the cut
    keeps the edge of a word. With *sentences*, only gaps after a word that ends a
    sentence (``.``, ``?``, ``!``) are candidates.
    """
    frames = len(audio) // FRAME_SAMPLES
    if frames < 2:
        return None
    energy = frame_energy(audio, FRAME_SAMPLES)
    best: tuple[float, int, float] | None = None
    for i in range(len(committed) - 1):
        left, right = committed[i], committed[i + 1]
        if left.end - start < min_piece or (sentences and not word_ends_sentence(left.text)):
            continue
        low, high = sorted((left.end, right.start))
        if right.start < left.start or high - low > 1.0:
            continue  # times that do not look like two words in a row: no cut there
        lo = max(1, int((low - 0.06 - start) / FRAME_SECONDS))
        hi = min(frames - 1, int(math.ceil((high + 0.06 - start) / FRAME_SECONDS)))
        if hi <= lo:
            continue
        pairs = energy[lo - 1 : hi] + energy[lo : hi + 1]  # frames k-1 and k, k in lo..hi
        k = lo + quietest(pairs)
        if best is None or pairs[k - lo] < best[0]:
            best = (float(pairs[k - lo]), i + 1, start + k * FRAME_SECONDS)
    return None if best is None else (best[1], best[2])


#: Words after which a full stop does not end a sentence.
_TITLES = frozenset({"mr.", "mrs.", "ms.", "dr.", "prof.", "st.", "mt."})
#: An initialism ("U.S.", "a.m.", "e.g."): its last stop is part of the word.
_INITIALISM = re.compile(r"(?:\w\.){2,}")
_CLOSING = "\"')»”’"


def word_ends_sentence(word: str) -> bool:
    """Whether *word* ends a sentence: it ends with a full stop, question or
    exclamation mark, and is not an ellipsis (Whisper's mark for speech that goes
    on), a title ("Mr.") or an initialism ("U.S.", which Whisper also makes of
    words such as "as")."""
    word = word.rstrip(_CLOSING)
    if word.endswith(("..", "…")) or word.lower() in _TITLES or _INITIALISM.fullmatch(word):
        return False
    return word.endswith((".", "?", "!", "。", "？", "！"))


def ends_sentence(text: str) -> bool:
    """Whether *text* ends a sentence: whether its last word does."""
    words = text.split()
    return bool(words) and word_ends_sentence(words[-1])


def confirmed_stops(committed: list[HypWord], latest: list[HypWord]) -> list[HypWord]:
    """*committed* with the sentence end of each word kept only where the latest
    pass also ends a sentence after it and heard a word after it.

    A word is committed as it was when two passes first agreed on it, and a pass
    over audio that stops after a word tends to end it with a full stop ("as
    crowds." of "as crowds ran beside it"): only a pass that heard on past the
    word can say the sentence ended there. The latest pass's word is the one with
    the same key that starts within 0.25 s of it."""
    out = []
    for word in committed:
        confirmed = False
        if word_ends_sentence(word.text):
            for seen in latest[:-1]:
                if key(seen.text) == key(word.text) and abs(seen.start - word.start) < 0.25:
                    confirmed = word_ends_sentence(seen.text)
                    break
        if confirmed or not word_ends_sentence(word.text):
            out.append(word)
        else:
            out.append(dataclasses.replace(word, text=word.text.rstrip(".?!。？！\"')»”’")))
    return out
