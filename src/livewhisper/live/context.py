"""What a live stream remembers of what was said: the prompt for its next utterance.

Whisper transcribes a sentence best when it knows the words before it: decoding a
file, it gets them from the 30 s window and from the text of the window before.
A live stream cuts speech into utterances at every pause and decodes each alone,
which throws that away. `Context` keeps the text of the stream's last finals and
gives it back as Whisper's previous-text prompt for the next decode.

Rules (each guards against what a prompt can carry forward):

* only finals are remembered, never partial text;
* at most `ContextOptions.words` words, the newest, so the prompt never grows;
* text that looks like a Whisper loop (compression ratio above the bar, or a run
  of words said twice in a row) is not remembered, so a repetition cannot seed
  the next one (and `Engine.transcribe` decodes again without context a result
  that repeats itself);
* a final that starts in lower case although the remembered text ends a
  sentence is not remembered, and the context is dropped: Whisper writes a new
  sentence with a capital, so a lower-case start says the prompt is leading the
  model's style rather than the audio leading the text. Left alone, that is a
  loop of its own: each lower-case final, remembered, makes the next prompt more
  lower-case (an hour-long session drifted that way into "message. message.");
* a final in another language than the remembered text starts the context
  afresh, so one speaker's language is not pushed onto the next;
* after `ContextOptions.reset_after` seconds without a final, the context is
  dropped: a new topic should not be read through an old one.

Pure logic: no threads, no clock (times are stream seconds), no model.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from livewhisper.engine.guards import compression_ratio, repeats_itself
from livewhisper.live.cuts import word_ends_sentence


@dataclass(frozen=True)
class ContextOptions:
    """How much of what was said a live stream carries into its next decode."""

    #: Words of earlier finals given as the prompt; 0 turns context off.
    words: int = 80
    #: Seconds between the end of one final and the start of the next after which
    #: the context is dropped.
    reset_after: float = 30.0
    #: Text compressing better than this (gzip ratio, as Whisper's own check) is a
    #: loop, not speech: it is not remembered.
    max_compression_ratio: float = 2.4
    #: Drop the context when a final starts in lower case after a sentence end (the
    #: prompt leading the model's style); False only to measure what the rule does.
    restart_on_lower_case: bool = True

    def __post_init__(self) -> None:
        if self.words < 0 or self.reset_after <= 0:
            raise ValueError("context words must be >= 0 and reset_after > 0")


class Context:
    """The recent final text of one stream."""

    def __init__(self, options: ContextOptions | None = None) -> None:
        self.options = options or ContextOptions()
        self._words: deque[str] = deque(maxlen=max(1, self.options.words))
        self._language: str | None = None
        self._end: float | None = None  # stream time the last remembered final ended

    @property
    def language(self) -> str | None:
        """The language of the remembered text, if known."""
        return self._language if self._words else None

    def add(self, text: str, *, start: float, end: float, language: str | None) -> None:
        """Remember the final *text* spoken from *start* to *end* (stream seconds)."""
        if not self.options.words:
            return
        self._expire(start)
        if language is not None and self._language is not None and language != self._language:
            self._words.clear()
        words = text.split()
        if not words:
            return
        if compression_ratio(text) > self.options.max_compression_ratio or repeats_itself(text):
            self._words.clear()  # a loop: neither it nor what led into it is carried
            return
        if (
            self.options.restart_on_lower_case
            and self._words
            and word_ends_sentence(self._words[-1])
            and words[0][:1].islower()
        ):
            self._words.clear()  # the prompt's style leads: start again from the audio
            return
        self._words.extend(words)
        self._language = language or self._language
        self._end = end

    def prompt(self, start: float, language: str | None = None) -> str | None:
        """The prompt for an utterance starting at *start*, or None for no context.

        With *language* given (the utterance's, when it is known in advance), text of
        another language is not offered."""
        self._expire(start)
        if not self._words:
            return None
        if language is not None and self._language is not None and language != self._language:
            return None
        return " ".join(self._words)

    def clear(self) -> None:
        self._words.clear()
        self._language = None
        self._end = None

    def _expire(self, now: float) -> None:
        if self._end is not None and now - self._end > self.options.reset_after:
            self.clear()
