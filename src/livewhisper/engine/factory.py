"""From the user's choice of model to an engine that meets the contract."""

from __future__ import annotations

from typing import TYPE_CHECKING

from livewhisper.engine.contract import TranscribeOptions, Transcriber

if TYPE_CHECKING:
    from livewhisper.engine.local import ModelOptions


def load_engine(model: ModelOptions, checked: TranscribeOptions | None = None) -> Transcriber:
    """Load the engine *model* names and, given *checked*, make sure it can do what
    those options ask (`Transcriber.check`). A `LivewhisperError` says what to do
    when it cannot. Today every choice is a local faster-whisper model."""
    from livewhisper.engine.local import Engine

    engine = Engine(model)
    if checked is not None:
        engine.check(checked)
    return engine
