"""Partial-text benchmark: how soon each spoken word is shown and committed.

Feeds real speech at real time into one `LiveStream` (the model in this process,
as `livewhisper listen` runs it) and records when each event arrives. Offline
transcription of the same audio with word timestamps says when each word was
spoken; each spoken word is matched to the first partial that shows it, the first
partial that commits it (its ``stable`` prefix), and the final that contains it.
Runs finals-only and with partials, and reports delays (median, p95), WER against
offline, CPU use and how far behind the stream fell.

    python bench/partials.py results.json [--model tiny.en] [--plot docs/partials.png]
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
from livewhisper.audio.files import read_all  # noqa: E402
from livewhisper.engine.contract import TranscribeOptions  # noqa: E402
from livewhisper.engine.local import Engine, ModelOptions  # noqa: E402
from livewhisper.engine.scheduler import Scheduler  # noqa: E402
from livewhisper.live.segmenter import SegmenterOptions  # noqa: E402
from livewhisper.live.stream import LiveStream, StreamOptions  # noqa: E402
from livewhisper.metrics import normalize as words  # noqa: E402
from livewhisper.metrics import word_error_rate as wer  # noqa: E402
from livewhisper.transcript import TextEvent  # noqa: E402

RATE = 16_000
BLOCK = 0.05  # seconds per block, as the microphone delivers them


@dataclass
class Spoken:
    word: str
    end: float  # program seconds


@dataclass
class Result:
    name: str
    shown: list[float] = field(default_factory=list)  # per word: delay to first partial
    committed: list[float] = field(default_factory=list)  # to commit (partial or final)
    final: list[float] = field(default_factory=list)  # to its final
    wer_offline: float = 0.0
    text: str = ""
    cpu_percent: float = 0.0
    max_behind: float = 0.0
    realtime_factor: float = 0.0  # wall seconds to feed / audio seconds
    finals: int = 0
    timeline: list[tuple[float, float, float, float]] = field(default_factory=list)


def program(names: list[str], gap: float) -> np.ndarray:
    parts = [np.zeros(RATE, np.float32)]
    for name in names:
        parts += [read_all(DATA / name), np.zeros(int(gap * RATE), np.float32)]
    parts.append(np.zeros(2 * RATE, np.float32))
    return np.concatenate(parts)


def offline_words(engine: Engine, audio: np.ndarray) -> tuple[list[Spoken], str]:
    result = engine.transcribe(audio, TranscribeOptions(word_timestamps=True))
    spoken = [Spoken(k, w.end) for s in result.segments for w in s.words for k in words(w.word)]
    return spoken, result.text


def match(spoken: list[Spoken], stream_words: list[tuple[float, list[str]]]) -> list[float | None]:
    """For each spoken word, the first time a text containing it (aligned in order)
    appeared: *stream_words* is (wall time, the session's words so far) snapshots."""
    out: list[float | None] = [None] * len(spoken)
    keys = [s.word for s in spoken]
    for t, got in stream_words:
        # Align the snapshot with the spoken words: greedy in-order match.
        j = 0
        for w in got:
            k = j
            while k < len(keys) and k < j + 4 and keys[k] != w:
                k += 1
            if k < len(keys) and keys[k] == w:
                if out[k] is None:
                    out[k] = t
                j = k + 1
    return out


def snapshots(
    events: Iterable[tuple[float, TextEvent]],
) -> tuple[list[tuple[float, list[str]]], ...]:
    """The session's words at each event, as *match* takes them: (shown, committed,
    final) lists of (time, words), where shown is the finals so far plus the open
    partial, committed the finals plus the partial's stable prefix."""
    finals: dict[int, list[str]] = {}
    partial: tuple[int, list[str], list[str]] | None = None
    shown_s, committed_s, final_s = [], [], []
    for t, e in events:
        if e.type == "final":
            finals[e.id] = words(e.text)
            if partial is not None and partial[0] <= e.id:
                partial = None
        else:
            partial = (e.id, words(e.text), words(e.stable))
        base = [w for k in sorted(finals) for w in finals[k]]
        final_s.append((t, base))
        shown_s.append((t, base + (partial[1] if partial else [])))
        committed_s.append((t, base + (partial[2] if partial else [])))
    return shown_s, committed_s, final_s


def word_times(
    spoken: list[Spoken], events: Iterable[tuple[float, TextEvent]]
) -> list[tuple[float | None, float | None, float | None]]:
    """Per spoken word, when it was first shown, committed and final (the events'
    times), or None where it never was."""
    shown, committed, final = (match(spoken, s) for s in snapshots(events))
    return list(zip(shown, committed, final, strict=True))


def run(
    name: str, engine: Engine, audio: np.ndarray, spoken: list[Spoken], options: StreamOptions
) -> Result:
    events: list[tuple[float, TextEvent]] = []
    behind: list[float] = []
    with Scheduler(engine) as scheduler:
        stream = LiveStream(scheduler, options, lambda e: events.append((time.monotonic(), e)))
        n = int(BLOCK * RATE)
        pause = threading.Event()
        cpu0 = time.process_time()
        t0 = time.monotonic()
        for i in range(0, len(audio), n):
            due = t0 + i / RATE
            pause.wait(max(0.0, due - time.monotonic()))
            stream.feed(audio[i : i + n])
            if i % (10 * n) == 0:
                behind.append(stream.status().behind)
        fed = time.monotonic() - t0
        stream.finish(120)
        cpu = time.process_time() - cpu0
    r = Result(name)
    times = word_times(spoken, [(t - t0, e) for t, e in events])
    for s, (a, b, c) in zip(spoken, times, strict=True):
        if a is not None:
            r.shown.append(a - s.end)
        if b is not None:
            r.committed.append(b - s.end)
        if c is not None:
            r.final.append(c - s.end)
        r.timeline.append(
            (
                s.end,
                a if a is not None else float("nan"),
                b if b is not None else float("nan"),
                c if c is not None else float("nan"),
            )
        )
    r.text = " ".join(e.text for _, e in events if e.type == "final")
    r.finals = sum(e.type == "final" for _, e in events)
    r.cpu_percent = 100 * cpu / fed
    r.max_behind = max(behind, default=0.0)
    r.realtime_factor = fed / (len(audio) / RATE)
    return r


def stats(values: list[float]) -> str:
    if not values:
        return "   n/a"
    return f"{statistics.median(values):5.2f} / {float(np.percentile(values, 95)):5.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument(
        "--clips",
        default="jfk.flac,pocketsphinx_librivox_austen_5utt.flac,asterisk_en_60s.flac",
        help="comma-separated files in tests/data (or paths)",
    )
    parser.add_argument("--gap", type=float, default=1.0, help="silence between clips (s)")
    parser.add_argument("--monologue", action="store_true", help="also: --silence-ms 3000")
    parser.add_argument(
        "--no-baseline", action="store_true", help="skip the finals-only run (WER vs offline only)"
    )
    args = parser.parse_args()

    engine = Engine(ModelOptions(model=args.model))
    audio = program(args.clips.split(","), args.gap)
    spoken, offline = offline_words(engine, audio)
    base = StreamOptions()
    configs = [("finals only", replace(base, partials=False)), ("partials", base)]
    if args.no_baseline:
        configs = configs[1:]
    if args.monologue:
        long = SegmenterOptions(silence_ms=3000, max_utterance_s=30.0)
        configs.append(("partials, no pause ends", replace(base, segmenter=long)))
    results = []
    for name, options in configs:
        r = run(name, engine, audio, spoken, options)
        r.wer_offline = wer(offline, r.text)
        results.append(r)
        print(
            f"{name:24} shown {stats(r.shown)}  committed {stats(r.committed)}  "
            f"final {stats(r.final)}  WER vs offline {r.wer_offline:.3f}  "
            f"finals {r.finals}  CPU {r.cpu_percent:.0f}%  behind max {r.max_behind:.1f} s  "
            f"feed/real {r.realtime_factor:.2f}",
            flush=True,
        )
    print(f"{len(spoken)} words, {len(audio) / RATE:.0f} s; delays: median / p95 seconds")
    payload = {
        "model": args.model,
        "clips": args.clips,
        "words": len(spoken),
        "seconds": len(audio) / RATE,
        "offline": offline,
        "results": [asdict(r) for r in results],
    }
    args.out.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    if args.plot is not None:
        plot(next(r for r in results if r.name == "partials"), args.plot, args.model)


def plot(r: Result, path: Path, model: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spoken = [t[0] for t in r.timeline]
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=100)
    n = list(range(1, len(spoken) + 1))
    ax.step(spoken, n, where="post", label="spoken (offline word end)", color="black")
    for i, (label, color) in enumerate(
        [
            ("shown (first partial)", "tab:orange"),
            ("committed", "tab:blue"),
            ("final", "tab:green"),
        ],
        start=1,
    ):
        xs = sorted(t[i] for t in r.timeline if t[i] == t[i])
        ax.step(xs, range(1, len(xs) + 1), where="post", label=label, color=color)
    ax.set_xlabel("seconds since the start of the audio")
    ax.set_ylabel("words")
    ax.set_title(f"Words over time, {model}, real speech fed at real time")
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    print(f"plot written to {path}")


if __name__ == "__main__":
    main()
