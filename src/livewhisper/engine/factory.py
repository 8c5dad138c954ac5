"""From the user's choice of model to an engine that meets the contract."""

from __future__ import annotations

from typing import TYPE_CHECKING

from livewhisper.engine.contract import TranscribeOptions, Transcriber

if TYPE_CHECKING:
    from livewhisper.engine.local import ModelOptions
    from livewhisper.engine.remote import RemoteOptions


def load_engine(
    model: ModelOptions | RemoteOptions, checked: TranscribeOptions | None = None
) -> Transcriber:
    """Load the engine *model* names and, given *checked*, make sure it can do what
    those options ask (`Transcriber.check`). A `LivewhisperError` says what to do
    when it cannot. `ModelOptions` name a local faster-whisper model;
    `RemoteOptions` a server that speaks OpenAI's audio API, asked once with
    *checked* (`RemoteEngine.round_trip`) so that a refusal is known at the start."""
    from livewhisper.engine.remote import RemoteEngine, RemoteOptions

    if isinstance(model, RemoteOptions):
        remote = RemoteEngine(model)
        if checked is not None:
            try:
                remote.check(checked)
                remote.round_trip(checked)
            except BaseException:
                remote.close()
                raise
        return remote

    from livewhisper.engine.local import Engine

    engine = Engine(model)
    if checked is not None:
        engine.check(checked)
    return engine
