"""The remote engine (``--engine URL``): what it adds to each utterance, and what a
front-end costs per session.

Latency: real utterances (the English clips of tests/data cut by the live
segmenter, as ``listen`` cuts them) are decoded in turn, in one run, by

* ``local``: tiny.en in this process with the live settings (fitted window, no VAD
  filter), as ``listen`` decodes them;
* ``local-upload``: the same model with the settings of an upload (the full 30 s
  window, the VAD filter), which is how ``livewhisper serve`` decodes a file sent
  to ``/v1/audio/transcriptions``;
* ``remote-wav`` and ``remote-flac``: `RemoteEngine` against ``livewhisper serve``
  (tiny.en, another process on the same machine), the audio sent as WAV or FLAC;
* ``protocol-wav`` and ``protocol-flac``: `RemoteEngine` against an engine that
  answers at once: encoding, HTTP and the answer's mapping, no decode (and, apart,
  the time the server takes to read each format back into samples).

The conditions take turns utterance by utterance, so a slower minute of the
machine falls on all of them alike.

Sessions: ``livewhisper serve --engine URL`` (a front-end) with N simulated
browsers streaming real speech in real time over ``/ws`` (partials on, as the page
asks), its engine one that answers at once (the front-end's own cost: CPU time per
second of audio gives sessions per core) or after a fixed delay (an engine's decode
time, without its CPU: what one request in flight per front-end does to the
finals' latency as sessions are added), or a real ``livewhisper serve`` (``real``:
tiny.en decoding every session's finals and partials on this machine's cores).

    python bench/remote.py --json remote.json
    python bench/remote.py --skip-latency --sessions 4,8,16 --delays 0,0.15,real --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
RATE = 16_000
CLIPS = [
    "jfk.flac",
    "librivox_sense_and_sensibility_01_austen_64kb-0880.flac",
    "goforward.flac",
    "pocketsphinx_librivox_austen_5utt.flac",
    "asterisk_en_60s.flac",
]


# --------------------------------------------------------------------------- engines


class _Instant(BaseHTTPRequestHandler):
    """An OpenAI audio API that answers every upload with one segment, at once or
    after `delay` seconds (an engine's decode time, without its CPU)."""

    protocol_version = "HTTP/1.1"
    counts: dict[str, int] = {"models": 0, "transcriptions": 0}
    delay = 0.0

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.counts["models"] += 1
        self._answer({"object": "list", "data": [{"id": "instant", "object": "model"}]})

    def do_POST(self) -> None:
        size = int(self.headers["Content-Length"])
        self.rfile.read(size)
        self.counts["transcriptions"] += 1
        if self.delay:
            time.sleep(self.delay)
        seconds = max(0.1, size / 32000)
        text = " The quick brown fox jumps over the lazy dog."
        words = [
            {"word": w, "start": i * seconds / 9, "end": (i + 1) * seconds / 9}
            for i, w in enumerate(text.split())
        ]
        segment = {"id": 0, "start": 0.0, "end": seconds, "text": text, "avg_logprob": -0.1}
        self._answer(
            {"language": "en", "text": text.strip(), "segments": [segment], "words": words}
        )


@contextlib.contextmanager
def instant_engine(delay: float = 0.0) -> Iterator[str]:
    handler = type("Delayed", (_Instant,), {"delay": delay})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def livewhisper_serve(*args: str) -> Iterator[tuple[str, int]]:
    """``livewhisper serve --port 0 ARGS``: its URL and process id, once it serves."""
    command = [sys.executable, "-m", "livewhisper", "serve", "--port", "0", *args]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            match = re.match(r"Serving on (http://127\.0\.0\.1:\d+)/", line)
            if match:
                break
        else:
            raise RuntimeError(f"livewhisper serve did not start ({proc.wait()})")
        # Keep reading its stderr, so it never blocks on a full pipe.
        threading.Thread(target=proc.stderr.read, daemon=True).start()
        yield match.group(1), proc.pid
    finally:
        proc.terminate()
        proc.wait(30)


# --------------------------------------------------------------------------- latency


def utterances(limit: int) -> list[tuple[str, np.ndarray]]:
    """The clips cut into utterances by the live segmenter, as ``listen`` cuts them,
    each with its clip's name: whole clips, until there are *limit* utterances."""
    from livewhisper.audio.files import read_all
    from livewhisper.live.segmenter import (
        FRAME_SAMPLES,
        Segmenter,
        UtteranceClosed,
        webrtc_detector,
    )

    out: list[tuple[str, np.ndarray]] = []
    for name in CLIPS:
        if len(out) >= limit:
            break
        audio = np.concatenate([read_all(DATA / name), np.zeros(RATE, np.float32)])
        segmenter = Segmenter(webrtc_detector(3))
        events = []
        for i in range(0, len(audio) - FRAME_SAMPLES + 1, FRAME_SAMPLES):
            events += segmenter.feed(audio[i : i + FRAME_SAMPLES])
        events += segmenter.flush()
        out += [(name, e.audio) for e in events if isinstance(e, UtteranceClosed)]
    return out


def latency(limit: int) -> dict[str, Any]:
    from livewhisper.audio.files import read_all
    from livewhisper.engine.contract import TranscribeOptions
    from livewhisper.engine.local import Engine, ModelOptions
    from livewhisper.engine.remote import RemoteEngine, RemoteOptions, _encoded
    from livewhisper.metrics import word_error_rate

    named = utterances(limit)
    pieces = [audio for _, audio in named]
    references = dict(
        line.split("\t", 1)
        for line in (DATA / "transcripts.tsv").read_text(encoding="utf-8").splitlines()
        if "\t" in line
    )
    live = TranscribeOptions(language="en").for_utterance()
    upload = TranscribeOptions(language="en")
    local = Engine(ModelOptions("tiny.en"))
    times: dict[str, list[float]] = {}
    texts: dict[str, list[str]] = {}
    sizes: dict[str, list[int]] = {"wav": [], "flac": []}
    decoding: dict[str, list[float]] = {"wav": [], "flac": []}  # as the server decodes it
    for audio in pieces:
        for fmt in sizes:
            data = _encoded(audio, fmt)[1]
            sizes[fmt].append(len(data))
            started = time.perf_counter()
            read_all(io.BytesIO(data))
            decoding[fmt].append(time.perf_counter() - started)
    with livewhisper_serve() as (url, _pid), instant_engine() as instant:
        engines = {
            "remote-wav": RemoteEngine(RemoteOptions(url)),
            "remote-flac": RemoteEngine(RemoteOptions(url, audio_format="flac")),
            "protocol-wav": RemoteEngine(RemoteOptions(instant)),
            "protocol-flac": RemoteEngine(RemoteOptions(instant, audio_format="flac")),
        }
        runs: dict[str, Any] = {
            "local": lambda a: local.transcribe(a, live),
            "local-upload": lambda a: local.transcribe(a, upload),
            **{name: (lambda a, e=e: e.transcribe(a, live)) for name, e in engines.items()},
        }
        for run in runs.values():  # warm up: first decodes, connections
            run(pieces[0])
        for audio in pieces:
            for name, run in runs.items():
                started = time.perf_counter()
                text = run(audio).text
                times.setdefault(name, []).append(time.perf_counter() - started)
                texts.setdefault(name, []).append(text)
        for engine in engines.values():
            engine.close()
    seconds = [len(a) / RATE for a in pieces]
    result: dict[str, Any] = {
        "utterances": len(pieces),
        "audio_seconds_median": statistics.median(seconds),
        "bytes_median": {fmt: statistics.median(s) for fmt, s in sizes.items()},
        "server_decode_ms_median": {
            fmt: 1000 * statistics.median(t) for fmt, t in decoding.items()
        },
        "ms": {
            name: {
                "median": 1000 * statistics.median(t),
                "p95": 1000 * float(np.percentile(t, 95)),
            }
            for name, t in times.items()
        },
        # The utterances' text joined, against the clips' references.
        "wer": {
            name: word_error_rate(
                " ".join(references[clip] for clip in dict.fromkeys(c for c, _ in named)),
                " ".join(t),
            )
            for name, t in texts.items()
            if not name.startswith("protocol")  # made-up text
        },
    }
    # Paired: each utterance's remote time less its local time, in the same run.
    result["added_ms"] = {
        f"{a} - {b}": {
            "median": 1000 * statistics.median(np.subtract(times[a], times[b])),
            "p95": 1000 * float(np.percentile(np.subtract(times[a], times[b]), 95)),
        }
        for a, b in [
            ("remote-wav", "local"),
            ("remote-flac", "local"),
            ("remote-wav", "local-upload"),
            ("remote-flac", "remote-wav"),
            ("protocol-flac", "protocol-wav"),
        ]
    }
    return result


# --------------------------------------------------------------------------- sessions


def speech(seconds: float) -> np.ndarray:
    """*seconds* of real speech: the clips in turn, with a second of silence after each."""
    from livewhisper.audio.files import read_all

    pieces: list[np.ndarray] = []
    total = 0
    while total < seconds * RATE:
        for name in CLIPS:
            pieces += [read_all(DATA / name), np.zeros(RATE, np.float32)]
            total += len(pieces[-2]) + RATE
    return np.concatenate(pieces)[: int(seconds * RATE)]


@dataclass
class Session:
    latencies: list[float] = field(default_factory=list)  # of its finals, end of speech
    partials: int = 0
    closed: str | None = None  # closed by the server before the end (1013: too late)


async def browser(url: str, audio: np.ndarray, delay: float) -> Session:
    """One page's session: PCM in 100 ms frames in real time, partials on, as the
    page streams; its finals' end-of-speech latencies as bench/load.py measures
    them, its partial events, and whether the server closed it as too late."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosedError

    from load import speech_frames

    loud = speech_frames(audio)
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    session = Session()
    await asyncio.sleep(delay)
    loop = asyncio.get_running_loop()
    try:
        async with connect(url, max_size=None) as ws:
            await ws.send(json.dumps({"type": "start", "language": "en", "partials": True}))
            assert json.loads(await ws.recv())["type"] == "ready"
            t0 = loop.time()

            async def receive() -> None:
                async for raw in ws:
                    message = json.loads(raw)
                    if message["type"] == "final":
                        first, last = int(message["start"] / 0.03), int(message["end"] / 0.03)
                        voiced = np.flatnonzero(loud[first : last + 1])
                        spoken = (first + voiced[-1] + 1) * 0.03 if len(voiced) else message["end"]
                        session.latencies.append(loop.time() - (t0 + spoken))
                    session.partials += message["type"] == "partial"
                    if message["type"] == "stopped":
                        return

            receiver = asyncio.create_task(receive())
            for n, i in enumerate(range(0, len(pcm), 3200), 1):
                await ws.send(pcm[i : i + 3200])
                await asyncio.sleep(max(0.0, t0 + n * 0.1 - loop.time()))
            await ws.send(json.dumps({"type": "stop"}))
            await asyncio.wait_for(receiver, 300)
    except ConnectionClosedError as exc:
        session.closed = str(exc.rcvd.code) if exc.rcvd else "?"
    return session


@contextlib.contextmanager
def engine_for(delay: str) -> Iterator[str]:
    """The engine of a sessions run: ``real``, a ``livewhisper serve`` (tiny.en,
    another process on this machine); else one that answers after *delay* seconds."""
    if delay == "real":
        with livewhisper_serve() as (url, _pid):
            yield url
    else:
        with instant_engine(float(delay)) as url:
            yield url


def sessions(counts: list[int], seconds: float, delay: str) -> list[dict[str, Any]]:
    """One front-end (``livewhisper serve --engine``) with *counts* browsers in turn;
    its engine answers after *delay* seconds, or is a real one (``real``)."""
    import psutil

    audio = speech(seconds)
    rows = []
    with engine_for(delay) as engine:
        for n in counts:
            args = ("--engine", engine, "--max-clients", str(n))
            with livewhisper_serve(*args) as (url, pid):
                process = psutil.Process(pid)
                before = process.cpu_times()
                requests_before = _Instant.counts["transcriptions"]
                ws_url = url.replace("http://", "ws://") + "/ws"

                async def run(ws_url: str = ws_url, n: int = n) -> list[Session]:
                    jobs = [browser(ws_url, audio, delay=k * 2.0 / n) for k in range(n)]
                    return list(await asyncio.gather(*jobs))

                started = time.monotonic()
                results = asyncio.run(run())
                wall = time.monotonic() - started
                after = process.cpu_times()
            cpu = (after.user - before.user) + (after.system - before.system)
            audio_seconds = n * len(audio) / RATE
            latencies = sorted(x for r in results for x in r.latencies) or [float("nan")]
            requests = _Instant.counts["transcriptions"] - requests_before
            rows.append(
                {
                    "sessions": n,
                    "engine_delay_s": delay,
                    "wall_s": round(wall, 1),
                    "frontend_cpu_s": round(cpu, 2),
                    "cores_per_session": cpu / audio_seconds,
                    "sessions_per_core": audio_seconds / cpu,
                    "requests_per_session_s": requests / audio_seconds if requests else None,
                    "partials_per_session_s": sum(r.partials for r in results) / audio_seconds,
                    "finals": sum(len(r.latencies) for r in results),
                    "closed_as_late": sum(r.closed is not None for r in results),
                    "final_p50_s": statistics.median(latencies),
                    "final_p95_s": float(np.percentile(latencies, 95)),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--utterances", type=int, default=40, help="for the latency part")
    parser.add_argument("--sessions", default="4,8,16", help="browsers per front-end run")
    parser.add_argument(
        "--delays",
        default="0,0.15",
        help="the engine's answer time, seconds, for each run; real: a livewhisper serve",
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="audio per browser")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-sessions", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    out: dict[str, Any] = {"cpus": os.cpu_count()}
    if not args.skip_latency:
        out["latency"] = latency(args.utterances)
        print(json.dumps(out["latency"], indent=2), flush=True)
    if not args.skip_sessions:
        counts = [int(n) for n in args.sessions.split(",")]
        out["sessions"] = [
            row for delay in args.delays.split(",") for row in sessions(counts, args.seconds, delay)
        ]
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
