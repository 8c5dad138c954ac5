"""What a batch saves when live finals of several streams are decoded together.

A live final is one short utterance decoded in a window fitted to it (its audio
plus `engine.local.FIT_PAD` seconds of silence). When several streams have
finals waiting, the scheduler hands them to `Engine.transcribe_many`, which pads
them to the longest window of a group and encodes and decodes the group as one
batch. This decodes real utterances of the shared speech data (1.5-6 s each,
taken in the order of their paths) with the live final's settings, one at a
time (`Engine.transcribe`) and in calls of 2, 4 and 8 (`Engine.transcribe_many`),
each size run twice after a warm-up, and reports the CPU seconds of this process
(every thread), the wall time, their ratios to one at a time, and how many
finals said the same words as one at a time.

With ``--context``, each utterance is given the text of the ones before it (up
to 80 words, as a live stream's context) as its previous text: CTranslate2 wants
the prompts of a batch equally long, so a batch cuts the longer ones to the
shortest (each keeps at least `engine.local.CONTEXT_SHARE` of its own, or it
goes in another group).

    python bench/batch_cost.py [--model tiny.en] [--threads 2] [--clips 16] [--context]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from corpus import DEFAULT_SHARED  # noqa: E402
from livewhisper.audio.files import read_all  # noqa: E402
from livewhisper.audio.pcm import SAMPLE_RATE  # noqa: E402
from livewhisper.engine.contract import Request, TranscribeOptions  # noqa: E402
from livewhisper.engine.local import Engine, ModelOptions  # noqa: E402
from livewhisper.metrics import normalize  # noqa: E402


def utterances(count: int) -> list[np.ndarray]:
    """The first *count* recordings of 1.5-6 s in the shared speech data."""
    found = []
    for path in sorted(DEFAULT_SHARED.rglob("*")):
        if path.suffix not in (".wav", ".flac"):
            continue
        audio = read_all(path)
        if 1.5 < len(audio) / SAMPLE_RATE < 6:
            found.append(audio)
        if len(found) == count:
            break
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--context", action="store_true", help="give each the text before it")
    args = parser.parse_args()
    engine = Engine(ModelOptions(model=args.model, threads=args.threads))
    clips = utterances(args.clips)
    seconds = sum(len(a) for a in clips) / SAMPLE_RATE
    print(
        f"{len(clips)} utterances, {seconds:.1f} s of speech, {args.model}, "
        f"{args.threads} threads, {'with' if args.context else 'without'} previous text"
    )
    final = TranscribeOptions().for_utterance()
    engine.transcribe(clips[0], final)  # warm-up
    requests = [Request(audio, final) for audio in clips]
    if args.context:
        said: list[str] = []
        for i, audio in enumerate(clips):
            context = " ".join(" ".join(said).split()[-80:]) or None
            requests[i] = Request(audio, replace(final, context=context))
            said.append(engine.transcribe(audio, final).text)
    print("| batch | CPU s | / one at a time | wall s | / one at a time | same words |")
    print("|---|---|---|---|---|---|")
    alone: list[str] = []
    differ: list[str] = []
    base_cpu = base_wall = 0.0
    for size in (1, 2, 4, 8):
        texts: list[str] = []
        used = wall = 0.0
        for _ in range(2):
            texts = []
            c, t = time.process_time(), time.monotonic()
            for i in range(0, len(requests), size):
                group = requests[i : i + size]
                if size == 1:
                    texts.append(engine.transcribe(group[0].audio, group[0].options).text)
                else:
                    texts.extend(r.text for r in engine.transcribe_many(group))
            used, wall = used + (time.process_time() - c) / 2, wall + (time.monotonic() - t) / 2
        if size == 1:
            alone, base_cpu, base_wall = texts, used, wall
        same = sum(normalize(a) == normalize(b) for a, b in zip(alone, texts, strict=True))
        differ.extend(
            f"batch {size}: {a!r} alone, {b!r} batched"
            for a, b in zip(alone, texts, strict=True)
            if normalize(a) != normalize(b)
        )
        print(
            f"| {size} | {used:.2f} | {used / base_cpu:.2f} | {wall:.2f} "
            f"| {wall / base_wall:.2f} | {same} of {len(texts)} |"
        )
    print("\n".join(["", "Finals whose words differ:", *differ] if differ else []))


if __name__ == "__main__":
    main()
