"""Load benchmark for ``--serve``: N simulated browsers against one server and one model.

Each simulated browser does what the page does: it opens ``/ws``, sends ``start``,
then streams real speech as 16-bit 16 kHz PCM in 100 ms binary frames, paced in real
time, with natural pauses between utterances (0.8 to 2.0 s, random). All clients
share one server, one scheduler and one model in this process, as ``listen --serve``
does.

For every final event the client measures the end-of-speech latency: the time from
the moment the last spoken sample of that utterance was sent (the last 30 ms frame
above -40 dBFS inside the event's span) to the moment the final arrived. It includes
the silence the segmenter waits for before it closes an utterance (500 ms by
default), the queue, and the transcription. The word error rate is computed per
client against the reference transcripts in tests/data/transcripts.tsv.

With ``--upload-minutes M``, every client count runs twice: alone, then with an
upload of M minutes of real speech (the English clips of tests/data, in turn,
with pauses) sent to ``/v1/audio/transcriptions`` by the ``openai`` SDK while the
clients speak, and sent again each time it is done until they stop. The upload
shares the model with the clients (batch jobs, behind their finals): the two rows
show what it costs their finals, and the upload's own time and WER.

    python bench/load.py --clients 1,2,4,6,8 --plot docs/load.png --json load.json
    python bench/load.py --clients 1,2,4 --upload-minutes 10 --json load-upload.json
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from livewhisper.metrics import edit_distance, normalize

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
RATE = 16_000
FRAME = 1600  # 100 ms
TARGET_P95 = 2.5

#: Single-speaker English clips with references, in tests/data.
CLIPS = [
    "jfk.flac",
    "librivox_sense_and_sensibility_01_austen_64kb-0880.flac",
    "goforward.flac",
    "pocketsphinx_librivox_austen_5utt.flac",
]


@dataclass
class ClientResult:
    latencies: list[float] = field(default_factory=list)
    wer: float = 0.0
    words: int = 0
    busy_messages: int = 0
    audio_seconds: float = 0.0
    turned_away: str | None = None  # refused (HTTP 503) or closed (1013) as busy


@dataclass
class RunResult:
    clients: int
    utterances: int
    p50: float
    p95: float
    max: float
    wer: float
    busy_clients: int
    turned_away: int
    solo_job: float
    load_before: float
    seconds: float
    upload_minutes: float = 0.0  # the upload sent meanwhile (0: none)
    uploads: int = 0  # uploads finished while the clients ran, or after they stopped
    upload_seconds: float = float("nan")  # the first upload's time, request to answer
    upload_wer: float = float("nan")
    live_batch: int = 1  # the scheduler's live batch
    per_call: float = 1.0  # live jobs per engine call, on average


def references() -> dict[str, str]:
    out = {}
    for line in (DATA / "transcripts.tsv").read_text(encoding="utf-8").splitlines():
        name, _, text = line.partition("\t")
        out[name] = text
    out.update(CORPUS_REFS)
    return out


#: References of clips taken from an unseen corpus (``--corpus``), by clip name.
CORPUS_REFS: dict[str, str] = {}


def corpus_clips(corpus: Path, count: int, seed: int) -> dict[str, np.ndarray]:
    """*count* English items of 2 to 8 s from a corpus built by bench/corpus.py."""
    from livewhisper.audio.files import read_all

    items = json.loads((corpus / "manifest.json").read_text(encoding="utf-8"))["items"]
    fit = [i for i in items if i["language"] == "en" and 2.0 <= i["duration"] <= 8.0]
    fit = [i for i in fit if not i["path"].startswith("long/")]
    chosen = random.Random(seed).sample(fit, count)
    CORPUS_REFS.update({i["path"]: i["reference"] for i in chosen})
    return {i["path"]: read_all(corpus / i["path"]) for i in chosen}


def program(seed: int, clips: dict[str, np.ndarray], refs: dict[str, str]) -> tuple[Any, str]:
    """One client's audio: the clips in a random order with random pauses; its reference."""
    rng = random.Random(seed)
    order = sorted(clips)
    rng.shuffle(order)
    pieces = [np.zeros(int(rng.uniform(0.3, 1.0) * RATE), np.float32)]
    for name in order:
        pieces.append(clips[name])
        pieces.append(np.zeros(int(rng.uniform(0.8, 2.0) * RATE), np.float32))
    audio = np.concatenate(pieces)
    return audio, " ".join(refs[name] for name in order)


