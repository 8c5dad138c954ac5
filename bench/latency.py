"""Latency benchmark of `livewhisper listen`.

Plays real speech with known speech end times, followed by silence, into
``livewhisper listen`` run as a subprocess, twice: through the virtual microphone
(a private PulseAudio daemon, as in the tests) and with ``--input FILE`` at real
time. It reports per clip the delay from the end of speech to its final text, the
word error rate against the reference transcripts and against offline
``livewhisper file`` on the same audio, CPU use while speaking and while silent,
and peak memory.

    python bench/latency.py results.json [--model tiny.en] [--silence 30] [--no-mic]
    python bench/latency.py results.json --corpus bench/corpus [--clips 40] [--seed 1]

By default the program is the four speech clips of ``tests/data``. With ``--corpus``
(built by ``bench/corpus.py``) it is speech the project was never tuned on: English
prompts of 1-10 s drawn at random from the corpus, each followed by 1.2-2.5 s of
silence, so every prompt is an utterance of its own and the median and 95th
percentile rest on dozens of them.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import wave
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
sys.path.insert(0, str(ROOT / "tests"))

from livewhisper.audio.files import read_all  # noqa: E402
from livewhisper.metrics import word_error_rate as wer  # noqa: E402
from vmic import VirtualMic, missing  # noqa: E402

CLIPS = [
    "goforward.flac",
    "librivox_sense_and_sensibility_01_austen_64kb-0880.flac",
    "jfk.flac",
    "pocketsphinx_librivox_austen_5utt.flac",
]
GAP = 2.0  # seconds of silence between clips
RATE = 16_000


def speech_end(audio: np.ndarray) -> float:
    """Seconds to the end of the last 10 ms above -40 dBFS: where the speech stops."""
    hop = RATE // 100
    n = len(audio) // hop
    rms = np.sqrt(np.mean(audio[: n * hop].reshape(n, hop) ** 2, axis=1))
    loud = np.nonzero(rms > 0.01)[0]
    return float((loud[-1] + 1) * hop / RATE) if len(loud) else 0.0


@dataclass
class Program:
    audio: np.ndarray
    ends: list[float]  # program seconds where each clip's speech ends
    reference: str
    speech_seconds: float  # where the trailing silence starts


def test_clips() -> list[tuple[Path, str, float]]:
    """The four clips of tests/data: (path, reference, silence after it)."""
    refs = dict(
        line.split("\t", 1)
        for line in (DATA / "transcripts.tsv").read_text(encoding="utf-8").splitlines()
        if "\t" in line
    )
    return [(DATA / name, refs[name], GAP) for name in CLIPS]


def corpus_clips(corpus: Path, count: int, seed: int) -> list[tuple[Path, str, float]]:
    """*count* English prompts of 1-10 s from a `bench/corpus.py` corpus, at random."""
    manifest = json.loads((corpus / "manifest.json").read_text(encoding="utf-8"))
    items = [
        i
        for i in manifest["items"]
        if i["language"] == "en" and "spans" not in i and 1.0 <= i["duration"] <= 10.0
    ]
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(items), size=min(count, len(items)), replace=False)
    return [
        (corpus / items[k]["path"], items[k]["reference"], float(rng.uniform(1.2, 2.5)))
        for k in chosen
    ]


def build_program(clips: list[tuple[Path, str, float]], silence: float) -> Program:
    parts, ends, pos = [np.zeros(RATE, np.float32)], [], 1.0
    for path, _, gap in clips:
        clip = read_all(path)
        ends.append(pos + speech_end(clip))
        parts += [clip, np.zeros(int(gap * RATE), np.float32)]
        pos += len(clip) / RATE + gap
    parts.append(np.zeros(int(silence * RATE), np.float32))
    return Program(np.concatenate(parts), ends, " ".join(ref for _, ref, _ in clips), pos)


def write_wav(path: Path, audio: np.ndarray) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())


@dataclass
class Run:
    name: str
    latencies: list[float] = field(default_factory=list)  # per clip
    missed: int = 0  # clips whose final never came
    text: str = ""
    wer_reference: float = 0.0
    wer_offline: float = 0.0
    cpu_speaking: float = 0.0  # percent of one core
    cpu_silent: float = 0.0
    peak_rss_mb: float = 0.0
    utterances: int = 0


class Sampler(threading.Thread):
    """CPU seconds of a process (all its threads) over time."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.samples: list[tuple[float, float]] = []
        self.peak_rss = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.1):
            try:
                t = self.proc.cpu_times()
                self.peak_rss = max(self.peak_rss, self.proc.memory_info().rss)
            except psutil.Error:
                return
            self.samples.append((time.monotonic(), t.user + t.system))

    def percent(self, start: float, end: float) -> float:
        inside = [s for s in self.samples if start <= s[0] <= end]
        if len(inside) < 2:
            return float("nan")
        (t0, c0), (t1, c1) = inside[0], inside[-1]
        return 100 * (c1 - c0) / (t1 - t0)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Heard:
    """What one `listen` run printed: every JSON event with its arrival time."""

    t0: float  # monotonic time at which the audio started
    deadline: float  # when the run was stopped (SIGINT)
    arrivals: list[tuple[float, dict[str, Any]]]
    sampler: Sampler
    peak_rss_mb: float

    def finals(self) -> list[tuple[float, dict[str, Any]]]:
        return [(t, e) for t, e in self.arrivals if e["type"] == "final"]


