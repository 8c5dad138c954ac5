"""Continuous speech for `bench/continuous.py`: recordings with natural pauses between
sentences, and the speech start and end of every sentence.

Every recording is in one of two sets: ``tune``, the numbers one may look at while
changing the live engine, and ``heldout``, the numbers one only reports. Three kinds:

* **read**: the five LibriVox "Sense and Sensibility" sentences of the shared data
  (``pocketsphinx/librivox_sense_and_sensibility_01_austen_64kb-08{70,80,90}``,
  ``-0920``, ``-0930``; one reader, in the book's order; the two sentences
  between 0890 and 0920 are not in the data), each cut to its speech and joined
  with pauses of 0.4-1.0 s. ``tune``: the project has been tuned on these.
* **prompts**: ``long_en_60s`` (``tune``) and ``long_en_180s`` (``heldout``) of the
  benchmark corpus (``python bench/corpus.py``, which needs apt-get and takes a few
  minutes): consecutive unseen telephone prompts of one speaker, with the corpus's
  utterance spans, given 3 s of silence at the end.
* **synthetic**: the paragraphs of ``bench/paragraphs.txt`` (the project's own text,
  five ``tune``, five ``heldout``, and a ``heldout`` dialogue), spoken sentence by
  sentence with flite and joined with pauses of 0.35-1.1 s. The voices rotate
  kal, slt, rms, awb within each set; in the dialogue the speakers are slt and rms.
  Without flite, espeak-ng speaks them (other voices: the numbers differ).

Every recording is FLAC, 16 kHz, mono, 16-bit, with 0.5 s of silence before its
first sentence and 3 s after its last. Pauses are drawn from a generator seeded
with the seed and the recording's name. ``manifest.json`` lists the recordings
with their sentences (start, end, reference); it records what they were made
from, and the recordings are made again when that changes.

Needs ``sox`` and ``flite`` (``apt-get install sox flite``).

    python bench/continuous_speech.py [OUT] [--seed 1] [--rebuild]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

import corpus
from corpus import RATE, SourceError

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench" / "continuous"
PARAGRAPHS = ROOT / "bench" / "paragraphs.txt"
VERSION = 1  # bump when the way recordings are made changes
LEAD, TAIL = 0.5, 3.0  # seconds of silence before the first and after the last sentence
READ_PAUSE = (0.4, 1.0)
SYNTH_PAUSE = (0.35, 1.1)
AUSTEN = [
    f"librivox_sense_and_sensibility_01_austen_64kb-{n:04d}" for n in (870, 880, 890, 920, 930)
]
PROMPTS = {"long_en_60s": "tune", "long_en_180s": "heldout"}
VOICES = ("kal", "slt", "rms", "awb")
DIALOGUE_VOICES = {"A": "slt", "B": "rms"}
#: flite voice -> the espeak-ng voice that stands in for it
ESPEAK = {"kal": "en-us", "slt": "en-us+f3", "rms": "en-us+m3", "awb": "en-gb-scotland"}
LICENCE = {
    "read": "public domain (LibriVox); pocketsphinx test data, BSD",
    "prompts": "CC-BY-SA-3.0 (Allison Smith), Debian asterisk-core-sounds-en-wav",
    "synthetic": "text: the project's own; voice: flite (CMU, BSD-style)",
}


@dataclass
class Recording:
    id: str
    set: str  # "tune" or "heldout"
    kind: str  # "read", "prompts", "synthetic"
    path: str  # relative to the output directory
    source: str
    licence: str
    duration: float
    sentences: list[dict[str, Any]]  # start, end (seconds), reference, and where from

    @property
    def reference(self) -> str:
        return " ".join(str(s["reference"]) for s in self.sentences)

    @property
    def speech(self) -> tuple[float, float]:
        """Seconds from the start of the first sentence to the end of the last."""
        return float(self.sentences[0]["start"]), float(self.sentences[-1]["end"])


@dataclass
class Paragraph:
    set: str
    name: str
    lines: list[tuple[str | None, str]]  # (speaker or None, sentence)


def parse_paragraphs(text: str) -> list[Paragraph]:
    """Blocks of ``[set] name`` and one sentence a line; ``A: ...`` names a speaker."""
    out: list[Paragraph] = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            label, _, name = line[1:].partition("]")
            if label not in ("tune", "heldout") or not name.strip():
                raise SourceError(
                    f"{PARAGRAPHS.name}:{number}: expected '[tune] name' or '[heldout] name'"
                )
            out.append(Paragraph(label, name.strip(), []))
        elif not out:
            raise SourceError(f"{PARAGRAPHS.name}:{number}: a sentence before the first header")
        else:
            speaker, colon, said = line.partition(": ")
            if colon and speaker in DIALOGUE_VOICES:
                out[-1].lines.append((speaker, said))
            else:
                out[-1].lines.append((None, line))
    return out


def tts() -> str:
    for tool in ("flite", "espeak-ng"):
        if shutil.which(tool) is not None:
            return tool
    raise SourceError("no speech synthesiser: apt-get install flite (or espeak-ng)")


def speak(text: str, voice: str, tool: str, wav: Path) -> np.ndarray:
    """*text* said by a flite *voice* (or espeak-ng's stand-in), as 16 kHz int16."""
    if tool == "flite":
        cmd = ["flite", "-voice", voice, "-t", text, "-o", str(wav)]
    else:
        cmd = ["espeak-ng", "-v", ESPEAK[voice], "-w", str(wav), text]
    corpus.run(cmd, f"speaking with {tool} ({voice})")
    return corpus.read_pcm(wav)


def join(
    clips: list[tuple[np.ndarray, dict[str, Any]]], pause: tuple[float, float], rng: random.Random
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Clips (int16 samples, what to record about each) cut to their speech and
    joined: LEAD s of silence, the clips with pauses drawn from *pause* between
    them, TAIL s of silence. Returns the audio and each clip's speech span."""
    pieces = [np.zeros(int(LEAD * RATE), np.int16)]
    length = len(pieces[0])
    spans = []
    for i, (samples, info) in enumerate(clips):
        if i:
            pieces.append(np.zeros(int(rng.uniform(*pause) * RATE), np.int16))
            length += len(pieces[-1])
        clip, lead_in, speech = corpus.trim(samples)
        start = length + lead_in
        spans.append(
            {"start": round(start / RATE, 3), "end": round((start + speech) / RATE, 3), **info}
        )
        pieces.append(clip)
        length += len(clip)
    pieces.append(np.zeros(int(TAIL * RATE), np.int16))
    return np.concatenate(pieces), spans


def digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:16]


def inputs(corpus_dir: Path, shared: Path, seed: int, tool: str) -> dict[str, Any]:
    """What the recordings are made from: they are rebuilt when this changes."""
    spans = corpus_dir / "long" / "en.spans.json"
    if not spans.is_file():
        raise SourceError(
            f"{corpus_dir} has no long English items: build the corpus with "
            "`python bench/corpus.py` (it needs apt-get and takes a few minutes)"
        )
    austen = shared / "pocketsphinx" / "transcripts.tsv"
    if not austen.is_file():
        raise SourceError(f"no {austen}: pass the shared speech data with --shared")
    return {
        "version": VERSION,
        "seed": seed,
        "tts": tool,
        "paragraphs": digest(PARAGRAPHS.read_bytes()),
        "corpus": digest(spans.read_bytes()),
        "shared": digest(austen.read_bytes()),
    }


def save(
    out: Path, name: str, set_: str, kind: str, source: str, audio: np.ndarray, spans: list[Any]
) -> Recording:
    """Write *audio* as OUT/NAME.flac and describe it."""
    corpus.write_flac(audio, out / f"{name}.flac")
    duration = round(len(audio) / RATE, 3)
    return Recording(name, set_, kind, f"{name}.flac", source, LICENCE[kind], duration, spans)


def build_read(out: Path, shared: Path, seed: int) -> Recording:
    folder = shared / "pocketsphinx"
    refs = dict(corpus.read_tsv(folder / "transcripts.tsv"))
    clips = [
        (corpus.read_pcm(folder / f"{n}.flac"), {"reference": refs[f"{n}.flac"], "source": n})
        for n in AUSTEN
    ]
    audio, spans = join(clips, READ_PAUSE, random.Random(f"{seed}-austen_read"))
    source = f"{folder}: {', '.join(AUSTEN)}"
    return save(out, "austen_read", "tune", "read", source, audio, spans)


def build_prompts(out: Path, corpus_dir: Path) -> list[Recording]:
    """The corpus's long English items, given TAIL s of silence after the last span."""
    items = json.loads((corpus_dir / "long" / "en.spans.json").read_text(encoding="utf-8"))
    recordings = []
    for item in items:
        if item["id"] not in PROMPTS:
            continue
        audio = corpus.read_pcm(corpus_dir / item["path"])
        spans = [dict(s) for s in item["spans"]]
        length = int((float(spans[-1]["end"]) + TAIL) * RATE)
        audio = np.concatenate([audio, np.zeros(max(0, length - len(audio)), np.int16)])[:length]
        name = f"prompts_{item['id'].removeprefix('long_en_')}"
        source = f"bench/corpus/{item['path']}"
        recordings.append(save(out, name, PROMPTS[item["id"]], "prompts", source, audio, spans))
    return recordings


def build_synthetic(out: Path, seed: int, tool: str) -> list[Recording]:
    paragraphs = parse_paragraphs(PARAGRAPHS.read_text(encoding="utf-8"))
    recordings = []
    turn = {"tune": 0, "heldout": 0}  # voices rotate within each set
    with tempfile.TemporaryDirectory(prefix="lw-continuous-") as tmp:
        wav = Path(tmp) / "sentence.wav"
        for p in paragraphs:
            voice = VOICES[turn[p.set] % len(VOICES)]
            clips = []
            for speaker, said in p.lines:
                v = DIALOGUE_VOICES[speaker] if speaker is not None else voice
                info = {"reference": said, "voice": v}
                if speaker is not None:
                    info["speaker"] = speaker
                clips.append((speak(said, v, tool, wav), info))
            if all(s is None for s, _ in p.lines):
                turn[p.set] += 1
            name = f"synthetic_{p.name}"
            audio, spans = join(clips, SYNTH_PAUSE, random.Random(f"{seed}-{name}"))
            voices = ", ".join(sorted({str(s["voice"]) for s in spans}))
            source = f"bench/paragraphs.txt [{p.set}] {p.name}; {tool} voice {voices}"
            recordings.append(save(out, name, p.set, "synthetic", source, audio, spans))
    return recordings


def recordings(
    out: Path = DEFAULT_OUT,
    *,
    seed: int = 1,
    corpus_dir: Path = corpus.DEFAULT_OUT,
    shared: Path = corpus.DEFAULT_SHARED,
    rebuild: bool = False,
) -> list[Recording]:
    """The recordings in *out*, made first where they are missing or out of date."""
    tool = tts()
    made_from = inputs(corpus_dir, shared, seed, tool)
    manifest = out / "manifest.json"
    if manifest.is_file() and not rebuild:
        kept = json.loads(manifest.read_text(encoding="utf-8"))
        if kept.get("inputs") == made_from:
            return [Recording(**r) for r in kept["recordings"]]
    out.mkdir(parents=True, exist_ok=True)
    print(f"making the continuous recordings in {out} ...", file=sys.stderr)
    made = [build_read(out, shared, seed), *build_prompts(out, corpus_dir)]
    made += build_synthetic(out, seed, tool)
    tmp = manifest.with_name(f".{manifest.name}")
    body = {"inputs": made_from, "sample_rate": RATE, "recordings": [asdict(r) for r in made]}
    tmp.write_text(json.dumps(body, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(manifest)
    return made


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--seed", type=int, default=1, help="seed of the pauses")
    parser.add_argument(
        "--corpus", type=Path, default=corpus.DEFAULT_OUT, help="bench/corpus.py's output"
    )
    parser.add_argument(
        "--shared", type=Path, default=corpus.DEFAULT_SHARED, help="the shared speech data"
    )
    parser.add_argument("--rebuild", action="store_true", help="make them even if up to date")
    args = parser.parse_args(argv)
    try:
        made = recordings(
            args.out,
            seed=args.seed,
            corpus_dir=args.corpus,
            shared=args.shared,
            rebuild=args.rebuild,
        )
    except SourceError as exc:
        print(f"continuous_speech: error: {exc}", file=sys.stderr)
        return 1
    for r in made:
        words = len(r.reference.split())
        print(
            f"{r.id:24} {r.set:8} {r.duration:6.1f} s  "
            f"{len(r.sentences):2d} sentences  {words:3d} words"
        )
    print(f"{len(made)} recordings, {sum(r.duration for r in made) / 60:.1f} minutes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
