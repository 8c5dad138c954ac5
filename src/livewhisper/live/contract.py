"""The stream contract: what the owner of an input (the microphone of ``listen``, a
server connection, a future second device) needs of the stream it feeds.

`stream.LiveStream` is the one implementation; `streams.Streams` makes them.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from livewhisper.audio.pcm import SILENCE_DB
from livewhisper.transcript import TextEvent

State = Literal["listening", "speech", "transcribing"]

#: Where a stream's events go; called on the scheduler's thread, never with a
#: stream's lock held. An `errors.LivewhisperError` it raises becomes the stream's
#: `AudioStream.error`.
Emit = Callable[[TextEvent], None]


@dataclass(frozen=True)
class StreamStatus:
    """A snapshot of a stream, for a view. Times are stream seconds."""

    state: State = "listening"
    time: float = 0.0
    level_db: float = SILENCE_DB  # loudest 30 ms frame of the last 300 ms, in dBFS
    silent_for: float = 0.0  # since speech was last heard (or since the start)
    utterances: int = 0  # finals with text
    pending: int = 0  # utterances closed but not yet transcribed
    last_latency: float | None = None
    behind: float = 0.0  # seconds of speech without text yet, beyond the usual
    overflows: int = 0


class AudioStream(Protocol):
    """16 kHz mono audio in, `TextEvent`s out through the `Emit` it was made with."""

    #: The stream's name in the scheduler: jobs of one key take turns with others.
    key: Hashable

    @property
    def error(self) -> BaseException | None:
        """The first error of an output or of the engine, if any: the owner decides
        whether the stream goes on."""
        ...

    def feed(self, samples: np.ndarray) -> None:
        """Take 16 kHz mono float32 samples, any number at a time."""
        ...

    def finish(self, timeout: float | None = None) -> bool:
        """End of input: transcribe what is open and wait for every final. False if
        *timeout* passed first."""
        ...

    def status(self) -> StreamStatus:
        """A snapshot for a view, safe to take from any thread."""
        ...