def long_speech(minutes: float, refs: dict[str, str]) -> tuple[np.ndarray, str]:
    """*minutes* of real speech, the English clips of tests/data in turn with pauses
    of 0.5 to 1.5 s; and its reference."""
    from livewhisper.audio.files import read_all

    names = [*CLIPS, "asterisk_en_60s.flac"]
    clips = {name: read_all(DATA / name) for name in names}
    rng = random.Random(7)
    pieces: list[np.ndarray] = []
    said: list[str] = []
    total = 0
    for name in itertools.cycle(names):
        if total >= minutes * 60 * RATE:
            break
        pause = np.zeros(int(rng.uniform(0.5, 1.5) * RATE), np.float32)
        pieces += [clips[name], pause]
        said.append(refs[name])
        total += len(clips[name]) + len(pause)
    return np.concatenate(pieces), " ".join(said)


@dataclass
class Uploads:
    """Uploads of one file, one after another until `stop` is set."""

    times: list[float] = field(default_factory=list)
    wer: float = float("nan")


async def upload_until(
    base_url: str, wav: bytes, reference: str, stop: asyncio.Event, result: Uploads
) -> None:
    from openai import AsyncOpenAI

    async with AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=0, timeout=None) as api:
        while not stop.is_set():
            started = time.monotonic()
            text = await api.audio.transcriptions.create(
                model="whisper-1", file=("speech.wav", wav), response_format="text"
            )
            result.times.append(time.monotonic() - started)
            if len(result.times) == 1:
                result.wer = edit_distance(normalize(reference), normalize(text)) / max(
                    1, len(normalize(reference))
                )


def speech_frames(audio: np.ndarray) -> np.ndarray:
    """Per 30 ms frame: is it louder than -40 dBFS? (The clips are clean recordings.)"""
    n = len(audio) // 480
    rms = np.sqrt(np.mean(np.square(audio[: n * 480].reshape(n, 480)), axis=1))
    return np.asarray(rms > 0.01)


async def client(
    url: str, audio: np.ndarray, reference: str, start_delay: float, speed: float = 1.0
) -> ClientResult:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosedError, InvalidStatus

    result = ClientResult(audio_seconds=len(audio) / RATE)
    loud = speech_frames(audio)
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    texts: list[tuple[int, str]] = []
    await asyncio.sleep(start_delay)
    try:
        await stream(url, pcm, loud, speed, result, texts, connect)
    except InvalidStatus as exc:
        result.turned_away = f"HTTP {exc.response.status_code}"
    except ConnectionClosedError as exc:
        result.turned_away = f"closed {exc.rcvd.code if exc.rcvd else '?'}"
    hypothesis = " ".join(text for _, text in sorted(texts))
    ref = normalize(reference)
    result.words = len(ref)
    result.wer = edit_distance(ref, normalize(hypothesis)) / max(1, len(ref))
    return result


