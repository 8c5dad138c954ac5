"""Live finals of several streams decoded in batches, on the real model and real
speech: the text is the same as when each final is decoded on its own."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytest

from livewhisper.engine.contract import Request, Transcription
from livewhisper.engine.local import Engine
from livewhisper.engine.scheduler import Scheduler
from livewhisper.live.stream import LiveStream, StreamOptions
from livewhisper.metrics import normalize, word_error_rate

#: Three speakers at once: a telephone menu, a novel read aloud, a speech.
SPEAKERS = ("asterisk_en_60s.flac", "pocketsphinx_librivox_austen_5utt.flac", "jfk.flac")


def finals(
    engine: Engine, recordings: list[np.ndarray], live_batch: int
) -> tuple[list[list[str]], list[int]]:
    """Each recording's finals, its stream fed as fast as it takes audio (so the
    finals of the three wait together), and the size of every engine call."""
    sizes: list[int] = []
    many = engine.transcribe_many

    def counted(requests: Sequence[Request]) -> list[Transcription]:
        sizes.append(len(requests))
        return many(requests)

    engine.transcribe_many = counted  # type: ignore[method-assign]
    texts: list[list[str]] = [[] for _ in recordings]
    try:
        with Scheduler(engine, live_batch=live_batch) as scheduler:
            streams = [
                LiveStream(
                    scheduler,
                    StreamOptions(partials=False),
                    lambda event, n=n: texts[n].append(event.text),  # type: ignore[misc]
                    key=f"speaker {n}",
                )
                for n in range(len(recordings))
            ]
            longest = max(len(r) for r in recordings)
            for i in range(0, longest, 1600):
                for stream, audio in zip(streams, recordings, strict=True):
                    if i < len(audio):
                        stream.feed(audio[i : i + 1600])
            for stream in streams:
                assert stream.finish(timeout=300)
    finally:
        del engine.transcribe_many
    return texts, sizes


@pytest.mark.slow
def test_batched_live_finals_say_what_single_ones_say(
    engine: Engine, speech: Callable[[str], np.ndarray], references: dict[str, str]
) -> None:
    recordings = [speech(name) for name in SPEAKERS]
    alone, sizes = finals(engine, recordings, live_batch=1)
    assert set(sizes) <= {1}
    batched, sizes = finals(engine, recordings, live_batch=3)
    assert max(sizes) > 1, sizes  # the three streams' finals did share decodes
    for name, one, together in zip(SPEAKERS, alone, batched, strict=True):
        assert len(one) >= 2, one
        # Utterance by utterance, the same words.
        assert [normalize(t) for t in together] == [normalize(t) for t in one], name
        assert word_error_rate(references[name], " ".join(together)) <= 0.2
