"""Batched decoding of long audio (`engine.lanes`, `file --batch-size`): windows cut
at pauses, lanes, previous text, and times mapped back through the VAD's cuts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cli_helpers import DATA, run_cli
from livewhisper.audio.files import read_all
from livewhisper.audio.pcm import SAMPLE_RATE
from livewhisper.engine import lanes
from livewhisper.engine.contract import TranscribeOptions
from livewhisper.metrics import normalize, word_error_rate
from test_file_cli import write_wav

#: Real speech joined with pauses: prompts, read speech, a speech; then the prompts
#: again, so that the input is long enough for several lanes.
PIECES = [
    "asterisk_en_60s.flac",
    "pocketsphinx_librivox_austen_5utt.flac",
    "jfk.flac",
    "librivox_sense_and_sensibility_01_austen_64kb-0880.flac",
    "asterisk_en_60s.flac",
]
# tiny.en on clean read English and prompts: about 5-8 % (see test_file_cli); room
# for a few words more, and still failing on text that is lost or garbled.
MAX_WER = 0.15


@pytest.fixture(scope="module")
def long_speech(
    tmp_path_factory: pytest.TempPathFactory, references: dict[str, str]
) -> tuple[Path, str, float]:
    """A WAV of the pieces with 1.2 s of silence between them, its reference, and
    its duration."""
    gap = np.zeros(int(1.2 * SAMPLE_RATE), np.float32)
    audio = np.concatenate([x for name in PIECES for x in (read_all(DATA / name), gap)])
    path = write_wav(tmp_path_factory.mktemp("long") / "long.wav", audio)
    return path, " ".join(references[name] for name in PIECES), len(audio) / SAMPLE_RATE


def edges_doubled(segments: list[Any], edges: list[float], k: int = 3) -> list[float]:
    """The *edges* (input seconds where a lane starts) where the last *k* words
    before are the first *k* words after: words decoded twice, once by each lane."""
    out = []
    for edge in edges:
        before = normalize(" ".join(s.text for s in segments if s.start < edge))
        after = normalize(" ".join(s.text for s in segments if s.start >= edge))
        if before[-k:] == after[:k]:
            out.append(edge)
    return out


# --- the pieces, without the model -------------------------------------------------


def bursts(seconds: float) -> np.ndarray:
    """A tone 0.8 s on, 0.4 s off: speech-like stretches with pauses between."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    on = (t % 1.2) < 0.8
    return (0.3 * np.sin(2 * np.pi * 220 * t) * on).astype(np.float32)


def test_without_vad_windows_are_cut_at_pauses_and_cover_the_audio() -> None:
    audio = bursts(95.0)
    windows = lanes.plan(audio, vad_filter=False)
    # Each window ends at a pause in its last 10 s.
    assert all(lanes.WINDOW - 10 <= w.seconds <= lanes.WINDOW for w in windows[:-1])
    assert np.array_equal(np.concatenate([w.audio for w in windows]), audio)
    at = 0.0
    for w in windows:
        assert w.parts == [(0.0, w.seconds, pytest.approx(at))]
        at += w.seconds
    for w in windows[:-1]:  # each cut falls in a pause, not in a tone
        end = w.parts[0][2] + w.seconds
        assert end % 1.2 >= 0.8