async def stream(
    url: str,
    pcm: bytes,
    loud: np.ndarray,
    speed: float,
    result: ClientResult,
    texts: list[tuple[int, str]],
    connect: Any,
    on_final: Callable[[dict[str, Any], float, float], None] | None = None,
) -> None:
    """Stream *pcm* as the page does and collect the finals' latencies and text;
    *on_final* (if given) gets each final with the seconds of audio where its speech
    ended and its latency."""
    loop = asyncio.get_running_loop()
    async with connect(url, max_size=None) as ws:
        await ws.send(json.dumps({"type": "start", "language": "en", "partials": False}))
        ready = json.loads(await ws.recv())
        assert ready["type"] == "ready", ready
        t0 = loop.time()

        def on_message(raw: str | bytes) -> bool:
            message = json.loads(raw)
            if message["type"] == "final":
                now = loop.time()
                first, last = int(message["start"] / 0.03), int(message["end"] / 0.03)
                voiced = np.flatnonzero(loud[first : last + 1])
                spoken_end = (first + voiced[-1] + 1) * 0.03 if len(voiced) else message["end"]
                result.latencies.append(now - (t0 + spoken_end / speed))
                texts.append((message["id"], message["text"]))
                if on_final is not None:
                    on_final(message, spoken_end, result.latencies[-1])
            elif message["type"] == "status" and message["state"] == "busy":
                result.busy_messages += 1
            return bool(message["type"] == "stopped")

        async def receive() -> None:
            async for raw in ws:
                if on_message(raw):
                    return

        receiver = asyncio.create_task(receive())
        step = FRAME * 2
        for n, i in enumerate(range(0, len(pcm), step), 1):
            await ws.send(pcm[i : i + step])
            await asyncio.sleep(max(0.0, t0 + n * 0.1 / speed - loop.time()))
        await ws.send(json.dumps({"type": "stop"}))
        await asyncio.wait_for(receiver, 300)


async def run_clients(
    url: str,
    n: int,
    clips: dict[str, np.ndarray],
    seed: int,
    solo_job: float,
    upload: tuple[str, bytes, str, float] | None = None,
) -> RunResult:
    """*n* clients at once; with *upload* (the API's URL, a WAV file, its reference
    and minutes), that file is uploaded again and again while they speak."""
    refs = references()
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    jobs = []
    for k in range(n):
        audio, reference = program(seed * 1000 + k, clips, refs)
        jobs.append(client(url, audio, reference, start_delay=random.Random(k).uniform(0, 2)))
    uploads, stop = Uploads(), asyncio.Event()
    uploading = None
    if upload is not None:
        uploading = asyncio.create_task(upload_until(*upload[:3], stop, uploads))
    results = await asyncio.gather(*jobs)
    stop.set()
    if uploading is not None:
        await uploading  # the one in flight: the next run starts on an idle model
    latencies = sorted(x for r in results for x in r.latencies) or [float("nan")]
    finished = [r for r in results if r.turned_away is None]  # WER of those served to the end
    total_words = sum(r.words for r in finished)
    return RunResult(
        clients=n,
        utterances=sum(len(r.latencies) for r in results),
        p50=statistics.median(latencies),
        p95=float(np.percentile(latencies, 95)),
        max=latencies[-1],
        wer=sum(r.wer * r.words for r in finished) / total_words if finished else float("nan"),
        busy_clients=sum(r.busy_messages > 0 for r in results),
        turned_away=sum(r.turned_away is not None for r in results),
        solo_job=solo_job,
        load_before=load_before,
        seconds=time.monotonic() - started,
        upload_minutes=upload[3] if upload is not None else 0.0,
        uploads=len(uploads.times),
        upload_seconds=uploads.times[0] if uploads.times else float("nan"),
        upload_wer=uploads.wer,
    )


def plot(runs: list[RunResult], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loaded = [r for r in runs if r.upload_minutes]
    runs = [r for r in runs if not r.upload_minutes]
    n = sorted({r.clients for r in runs})
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    settings = sorted({r.live_batch for r in runs})
    for batch in settings:
        rows = [r for r in runs if r.live_batch == batch]
        label = "" if len(settings) == 1 else f", live batch {batch}"
        x = [r.clients for r in rows]
        ax.plot(x, [r.p50 for r in rows], "o-", label=f"median latency{label}")
        ax.plot(x, [r.p95 for r in rows], "s-", label=f"95th percentile latency{label}")
    if loaded:
        label = f"95th percentile, {loaded[0].upload_minutes:g} min upload meanwhile"
        ax.plot([r.clients for r in loaded], [r.p95 for r in loaded], "s--", label=label)
    ax.axhline(TARGET_P95, color="grey", linestyle="--", linewidth=1, label="2.5 s target")
    ax.set_xlabel("simultaneous browser clients")
    ax.set_ylabel("end of speech to final text (s)")
    ax.set_xticks(n)
    ax.set_ylim(bottom=0)
    ax2 = ax.twinx()
    for batch in settings:
        rows = [r for r in runs if r.live_batch == batch]
        label = "WER" if len(settings) == 1 else f"WER, live batch {batch}"
        ax2.plot([r.clients for r in rows], [100 * r.wer for r in rows], "^:", label=label)
    ax2.set_ylabel("word error rate (%)", color="tab:red")
    ax2.set_ylim(0, max(30, 100 * max(r.wer for r in runs) * 1.3))
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="upper left", fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)


