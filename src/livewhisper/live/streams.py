"""One factory for the stream of every input a process hears."""

from __future__ import annotations

import itertools
from collections.abc import Hashable

from livewhisper.engine.scheduler import Scheduler
from livewhisper.live.contract import Emit
from livewhisper.live.segmenter import Detector
from livewhisper.live.stream import LiveStream, StreamOptions


class Streams:
    """Makes the streams of one session's inputs (``listen``'s microphone, a second
    device, system audio): they share one scheduler, which serves them in turn, and
    one sequence of utterance ids, so that the events of all of them can be told
    apart and put in order. Each stream has its own segmenter, partials and context.
    """

    def __init__(self, scheduler: Scheduler, options: StreamOptions | None = None) -> None:
        self.scheduler = scheduler
        self.options = options or StreamOptions()
        self._ids = itertools.count()

    def open(
        self,
        emit: Emit | None,
        *,
        source: str | None = None,
        key: Hashable | None = None,
        options: StreamOptions | None = None,
        detector: Detector | None = None,
    ) -> LiveStream:
        """A new stream whose events go to *emit*, labelled *source* when given."""
        return LiveStream(
            self.scheduler,
            options or self.options,
            emit,
            key=key,
            detector=detector,
            source=source,
            ids=self._ids,
        )
