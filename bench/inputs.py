"""Two live inputs benchmark: ``livewhisper listen --system`` hearing a microphone
and the system audio at once, talking in turns, as in a call.

Two tracks of the same length are made from real speech: "them" (telephone
prompts, one female voice, ``asterisk_en``) and "me" (LibriVox read speech and
commands, male voices, ``pocketsphinx``), each speaking while the other is
silent, with ``--gap`` seconds between turns. On a private PulseAudio server
(tests/vmic.py with virtual speakers) "them" is played on the speakers (the
system audio, captured from their monitor) and "me" into the virtual microphone,
at the same moment, in real time, while ``listen --system --format jsonl`` runs
as a subprocess. Per input it reports:

* WER against the reference, and against the text of ``livewhisper file`` on the
  same track (the offline decode of the same audio);
* finals latency, from the end of each turn's speech to the arrival of the first
  final of that input that reaches it (`latency.final_delays`), p50 and p95;
* CPU cores the listen process used while the tracks played (both inputs).

With ``--alone``, each track is also played by itself through one input (the
microphone's through ``--device pulse``, the system's through ``--system
--no-mic``), for what hearing two inputs costs each of them.

    python bench/inputs.py results/inputs.json [--model tiny.en] [--turns 16]
        [--gap 1.0] [--alone] [--listen-args='--no-partials']

Needs the bench extra (psutil) and ``pulseaudio``, ``pulseaudio-utils``,
``libasound2-plugins``, ``libportaudio2``; the speech of ../shared/data/speech
(or ``--speech DIR``). Takes the tracks' length (about 80 s) plus two ``file``
runs and start-up: about two minutes.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from latency import (
    RATE,
    VirtualMic,
    final_delays,
    missing,
    offline_text,
    percentile,
    run_listen,
    speech_end,
    write_wav,
)
from livewhisper.audio.files import read_all
from livewhisper.metrics import word_error_rate as wer

ROOT = Path(__file__).resolve().parent.parent
SPEECH = ROOT.parent / "shared" / "data" / "speech"

THEM = [  # asterisk_en: one voice, telephone prompts
    "agent-alreadyon.flac",
    "conf-onlyperson.flac",
    "call-fwd-unconditional.flac",
    "conf-getpin.flac",
    "auth-incorrect.flac",
    "conf-usermenu.flac",
    "agent-newlocation.flac",
    "cannot-complete-as-dialed.flac",
]
ME = [  # pocketsphinx: LibriVox read speech and commands
    "librivox_sense_and_sensibility_01_austen_64kb-0870.flac",
    "goforward.flac",
    "librivox_sense_and_sensibility_01_austen_64kb-0890.flac",
    "forever_input_2.flac",
    "librivox_sense_and_sensibility_01_austen_64kb-0920.flac",
    "cards_005.flac",
    "librivox_sense_and_sensibility_01_austen_64kb-0930.flac",
    "librivox_sense_and_sensibility_01_austen_64kb-0880.flac",
]


def references(folder: Path) -> dict[str, str]:
    out = {}
    for line in (folder / "transcripts.tsv").read_text(encoding="utf-8").splitlines():
        if "\t" in line:
            name, text = line.split("\t", 1)
            out[name] = text.strip().strip('"')
    return out


@dataclass
class Track:
    label: str
    audio: np.ndarray
    ends: list[float]  # seconds: where each of its turns' speech ends
    reference: str


def build(speech: Path, turns: int, gap: float) -> tuple[Track, Track]:
    """The two tracks: turn i is "them" for even i, "me" for odd i."""
    sides = {
        "system": (speech / "asterisk_en", THEM),
        "mic": (speech / "pocketsphinx", ME),
    }
    refs = {label: references(folder) for label, (folder, _) in sides.items()}
    parts: dict[str, list[np.ndarray]] = {"system": [], "mic": []}
    ends: dict[str, list[float]] = {"system": [], "mic": []}
    said: dict[str, list[str]] = {"system": [], "mic": []}
    pos = 1.0
    lead = np.zeros(RATE, np.float32)
    parts["system"].append(lead)
    parts["mic"].append(lead)
    for i in range(turns):
        label = "system" if i % 2 == 0 else "mic"
        other = "mic" if label == "system" else "system"
        folder, names = sides[label]
        name = names[(i // 2) % len(names)]
        clip = read_all(folder / name)
        pause = np.zeros(int(gap * RATE), np.float32)
        parts[label] += [clip, pause]
        parts[other].append(np.zeros(len(clip) + len(pause), np.float32))
        ends[label].append(pos + speech_end(clip))
        said[label].append(refs[label][name])
        pos += (len(clip) + len(pause)) / RATE
    tail = np.zeros(4 * RATE, np.float32)
    system, mic = (
        Track(label, np.concatenate([*parts[label], tail]), ends[label], " ".join(said[label]))
        for label in ("system", "mic")
    )
    return system, mic


class Both:
    """The two players, started together; `wait` waits for both."""

    def __init__(self, mic: VirtualMic, system: Path, me: Path) -> None:
        self.players = [mic.play_system(system), mic.play(me)]

    def wait(self, timeout: float | None = None) -> int:
        return max(p.wait(timeout) for p in self.players)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="where to write the JSON results")
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--turns", type=int, default=16, help="turns in all, both sides")
    parser.add_argument("--gap", type=float, default=1.0, help="seconds between turns")
    parser.add_argument("--speech", type=Path, default=SPEECH)
    parser.add_argument("--listen-args", default="", help="more options for listen")
    parser.add_argument("--alone", action="store_true", help="also each track by itself")
    args = parser.parse_args()
    reason = missing()
    if reason is not None:
        raise SystemExit(f"no virtual microphone here: missing {reason}")
    system, me = build(args.speech, args.turns, args.gap)
    seconds = len(system.audio) / RATE
    load_before = psutil.getloadavg()
    with tempfile.TemporaryDirectory(prefix="lwinputs") as tmp:
        folder = Path(tmp)
        paths = {t.label: folder / f"{t.label}.wav" for t in (system, me)}
        for track in (system, me):
            write_wav(paths[track.label], track.audio)
        offline = {label: offline_text(path, args.model) for label, path in paths.items()}
        mic = VirtualMic(folder / "pa", speakers=True)
        mic.start()
        try:
            heard = run_listen(
                "inputs",
                ["--system", "--model", args.model, *args.listen_args.split()],
                seconds,
                mic.environ(),
                lambda: Both(mic, paths["system"], paths["mic"]),  # type: ignore[arg-type,return-value]
            )
            alone = {}
            if args.alone:
                alone = {
                    "system": run_listen(
                        "system alone",
                        ["--system", "--no-mic", "--model", args.model, *args.listen_args.split()],
                        seconds,
                        mic.environ(),
                        lambda: mic.play_system(paths["system"]),
                    ),
                    "mic": run_listen(
                        "mic alone",
                        ["--device", "pulse", "--model", args.model, *args.listen_args.split()],
                        seconds,
                        mic.environ(),
                        lambda: mic.play(paths["mic"]),
                    ),
                }
        finally:
            mic.stop()
    results: dict[str, Any] = {}
    speaking_until = heard.t0 + max(system.ends[-1], me.ends[-1])
    cpu = heard.sampler.percent(heard.t0, speaking_until) / 100
    for track in (system, me):
        finals = [(t, e) for t, e in heard.finals() if e.get("source") == track.label]
        text = " ".join(str(e["text"]) for _, e in finals)
        delays = final_delays(finals, track.ends, heard.t0)
        got = [d for d in delays if d is not None]
        results[track.label] = {
            "delays": delays,
            "arrivals": [(t - heard.t0, e["start"], e["end"]) for t, e in finals],
            "turns": len(track.ends),
            "finals": len(finals),
            "missed": delays.count(None),
            "wer_reference": wer(track.reference, text),
            "wer_file": wer(track.reference, offline[track.label]),
            "wer_vs_file": wer(offline[track.label], text),
            "finals_p50": percentile(got, 50),
            "finals_p95": percentile(got, 95),
            "text": text,
            "file_text": offline[track.label],
        }
        if track.label in alone:
            single = alone[track.label]
            finals = single.finals()
            text = " ".join(str(e["text"]) for _, e in finals)
            got = [d for d in final_delays(finals, track.ends, single.t0) if d is not None]
            results[track.label]["alone"] = {
                "wer_reference": wer(track.reference, text),
                "finals_p50": percentile(got, 50),
                "finals_p95": percentile(got, 95),
                "missed": len(track.ends) - len(got),
                "cpu_cores_while_speaking": single.sampler.percent(
                    single.t0, single.t0 + track.ends[-1]
                )
                / 100,
            }
    others = [e for _, e in heard.finals() if e.get("source") not in ("system", "mic")]
    report = {
        "model": args.model,
        "seconds": seconds,
        "turns": args.turns,
        "gap": args.gap,
        "listen_args": args.listen_args,
        "cpu_cores_while_speaking": cpu,
        "unlabelled_finals": len(others),
        "inputs": results,
        "machine": {
            "cpus": psutil.cpu_count(),
            "load_before": load_before,
            "load_after": psutil.getloadavg(),
            "python": platform.python_version(),
        },
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
        ).stdout.strip(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print("| input | turns | WER live | WER file | live vs file | finals p50 | p95 | missed |")
    print("|---|---|---|---|---|---|---|---|")
    for label, r in results.items():
        print(
            f"| {label} | {r['turns']} | {r['wer_reference']:.3f} | {r['wer_file']:.3f} | "
            f"{r['wer_vs_file']:.3f} | {r['finals_p50']:.2f} s | {r['finals_p95']:.2f} s | "
            f"{r['missed']} |"
        )
        if "alone" in r:
            a = r["alone"]
            print(
                f"| {label} alone | {r['turns']} | {a['wer_reference']:.3f} | | | "
                f"{a['finals_p50']:.2f} s | {a['finals_p95']:.2f} s | {a['missed']} |"
            )
    print(
        f"CPU {cpu:.2f} cores while speaking; {seconds:.0f} s of audio; load average "
        f"{load_before[0]:.2f} before, {report['machine']['load_after'][0]:.2f} after",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
