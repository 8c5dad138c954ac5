"""Speed and accuracy of `livewhisper file` against plain faster-whisper, sequential and batched.

For each model and audio file these commands run as child processes, each once
per repeat, the order rotated by one every repeat (1 2 3, then 2 3 1, 3 1 2, ...):

``plain``
    a small plain faster-whisper script (``PLAIN`` below):
    ``WhisperModel(DIR, device="cpu", compute_type="int8", cpu_threads=N)
    .transcribe(PATH, beam_size=5, vad_filter=True)`` with every segment consumed,
    DIR being the directory livewhisper loads the model from
    (``livewhisper.engine.models.locate(M).path``). The baseline of every ratio.
``pipeline-bB``
    the same script with ``BatchedInferencePipeline(model).transcribe(PATH,
    beam_size=5, vad_filter=True, batch_size=B)``, for each B of ``--pipeline-batch``
    (default 8).
``lw``
    ``python -m livewhisper file --model M --format json --threads N PATH``, as a
    user types it (batch size auto: 16, fewer on a CPU short of memory).
``lw-bB``
    the same with ``--batch-size B``, for each B of ``--batch-sizes`` (default
    1,2,4,8; 1 decodes window after window, as ``plain`` does).

livewhisper's defaults differ from faster-whisper's only in ``vad_filter=True``
(see ``engine.TranscribeOptions``); English-only models get ``language="en"``
from all of them (faster-whisper sets it itself). ``BatchedInferencePipeline``
keeps its own defaults: VAD windows of up to 30 s cut at 160 ms of silence, no
conditioning on the previous text, no timestamp tokens, no temperature fallback.

Each child's wall time, CPU time (user + system) and peak RSS come from
``os.wait4``. For each file and command: the median wall and CPU times, their
ratios to ``plain``'s, the real-time factor (wall time over audio duration), the
largest peak RSS, and the word error rate of its runs against the file's
reference, every run counted (``livewhisper.metrics``; "n/a" without one): plain
faster-whisper samples where its temperature fallback runs, so its runs can
differ, and one run would flatter or wrong it. References come
from the ``transcripts.tsv`` beside the file (``tests/data``, the corpus's
folders) or from the ``manifest.json`` of the ``bench/corpus.py`` corpus that
holds it (its long items). A model's "all" row sums the medians over the files
and pools the WER over the files with a reference (``corpus_wer``). The bar of
issue #16: ``lw`` wall time at most 0.5 x ``plain``'s at a WER at most 1.05 x
``plain``'s, on 2 cores.

``lw-b1`` and ``plain`` decode the same windows one after the other: their
transcripts (segment texts and times to the millisecond) must be equal ("text =
plain"; ``lw-b1``'s last run against the closest of ``plain``'s runs, "plain
varies" where none is equal and ``plain``'s own runs differ). Batched
transcripts legitimately differ and are not compared.

Then, unless ``--inprocess-repeats 0``, to tell start-up from decoding, one child
per model loads the model once and times, interleaved in the same process on the
same loaded weights, ``Engine.transcribe_blocks(open_audio(PATH).blocks())``
against ``WhisperModel.transcribe(PATH)``, and the audio decoding alone
(``audiofile.read_all`` against ``faster_whisper.decode_audio``).

    python bench/file_speed.py [PATH...] [--models tiny.en,base] [--repeats 3]
        [--threads 2] [--batch-sizes 1,2,4,8] [--pipeline-batch 8]
        [--inprocess-repeats 1] [--json results.json] [--plot results.png]

``--plot`` draws, for each model, the "all" row of every command: wall ratio to
``plain`` (x) against WER (y), with the bar's lines at 0.5 and at 1.05 x
``plain``'s WER.

Without paths: the ~180 s and ~60 s English items of ``bench/corpus`` (build it
with ``python bench/corpus.py``) and ``tests/data/pocketsphinx_librivox_austen_5utt.flac``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from continuous_speech import Recording
from corpus import read_tsv
from livewhisper.metrics import corpus_wer, word_error_rate

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PATHS = [
    ROOT / "bench" / "corpus" / "long" / "long_en_180s.flac",
    ROOT / "bench" / "corpus" / "long" / "long_en_60s.flac",
    ROOT / "tests" / "data" / "pocketsphinx_librivox_austen_5utt.flac",
]
BASELINE = "plain"
SAME_AS_BASELINE = "lw-b1"  # sequential too: its transcript must equal plain's
BAR_RATIO, BAR_WER = 0.5, 1.05  # issue #16: wall <= 0.5 x plain at WER <= 1.05 x plain

#: Plain faster-whisper, nothing else: argv = model_dir, threads, batch, path; batch 0
#: is ``WhisperModel.transcribe`` (window after window), N ``BatchedInferencePipeline``.
PLAIN = """\
import json, sys
from faster_whisper import BatchedInferencePipeline, WhisperModel
model = WhisperModel(sys.argv[1], device="cpu", compute_type="int8", cpu_threads=int(sys.argv[2]))
batch, path = int(sys.argv[3]), sys.argv[4]
if batch:
    pipeline = BatchedInferencePipeline(model)
    segments, info = pipeline.transcribe(path, beam_size=5, vad_filter=True, batch_size=batch)
