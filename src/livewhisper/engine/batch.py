"""Long audio through the scheduler a window at a time, behind live work.

An upload is cut into windows of about `WINDOW` seconds at quiet points, and each
window is one job of kind ``batch`` (`engine.scheduler`): the worker is held for
one window, never for a whole file, and live finals and partials go first. As the
windows of a file are (`Engine.transcribe_blocks`), each is decoded with the text
of the one before as Whisper's previous text; and in the language of the first
window with speech, as faster-whisper decodes a whole file in the language it
detects once.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Generator, Iterable
from concurrent.futures import Future

import numpy as np

from livewhisper.audio.pcm import SAMPLE_RATE
from livewhisper.engine.contract import TranscribeOptions, Transcription
from livewhisper.engine.local import quietest_cut
from livewhisper.engine.scheduler import Job, JobResult, Scheduler

#: Seconds of audio in one job at most: Whisper's own window, so one job is about
#: one encoder pass and its decode.
WINDOW = 30.0
#: A window ends at the quietest point of its last this many seconds.
CUT_SEARCH = 10.0

_keys = itertools.count(1)


def windows(
    blocks: Iterable[np.ndarray], window: float = WINDOW, search: float = CUT_SEARCH
) -> Generator[np.ndarray, None, None]:
    """The audio of *blocks* in consecutive pieces of at most *window* seconds, each
    ending at the quietest point of its last *search* seconds (the last piece is
    what is left). Only about one window is held at a time."""
    limit = int(window * SAMPLE_RATE)
    search_from = max(0, limit - int(search * SAMPLE_RATE))
    pending: list[np.ndarray] = []
    held = 0
    for block in blocks:
        pending.append(block)
        held += len(block)
        while held >= limit:
            audio = np.concatenate(pending)
            cut = quietest_cut(audio[:limit], search_from)
            yield audio[:cut]
            pending, held = [audio[cut:]], len(audio) - cut
    if held:
        yield np.concatenate(pending)


class BatchDecode:
    """One long input decoded on *scheduler* as batch jobs, one window in flight.

    Call `submit` with each window in turn, the next once the previous one's future
    is done (it needs that window's text); `close` at the end, or to give up (a
    window still queued is dropped). The future of a cancelled window is skipped
    by the worker.
    """

    def __init__(self, scheduler: Scheduler, options: TranscribeOptions) -> None:
        self.scheduler = scheduler
        self.options = options
        self.key = ("batch", next(_keys))
        self.language = options.language  # fixed by the first window with speech
        self.offset = 0.0  # seconds submitted so far: where the next window starts
        self._previous = ""  # the text of the last window with speech
        self._count = 0

    def submit(self, audio: np.ndarray) -> Future[Transcription]:
        """Queue the next window; its transcription (times from the input's start)
        comes in the future, set on the worker thread. Raises `SchedulerStopped`
        when the model is shutting down."""
        options = dataclasses.replace(self.options, language=self.language)
        if self.options.condition_on_previous_text and self._previous:
            options = dataclasses.replace(options, context=self._previous)
        future: Future[Transcription] = Future()

        def done(result: JobResult) -> None:
            if result.error is not None:
                future.set_exception(result.error)
                return
            transcription = result.transcription
            assert transcription is not None
            if transcription.segments:
                self._previous = transcription.text
                if self.language is None:
                    self.language = transcription.language
            future.set_result(transcription)

        job = Job(
            self.key,
            "batch",
            self._count,
            audio,
            self.offset,
            options,
            done,
            wanted=future.set_running_or_notify_cancel,
        )
        self.scheduler.submit(job)
        self._count += 1
        self.offset += len(audio) / SAMPLE_RATE
        return future

    def close(self) -> None:
        self.scheduler.forget(self.key)