def run_listen(
    name: str,
    args: list[str],
    seconds: float,
    env: dict[str, str] | None,
    play: Callable[[], subprocess.Popen[bytes]] | None,
) -> Heard:
    """Run `listen --format jsonl` with *args*, start *play* (or let --input play),
    collect its events for *seconds* (+0.5), then stop it as Ctrl-C does."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "livewhisper", "listen", "--format", "jsonl", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    for line in proc.stderr:  # wait until the stream is open
        if line.startswith("Listening to"):
            break
    else:
        raise SystemExit(f"{name}: listen did not start")
    threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep stderr drained
    t0 = time.monotonic()
    player = play() if play is not None else None
    sampler = Sampler(proc.pid)
    sampler.start()
    arrivals: list[tuple[float, dict[str, Any]]] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            arrivals.append((time.monotonic(), json.loads(line)))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = t0 + seconds + 0.5
    threading.Event().wait(max(0.0, deadline - time.monotonic()))
    try:
        rss = peak_rss_mb(proc.pid)
    except OSError:
        rss = float("nan")
    if rss != rss:  # it ended already: use the sampled peak
        rss = sampler.peak_rss / 2**20
    proc.send_signal(signal.SIGINT)
    proc.wait(60)
    reader.join(10)
    sampler.done.set()
    if player is not None:
        player.wait(10)
    return Heard(t0, deadline, arrivals, sampler, rss)


def final_delays(
    finals: list[tuple[float, dict[str, Any]]], ends: list[float], t0: float
) -> list[float | None]:
    """Per speech end (program seconds): seconds from it to the first final that
    reaches it and began before it, or None where none came."""
    # Stream time runs from when listening started; the program from t0.
    delays: list[float | None] = []
    for end in ends:
        after = [t for t, e in finals if float(e["end"]) >= end - 0.3 and float(e["start"]) < end]
        delays.append(after[0] - (t0 + end) if after else None)
    return delays


def listen(
    name: str,
    args: list[str],
    program: Program,
    env: dict[str, str] | None,
    play: Callable[[], subprocess.Popen[bytes]] | None,
) -> Run:
    """Run `listen`, play the program (or let --input play it), collect timings."""
    heard = run_listen(name, args, len(program.audio) / RATE, env, play)
    finals = heard.finals()  # partials are measured by bench/partials.py
    run = Run(name, peak_rss_mb=heard.peak_rss_mb)
    run.utterances = len(finals)
    run.text = " ".join(str(e["text"]) for _, e in finals)
    delays = final_delays(finals, program.ends, heard.t0)
    run.latencies = [d for d in delays if d is not None]
    run.missed = delays.count(None)
    t0 = heard.t0
    last_final = finals[-1][0] if finals else t0
    run.cpu_speaking = heard.sampler.percent(t0, t0 + program.speech_seconds)
    run.cpu_silent = heard.sampler.percent(
        max(last_final, t0 + program.speech_seconds) + 1, heard.deadline
    )
    return run


def offline_text(path: Path, model: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "livewhisper", "file", str(path), "--model", model, "-q"],
        capture_output=True,
        text=True,
        check=True,
    )
    return " ".join(out.stdout.split())


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="where to write the JSON results")
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--silence", type=float, default=30.0, help="seconds of silence at the end")
    parser.add_argument("--no-mic", action="store_true", help="skip the virtual microphone run")
    parser.add_argument(
        "--listen-args", default="", help="more options for listen, such as '--no-partials'"
    )
    parser.add_argument("--corpus", type=Path, help="draw English prompts from this corpus")
    parser.add_argument("--clips", type=int, default=40, help="prompts drawn with --corpus")
    parser.add_argument("--seed", type=int, default=1, help="random draw of --corpus prompts")
    args = parser.parse_args()

    if args.corpus is None:
        clips = test_clips()
    else:
        clips = corpus_clips(args.corpus, args.clips, args.seed)
    program = build_program(clips, args.silence)
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="lwbench") as tmp:
        wav = Path(tmp) / "program.wav"
        write_wav(wav, program.audio)
        speech_wav = Path(tmp) / "speech.wav"
        write_wav(speech_wav, program.audio[: int(program.speech_seconds * RATE)])
        offline = offline_text(speech_wav, args.model)
        common = ["--model", args.model, *args.listen_args.split()]
        if not args.no_mic:
            if (why := missing()) is not None:
                raise SystemExit(f"no virtual microphone: missing {why}; use --no-mic")
            mic = VirtualMic(Path(tmp) / "vmic")
            mic.start()
            try:
                runs.append(
                    listen(
                        "virtual mic",
                        [*common, "--device", "pulse"],
                        program,
                        mic.environ(),
                        lambda: mic.play(wav),
                    )
                )
            finally:
                mic.stop()
        runs.append(listen("--input FILE", [*common, "--input", str(wav)], program, None, None))

    offline_wer = wer(program.reference, offline)
    for r in runs:
        r.wer_reference = wer(program.reference, r.text)
        r.wer_offline = wer(offline, r.text)

    print(
        f"model {args.model}; {len(clips)} clips, {program.speech_seconds:.0f} s of program, "
        f"{args.silence:.0f} s of silence; {psutil.cpu_count()} CPUs"
    )
    print(f"offline `livewhisper file` WER vs reference: {offline_wer:.3f}")
    print("\nend of speech -> final text, per utterance in program order (s)")
    for r in runs:
        print(f"{r.name}:")
        for i in range(0, len(r.latencies), 10):
            print("   " + " ".join(f"{x:5.2f}" for x in r.latencies[i : i + 10]))
    print(f"\n{'run':14} {'clips':>6} {'missed':>7} {'median':>7} {'p95':>6} {'max':>6}")
    for r in runs:
        median = statistics.median(r.latencies) if r.latencies else float("nan")
        print(
            f"{r.name:14} {len(r.latencies):6d} {r.missed:7d} {median:7.2f} "
            f"{percentile(r.latencies, 95):6.2f} {max(r.latencies, default=float('nan')):6.2f}"
        )
    print(
        f"\n{'run':14} {'WER ref':>8} {'rel. to offline':>16} {'WER vs offline':>15} "
        f"{'CPU speak %':>12} {'CPU silent %':>13} {'peak MB':>8}"
    )
    for r in runs:
        rel = (r.wer_reference - offline_wer) / offline_wer if offline_wer else float("nan")
        print(
            f"{r.name:14} {r.wer_reference:8.3f} {rel:+16.1%} {r.wer_offline:15.3f} "
            f"{r.cpu_speaking:12.1f} {r.cpu_silent:13.1f} {r.peak_rss_mb:8.0f}"
        )
    results = {
        "model": args.model,
        "clips": [str(path) for path, _, _ in clips],
        "speech_ends": program.ends,
        "silence_seconds": args.silence,
        "cpus": psutil.cpu_count(),
        "offline_text": offline,
        "offline_wer": offline_wer,
        "runs": [
            {
                **asdict(r),
                "latency_median": statistics.median(r.latencies) if r.latencies else None,
                "latency_p95": percentile(r.latencies, 95),
            }
            for r in runs
        ],
    }
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"\nresults written to {args.out}")


if __name__ == "__main__":
    main()