else:
    segments, info = model.transcribe(path, beam_size=5, vad_filter=True)
out = [{"start": s.start, "end": s.end, "text": s.text} for s in segments]
json.dump({"language": info.language, "segments": out}, sys.stdout, ensure_ascii=False)
"""


@dataclass(frozen=True)
class Command:
    """One way to transcribe a file: *argv* with the file's path appended."""

    name: str
    argv: tuple[str, ...]


@dataclass(frozen=True)
class Run:
    """One child process: its wall time, CPU time, peak RSS and standard output."""

    wall_s: float
    cpu_s: float
    peak_rss_mib: float
    stdout: str


def commands(
    model: str, model_dir: str, threads: int, batch_sizes: list[int], pipeline_batch: list[int]
) -> list[Command]:
    plain = (sys.executable, "-c", PLAIN, model_dir, str(threads))
    lw: tuple[str, ...] = (sys.executable, "-m", "livewhisper", "file", "--model", model)
    lw += ("--format", "json", "--threads", str(threads))
    return [
        Command(BASELINE, (*plain, "0")),
        *(Command(f"pipeline-b{n}", (*plain, str(n))) for n in pipeline_batch),
        Command("lw", lw),
        *(Command(f"lw-b{n}", (*lw, "--batch-size", str(n))) for n in batch_sizes),
    ]


# --------------------------------------------------------------------------- measuring