def test_the_vad_on_parts_at_once_finds_the_same_speech(
    long_speech: tuple[Path, str, float],
) -> None:
    # Real speech of 170 s: on 2 threads the VAD runs on two parts cut at a quiet
    # moment near the middle, and finds the speech it finds on one.
    from faster_whisper.vad import VadOptions

    audio = read_all(long_speech[0])
    options = VadOptions(max_speech_duration_s=lanes.WINDOW, min_silence_duration_ms=500)
    whole = lanes.speech(audio, options, threads=1)
    split = lanes.speech(audio, options, threads=2)
    assert len(audio) / SAMPLE_RATE >= 2 * lanes.VAD_PART
    for chunks in (whole, split):
        edges = [x for c in chunks for x in (c["start"], c["end"])]
        assert edges == sorted(edges) and 0 <= edges[0] and edges[-1] <= len(audio)

    def mask(chunks: list[dict[str, int]]) -> np.ndarray:
        speaking = np.zeros(len(audio), bool)
        for c in chunks:
            speaking[c["start"] : c["end"]] = True
        return speaking

    # The VAD starts afresh on the second part, which moves a few edges by a few
    # of its 32 ms windows; no stretch of speech is lost or found only by one.
    assert np.count_nonzero(mask(whole) != mask(split)) <= 0.005 * len(audio)
    for one, other in ((whole, split), (split, whole)):
        speaking = mask(other)
        assert all(speaking[c["start"] : c["end"]].mean() > 0.5 for c in one)
    assert lanes.speech(audio[: 60 * SAMPLE_RATE], options, threads=2) == lanes.speech(
        audio[: 60 * SAMPLE_RATE], options, threads=1
    )  # too short to cut


def window(seconds: float, parts: list[tuple[float, float, float]] | None = None) -> Any:
    audio = np.zeros(int(seconds * SAMPLE_RATE), np.float32)
    return lanes.Window(audio, parts or [(0.0, seconds, 0.0)])


