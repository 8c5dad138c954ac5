"""Continuous-speech benchmark of `livewhisper listen`: live text against offline
text on recordings with natural pauses between sentences.

Each recording of `bench/continuous_speech.py` (real read speech, real telephone
prompts one after the other, synthetic paragraphs and a dialogue; sets ``tune``
and ``heldout``) is played in real time into ``livewhisper listen --format jsonl``
run as a subprocess, with partials on (listen's default) and off
(``--no-partials``), through ``--input FILE`` and through the virtual microphone
of the tests (a private PulseAudio daemon). Per recording and pooled per set it
reports, side by side:

* live WER against the reference, the WER of ``livewhisper file REC -q`` on the
  same recording, and their ratio (pooled: errors over reference words);
* finals latency: from the end of each sentence's speech to the arrival of the
  first final that reaches it, p50 and p95 over all sentence ends, a sentence no
  final reached counting as infinitely late (and as a miss);
* words first shown: from the end of each word (word timestamps of an offline
  transcription in this process, as in `bench/partials.py`) to the first event,
  partial or final, whose text shows it (`partials.word_times`), p50;
* CPU cores the listen process used while the recording spoke.

On the microphone path the device resamples and its timing jitters, so listen
hears slightly different audio from the file: each microphone run also keeps what
listen captured (``--save-audio``), and ``livewhisper file`` on that capture is the
path's own reference ("captured file WER", "live/captured").

    python bench/continuous.py results/continuous.json [--set tune|heldout|all]
        [--model tiny.en] [--no-mic | --only-mic] [--only-partials on|off|both]
        [--listen-args='--context-words 0'] [--only austen_read] [--plot out.png]

Needs: ``sox`` and ``flite`` to make the recordings, the benchmark corpus
(``python bench/corpus.py``: apt-get and a few minutes), the bench extra
(``pip install -e '.[bench]'``), and for the microphone ``pulseaudio``,
``pulseaudio-utils``, ``libasound2-plugins`` and ``libportaudio2``::

    apt-get install sox flite pulseaudio pulseaudio-utils libasound2-plugins libportaudio2

The recordings are made in ``bench/continuous/`` (git-ignored) on first use and
again when what they are made from changes. The whole program takes about
four times its audio (11 minutes) plus start-up: ``--set tune`` about
20 minutes, ``--set all`` about 50; a run on a busy machine measures the machine.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from continuous_speech import DEFAULT_OUT, Recording, recordings
from corpus import DEFAULT_OUT as DEFAULT_CORPUS
from corpus import DEFAULT_SHARED, SourceError
from latency import Heard, VirtualMic, final_delays, missing, offline_text, run_listen
from livewhisper.audio.files import read_all
from livewhisper.engine.local import Engine, ModelOptions
from livewhisper.metrics import edit_distance, normalize
from livewhisper.transcript import TextEvent
from partials import Spoken, offline_words, word_times

ROOT = Path(__file__).resolve().parent.parent
MODES = {"on": [], "off": ["--no-partials"]}  # partials: extra listen options
PATHS = ("input", "mic")


@dataclass
class Live:
    """One recording played once into listen."""

    recording: str
    set: str
    partials: str  # "on" or "off"
    path: str  # "input" (--input FILE) or "mic" (the virtual microphone)
    text: str
    errors: int  # word errors against the reference
    delays: list[float | None]  # per sentence end: to its final, None if none came
    shown: list[float | None]  # per offline word: to the first event showing it
    committed: list[float | None]  # ... to its commit (stable prefix or final)
    cpu_cores: float  # while the recording spoke
    peak_rss_mb: float
    finals: int
    partial_events: int
    events: list[tuple[float, dict[str, Any]]]  # (seconds since the audio started, event)
    #: The microphone path only: word errors of `livewhisper file` on the audio listen
    #: captured (``--save-audio``), the reference for what the device delivered.
    captured_errors: int | None = None


@dataclass
class Offline:
    """`livewhisper file` on one recording, and its word times."""

    text: str
    errors: int
    reference_words: int
    speech_seconds: float
    words: list[Spoken]


def errors(reference: str, text: str) -> int:
    return edit_distance(normalize(reference), normalize(text))


def percentile(values: list[float | None], q: float) -> float:
    """Linear percentile with None as +inf: a miss above the rank makes it inf."""
    if not values:
        return math.nan
    ordered = sorted(math.inf if v is None else v for v in values)
    pos = q / 100 * (len(ordered) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    if math.isinf(ordered[hi]):
        return math.inf
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def text_event(e: dict[str, Any]) -> TextEvent:
    return TextEvent(
        type=e["type"],
        id=e["id"],
        text=e["text"],
        start=e["start"],
        end=e["end"],
        language=e.get("language"),
        stable=e.get("stable", ""),
    )


def measure(rec: Recording, offline: Offline, partials: str, path: str, heard: Heard) -> Live:
    finals = heard.finals()
    text = " ".join(str(e["text"]) for _, e in finals)
    t0 = heard.t0
    events = [(t - t0, e) for t, e in heard.arrivals]
    times = word_times(offline.words, [(t, text_event(e)) for t, e in events])
    delay = [
        tuple(None if t is None else t - w.end for t in when)
        for w, when in zip(offline.words, times, strict=True)
    ]
    shown, committed = [d[0] for d in delay], [d[1] for d in delay]
    begin, end = rec.speech
    return Live(
        recording=rec.id,
        set=rec.set,
        partials=partials,
        path=path,
        text=text,
        errors=errors(rec.reference, text),
        delays=final_delays(finals, [float(s["end"]) for s in rec.sentences], t0),
        shown=shown,
        committed=committed,
        cpu_cores=heard.sampler.percent(t0 + begin, t0 + end) / 100,
        peak_rss_mb=heard.peak_rss_mb,
        finals=len(finals),
        partial_events=len(heard.arrivals) - len(finals),
        events=[(round(t, 3), e) for t, e in events],
    )


def summary(lives: list[Live], offline: dict[str, Offline]) -> dict[str, Any]:
    """Pooled figures of some runs: WER as errors over reference words."""
    ref_words = sum(offline[r.recording].reference_words for r in lives)
    live_wer = sum(r.errors for r in lives) / ref_words if ref_words else math.nan
    file_wer = (
        sum(offline[r.recording].errors for r in lives) / ref_words if ref_words else math.nan
    )
    delays = [d for r in lives for d in r.delays]
    shown = [d for r in lives for d in r.shown if d is not None]
    words = sum(len(r.shown) for r in lives)
    seconds = [offline[r.recording].speech_seconds for r in lives]
    captured = [r.captured_errors for r in lives]
    captured_wer = (
        sum(c for c in captured if c is not None) / ref_words
        if ref_words and None not in captured
        else math.nan
    )
    return {
        "recordings": len(lives),
        "reference_words": ref_words,
        "live_wer": live_wer,
        "file_wer": file_wer,
        "ratio": live_wer / file_wer if file_wer else math.nan,
        "captured_file_wer": captured_wer,
        "captured_ratio": live_wer / captured_wer if captured_wer else math.nan,
        "sentences": len(delays),
        "missed": delays.count(None),
        "finals_p50": percentile(delays, 50),
        "finals_p95": percentile(delays, 95),
        "shown_p50": percentile(list(shown), 50),
        "shown_words": len(shown),
        "offline_words": words,
        "committed_p50": percentile([d for r in lives for d in r.committed if d is not None], 50),
        "cpu_cores": float(np.average([r.cpu_cores for r in lives], weights=seconds)),
    }


def table(rows: list[tuple[str, str, str, str, dict[str, Any]]]) -> str:
    head = (
        "| recording | set | partials | path | live WER | file WER | live/file "
        "| captured file WER | live/captured "
        "| finals p50 | finals p95 | missed | shown p50 | CPU cores |"
    )
    lines = [head, "|" + "---|" * 14]
    for name, set_, partials, path, s in rows:
        cells = [
            name,
            set_,
            partials,
            path,
            f"{s['live_wer']:.3f}",
            f"{s['file_wer']:.3f}",
            f"{s['ratio']:.2f}",
            f"{s['captured_file_wer']:.3f}",
            f"{s['captured_ratio']:.2f}",
            f"{s['finals_p50']:.2f}",
            f"{s['finals_p95']:.2f}",
            f"{s['missed']}/{s['sentences']}",
            f"{s['shown_p50']:.2f}",
            f"{s['cpu_cores']:.2f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def finite(value: Any) -> Any:
    """JSON without NaN or Infinity: those become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def offline_runs(chosen: list[Recording], folder: Path, model: str) -> dict[str, Offline]:
    """`livewhisper file` on each recording, then word times from one engine here
    (let go before the live runs start)."""
    out = {}
    for rec in chosen:
        print(f"file {rec.id} ...", file=sys.stderr, flush=True)
        text = offline_text(folder / rec.path, model)
        begin, end = rec.speech
        out[rec.id] = Offline(
            text, errors(rec.reference, text), len(normalize(rec.reference)), end - begin, []
        )
    engine = Engine(ModelOptions(model=model))
    for rec in chosen:
        out[rec.id].words = offline_words(engine, read_all(folder / rec.path))[0]
    del engine
    gc.collect()
    return out