def run_child(cmd: list[str]) -> Run:
    """Run *cmd*; its wall time, CPU time, peak RSS (from wait4) and standard output."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode("utf-8"), err.read().decode("utf-8", "replace")
    if proc.returncode != 0:
        tail = stderr.strip().splitlines()[-1:] or ["(no message)"]
        raise SystemExit(f"file_speed: {cmd[:4]}... exited with {proc.returncode}: {tail[0]}")
    return Run(
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        peak_rss_mib=usage.ru_maxrss / 1024,  # KiB on Linux
        stdout=stdout,
    )


def segments_of(stdout: str) -> list[tuple[float, float, str]]:
    doc = json.loads(stdout)
    return [(round(s["start"], 3), round(s["end"], 3), s["text"].strip()) for s in doc["segments"]]


def text_of(segments: list[tuple[float, float, str]]) -> str:
    return " ".join(s[2] for s in segments)


def differences(a: list[tuple[float, float, str]], b: list[tuple[float, float, str]]) -> list[str]:
    """Human-readable differences between two segment lists (empty when identical)."""
    import difflib

    def line(s: tuple[float, float, str]) -> str:
        return f"[{s[0]:8.3f} {s[1]:8.3f}] {s[2]}"

    return [
        d
        for d in difflib.unified_diff(
            [line(s) for s in a], [line(s) for s in b], "livewhisper", "faster-whisper", lineterm=""
        )
        if not d.startswith(("---", "+++", "@@")) and d[:1] in "+-"
    ]


def compare(
    a: list[tuple[float, float, str]], b: list[tuple[float, float, str]], duration: float
) -> dict[str, Any]:
    """Texts and times of livewhisper (*a*) against faster-whisper (*b*).

    ``times`` is "same", "clamped" when they differ only where faster-whisper's time
    lies past the end of the audio (livewhisper clamps times to the audio), or
    "different".
    """
    same_text = [s[2] for s in a] == [s[2] for s in b]
    end = round(duration, 3)
    clamped = [(min(s[0], end), min(s[1], end), s[2]) for s in b]
    if a == b:
        times = "same"
    elif same_text and a == clamped:
        times = "clamped"
    else:
        times = "different"
    return {"same_text": same_text, "times": times, "diff": differences(a, b)}


def audio_seconds(path: Path) -> float:
    from livewhisper.audio.files import read_all

    return len(read_all(path)) / 16_000


def reference(path: Path) -> str | None:
    """The reference transcript of *path*: its line in the ``transcripts.tsv`` beside
    it, else its entry in the ``manifest.json`` of a folder above it (a corpus of
    ``bench/corpus.py`` or the recordings of ``bench/continuous_speech.py``)."""
    tsv = path.parent / "transcripts.tsv"
    if tsv.is_file():
        found = dict(read_tsv(tsv)).get(path.name)
        if found is not None:
            return found
    for folder in path.parents:
        manifest = folder / "manifest.json"
        if not manifest.is_file():
            continue
        doc = json.loads(manifest.read_text(encoding="utf-8"))
        refs: dict[str, str] = {i["path"]: i["reference"] for i in doc.get("items", [])}
        refs.update({r["path"]: Recording(**r).reference for r in doc.get("recordings", [])})
        found = refs.get(path.relative_to(folder).as_posix())
        if found is not None:
            return found
    return None


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


# --------------------------------------------------------------------------- in-process worker


def inprocess_worker(model: str, threads: int, repeats: int, paths: list[str]) -> None:
    """One process, one loaded model: the engine path against WhisperModel.transcribe."""
    from faster_whisper import decode_audio

    from livewhisper.audio.files import open_audio, read_all
    from livewhisper.engine.contract import TranscribeOptions
    from livewhisper.engine.local import Engine, ModelOptions

    def timed(fn: Any) -> tuple[float, float, Any]:
        w, c = time.perf_counter(), time.process_time()
        result = fn()
        return time.perf_counter() - w, time.process_time() - c, result

    t0 = time.perf_counter()
    engine = Engine(ModelOptions(model=model, device="cpu", compute_type="int8", threads=threads))
    load_s = time.perf_counter() - t0
    whisper = engine._model  # the same loaded weights for both paths
    options = TranscribeOptions()

    def lw(path: str) -> list[tuple[float, float, str]]:
        segs = engine.transcribe_blocks(open_audio(path).blocks(), options)
        return [(round(s.start, 3), round(s.end, 3), s.text.strip()) for s in segs]

    def plain(path: str) -> list[tuple[float, float, str]]:
        segs, _ = whisper.transcribe(path, beam_size=5, vad_filter=True)
        return [(round(s.start, 3), round(s.end, 3), s.text.strip()) for s in segs]

    # The first call loads the Silero VAD model and sizes buffers: keep it out of the timings.
    t0 = time.perf_counter()
    first = read_all(paths[0])[: 10 * 16_000]
    engine.transcribe(first, options)
    list(whisper.transcribe(first, beam_size=5, vad_filter=True)[0])
    results: dict[str, Any] = {"load_s": load_s, "warmup_s": time.perf_counter() - t0}
    results["files"] = {}
    for path in paths:
        rec: dict[str, list[float]] = {k: [] for k in ("lw_wall", "lw_cpu", "fw_wall", "fw_cpu")}
        rec.update({"lw_decode": [], "fw_decode": []})
        texts: dict[str, Any] = {}
        for r in range(repeats):
            order = ("lw", "fw") if r % 2 == 0 else ("fw", "lw")
            for who in order:
                wall, cpu, segs = timed(lambda p=path, w=who: (lw if w == "lw" else plain)(p))
                rec[f"{who}_wall"].append(wall)
                rec[f"{who}_cpu"].append(cpu)
                texts[who] = segs
            for who in order:
                fn = read_all if who == "lw" else decode_audio
                rec[f"{who}_decode"].append(timed(lambda p=path, f=fn: f(p))[0])
        duration = len(read_all(path)) / 16_000
        results["files"][path] = {**rec, **compare(texts["lw"], texts["fw"], duration)}
    json.dump(results, sys.stdout)


# --------------------------------------------------------------------------- benchmark


def measured(runs: list[Run], ref: str | None) -> dict[str, Any]:
    """Every run of one command on one file: the raw figures, each run's text and
    its WER, and whether every run gave the same segments."""
    segments = [segments_of(r.stdout) for r in runs]
    texts = [text_of(s) for s in segments]
    return {
        "wall_s": [r.wall_s for r in runs],
        "cpu_s": [r.cpu_s for r in runs],
        "peak_rss_mib": [r.peak_rss_mib for r in runs],
        "wer": [None if ref is None else word_error_rate(ref, t) for t in texts],
        "repeatable": all(s == segments[-1] for s in segments),
        "segments": len(segments[-1]),
        "text": texts[-1],
        "texts": texts,
    }


def bench_file(
    model: str, path: Path, cmds: list[Command], duration: float, repeats: int
) -> dict[str, Any]:
    """Every command on *path*, *repeats* times, the order rotated by one each time."""
    runs: dict[str, list[Run]] = {c.name: [] for c in cmds}
    for r in range(repeats):
        k = r % len(cmds)
        for cmd in cmds[k:] + cmds[:k]:
            run = run_child([*cmd.argv, str(path)])
            runs[cmd.name].append(run)
            print(
                f"  {model} {path.name} {cmd.name}: {run.wall_s:.2f} s wall, "
                f"{run.cpu_s:.2f} s CPU, {run.peak_rss_mib:.0f} MiB",
                file=sys.stderr,
            )
    ref = reference(path)
    entry: dict[str, Any] = {"duration_s": duration, "reference": ref}
    entry["commands"] = {name: measured(rs, ref) for name, rs in runs.items()}
    if SAME_AS_BASELINE in runs:
        # Plain faster-whisper samples where its temperature fallback runs, so its
        # runs can differ: lw-b1's last run against the closest of them.
        a = segments_of(runs[SAME_AS_BASELINE][-1].stdout)
        found = [compare(a, segments_of(r.stdout), duration) for r in runs[BASELINE]]
        best = min(found, key=lambda c: ("same", "clamped", "different").index(c["times"]))
        if best["times"] == "different" and not entry["commands"][BASELINE]["repeatable"]:
            best["times"] = "plain varies"
        entry.update(best)
    return entry


def bench_model(
    model: str,
    paths: list[Path],
    durations: dict[Path, float],
    repeats: int,
    threads: int,
    batch_sizes: list[int],
    pipeline_batch: list[int],
) -> dict[str, Any]:
    from livewhisper.engine.models import locate

    model_dir = str(locate(model, download=False).path)
    cmds = commands(model, model_dir, threads, batch_sizes, pipeline_batch)
    return {
        "model": model,
        "model_dir": model_dir,
        "commands": {c.name: list(c.argv) for c in cmds},
        "files": {str(p): bench_file(model, p, cmds, durations[p], repeats) for p in paths},
    }


# --------------------------------------------------------------------------- summaries


def row(files: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """Command *name* over *files*: medians summed, the largest peak RSS, WER pooled
    over every run of the files with a reference (None without any): a command
    whose runs differ is judged on all of them, not on its last."""
    audio = sum(f["duration_s"] for f in files)
    ms = [f["commands"][name] for f in files]
    wall = sum(median(m["wall_s"]) for m in ms)
    pairs = [
        (f["reference"], text)
        for f in files
        if f["reference"]
        for text in f["commands"][name].get("texts", [f["commands"][name]["text"]])
    ]
    return {
        "audio_s": audio,
        "wall_s": wall,
        "cpu_s": sum(median(m["cpu_s"]) for m in ms),
        "rtf": wall / audio,
        "peak_rss_mib": max(max(m["peak_rss_mib"]) for m in ms),
        "wer": corpus_wer(pairs) if pairs else None,
    }


def rows(files: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every command over *files*, with its ratios to the baseline's."""
    out = {name: row(files, name) for name in files[0]["commands"]}
    base = out[BASELINE]
    for r in out.values():
        r["ratio"] = r["wall_s"] / base["wall_s"]
        # On a shared machine wall time follows the neighbours' load; CPU time does not.
        r["cpu_ratio"] = r["cpu_s"] / base["cpu_s"]
        r["wer_ratio"] = ratio(r["wer"], base["wer"])
    return out