@pytest.mark.parametrize(
    ("sizes", "wanted", "count"),
    [
        ([28.0] * 20, 4, 4),  # 560 s: four lanes of five windows
        ([28.0] * 20, 16, 16),  # four lanes of two windows, twelve of one
        ([5.0, 29.0, 29.0], 4, 3),  # a short window is a lane of its own too
        ([25.0, 29.0, 20.0, 12.0, 30.0], 2, 2),  # three windows and two
        ([29.0] * 5, 1, 1),
        ([], 4, 0),
    ],
)
def test_lanes_are_runs_of_consecutive_windows(sizes: list[float], wanted: int, count: int) -> None:
    windows = [window(s) for s in sizes]
    runs = lanes.deal(windows, wanted)
    assert len(runs) == count
    assert [i for run in runs for i in run] == list(range(len(windows)))
    if runs:  # the fewest steps: lanes differ by one window at most
        assert max(map(len, runs)) == -(-len(windows) // count)
        assert max(map(len, runs)) - min(map(len, runs)) <= 1


def timed(*spans: tuple[float, float]) -> list[dict[str, Any]]:
    return [
        {"word": f" w{i}", "start": a, "end": b, "tokens": [i]} for i, (a, b) in enumerate(spans)
    ]


def test_words_aligned_over_seconds_of_speech_mark_it_lost() -> None:
    w = window(20.0)
    w.words = timed((0.0, 4.0), (4.0, 7.5), (7.5, 8.0), (8.0, 11.5), (11.5, 12.0), (12.0, 14.5))
    # A run of long words at the start (one stretch), one in the middle, then the
    # end of the window after the last word.
    assert w.lost() == [(0.0, 7.5, 0, 2), (8.0, 11.5, 3, 4), (14.5, 20.0, 6, 6)]
    w.words = timed((0.0, 0.4), (0.4, 1.2), (1.2, 19.0))  # stopped early
    assert w.lost() == [(1.2, 19.0, 2, 3)]
    w.words = timed((0.0, 2.9), (2.9, 5.8), (5.8, 17.5))  # words held over a pause
    assert w.lost() == [(5.8, 17.5, 2, 3)]
    w.words = timed((0.0, 2.9), (2.9, 5.8), (5.8, 6.2), (6.2, 19.9))
    assert w.lost() == [(6.2, 19.9, 3, 4)]
    w.words = []
    assert w.lost() == []


def test_segment_times_come_back_through_the_vad_cuts() -> None:
    # Window audio 0-5 s was said at 10-15 s of the input, 5-9 s at 20-24 s.
    w = window(9.0, [(0.0, 5.0, 10.0), (5.0, 9.0, 20.0)])
    w.words = [
        {"word": " Hello", "start": 0.5, "end": 1.0, "probability": 0.9},
        {"word": " there.", "start": 1.1, "end": 1.6, "probability": 0.9},
        {"word": " Press", "start": 2.0, "end": 2.4, "probability": 0.9},
        {"word": " one", "start": 2.5, "end": 2.8, "probability": 0.9},
        {"word": " now", "start": 5.2, "end": 5.5, "probability": 0.9},  # after the cut
        {"word": " please", "start": 7.0, "end": 7.4, "probability": 0.9},  # a pause before
    ]
    w.avg_logprob, w.no_speech_prob = -0.2, 0.01
    segments = lanes.segments_of(w, TranscribeOptions(word_timestamps=True), offset=100.0)
    # A segment never spans the silence the VAD took out (12.8 s to 20.2 s).
    assert [s.text for s in segments] == ["Hello there.", "Press one", "now", "please"]
    assert [(s.start, s.end) for s in segments] == [
        pytest.approx((110.5, 111.6)),
        pytest.approx((112.0, 112.8)),
        pytest.approx((120.2, 120.5)),
        pytest.approx((122.0, 122.4)),
    ]
    assert [w.word for w in segments[1].words] == [" Press", " one"]
    plain = lanes.segments_of(w, TranscribeOptions(), offset=0.0)
    assert [s.text for s in plain] == [s.text for s in segments]
    assert all(s.words == () for s in plain)


def test_a_title_does_not_end_a_segment() -> None:
    w = window(6.0)
    spoken = [" And", " Mr.", " John", " Dashwood", " left.", " Dr.", " Lee", " stayed."]
    w.words = [
        {"word": x, "start": 0.6 * i, "end": 0.6 * i + 0.5, "probability": 0.9}
        for i, x in enumerate(spoken)
    ]
    segments = lanes.segments_of(w, TranscribeOptions(), offset=0.0)
    assert [s.text for s in segments] == ["And Mr. John Dashwood left.", "Dr. Lee stayed."]


class RecordingModel:
    """Stands in for CTranslate2's Whisper in `LaneDecoder._generate`: it keeps the
    prompts of each call and answers one end-of-text token each."""

    def __init__(self) -> None:
        self.calls: list[list[list[int]]] = []

    def generate(self, _encoded: Any, prompts: list[list[int]], **_: Any) -> list[Any]:
        from types import SimpleNamespace

        self.calls.append(prompts)
        return [
            SimpleNamespace(sequences_ids=[[50256]], scores=[-0.1], no_speech_prob=0.0)
            for _ in prompts
        ]


def test_prompts_of_one_batch_have_their_start_token_in_one_place(engine: Any) -> None:
    # CTranslate2 refuses a batch whose start-of-transcript tokens are not aligned:
    # lanes with previous text keep the same number of its latest tokens, and
    # lanes without are a batch of their own.
    from types import SimpleNamespace

    from faster_whisper.tokenizer import Tokenizer

    whisper = engine._model
    tokenizer = Tokenizer(whisper.hf_tokenizer, False, task="transcribe", language="en")
    model = RecordingModel()
    decoder = lanes.LaneDecoder(
        SimpleNamespace(model=model, max_length=448), tokenizer, TranscribeOptions()
    )
    histories = [list(range(100, 140)), [], list(range(200, 210)), []]
    encoded = np.zeros((4, 1500, 384), np.float32)
    decoder._generate(encoded, histories, 0.0)
    assert len(model.calls) == 2
    with_text, without = model.calls
    sot = tokenizer.sot
    assert {p.index(sot) for p in with_text} == {11}  # sot_prev + 10 tokens
    assert with_text[0][1:11] == list(range(130, 140))  # the latest ones
    assert with_text[1][1:11] == list(range(200, 210))
    assert all(p.index(sot) == 0 for p in without)


def test_batch_size_must_be_a_number_or_auto() -> None:
    for bad in ("0", "-2", "many"):
        result = run_cli("file", DATA / "jfk.flac", "--batch-size", bad)
        assert result.returncode == 2
        assert "--batch-size" in result.stderr and "auto" in result.stderr


# --- the real model on real speech -------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("skipped", ["first", "last"])
def test_speech_a_decode_left_out_is_decoded_again(
    engine: Any, references: dict[str, str], skipped: str
) -> None:
    # Two real utterances in one window. Whisper decoding text only now and then
    # skips the start of a window or stops early; that is made to happen here by
    # giving the window the text of one utterance only, then the real alignment
    # and the real decode of what it left out run.
    from faster_whisper.tokenizer import Tokenizer

    names = ["jfk.flac", "librivox_sense_and_sensibility_01_austen_64kb-0880.flac"]
    pause = np.zeros(SAMPLE_RATE // 2, np.float32)
    audio = np.concatenate([read_all(DATA / names[0]), pause, read_all(DATA / names[1])])
    w = lanes.Window(audio, [(0.0, len(audio) / SAMPLE_RATE, 0.0)])
    model = engine._model
    tokenizer = Tokenizer(model.hf_tokenizer, False, task="transcribe", language="en")
    decoder = lanes.LaneDecoder(model, tokenizer, TranscribeOptions(language="en"))
    kept = references[names[1] if skipped == "first" else names[0]]
    w.tokens = tokenizer.encode(" " + kept)
    decoder._align([w], decoder._encode([w]))
    assert w.lost()  # the utterance without text shows as lost
    decoder._recover([w], [[]])
    text = "".join(x["word"] for x in w.words)
    both = " ".join(references[n] for n in names)
    assert word_error_rate(both, text) <= MAX_WER
    assert tokenizer.decode(w.tokens).strip() == text.strip()  # the next window's context
    starts = [x["start"] for x in w.words]
    assert starts == sorted(starts) and w.words[-1]["end"] <= w.seconds + 0.05
    assert not w.lost()


@pytest.mark.slow
def test_windows_encoded_and_aligned_one_by_one_match_one_batch(
    engine: Any, long_speech: tuple[Path, str, float]
) -> None:
    # On a CPU the encoder and the alignment take a step's windows one at a time
    # (faster there), on a GPU all at once: both must give the same encodings and
    # the same words at the same times. Both ways run here, on the CPU.
    from faster_whisper.tokenizer import Tokenizer

    model = engine._model
    tokenizer = Tokenizer(model.hf_tokenizer, False, task="transcribe", language="en")
    windows = lanes.plan(read_all(long_speech[0]), vad_filter=True)[:3]
    decoder = lanes.LaneDecoder(model, tokenizer, TranscribeOptions(language="en"))
    assert not decoder.on_gpu and len(lanes.parts(3, decoder.on_gpu)) == 3
    decoder._decode(windows, [[] for _ in windows])  # the text
    alone = decoder._encode(windows)
    decoder._align(windows, alone)
    words = [list(w.words) for w in windows]

    decoder.on_gpu = True  # the whole batch in one call, as on a GPU
    assert lanes.parts(3, decoder.on_gpu) == [slice(0, 3)]
    together = decoder._encode(windows)
    assert together.shape == alone.shape == (3, 1500, 384)
    assert np.abs(together - alone).max() <= 0.05 * np.abs(alone).max()
    decoder._align(windows, together)
    for before, w in zip(words, windows, strict=True):
        assert [x["word"] for x in w.words] == [x["word"] for x in before]
        starts = np.array([x["start"] for x in w.words])
        assert np.abs(starts - [x["start"] for x in before]).max() <= 0.1


@pytest.mark.slow
def test_lanes_keep_every_word_once(
    engine: Any, long_speech: tuple[Path, str, float], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, reference, duration = long_speech
    runs: list[tuple[list[lanes.Window], list[list[int]]]] = []
    deal = lanes.deal

    def recorded(windows: list[lanes.Window], count: int) -> list[list[int]]:
        runs.append((windows, deal(windows, count)))
        return runs[-1][1]

    monkeypatch.setattr("livewhisper.engine.local.deal", recorded)
    audio = read_all(path)
    batched = list(engine.transcribe_blocks([audio], TranscribeOptions(batch_size=4)))
    sequential = list(engine.transcribe_blocks([audio], TranscribeOptions(batch_size=1)))
    assert len(runs) == 1 and len(runs[0][1]) == 4  # four lanes decoded side by side

    text = " ".join(s.text for s in batched)
    plain = " ".join(s.text for s in sequential)
    assert word_error_rate(reference, text) <= MAX_WER
    # Where a lane starts, no words are lost (the WER) or said twice.
    ((windows, lane_runs),) = runs
    edges = [windows[run[0]].parts[0][2] for run in lane_runs[1:]]
    assert not edges_doubled(batched, edges)
    assert len(normalize(text)) <= 1.05 * len(normalize(reference))
    # Not worse than window after window by more than a few words.
    words = len(normalize(reference))
    assert word_error_rate(reference, text) <= word_error_rate(reference, plain) + 6 / words
    previous_end = 0.0
    for s in batched:
        assert previous_end - 0.05 <= s.start < s.end <= duration + 0.05
        previous_end = s.end


@pytest.mark.slow
def test_batched_and_sequential_files_give_the_same_formats(
    tmp_path: Path, long_speech: tuple[Path, str, float]
) -> None:
    path, reference, duration = long_speech
    docs = {}
    for batch in ("1", "2"):
        out = tmp_path / batch
        result = run_cli(
            "file", path, "--format", "all", "-o", out, "--batch-size", batch, "--word-timestamps"
        )
        assert result.returncode == 0, result.stderr
        files = {p.suffix[1:]: p.read_text(encoding="utf-8") for p in out.iterdir()}
        assert sorted(files) == ["json", "jsonl", "srt", "tsv", "txt", "vtt"]
        doc = json.loads(files["json"])
        docs[batch] = doc
        assert doc["language"] == "en" and abs(doc["duration"] - duration) < 0.05
        assert word_error_rate(reference, doc["text"]) <= MAX_WER
        previous_end = 0.0
        for s in doc["segments"]:
            assert previous_end - 0.05 <= s["start"] < s["end"] <= duration + 0.05
            previous_end = s["end"]
            assert s["words"]
            for w in s["words"]:
                assert s["start"] - 0.05 <= w["start"] <= w["end"] <= s["end"] + 0.05
        blocks = files["srt"].strip().split("\n\n")
        assert len(blocks) == len(doc["segments"])
        assert files["vtt"].startswith("WEBVTT\n\n")
        assert files["txt"].splitlines() == [s["text"] for s in doc["segments"]]
        assert len(files["jsonl"].splitlines()) == len(doc["segments"])
        assert len(files["tsv"].splitlines()) == len(doc["segments"]) + 1
    # The same speech in both: the texts are close (not equal: other windows).
    assert word_error_rate(docs["1"]["text"], docs["2"]["text"]) <= 0.1


@pytest.mark.slow
def test_batched_decoding_detects_the_language_once(references: dict[str, str]) -> None:
    # A multilingual model, no --language: detected on the speech, as file does.
    name = "es_agent-alreadyon.flac"
    result = run_cli(
        "file", DATA / name, "--model", "base", "--format", "json", "--batch-size", "2"
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["language"] == "es"
    # base on a Spanish telephone prompt: a few words wrong, not a translation.
    assert word_error_rate(references[name], doc["text"]) <= 0.5