def table(runs: list[RunResult]) -> str:
    uploads = any(r.upload_minutes for r in runs)
    head = "| clients | live batch | jobs per call | finals | median latency | p95 latency "
    head += "| max | WER | told busy "
    head += "| turned away | one 5 s job alone | load avg before |"
    if uploads:
        head += " upload meanwhile | upload took | upload WER |"
    lines = [head, "|---:" * (head.count("|") - 1) + "|"]
    for r in runs:
        line = (
            f"| {r.clients} | {r.live_batch} | {r.per_call:.2f} | {r.utterances} "
            f"| {r.p50:.2f} s | {r.p95:.2f} s | {r.max:.2f} s "
            f"| {_percent(r.wer)} | {r.busy_clients} | {r.turned_away} | {r.solo_job:.2f} s "
            f"| {r.load_before:.2f} |"
        )
        if uploads and r.upload_minutes:
            line += (
                f" {r.upload_minutes:g} min (x{r.uploads}) | {r.upload_seconds:.1f} s "
                f"| {_percent(r.upload_wer)} |"
            )
        elif uploads:
            line += " none | | |"
        lines.append(line)
    return "\n".join(lines)


def _percent(x: float) -> str:
    return "n/a" if x != x else f"{100 * x:.1f} %"  # nan: no client was served to the end


async def main_async(args: argparse.Namespace) -> list[RunResult]:
    from livewhisper.audio.containers import encode
    from livewhisper.audio.files import read_all
    from livewhisper.engine.contract import TranscribeOptions
    from livewhisper.engine.local import Engine, ModelOptions
    from livewhisper.engine.scheduler import Scheduler
    from livewhisper.live.stream import StreamOptions
    from livewhisper.serve.openai_audio import openai_routes
    from livewhisper.serve.options import ServerOptions
    from livewhisper.serve.streams import live_streams
    from livewhisper.serve.thread import ServerThread

    if args.corpus is not None:
        clips = corpus_clips(args.corpus, 8, args.seed)
    else:
        clips = {name: read_all(DATA / name) for name in CLIPS}
    solo_clip = read_all(DATA / "jfk.flac")[: 5 * RATE]
    engine = Engine(ModelOptions(model=args.model, threads=args.threads))
    transcribe = TranscribeOptions(beam_size=args.beam_size).for_utterance()
    wav, said = b"", ""
    if args.upload_minutes:
        long, said = long_speech(args.upload_minutes, references())
        wav = encode(long, "wav")
    runs = []
    for live_batch in args.live_batch:
        sizes: list[int] = []
        engine.transcribe_many = counted(engine.transcribe_many, sizes)
        with Scheduler(engine, live_batch=live_batch or None) as scheduler:
            make, backlog = live_streams(scheduler, StreamOptions(transcribe=transcribe))
            options = ServerOptions(port=0, max_clients=max(args.clients) + 1)
            routes = openai_routes(scheduler, token=None)  # the server's own /v1 routes
            with ServerThread(options, make, backlog=backlog, extra_routes=routes) as server:
                url = server.url("/ws").replace("http", "ws", 1)
                upload = (server.url("/v1"), wav, said, args.upload_minutes)
                for n in args.clients:
                    for with_upload in (False, True) if args.upload_minutes else (False,):
                        # How fast the model is on this machine now, alone: one 5 s
                        # utterance.
                        started = time.monotonic()
                        engine.transcribe(solo_clip, transcribe)
                        solo = time.monotonic() - started
                        sizes.clear()
                        run = await run_clients(
                            url, n, clips, args.seed, solo, upload if with_upload else None
                        )
                        run.live_batch = scheduler.live_batch
                        run.per_call = statistics.fmean(sizes) if sizes else float("nan")
                        runs.append(run)
                        print(summary(run), file=sys.stderr, flush=True)
        del engine.transcribe_many
    return runs