def same_as_baseline(files: list[dict[str, Any]]) -> dict[str, Any]:
    """Whether lw-b1 gave plain's transcript on every file (empty if lw-b1 did not run)."""
    if not all("same_text" in f for f in files):
        return {}
    kinds = {f["times"] for f in files}
    order = ("different", "plain varies", "clamped", "same")
    times = next(k for k in order if k in kinds)
    return {"same_text": all(f["same_text"] for f in files), "times": times}


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    files = list(result["files"].values())
    return {
        "audio_s": sum(f["duration_s"] for f in files),
        "commands": rows(files),
        **same_as_baseline(files),
    }


def run_inprocess(model: str, paths: list[Path], repeats: int, threads: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--inprocess-worker", model, str(threads), str(repeats)]
    result = run_child(cmd + [str(p) for p in paths])
    data: dict[str, Any] = json.loads(result.stdout)
    data["peak_rss_mib"] = result.peak_rss_mib
    return data


# --------------------------------------------------------------------------- report


def yes(flag: bool) -> str:
    return "yes" if flag else "NO"


def number(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def table_lines(
    model: str, file: str, pooled: dict[str, dict[str, Any]], check: dict[str, Any], bold: bool
) -> list[str]:
    """One table line per command; "text = plain" on lw-b1's line only."""
    b = "**" if bold else ""
    lines = []
    for name, r in pooled.items():
        same = check and name == SAME_AS_BASELINE
        cells = [
            f"{b}{model}{b}",
            f"{b}{file}{b}",
            name,
            f"{r['audio_s']:.1f}",
            f"{r['wall_s']:.2f}",
            f"{b}{r['ratio']:.3f}{b}",
            f"{r['rtf']:.3f}",
            f"{r['cpu_s']:.1f}",
            f"{r['cpu_ratio']:.3f}",
            f"{r['peak_rss_mib']:.0f}",
            number(r["wer"]),
            number(r["wer_ratio"]),
            f"{yes(check['same_text'])}, times {check['times']}" if same else "",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def print_table(report: dict[str, Any]) -> None:
    head = (
        "| model | file | command | audio s | wall s | wall ratio | RTF | CPU s | CPU ratio "
        "| peak MiB | WER | WER ratio | text = plain |"
    )
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for model in report["models"]:
        name = model["model"]
        for path, f in model["files"].items():
            check = {k: f[k] for k in ("same_text", "times") if k in f}
            print("\n".join(table_lines(name, Path(path).stem, rows([f]), check, bold=False)))
        s = model["summary"]
        check = {k: s[k] for k in ("same_text", "times") if k in s}
        print("\n".join(table_lines(name, "all", s["commands"], check, bold=True)))
    if any("inprocess" in m for m in report["models"]):
        print()
        print(
            "| model | file | engine s | WhisperModel s | ratio | CPU ratio | decode lw s "
            "| decode fw s | load s | same text | times |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for model in report["models"]:
            ip = model.get("inprocess")
            if not ip:
                continue
            for path, f in ip["files"].items():
                wl, wf = median(f["lw_wall"]), median(f["fw_wall"])
                print(
                    f"| {model['model']} | {Path(path).name} | {wl:.2f} | {wf:.2f} "
                    f"| {wl / wf:.3f} | {median(f['lw_cpu']) / median(f['fw_cpu']):.3f} "
                    f"| {median(f['lw_decode']):.3f} "
                    f"| {median(f['fw_decode']):.3f} | {ip['load_s']:.2f} "
                    f"| {yes(f['same_text'])} | {f['times']} |"
                )
    for model in report["models"]:
        for path, f in model["files"].items():
            if f.get("diff"):
                print(f"\n{model['model']} {Path(path).name}: {SAME_AS_BASELINE} and plain differ:")
                print("\n".join(f"  {d}" for d in f["diff"]))
        for path, f in (model.get("inprocess") or {}).get("files", {}).items():
            if f["diff"]:
                print(f"\n{model['model']} {Path(path).name}: transcripts differ (in process):")
                print("\n".join(f"  {d}" for d in f["diff"]))


#: Colour and legend of each kind of command in the plot.
KINDS = {
    "plain": ("tab:grey", "plain faster-whisper"),
    "pipeline": ("tab:orange", "BatchedInferencePipeline"),
    "lw": ("tab:blue", "livewhisper file"),
}
#: Label offsets (points) in turn, so labels of points at one WER do not overlap.
LABEL_OFFSETS = [(4, 9), (4, -15), (4, 21), (4, -27)]


def plot_model(ax: Any, model: dict[str, Any]) -> None:
    """One model's "all" rows: wall ratio to plain (x) against pooled WER (y)."""
    pooled = model["summary"]["commands"]
    points = sorted(
        ((name, r) for name, r in pooled.items() if r["wer"] is not None),
        key=lambda p: p[1]["ratio"],
    )
    shown = set()
    for i, (name, r) in enumerate(points):
        color, kind = KINDS[name.split("-")[0]]
        ax.scatter([r["ratio"]], [r["wer"]], color=color, label=None if kind in shown else kind)
        shown.add(kind)
        ax.annotate(
            name,
            (r["ratio"], r["wer"]),
            xytext=LABEL_OFFSETS[i % len(LABEL_OFFSETS)],
            textcoords="offset points",
            fontsize=7,
            arrowprops={"arrowstyle": "-", "color": "grey", "linewidth": 0.5},
        )
    base = pooled[BASELINE]["wer"]
    right = max([r["ratio"] for _, r in points] + [1.0]) * 1.15
    ax.set_xlim(0, right)
    bar = f"bar: wall <= {BAR_RATIO} x, WER <= {BAR_WER} x plain"
    ax.axvline(BAR_RATIO, color="tab:red", linestyle="--", linewidth=1, label=bar)
    if base is None:
        ax.text(0.5, 0.5, "no reference transcripts", transform=ax.transAxes, ha="center")
    else:
        ax.axhline(BAR_WER * base, color="tab:red", linestyle="--", linewidth=1)
        ax.fill_between([0, BAR_RATIO], 0, BAR_WER * base, color="tab:green", alpha=0.08)
        ax.set_ylim(0, max([BAR_WER * base] + [r["wer"] for _, r in points]) * 1.35)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=7)
    ax.set_xlabel("wall time / plain's (sums of medians)")
    ax.set_ylabel("WER (pooled over files and runs)")
    files, audio = len(model["files"]), model["summary"]["audio_s"]
    noun = "file" if files == 1 else "files"
    ax.set_title(f"{model['model']}: {files} {noun}, {audio:.0f} s of audio", fontsize=10)


def plot(report: dict[str, Any], path: Path) -> None:
    """Per model, every command's "all" row: wall ratio to plain against pooled WER."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = report["models"]
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.5), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        plot_model(ax, model)
    fig.suptitle(
        f"livewhisper file against plain faster-whisper: CPU, int8, beam 5, "
        f"{report['threads']} threads",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot written to {path}", file=sys.stderr)


def machine() -> dict[str, Any]:
    import platform

    import ctranslate2
    import faster_whisper

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "faster_whisper": faster_whisper.__version__,
        "ctranslate2": ctranslate2.__version__,
        "loadavg_start": os.getloadavg(),
    }


def int_list(text: str) -> list[int]:
    """``1,2,4`` as [1, 2, 4], repeats dropped (an argparse type); "" is an empty list."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of whole numbers: {text!r}") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"batch sizes are 1 or more: {text!r}")
    return list(dict.fromkeys(values))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--inprocess-worker"]:
        inprocess_worker(argv[1], int(argv[2]), int(argv[3]), argv[4:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", type=Path, help="audio files (default: see above)")
    parser.add_argument("--models", default="tiny.en,base", help="comma-separated model names")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each command per file")
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="CPU threads for all (livewhisper --threads, faster-whisper cpu_threads)",
    )
    parser.add_argument(
        "--batch-sizes",
        type=int_list,
        default="1,2,4,8",
        help="livewhisper file --batch-size values, one lw-bN command each (lw-b1 must "
        "give plain's transcript)",
    )
    parser.add_argument(
        "--pipeline-batch",
        type=int_list,
        default="8",
        help="BatchedInferencePipeline batch_size values, one pipeline-bN command each",
    )
    parser.add_argument(
        "--inprocess-repeats", type=int, default=1, help="in-process runs per file (0: skip)"
    )
    parser.add_argument("--json", type=Path, default=None, help="write every measurement here")
    parser.add_argument("--plot", type=Path, default=None, help="write the PNG plot here")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be 1 or more")
    paths = [p.resolve() for p in (args.paths or DEFAULT_PATHS)]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        hint = " (build the corpus: python bench/corpus.py)" if not args.paths else ""
        parser.error(f"no such file: {', '.join(missing)}{hint}")
    durations = {p: audio_seconds(p) for p in paths}
    from livewhisper.engine.local import AUTO_BATCH_CPU

    report: dict[str, Any] = {
        "machine": machine(),
        "threads": args.threads,
        "repeats": args.repeats,
        "settings": {
            "device": "cpu",
            "compute_type": "int8",
            "beam_size": 5,
            "vad_filter": True,
            "batch_sizes": args.batch_sizes,
            "pipeline_batch": args.pipeline_batch,
            "lw_auto_batch": AUTO_BATCH_CPU,
        },
        "models": [],
    }
    started = time.perf_counter()
    count = 2 + len(args.batch_sizes) + len(args.pipeline_batch)
    for model in args.models.split(","):
        print(f"{model}: {len(paths)} files x {args.repeats} x {count} commands", file=sys.stderr)
        result = bench_model(
            model,
            paths,
            durations,
            args.repeats,
            args.threads,
            args.batch_sizes,
            args.pipeline_batch,
        )
        result["summary"] = summarize(result)
        if args.inprocess_repeats > 0:
            print(f"{model}: in process", file=sys.stderr)
            result["inprocess"] = run_inprocess(model, paths, args.inprocess_repeats, args.threads)
        report["models"].append(result)
    report["elapsed_s"] = time.perf_counter() - started
    report["machine"]["loadavg_end"] = os.getloadavg()
    print_table(report)
    print(f"\n{report['elapsed_s']:.0f} s; threads {args.threads}; load {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    if args.plot:
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        plot(report, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
