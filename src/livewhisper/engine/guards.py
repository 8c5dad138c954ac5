"""Tell-tales of text Whisper invents rather than hears: loops and speech from silence."""

from __future__ import annotations

import re
import zlib
from typing import Any

from livewhisper.engine.contract import TranscribeOptions


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


#: Where a sentence ends inside a text: after a full stop, question or exclamation mark.
_SENTENCE_BREAK = re.compile(r"(?<=[.!?。？！])\s+")


def _plain(text: str) -> list[str]:
    return [t.strip(".,!?;:\"'。？！").lower() for t in text.split()]


def repeats_itself(text: str, words: int = 4) -> bool:
    """True if Whisper is looping, not transcribing speech: a run of at least
    *words* words comes twice in a row ("press two to call. press two to call."),
    or a sentence of any length comes twice in a row ("Message. Message.").

    Words said again without a sentence between them ("no no no") are speech."""
    tokens = _plain(text)
    n = len(tokens)
    for size in range(words, n // 2 + 1):
        for i in range(n - 2 * size + 1):
            if tokens[i : i + size] == tokens[i + size : i + 2 * size]:
                return True
    sentences = [_plain(s) for s in _SENTENCE_BREAK.split(text.strip()) if s]
    return any(a and a == b for a, b in zip(sentences, sentences[1:], strict=False))


def is_hallucination(segment: Any, options: TranscribeOptions) -> bool:
    """Whisper's tell-tale of text invented from silence or noise.

    faster-whisper already skips a 30 s window when its no-speech probability is
    above ``no_speech_threshold`` and the decode's average log-probability is below
    ``log_prob_threshold``. Short noise bursts slip under that pair; this guard is
    the same test with a lower bar, applied per segment, plus a no-speech
    probability so high (``drop_certain_no_speech``) that no log-probability can
    redeem it: a "you" decoded from digital silence scores 0.99. Real speech scores
    far below 0.5, so it is never dropped by this.
    """
    return bool(
        segment.no_speech_prob > options.drop_certain_no_speech
        or (
            segment.no_speech_prob > options.drop_no_speech_prob
            and segment.avg_logprob < options.drop_logprob
        )
    )