def counted(many: Any, sizes: list[int]) -> Any:
    """*many* (`Engine.transcribe_many`, through which every decode goes), noting in
    *sizes* how many live jobs each call held: an upload's windows, decoded
    without a fitted window, are not live jobs."""

    def call(requests: Any) -> Any:
        live = sum(r.options.fit_window for r in requests)
        if live:
            sizes.append(live)
        return many(requests)

    return call


def summary(run: RunResult) -> str:
    line = (
        f"N={run.clients}, live batch {run.live_batch} ({run.per_call:.2f} per call): "
        f"{run.utterances} finals, median {run.p50:.2f} s, "
        f"p95 {run.p95:.2f} s, WER {_percent(run.wer)}, "
        f"busy {run.busy_clients}, turned away {run.turned_away}, "
        f"5 s job alone {run.solo_job:.2f} s, load before {run.load_before:.2f}"
    )
    if run.upload_minutes:
        line += (
            f"; with a {run.upload_minutes:g} min upload meanwhile: it took "
            f"{run.upload_seconds:.1f} s, WER {_percent(run.upload_wer)}, "
            f"{run.uploads} done"
        )
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--clients", default="1,2,4,6,8", help="comma-separated client counts to run"
    )
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="CTranslate2 CPU threads")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--corpus",
        type=Path,
        default=None,
        help="take 8 English clips of 2-8 s from this corpus (bench/corpus.py) "
        "instead of tests/data",
    )
    parser.add_argument(
        "--upload-minutes",
        type=float,
        default=0.0,
        help="run each client count again with an upload of this many minutes of speech "
        "to /v1/audio/transcriptions meanwhile (0: no upload)",
    )
    parser.add_argument(
        "--live-batch",
        default="0",
        help="comma-separated live batch sizes of the scheduler to run each client count "
        "with (1: every job alone; 0: the engine's choice)",
    )
    parser.add_argument("--plot", type=Path, default=None, help="write a PNG plot here")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument(
        "--from-json", type=Path, default=None, help="table and plot of saved results; no run"
    )
    args = parser.parse_args()
    args.clients = [int(x) for x in args.clients.split(",")]
    args.live_batch = [int(x) for x in args.live_batch.split(",")]
    if args.from_json:
        runs = [RunResult(**r) for r in json.loads(args.from_json.read_text())]
    else:
        runs = asyncio.run(main_async(args))
    print(table(runs))
    for batch in sorted({r.live_batch for r in runs}):
        ok = [
            r.clients
            for r in runs
            if r.p95 < TARGET_P95 and not r.upload_minutes and r.live_batch == batch
        ]
        best = max(ok) if ok else "none"
        print(f"\nLive batch {batch}: largest N with p95 under {TARGET_P95} s: {best}")
    loaded = [r for r in runs if r.upload_minutes]
    if loaded:
        ok = [r.clients for r in loaded if r.p95 < TARGET_P95]
        print(f"... with the upload meanwhile: {max(ok) if ok else 'none'}")
    print(f"Machine: {os.cpu_count()} CPUs; model {args.model}, beam size {args.beam_size}")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in runs], indent=2))
    if args.plot:
        title = f"{args.model}, beam {args.beam_size}, {os.cpu_count()} CPU cores"
        plot(runs, args.plot, title)


if __name__ == "__main__":
    main()
