"""The engine contract: what every part of livewhisper needs of a speech engine.

The scheduler, live streams, the server and the file pipeline know engines only
through `Transcriber`; `engine.factory.load_engine` turns the user's choice of
model into one. The local faster-whisper engine (`engine.local.Engine`) is the one
there is today; a remote one is a new module that meets the same contract.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import numpy as np

from livewhisper.transcript import Segment

#: Temperatures tried in turn when a decode looks like a failure (faster-whisper's own).
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


@dataclass(frozen=True)
class TranscribeOptions:
    """How to decode. The defaults are faster-whisper's, with its VAD filter on."""

    language: str | None = None
    task: str = "transcribe"  # or "translate" (into English)
    beam_size: int = 5
    initial_prompt: str | None = None
    word_timestamps: bool = False
    vad_filter: bool = True
    condition_on_previous_text: bool = True
    temperature: tuple[float, ...] = FALLBACK_TEMPERATURES
    no_speech_threshold: float = 0.6
    log_prob_threshold: float = -1.0
    compression_ratio_threshold: float = 2.4
    #: Drop a segment that is probably not speech: Whisper's no-speech probability
    #: above this *and* a low average log-probability (see `is_hallucination`).
    drop_no_speech_prob: float = 0.5
    drop_logprob: float = -0.8
    drop_certain_no_speech: float = 0.9
    #: Decode text tokens only (segment times are then the window's).
    without_timestamps: bool = False
    #: Encode a window fitted to the audio (its length plus `FIT_PAD` seconds of
    #: silence) instead of Whisper's full 30 s, for short live utterances; a result
    #: that looks wrong is decoded again the usual way (see `Engine._fitted`).
    fit_window: bool = False
    #: With `fit_window`: when the fitted result looks wrong, decode again the usual
    #: way (True), or give no text (False: a provisional pass, soon redone on more
    #: audio, is not worth a full 30 s decode).
    fit_fallback: bool = True
    #: Text said just before this audio (a live stream's earlier finals): given to
    #: Whisper as previous text after *initial_prompt*, as a file's earlier windows
    #: are. With *context_language*, it is used only if the audio is in that language.
    context: str | None = None
    context_language: str | None = None
    #: Words or phrases likely in the audio (names, terms), given to Whisper before
    #: its previous text (faster-whisper's ``hotwords``).
    hotwords: str | None = None
    #: Long audio (a file) is decoded in windows cut at pauses, up to this many at a
    #: time (`engine.lanes`); 1 decodes it window after window, as faster-whisper
    #: does; 0 lets the engine choose from its device.
    batch_size: int = 1

    def for_utterance(self) -> TranscribeOptions:
        """Settings for one live utterance that the segmenter already cut out of silence."""
        return dataclasses.replace(
            self, vad_filter=False, condition_on_previous_text=False, fit_window=True
        )

    def for_partial(self) -> TranscribeOptions:
        """Cheaper settings for the provisional text of an utterance still being spoken:
        greedy, one temperature, no timestamp tokens, no second decode. The final
        decodes the whole utterance again with the full settings, so a word a
        partial pass gets wrong is shown for a moment but never kept."""
        return dataclasses.replace(
            self.for_utterance(),
            beam_size=1,
            temperature=(0.0,),
            without_timestamps=True,
            fit_fallback=False,
        )


@dataclass(frozen=True)
class Transcription:
    segments: list[Segment]
    language: str | None
    language_probability: float = 0.0
    duration: float = 0.0

    @property
    def text(self) -> str:
        return " ".join(s.text.strip() for s in self.segments if s.text.strip())


class Request(NamedTuple):
    """One piece of audio to transcribe (`Transcriber.transcribe`'s arguments)."""

    audio: np.ndarray
    options: TranscribeOptions
    offset: float = 0.0


@dataclass
class FileInfo:
    """What the engine learns about an input while transcribing it."""

    language: str | None = None
    language_probability: float = 0.0
    duration: float = 0.0  # decoded so far
    segments: list[Segment] = field(default_factory=list)


class Transcriber(Protocol):
    """A speech engine. One thread calls it at a time (the scheduler's, or the
    file pipeline's); it need not be thread-safe."""

    @property
    def name(self) -> str:
        """The model's name, as the user would give it (``tiny.en``)."""
        ...

    def check(self, options: TranscribeOptions) -> None:
        """Raise `errors.ModelError` if this engine cannot do what *options* ask (a
        language it does not know, translation by an English-only model)."""
        ...

    def transcribe(
        self, audio: np.ndarray, options: TranscribeOptions | None = None, *, offset: float = 0.0
    ) -> Transcription:
        """Transcribe 16 kHz mono float32 *audio*; times shifted by *offset* seconds."""
        ...

    def transcribe_blocks(
        self,
        blocks: Iterable[np.ndarray],
        options: TranscribeOptions | None = None,
        *,
        window: float = 600.0,
        info: FileInfo | None = None,
        on_decoded: Callable[[float], None] | None = None,
    ) -> Iterator[Segment]:
        """Transcribe a long input given as blocks of 16 kHz audio, holding about
        *window* seconds at a time; segments come as they are decoded, and *info*
        learns the language and the duration."""
        ...
