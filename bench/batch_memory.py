"""What a batch costs in peak memory: `file`'s lanes and the live batch.

For each model and batch size, a fresh child process loads the model, notes its
resident memory (RSS), then decodes and reports its peak RSS (``ru_maxrss``):

``file``
    one step of `file`'s batched decoding (`engine.lanes.LaneDecoder`): B windows
    of up to 30 s of speech of a long recording (the ~180 s English item of
    ``bench/corpus``, or ``--path``; its windows in turn when B is more), encoded
    and decoded as one batch, as B lanes do.
``live``
    ``Engine.transcribe_many`` of B live utterances of about 15 s each (cut from
    the same recording), the live final's settings: B fitted windows in one batch.

The peak over the loaded model's RSS, and its growth per window of batch (the
slope of a least-squares line through the batch sizes), are what
`engine.local.WINDOW_BYTES_PER_MODEL_BYTE` is set from: a window's peak memory as
a share of the model file's size (its float16 weights).

    python bench/batch_memory.py [--models tiny.en,base] [--batches 1,2,4,8,16]
        [--path FILE] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PATH = ROOT / "bench" / "corpus" / "long" / "long_en_180s.flac"


def rss_mib() -> float:
    """This process's resident memory now."""
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(model: str, mode: str, batch: int, path: str, threads: int) -> None:
    import numpy as np

    from livewhisper.audio.files import read_all
    from livewhisper.audio.pcm import SAMPLE_RATE
    from livewhisper.engine.contract import Request, TranscribeOptions
    from livewhisper.engine.local import Engine, ModelOptions

    engine = Engine(ModelOptions(model=model, threads=threads))
    # A first short decode, so that what every decode allocates is counted in both.
    engine.transcribe(np.zeros(SAMPLE_RATE, np.float32), TranscribeOptions().for_utterance())
    loaded = rss_mib()
    audio = read_all(path)
    if mode == "file":
        from dataclasses import replace

        from faster_whisper.tokenizer import Tokenizer

        from livewhisper.engine.lanes import LaneDecoder, plan

        windows = plan(audio, vad_filter=True)
        batch_windows = [replace(windows[i % len(windows)]) for i in range(batch)]
        language = "en"  # an English recording
        tokenizer = Tokenizer(
            engine._model.hf_tokenizer, engine.multilingual, task="transcribe", language=language
        )
        decoder = LaneDecoder(engine._model, tokenizer, TranscribeOptions(language=language))
        decoder._decode(batch_windows, [[] for _ in batch_windows])
    else:
        step = 15 * SAMPLE_RATE
        final = TranscribeOptions().for_utterance()
        requests = [Request(audio[i * step : (i + 1) * step], final) for i in range(batch)]
        engine.transcribe_many(requests)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    size = (engine.location.path / "model.bin").stat().st_size / 2**20
    print(json.dumps({"loaded_mib": loaded, "peak_mib": peak, "model_mib": size}))


def slope(xs: list[int], ys: list[float]) -> float:
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="tiny.en,base")
    parser.add_argument("--batches", default="1,2,4,8,16")
    parser.add_argument("--path", type=Path, default=DEFAULT_PATH)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--child", nargs=3, metavar=("MODEL", "MODE", "BATCH"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        model, mode, batch = args.child
        child(model, mode, int(batch), str(args.path), args.threads)
        return
    batches = [int(b) for b in args.batches.split(",")]
    results: list[dict[str, Any]] = []
    print("| model | what | batch | RSS loaded MiB | peak MiB | peak - loaded |")
    print("|---|---|---:|---:|---:|---:|")
    for model in args.models.split(","):
        for mode in ("file", "live"):
            rows = []
            for batch in batches:
                out = subprocess.run(
                    [sys.executable, __file__, "--path", str(args.path), "--threads",
                     str(args.threads), "--child", model, mode, str(batch)],
                    capture_output=True, text=True, check=True, cwd=ROOT,
                )  # fmt: skip
                row = json.loads(out.stdout.strip().splitlines()[-1])
                row.update(model=model, mode=mode, batch=batch)
                row["extra_mib"] = row["peak_mib"] - row["loaded_mib"]
                rows.append(row)
                print(
                    f"| {model} | {mode} | {batch} | {row['loaded_mib']:.0f} "
                    f"| {row['peak_mib']:.0f} | {row['extra_mib']:.0f} |",
                    flush=True,
                )
            per_window = slope([r["batch"] for r in rows], [r["extra_mib"] for r in rows])
            share = per_window / rows[0]["model_mib"]
            print(
                f"\n{model} {mode}: {per_window:.1f} MiB per window of batch, "
                f"{share:.3f} of the model file ({rows[0]['model_mib']:.0f} MiB)\n"
            )
            results.extend(rows)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
