"""How much context a live final should get: the accuracy/time curve behind the defaults.

Each continuous recording of ``bench/continuous_speech.py`` is cut into utterances
by the live segmenter (the same `Segmenter` and WebRTC detector as ``listen``), and
every utterance is decoded in order as a live final is, with the engine's own
code path (`Engine.transcribe` with `TranscribeOptions.for_utterance()`), under
each option tried: words of context from the earlier finals, and the seconds of
silence padding the fitted window (`engine.FIT_PAD`). It reports the pooled WER
against the references, its ratio to ``livewhisper file``'s WER on the same
recordings (whole-recording decode, as the CLI does), and the mean decode time of
one utterance, which is most of a final's latency. No real time: the figures are
repeatable on one machine, and the real-time figures come from
``bench/continuous.py``.

    python bench/context_options.py out.json [--set tune|heldout|all] [--plot PNG]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

import continuous_speech  # noqa: E402
from livewhisper.audio.files import read_all  # noqa: E402
from livewhisper.engine import local as engine_module  # noqa: E402
from livewhisper.engine.contract import TranscribeOptions  # noqa: E402
from livewhisper.engine.local import Engine, ModelOptions  # noqa: E402
from livewhisper.live.context import Context, ContextOptions  # noqa: E402
from livewhisper.live.segmenter import (  # noqa: E402
    FRAME_SAMPLES,
    Segmenter,
    UtteranceClosed,
    webrtc_detector,
)
from livewhisper.metrics import corpus_wer  # noqa: E402

#: (label, context words, fitted window padding in seconds, and whether a lower-case
#: final after a sentence end drops the context: `ContextOptions.restart_on_lower_case`)
OPTIONS = [
    ("no context, pad 10 (before)", 0, 10.0, True),
    ("80 words, pad 10, no lower-case restart", 80, 10.0, False),
    ("20 words, pad 10", 20, 10.0, True),
    ("40 words, pad 10", 40, 10.0, True),
    ("80 words, pad 10 (default)", 80, 10.0, True),
    ("150 words, pad 10", 150, 10.0, True),
    ("80 words, pad 5", 80, 5.0, True),
    ("80 words, pad 15", 80, 15.0, True),
    ("80 words, pad 20", 80, 20.0, True),
    ("no context, 30 s window", 0, 30.0, True),
]


def utterances(audio: np.ndarray) -> list[UtteranceClosed]:
    segmenter = Segmenter(webrtc_detector(3))
    events = []
    for i in range(0, len(audio) - FRAME_SAMPLES + 1, FRAME_SAMPLES):
        events += segmenter.feed(audio[i : i + FRAME_SAMPLES])
    events += segmenter.flush()
    return [e for e in events if isinstance(e, UtteranceClosed)]


def live_text(
    engine: Engine, cuts: list[UtteranceClosed], words: int, pad: float, restart: bool = True
) -> tuple[str, list[float]]:
    """The finals of one recording decoded in order; and each decode's seconds."""
    options = TranscribeOptions().for_utterance()
    if pad >= 30:
        options = replace(options, fit_window=False)
    context = Context(ContextOptions(words=words, restart_on_lower_case=restart)) if words else None
    texts, times = [], []
    engine_module.FIT_PAD = pad
    try:
        for cut in cuts:
            prompt = context.prompt(cut.start) if context else None
            started = time.perf_counter()
            result = engine.transcribe(
                cut.audio, replace(options, context=prompt), offset=cut.start
            )
            times.append(time.perf_counter() - started)
            if result.text and context is not None:
                context.add(result.text, start=cut.start, end=cut.end, language=result.language)
            texts.append(result.text)
    finally:
        engine_module.FIT_PAD = 10.0
    return " ".join(t for t in texts if t), times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="where to write the JSON results")
    parser.add_argument("--set", choices=["tune", "heldout", "all"], default="tune")
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--only", help="only the options whose label contains this")
    parser.add_argument("--replot", action="store_true", help="only draw --plot from OUT")
    args = parser.parse_args()
    if args.replot:
        kept = json.loads(args.out.read_text(encoding="utf-8"))
        plot(kept["rows"], args.plot, f"{kept['set']} set, {kept['model']}")
        return

    chosen = [r for r in continuous_speech.recordings() if args.set in ("all", r.set)]
    engine = Engine(ModelOptions(model=args.model))
    data = []
    for r in chosen:
        audio = read_all(continuous_speech.DEFAULT_OUT / r.path)
        file_text = " ".join(s.text for s in engine.transcribe_blocks([audio]))
        data.append((r, utterances(audio), file_text))
        print(f"{r.id}: {len(data[-1][1])} utterances", file=sys.stderr)
    file_wer = corpus_wer([(r.reference, t) for r, _, t in data])
    rows = []
    for label, words, pad, restart in OPTIONS:
        if args.only and args.only not in label:
            continue
        pairs, times = [], []
        for r, cuts, _ in data:
            text, spent = live_text(engine, cuts, words, pad, restart)
            pairs.append((r.reference, text))
            times += spent
        wer = corpus_wer(pairs)
        rows.append(
            {
                "option": label,
                "context_words": words,
                "pad": pad,
                "wer": wer,
                "ratio": wer / file_wer if file_wer else float("nan"),
                "decode_mean_s": float(np.mean(times)),
                "decode_p95_s": float(np.percentile(times, 95)),
            }
        )
        print(f"{label}: WER {wer:.4f}", file=sys.stderr)
    result = {
        "set": args.set,
        "model": args.model,
        "recordings": [r.id for r, _, _ in data],
        "utterances": sum(len(c) for _, c, _ in data),
        "file_wer": file_wer,
        "rows": rows,
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"\n{args.set} set, {result['utterances']} utterances, file WER {file_wer:.3f}\n")
    print("| option | live WER | / file | decode mean | decode p95 |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['option']} | {row['wer']:.3f} | {row['ratio']:.2f} | "
            f"{row['decode_mean_s']:.2f} s | {row['decode_p95_s']:.2f} s |"
        )
    if args.plot:
        plot(rows, args.plot, f"{args.set} set, {args.model}")


def plot(rows: list[dict[str, object]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, row in enumerate(rows):
        x, y = float(row["decode_mean_s"]), float(row["ratio"])  # type: ignore[arg-type]
        ax.scatter([x], [y], color="tab:blue" if row["context_words"] else "tab:grey")
        ax.annotate(
            str(row["option"]),
            (x, y),
            fontsize=7,
            xytext=(5, 10 * (i % 3) - 10),  # staggered: nearby points keep legible labels
            textcoords="offset points",
        )
    ax.axhline(1.15, color="tab:red", linestyle="--", linewidth=1, label="target: 1.15 x file")
    ax.legend(loc="lower right", fontsize=8)
    ax.margins(x=0.3, y=0.15)
    ax.set_xlabel("mean decode time of one utterance (s)")
    ax.set_ylabel("live WER / file WER")
    ax.set_title(f"Context and window options, {title}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
