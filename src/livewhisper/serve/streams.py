"""What the server needs of streams: a factory that makes one per connection, and
their backlog behind the model. `live_streams` gives both over a `Scheduler`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from livewhisper.live.contract import AudioStream, Emit

if TYPE_CHECKING:
    from livewhisper.engine.scheduler import Scheduler
    from livewhisper.live.stream import StreamOptions


@dataclass(frozen=True)
class StreamRequest:
    """What a client asked for when it started a stream."""

    language: str | None = None
    partials: bool = True
    prompt: str | None = None  # Whisper's initial prompt, in place of the server's


#: Makes a stream for a connection; the callback may be called from any thread.
StreamFactory = Callable[[StreamRequest, Emit], AudioStream]

#: Utterances waiting for the model and their seconds of audio: of one stream, or of
#: every stream when given None.
StreamBacklog = Callable[[AudioStream | None], tuple[int, float]]


def no_backlog(stream: AudioStream | None) -> tuple[int, float]:
    return 0, 0.0


def live_streams(
    scheduler: Scheduler, options: StreamOptions | None = None
) -> tuple[StreamFactory, StreamBacklog]:
    """A factory of `LiveStream`s over *scheduler* (one per connection), and their backlog
    (of one stream, or of all with None): utterances queued or running, and their seconds
    of audio.

    A client's ``language`` and ``prompt`` (the ``initial_prompt``) replace those in
    *options*; the engine checks the language first, so one the model does not know
    is refused when the stream starts.
    """
    from livewhisper.live.stream import LiveStream, StreamOptions

    base = options or StreamOptions()

    def make(request: StreamRequest, emit: Emit) -> AudioStream:
        stream_options = base
        transcribe = base.transcribe
        if request.prompt is not None:
            transcribe = dataclasses.replace(transcribe, initial_prompt=request.prompt)
        if request.language is not None:
            transcribe = dataclasses.replace(transcribe, language=request.language)
            scheduler.engine.check(transcribe)
        if transcribe is not base.transcribe:
            stream_options = dataclasses.replace(stream_options, transcribe=transcribe)
        if not request.partials:
            # Partial text costs model time: only for clients that ask for it.
            stream_options = dataclasses.replace(stream_options, partials=False)
        return LiveStream(scheduler, stream_options, emit)

    def backlog(stream: AudioStream | None) -> tuple[int, float]:
        waiting = scheduler.backlog(None if stream is None else stream.key)
        return waiting.finals, waiting.seconds

    return make, backlog