def git_commit() -> str:
    proc = subprocess.run(
        ["git", "describe", "--always", "--dirty", "--abbrev=12"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    return proc.stdout.strip() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="where to write the JSON results")
    parser.add_argument("--set", choices=("tune", "heldout", "all"), default="all")
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--no-mic", action="store_true", help="skip the virtual microphone")
    parser.add_argument(
        "--only-mic", action="store_true", help="the virtual microphone alone (no --input runs)"
    )
    parser.add_argument(
        "--listen-args", default="", help="more options for listen, such as '--context-words 0'"
    )
    parser.add_argument("--only-partials", choices=("on", "off", "both"), default="both")
    parser.add_argument("--only", default="", help="comma-separated recording ids (a subset)")
    parser.add_argument("--plot", type=Path, help="bar chart of the pooled figures (PNG)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the recordings' pauses")
    parser.add_argument("--speech", type=Path, default=DEFAULT_OUT, help="recordings folder")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED)
    args = parser.parse_args()

    try:
        every = recordings(args.speech, seed=args.seed, corpus_dir=args.corpus, shared=args.shared)
    except SourceError as exc:
        raise SystemExit(f"continuous: {exc}") from exc
    chosen = [r for r in every if args.set in ("all", r.set)]
    if args.only:
        wanted = args.only.split(",")
        unknown = set(wanted) - {r.id for r in every}
        if unknown:
            raise SystemExit(
                f"unknown recordings {sorted(unknown)}; known: {[r.id for r in every]}"
            )
        chosen = [r for r in chosen if r.id in wanted]
    if not chosen:
        raise SystemExit("no recording chosen")
    modes = ["on", "off"] if args.only_partials == "both" else [args.only_partials]
    paths = ["input"] if args.no_mic else ["mic"] if args.only_mic else list(PATHS)
    if "mic" in paths and (why := missing()) is not None:
        raise SystemExit(f"no virtual microphone: missing {why}; use --no-mic")
    load_before = os.getloadavg()
    started = time.time()
    audio = sum(r.duration for r in chosen)
    print(
        f"{len(chosen)} recordings, {audio / 60:.1f} min of audio, "
        f"{len(modes) * len(paths)} runs each; load average {load_before[0]:.2f}",
        file=sys.stderr,
    )
    offline = offline_runs(chosen, args.speech, args.model)
    lives: list[Live] = []
    common = ["--model", args.model, *args.listen_args.split()]
    with tempfile.TemporaryDirectory(prefix="lwcont") as tmp:
        mic = None
        if "mic" in paths:
            mic = VirtualMic(Path(tmp) / "vmic")
            mic.start()
        try:
            for rec in chosen:
                wav = args.speech / rec.path
                for mode in modes:
                    for path in paths:
                        print(f"{rec.id} partials {mode} {path} ...", file=sys.stderr, flush=True)
                        if path == "input":
                            listen_args = [*common, *MODES[mode], "--input", str(wav)]
                            env, play = None, None
                        else:
                            assert mic is not None
                            captured = Path(tmp) / f"{rec.id}-{mode}.wav"
                            listen_args = [*common, *MODES[mode], "--device", "pulse"]
                            listen_args += ["--save-audio", str(captured)]
                            env = mic.environ()
                            play = player(mic, wav)
                        heard = run_listen(rec.id, listen_args, rec.duration, env, play)
                        lives.append(measure(rec, offline[rec.id], mode, path, heard))
            for live in lives:  # what the device delivered, transcribed as a file
                if live.path == "mic":
                    captured = Path(tmp) / f"{live.recording}-{live.partials}.wav"
                    print(f"file {captured.name} (captured) ...", file=sys.stderr, flush=True)
                    rec = next(r for r in chosen if r.id == live.recording)
                    live.captured_errors = errors(rec.reference, offline_text(captured, args.model))
        finally:
            if mic is not None:
                mic.stop()
    load_after = os.getloadavg()

    rows = [(r.recording, r.set, r.partials, r.path, summary([r], offline)) for r in lives]
    pooled = []
    sets = sorted({r.set for r in chosen}, reverse=True)  # tune, heldout
    groups = [*sets, "all"] if len(sets) > 1 else sets
    for group in groups:
        for mode in modes:
            for path in paths:
                runs = [
                    r
                    for r in lives
                    if r.partials == mode and r.path == path and group in ("all", r.set)
                ]
                pooled.append((f"**pooled {group}**", group, mode, path, summary(runs, offline)))
    print(
        f"\nmodel {args.model}; {len(chosen)} recordings, {audio:.0f} s; "
        f"{psutil.cpu_count()} CPUs; load average {load_before[0]:.2f} before, "
        f"{load_after[0]:.2f} after; commit {git_commit()}"
    )
    print("finals and shown: seconds (p50, p95); missed: sentences no final reached\n")
    print(table(rows + pooled))
    results = {
        "model": args.model,
        "listen_args": args.listen_args,
        "set": args.set,
        "commit": git_commit(),
        "cpus": psutil.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "wall_seconds": time.time() - started,
        "recordings": [
            {**asdict(r), "reference": r.reference, "file": asdict(offline[r.id])} for r in chosen
        ],
        "pooled": [{"group": g, "partials": m, "path": p, **s} for _, g, m, p, s in pooled],
        "runs": [{**asdict(r), **summary([r], offline)} for r in lives],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(finite(results), indent=1) + "\n", encoding="utf-8")
    print(f"\nresults written to {args.out}")
    if args.plot is not None:
        plot([(g, m, p, s) for _, g, m, p, s in pooled], args.plot, args.model)


