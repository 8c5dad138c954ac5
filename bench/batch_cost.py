"""What a batch saves when live finals of several streams are decoded together.

A live final is one short utterance decoded in a window fitted to it (its audio
plus `engine.local.FIT_PAD` seconds of silence, `Engine._fitted`). Decoding the
finals of several streams as one batch pads them to the longest window, encodes
them in one call and generates their text in one call. This measures, on real
utterances of the shared speech data (1.5-6 s each, taken in the order of their
paths), the CPU seconds (of this process: every thread) that encoding and
generating cost for the same utterances decoded one at a time and in batches of
2, 4 and 8, with the live final's settings (beam 5, no previous text, text
tokens only), each size run twice after a warm-up.

    python bench/batch_cost.py [--model tiny.en] [--threads 2] [--clips 16]

What it leaves out: the previous text (CTranslate2 wants the start-of-transcript
token at one place in every prompt of a batch, so streams with context of
different lengths cannot share a batch without cutting their contexts to the
shortest) and the checks and fallback after a decode.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from corpus import DEFAULT_SHARED  # noqa: E402
from livewhisper.audio.files import read_all  # noqa: E402
from livewhisper.audio.pcm import SAMPLE_RATE  # noqa: E402
from livewhisper.engine import local  # noqa: E402
from livewhisper.engine.local import Engine, ModelOptions  # noqa: E402


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


def cost(engine: Engine, group: list[np.ndarray]) -> tuple[float, float]:
    """CPU seconds to encode and to generate *group* as one batch."""
    import ctranslate2
    from faster_whisper.tokenizer import Tokenizer

    model = engine._model
    window = max(math.ceil(len(a) / SAMPLE_RATE + local.FIT_PAD) for a in group)
    features = []
    for audio in group:
        padded = np.zeros(window * SAMPLE_RATE, np.float32)
        padded[: len(audio)] = audio
        features.append(model.feature_extractor(padded)[:, : window * 100])
    tokenizer = Tokenizer(model.hf_tokenizer, engine.multilingual, task="transcribe", language="en")
    prompt = model.get_prompt(tokenizer, [], without_timestamps=True)
    batch = ctranslate2.StorageView.from_array(np.ascontiguousarray(np.stack(features)))
    started = time.process_time()
    encoded = model.model.encode(batch, to_cpu=False)
    encoded_at = time.process_time()
    model.model.generate(encoded, [prompt] * len(group), beam_size=5, max_length=100)
    return encoded_at - started, time.process_time() - encoded_at


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clips", type=int, default=16)
    args = parser.parse_args()
    engine = Engine(ModelOptions(model=args.model, threads=args.threads))
    clips = utterances(args.clips)
    seconds = sum(len(a) for a in clips) / SAMPLE_RATE
    print(
        f"{len(clips)} utterances, {seconds:.1f} s of speech, {args.model}, {args.threads} threads"
    )
    cost(engine, clips[:1])  # warm-up
    print("| batch | encode CPU s | generate CPU s | total | / batch 1 |")
    print("|---|---|---|---|---|")
    single = None
    for size in (1, 2, 4, 8):
        encode = generate = 0.0
        for _ in range(2):
            for i in range(0, len(clips), size):
                e, g = cost(engine, clips[i : i + size])
                encode, generate = encode + e / 2, generate + g / 2
        total = encode + generate
        single = single or total
        print(f"| {size} | {encode:.2f} | {generate:.2f} | {total:.2f} | {total / single:.2f} |")


if __name__ == "__main__":
    main()
