"""Speed of `livewhisper file` against plain faster-whisper, same model and settings.

For each model and audio file, two commands run as child processes, interleaved
(A B, then B A, ...), several times:

A. ``python -m livewhisper file PATH --model M --format json --threads N``, as a
   user types it;
B. a small plain faster-whisper script (``PLAIN`` below):
   ``WhisperModel(DIR, device="cpu", compute_type="int8", cpu_threads=N)
   .transcribe(PATH, beam_size=5, vad_filter=True)`` with every segment consumed,
   DIR being the directory livewhisper loads the model from
   (``livewhisper.engine.models.locate(M).path``).

livewhisper's defaults differ from faster-whisper's only in ``vad_filter=True``
(see ``engine.TranscribeOptions``); English-only models get ``language="en"``
from both. Each child's wall time, CPU time and peak RSS come from ``os.wait4``.
The speed ratio is the sum over files of livewhisper's median wall time over the
same sum for plain faster-whisper; the real-time factor is time over audio
duration. Transcripts (segment texts and times to the millisecond) must be equal.

Then, to tell start-up from decoding, one child per model loads the model once
and times, interleaved in the same process on the same loaded weights,
``Engine.transcribe_blocks(open_audio(PATH).blocks())`` against
``WhisperModel.transcribe(PATH)``, and the audio decoding alone
(``audiofile.read_all`` against ``faster_whisper.decode_audio``).

    python bench/file_speed.py [PATH...] [--models tiny.en,base] [--repeats 3]
        [--threads 2] [--json results.json]

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
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PATHS = [
    ROOT / "bench" / "corpus" / "long" / "long_en_180s.flac",
    ROOT / "bench" / "corpus" / "long" / "long_en_60s.flac",
    ROOT / "tests" / "data" / "pocketsphinx_librivox_austen_5utt.flac",
]

#: Plain faster-whisper, nothing else: argv = model_dir, path, threads.
PLAIN = """\
import json, sys
from faster_whisper import WhisperModel
model = WhisperModel(sys.argv[1], device="cpu", compute_type="int8", cpu_threads=int(sys.argv[3]))
segments, info = model.transcribe(sys.argv[2], beam_size=5, vad_filter=True)
out = [{"start": s.start, "end": s.end, "text": s.text} for s in segments]
json.dump({"language": info.language, "segments": out}, sys.stdout, ensure_ascii=False)
"""


# --------------------------------------------------------------------------- measuring


def run_child(cmd: list[str]) -> dict[str, Any]:
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
    return {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mib": usage.ru_maxrss / 1024,  # KiB on Linux
        "stdout": stdout,
    }


def segments_of(stdout: str) -> list[tuple[float, float, str]]:
    doc = json.loads(stdout)
    return [(round(s["start"], 3), round(s["end"], 3), s["text"].strip()) for s in doc["segments"]]


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


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


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


# --------------------------------------------------------------------------- main


def bench_model(
    model: str, paths: list[Path], durations: dict[Path, float], repeats: int, threads: int
) -> dict[str, Any]:
    from livewhisper.engine.models import locate

    model_dir = str(locate(model, download=False).path)
    lw_cmd = [sys.executable, "-m", "livewhisper", "file"]
    files: dict[str, Any] = {}
    for path in paths:
        runs: dict[str, list[dict[str, Any]]] = {"livewhisper": [], "faster-whisper": []}
        commands = {
            "livewhisper": lw_cmd
            + [str(path), "--model", model, "--format", "json", "--threads", str(threads)],
            "faster-whisper": [sys.executable, "-c", PLAIN, model_dir, str(path), str(threads)],
        }
        for r in range(repeats):
            order = ("livewhisper", "faster-whisper")
            for who in order if r % 2 == 0 else reversed(order):
                result = run_child(commands[who])
                runs[who].append(result)
                print(
                    f"  {model} {path.name} {who}: {result['wall_s']:.2f} s wall, "
                    f"{result['cpu_s']:.2f} s CPU, {result['peak_rss_mib']:.0f} MiB",
                    file=sys.stderr,
                )
        a = segments_of(runs["livewhisper"][-1]["stdout"])
        b = segments_of(runs["faster-whisper"][-1]["stdout"])
        stable = all(segments_of(x["stdout"]) == a for x in runs["livewhisper"]) and all(
            segments_of(x["stdout"]) == b for x in runs["faster-whisper"]
        )
        entry: dict[str, Any] = {"duration_s": durations[path], **compare(a, b, durations[path])}
        entry["repeatable"] = stable
        entry["segments"] = len(a)
        for who, rs in runs.items():
            entry[who] = {
                "wall_s": [x["wall_s"] for x in rs],
                "cpu_s": [x["cpu_s"] for x in rs],
                "peak_rss_mib": [x["peak_rss_mib"] for x in rs],
            }
        files[str(path)] = entry
    return {"model": model, "model_dir": model_dir, "files": files}


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    files = result["files"].values()
    audio = sum(f["duration_s"] for f in files)
    out: dict[str, Any] = {"audio_s": audio}
    for who in ("livewhisper", "faster-whisper"):
        wall = sum(median(f[who]["wall_s"]) for f in files)
        cpu = sum(median(f[who]["cpu_s"]) for f in files)
        out[who] = {
            "wall_s": wall,
            "cpu_s": cpu,
            "rtf": wall / audio,
            "peak_rss_mib": max(max(f[who]["peak_rss_mib"]) for f in files),
        }
    out["ratio"] = out["livewhisper"]["wall_s"] / out["faster-whisper"]["wall_s"]
    # On a shared machine wall time follows the neighbours' load; CPU time does not.
    out["cpu_ratio"] = out["livewhisper"]["cpu_s"] / out["faster-whisper"]["cpu_s"]
    out["same_text"] = all(f["same_text"] for f in files)
    kinds = {f["times"] for f in files}
    out["times"] = (
        "different" if "different" in kinds else "clamped" if "clamped" in kinds else "same"
    )
    return out


def run_inprocess(model: str, paths: list[Path], repeats: int, threads: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--inprocess-worker", model, str(threads), str(repeats)]
    result = run_child(cmd + [str(p) for p in paths])
    data = json.loads(result["stdout"])
    data["peak_rss_mib"] = result["peak_rss_mib"]
    return data


def yes(flag: bool) -> str:
    return "yes" if flag else "NO"


def print_table(report: dict[str, Any]) -> None:
    head = (
        "| model | file | audio s | livewhisper s | faster-whisper s | ratio | RTF lw | RTF fw "
        "| CPU s lw / fw | CPU ratio | peak MiB lw / fw | same text | times |"
    )
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for model in report["models"]:
        for path, f in model["files"].items():
            lw, fw = f["livewhisper"], f["faster-whisper"]
            wl, wf = median(lw["wall_s"]), median(fw["wall_s"])
            print(
                f"| {model['model']} | {Path(path).name} | {f['duration_s']:.1f} | {wl:.2f} "
                f"| {wf:.2f} | {wl / wf:.3f} | {wl / f['duration_s']:.3f} "
                f"| {wf / f['duration_s']:.3f} | {median(lw['cpu_s']):.1f} / "
                f"{median(fw['cpu_s']):.1f} | {median(lw['cpu_s']) / median(fw['cpu_s']):.3f} "
                f"| {max(lw['peak_rss_mib']):.0f} / "
                f"{max(fw['peak_rss_mib']):.0f} | {yes(f['same_text'])} | {f['times']} |"
            )
        s = model["summary"]
        lw, fw = s["livewhisper"], s["faster-whisper"]
        print(
            f"| **{model['model']}** | **all** | {s['audio_s']:.1f} | {lw['wall_s']:.2f} "
            f"| {fw['wall_s']:.2f} | **{s['ratio']:.3f}** | {lw['rtf']:.3f} | {fw['rtf']:.3f} "
            f"| {lw['cpu_s']:.1f} / {fw['cpu_s']:.1f} | **{s['cpu_ratio']:.3f}** "
            f"| {lw['peak_rss_mib']:.0f} / "
            f"{fw['peak_rss_mib']:.0f} | {yes(s['same_text'])} | {s['times']} |"
        )
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
            if f["diff"]:
                print(f"\n{model['model']} {Path(path).name}: transcripts differ (subprocess):")
                print("\n".join(f"  {d}" for d in f["diff"]))
        for path, f in (model.get("inprocess") or {}).get("files", {}).items():
            if f["diff"]:
                print(f"\n{model['model']} {Path(path).name}: transcripts differ (in process):")
                print("\n".join(f"  {d}" for d in f["diff"]))


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
        help="CPU threads for both (livewhisper --threads, faster-whisper cpu_threads)",
    )
    parser.add_argument(
        "--inprocess-repeats", type=int, default=1, help="in-process runs per file (0: skip)"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    paths = [p.resolve() for p in (args.paths or DEFAULT_PATHS)]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        hint = " (build the corpus: python bench/corpus.py)" if not args.paths else ""
        parser.error(f"no such file: {', '.join(missing)}{hint}")
    durations = {p: audio_seconds(p) for p in paths}
    report: dict[str, Any] = {
        "machine": machine(),
        "threads": args.threads,
        "repeats": args.repeats,
        "settings": {"device": "cpu", "compute_type": "int8", "beam_size": 5, "vad_filter": True},
        "models": [],
    }
    started = time.perf_counter()
    for model in args.models.split(","):
        print(f"{model}: {len(paths)} files x {args.repeats} x 2 commands", file=sys.stderr)
        result = bench_model(model, paths, durations, args.repeats, args.threads)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