def player(mic: VirtualMic, wav: Path) -> Callable[[], subprocess.Popen[bytes]]:
    return lambda: mic.play(wav)


def plot(pooled: list[tuple[str, str, str, dict[str, Any]]], path: Path, model: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{g}\npartials {m}\n{p}" for g, m, p, _ in pooled]
    x = np.arange(len(pooled))
    fig, axes = plt.subplots(1, 3, figsize=(max(9, 1.4 * len(pooled) * 1.5), 4.5), dpi=100)
    panels = [
        ("WER", [("live_wer", "live"), ("file_wer", "file")]),
        ("finals latency (s)", [("finals_p50", "p50"), ("finals_p95", "p95")]),
        ("words first shown (s)", [("shown_p50", "p50")]),
    ]
    for ax, (title, bars) in zip(axes, panels, strict=True):
        width = 0.8 / len(bars)
        for i, (key, label) in enumerate(bars):
            values = [s[key] if math.isfinite(s[key]) else 0.0 for *_, s in pooled]
            ax.bar(x + (i - (len(bars) - 1) / 2) * width, values, width, label=label)
        ax.set_xticks(x, labels, fontsize=7)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
        if len(bars) > 1:
            ax.legend(fontsize=8)
    fig.suptitle(f"Continuous speech, {model}, played in real time")
    fig.tight_layout()
    fig.savefig(path)
    print(f"plot written to {path}")


if __name__ == "__main__":
    main()
