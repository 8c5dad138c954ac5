"""Batched decoding of long audio: windows cut at pauses, decoded in lanes, a batch
per step.

faster-whisper decodes a file one 30 s window after another. Each window is
decoded with timestamp tokens, the next one starts where its last whole segment
ends (so the tail of every window is decoded twice), and each window sees the
text of the one before. Batched pipelines (faster-whisper's
`BatchedInferencePipeline`, WhisperX) are faster because they cut the speech at
pauses into windows of up to 30 s first and decode each window once, text only,
several at a time; but then no window sees the text before it, and where the
model stops early inside a window the rest of it is lost.

Here:

* The speech is found with the same Silero VAD as faster-whisper's ``vad_filter``
  (without it, the audio is cut at its quietest points) and packed into windows
  of at most `WINDOW` seconds that end at a pause (`plan`).
* The windows are dealt into as many runs of consecutive windows, *lanes*, as
  the batch and the windows allow (`deal`). Step by step, the next window of
  every lane is encoded and decoded in one batch, each with the text its lane
  decoded so far as Whisper's previous text: only the first window of each lane
  starts without context.
* A window decoded text only is checked as faster-whisper checks a decode
  (compression ratio, average log-probability, no-speech probability) and
  decoded again at the next temperature of the fallback, batched with the other
  windows that failed.
* Times come from aligning the text with the audio (Whisper's cross-attention,
  as faster-whisper's word timestamps do), mapped back through the VAD cuts; a
  window's words are grouped into segments at sentence ends and pauses.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from livewhisper.audio.pcm import SAMPLE_RATE
from livewhisper.engine.contract import TranscribeOptions
from livewhisper.engine.guards import compression_ratio, is_hallucination
from livewhisper.transcript import Segment, Word

#: Seconds of speech in one window at most: Whisper's own window.
WINDOW = 30.0
#: A window may end at a pause this long (seconds). faster-whisper's VAD cuts at
#: pauses of 2 s: a stretch of speech with no such pause that does not fit in what
#: is left of a window leaves that window part empty, and each window costs a full
#: 30 s encoding. Shorter pauses fill the windows and still fall between phrases.
PAUSE = 0.5
#: Seconds of audio a thread of the VAD is given at least (`speech`), and how far
#: from an even cut the quietest moment may be chosen.
VAD_PART = 60.0
VAD_NEAR = 5.0
#: Samples the VAD judges at a time (Silero's window at 16 kHz).
VAD_HOP = 512
#: A segment ends after a word that ends a sentence, or before a pause this long.
SEGMENT_PAUSE = 1.0
#: A segment that runs this long ends at its next word that ends a clause.
SEGMENT_LONG = 12.0
#: Tokens of previous text a window is given at most (faster-whisper gives up to
#: 223): the words just before matter most, and a long prompt slows every step.
PREVIOUS_TOKENS = 223
#: A word aligned over this many seconds covers speech its window's text left out:
#: decoding text only, Whisper now and then skips the start of a window, or stops
#: before its end. With the VAD, no pause in a window is much over a second.
LOST = 3.0
#: faster-whisper's: a decode at a temperature above this does not pass its text on.
PROMPT_RESET_TEMPERATURE = 0.5
SENTENCE_END = (".", "?", "!", "。", "？", "！")
#: Titles written with a full stop before a name: "Mr. Dashwood" is one sentence.
TITLES = frozenset(
    "mr. mrs. ms. mx. dr. prof. st. mt. messrs. sr. sra. srta. dra. mme. mlle. hr. fr.".split()
)
CLAUSE_END = (",", ";", ":", "，", "、")


@dataclass
class Window:
    """Up to `WINDOW` seconds of speech, decoded as one."""

    audio: np.ndarray  # the speech of the window, pauses between its parts removed
    #: ``(start, end)`` in the window's audio (seconds) and where that part begins
    #: in the input (seconds)
    parts: list[tuple[float, float, float]]
    tokens: list[int] = field(default_factory=list)
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0
    compression_ratio: float = 0.0
    temperature: float = 0.0
    silent: bool = False
    words: list[dict[str, Any]] = field(default_factory=list)  # times in the window

    @property
    def seconds(self) -> float:
        return len(self.audio) / SAMPLE_RATE

    def input_time(self, t: float, part: int) -> float:
        start, _, at = self.parts[part]
        return at + (t - start)

    def part_of(self, t: float) -> int:
        for i, (_, end, _) in enumerate(self.parts):
            if t < end:
                return i
        return len(self.parts) - 1

    def lost(self) -> list[tuple[float, float, int, int]]:
        """The stretches of the window its words leave out, as ``(start, end, first,
        last)``: times in the window, and the words ``[first:last]`` aligned over
        the stretch, each `LOST` seconds or longer (no words for a stretch after
        the last word)."""
        words, spans, i = self.words, [], 0
        while i < len(words):
            j = i
            while j < len(words) and words[j]["end"] - words[j]["start"] >= LOST:
                j += 1
            if j > i:
                spans.append((float(words[i]["start"]), float(words[j - 1]["end"]), i, j))
            i = j + 1
        if words and self.seconds - words[-1]["end"] >= LOST:
            spans.append((float(words[-1]["end"]), self.seconds, len(words), len(words)))
        return spans


def plan(audio: np.ndarray, vad_filter: bool, threads: int = 1) -> list[Window]:
    """The windows of *audio*: its speech (Silero VAD, as faster-whisper's
    ``vad_filter``, on up to *threads* threads: `speech`), packed into windows of
    at most `WINDOW` seconds that end between two stretches of speech; without
    *vad_filter*, the audio itself cut as an upload's windows are
    (`engine.batch.windows`)."""
    limit = int(WINDOW * SAMPLE_RATE)
    if not vad_filter:
        from livewhisper.engine.batch import windows as cut  # it imports engine.local

        out, at = [], 0.0
        for piece in cut([audio], window=WINDOW):
            out.append(Window(piece, [(0.0, len(piece) / SAMPLE_RATE, at)]))
            at += len(piece) / SAMPLE_RATE
        return out
    from faster_whisper.vad import VadOptions

    # faster-whisper's own VAD settings, except that speech is cut at shorter
    # pauses (`PAUSE`) and no stretch is longer than a window (a longer one is
    # split at its quietest moment by the VAD).
    options = VadOptions(max_speech_duration_s=WINDOW, min_silence_duration_ms=int(PAUSE * 1000))
    chunks = speech(audio, options, threads)
    windows = []
    pieces: list[np.ndarray] = []
    parts: list[tuple[float, float, float]] = []
    held = 0
    for chunk in chunks:
        start, end = int(chunk["start"]), min(int(chunk["end"]), int(chunk["start"]) + limit)
        if held and held + end - start > limit:
            windows.append(Window(np.concatenate(pieces), parts))
            pieces, parts, held = [], [], 0
        pieces.append(audio[start:end])
        parts.append((held / SAMPLE_RATE, (held + end - start) / SAMPLE_RATE, start / SAMPLE_RATE))
        held += end - start
    if held:
        windows.append(Window(np.concatenate(pieces), parts))
    return windows


def speech(audio: np.ndarray, options: Any, threads: int) -> list[dict[str, int]]:
    """The speech of *audio* (faster-whisper's ``get_speech_timestamps`` with
    *options*) as ``{"start", "end"}`` sample indexes. A long input is cut into
    parts of `VAD_PART` seconds or more, up to *threads* of them, each ending at
    the quietest moment near its cut, and the VAD runs on the parts at once: it
    runs on one thread, and was about a tenth of `file`'s time on 240 s of speech
    on 2 cores (0.49 s; 0.25 s in two parts). The VAD starts afresh on each part,
    where faster-whisper's carries its state through: on real speech that moved a
    few edges by tens of milliseconds."""
    from concurrent.futures import ThreadPoolExecutor

    from faster_whisper.vad import get_speech_timestamps

    from livewhisper.engine.local import quietest_cut  # it imports this module

    count = max(1, min(threads, int(len(audio) / SAMPLE_RATE / VAD_PART)))
    if count == 1:
        return list(get_speech_timestamps(audio, options))
    near = int(VAD_NEAR * SAMPLE_RATE)
    cuts = [0]
    for k in range(1, count):
        at = len(audio) * k // count
        quiet = quietest_cut(audio[: at + near], at - near)
        cuts.append(quiet - quiet % VAD_HOP)  # on the VAD's own grid of windows
    cuts.append(len(audio))

    def part(start: int, end: int) -> list[dict[str, int]]:
        found = get_speech_timestamps(audio[start:end], options)
        return [{"start": c["start"] + start, "end": c["end"] + start} for c in found]

    with ThreadPoolExecutor(count) as pool:
        return [c for chunks in pool.map(part, cuts[:-1], cuts[1:]) for c in chunks]


def deal(windows: list[Window], lanes: int) -> list[list[int]]:
    """Window indexes in up to *lanes* runs of consecutive windows, as many as
    there are windows, their lengths differing by one window at most.

    Every step decodes one window of each lane and costs about the same whatever
    the windows hold (the encoder always sees 30 s), so the fewest steps is the
    fastest. Each lane's first window starts without the text before it; measured
    on continuous speech, that costs no accuracy (docs/benchmarks.md)."""
    lanes = max(1, min(lanes, len(windows)))
    size, extra = divmod(len(windows), lanes)
    runs, start = [], 0
    for lane in range(lanes):
        end = start + size + (lane < extra)
        runs.append(list(range(start, end)))
        start = end
    return [r for r in runs if r]


def parts(rows: int, on_gpu: bool) -> list[slice]:
    """*rows* rows of a batch in the calls the encoder and the alignment run best
    in: all in one on a GPU; one by one on a CPU, where a batch costs what its rows
    cost apart, and more as its activations outgrow the caches (measured on 2
    cores: 16 % more a window at 9 windows of 30 s with tiny.en, 23 % with base)."""
    step = rows if on_gpu else 1
    return [slice(i, i + step) for i in range(0, rows, step)]


def encode(model: Any, features: np.ndarray, on_gpu: bool) -> np.ndarray:
    """The encoder's output for the batch *features* (log-Mel spectrograms), in
    host memory, encoded in `parts`."""
    import ctranslate2

    encoded = []
    for part in parts(len(features), on_gpu):
        rows = ctranslate2.StorageView.from_array(np.ascontiguousarray(features[part]))
        encoded.append(np.asarray(model.encode(rows, to_cpu=True)))
    return np.concatenate(encoded)


class LaneDecoder:
    """Decodes the windows of one long input with a loaded faster-whisper model."""

    def __init__(self, whisper: Any, tokenizer: Any, options: TranscribeOptions) -> None:
        from faster_whisper.transcribe import get_suppressed_tokens

        self.whisper = whisper
        self.tokenizer = tokenizer
        self.options = options
        self.suppress = list(get_suppressed_tokens(tokenizer, (-1,)) or ())
        self.hotwords = tokenizer.encode(" " + options.hotwords.strip()) if options.hotwords else []
        self.batches: list[int] = []  # windows in each generation (for the benchmark)
        self.on_gpu = getattr(whisper.model, "device", "cpu") == "cuda"

    def run(
        self, windows: list[Window], runs: list[list[int]], previous: list[int]
    ) -> Iterator[Window]:
        """Decode *windows* lane by lane (*runs*, from `deal`); the first lane starts
        with *previous* as its previous text. Yields the windows in order, each
        once it and every window before it are decoded."""
        if not windows:
            return
        history = [list(previous) if lane == 0 else self._initial() for lane in range(len(runs))]
        done = [False] * len(windows)
        shown = 0
        steps = max(len(r) for r in runs)
        for step in range(steps):
            batch = [(lane, run[step]) for lane, run in enumerate(runs) if step < len(run)]
            self._decode([windows[i] for _, i in batch], [history[lane] for lane, _ in batch])
            for lane, i in batch:
                w = windows[i]
                done[i] = True
                if not self.options.condition_on_previous_text:
                    continue
                if w.temperature > PROMPT_RESET_TEMPERATURE:
                    history[lane] = self._initial()
                elif not w.silent:
                    history[lane].extend(t for t in w.tokens if t < self.tokenizer.eot)
            while shown < len(windows) and done[shown]:
                yield windows[shown]
                shown += 1

    def _initial(self) -> list[int]:
        prompt = self.options.initial_prompt
        return self.tokenizer.encode(" " + prompt.strip()) if prompt and prompt.strip() else []

    def _decode(
        self, windows: list[Window], histories: list[list[int]], recover: bool = True
    ) -> None:
        """Decode *windows* as one batch (each with its previous text), then those
        that look like failures again at the next temperatures; align the text;
        then, with *recover*, decode again what the text left out (`_recover`)."""
        encoded = self._encode(windows)
        pending = list(range(len(windows)))
        tried: list[list[tuple[list[int], float, float, float, float]]] = [[] for _ in windows]
        for temperature in self.options.temperature:
            if not pending:
                break
            results = self._generate(encoded[pending], [histories[i] for i in pending], temperature)
            still = []
            for i, (tokens, logprob, no_speech) in zip(pending, results, strict=True):
                ratio = compression_ratio(self.tokenizer.decode(tokens).strip())
                tried[i].append((tokens, logprob, no_speech, ratio, temperature))
                w = windows[i]
                w.tokens, w.avg_logprob, w.no_speech_prob = tokens, logprob, no_speech
                w.compression_ratio, w.temperature = ratio, temperature
                silent = (
                    no_speech > self.options.no_speech_threshold
                    and logprob < self.options.log_prob_threshold
                )
                failed = (
                    ratio > self.options.compression_ratio_threshold
                    or logprob < self.options.log_prob_threshold
                )
                if silent:
                    w.silent = True
                elif failed:
                    still.append(i)
            pending = still
        for i in pending:  # every temperature failed: the most likely of the decodes
            below = [t for t in tried[i] if t[3] <= self.options.compression_ratio_threshold]
            tokens, logprob, no_speech, ratio, _ = max(below or tried[i], key=lambda t: t[1])
            w = windows[i]
            w.tokens, w.avg_logprob, w.no_speech_prob, w.compression_ratio = (
                tokens,
                logprob,
                no_speech,
                ratio,
            )
        self._align(windows, encoded)
        if recover and self.options.vad_filter:
            self._recover(windows, histories)

    def _encode(self, windows: list[Window]) -> np.ndarray:
        """The encoder's output for *windows*, each padded to Whisper's 30 s."""
        from faster_whisper.audio import pad_or_trim

        extractor = self.whisper.feature_extractor
        features = np.stack([pad_or_trim(extractor(w.audio)[:, :-1]) for w in windows])
        return encode(self.whisper.model, features, self.on_gpu)

    def _recover(self, windows: list[Window], histories: list[list[int]]) -> None:
        """Decode the speech the windows' text left out (`Window.lost`) again, each
        stretch on its own with the text before it, all in one batch, and put its
        words in place of the words aligned over it. A stretch that gives no words
        (it held no speech after all) leaves the window as it was."""
        cuts: list[tuple[Window, float, int, int]] = []
        pieces, before = [], []
        for w, history in zip(windows, histories, strict=True):
            for start, end, first, last in w.lost():
                audio = w.audio[int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)]
                pieces.append(Window(audio, [(0.0, len(audio) / SAMPLE_RATE, 0.0)]))
                before.append([*history, *(t for x in w.words[:first] for t in x["tokens"])])
                cuts.append((w, start, first, last))
        if not pieces:
            return
        self._decode(pieces, before, recover=False)
        changed = []
        for piece, (w, start, first, last) in reversed(list(zip(pieces, cuts, strict=True))):
            if piece.silent or not piece.words:
                continue
            shifted = [
                {**x, "start": x["start"] + start, "end": x["end"] + start} for x in piece.words
            ]
            w.words[first:last] = shifted  # from the last stretch back: indexes hold
            changed.append(w)
        for w in changed:
            w.tokens = [t for x in w.words for t in x["tokens"]]

    def _generate(
        self, encoded: np.ndarray, histories: list[list[int]], temperature: float
    ) -> list[tuple[list[int], float, float]]:
        """One generation per window. CTranslate2 needs the start-of-transcript token
        at the same place in every prompt of a batch: the windows with previous text
        keep as much of it as the shortest has (its most recent tokens), and those
        without are generated in a batch of their own."""
        import ctranslate2

        model = self.whisper
        tokenizer = self.tokenizer
        room = min(PREVIOUS_TOKENS, model.max_length // 2 - 1) - len(self.hotwords)
        with_text = [i for i, h in enumerate(histories) if h or self.hotwords]
        without = [i for i, h in enumerate(histories) if not (h or self.hotwords)]
        out: list[tuple[list[int], float, float]] = [([], 0.0, 0.0)] * len(histories)
        for group in (with_text, without):
            if not group:
                continue
            keep = min(min(len(histories[i]) for i in group), room)
            prompts = []
            for i in group:
                prompt = []
                if i in with_text:
                    previous = histories[i][-keep:] if keep else []
                    prompt = [tokenizer.sot_prev, *self.hotwords, *previous]
                prompts.append([*prompt, *tokenizer.sot_sequence, tokenizer.no_timestamps])
            if temperature > 0:
                kwargs: dict[str, Any] = {
                    "beam_size": 1,
                    "num_hypotheses": 5,
                    "sampling_topk": 0,
                    "sampling_temperature": temperature,
                }
            else:
                kwargs = {"beam_size": self.options.beam_size}
            results = model.model.generate(
                ctranslate2.StorageView.from_array(np.ascontiguousarray(encoded[group])),
                prompts,
                max_length=model.max_length,
                return_scores=True,
                return_no_speech_prob=True,
                suppress_blank=True,
                suppress_tokens=self.suppress,
                **kwargs,
            )
            for i, result in zip(group, results, strict=True):
                tokens = result.sequences_ids[0]
                logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
                out[i] = (tokens, logprob, result.no_speech_prob)
        self.batches.append(len(histories))
        return out

    def _align(self, windows: list[Window], encoded: np.ndarray) -> None:
        """The words of each window with their times in the window (faster-whisper's
        alignment of text tokens against the encoding), the batch in one call."""
        import ctranslate2
        from faster_whisper.transcribe import merge_punctuations

        from livewhisper.engine.local import APPEND_PUNCTUATION, PREPEND_PUNCTUATION

        texts = [[t for t in w.tokens if t < self.tokenizer.eot] for w in windows]
        spoken = [i for i, w in enumerate(windows) if texts[i] and not w.silent]
        for w in windows:
            w.words = []
        if not spoken:
            return
        # faster-whisper's alignment passes the frame counts on to CTranslate2's,
        # which takes one per window of the batch.
        timed: list[list[dict[str, Any]]] = []
        for part in parts(len(spoken), self.on_gpu):
            rows = spoken[part]
            timed += self.whisper.find_alignment(
                self.tokenizer,
                [texts[i] for i in rows],
                ctranslate2.StorageView.from_array(np.ascontiguousarray(encoded[rows])),
                [math.ceil(windows[i].seconds * 100) for i in rows],
            )
        for i, words in zip(spoken, timed, strict=True):
            merge_punctuations(words, PREPEND_PUNCTUATION, APPEND_PUNCTUATION)
            windows[i].words = [t for t in words if t["word"]]


def segments_of(window: Window, options: TranscribeOptions, offset: float) -> list[Segment]:
    """The window's words in segments, with input times (+ *offset*): a segment ends
    after a sentence, before a pause of `SEGMENT_PAUSE`, or at a clause end once it
    runs `SEGMENT_LONG` seconds."""
    words: list[Word] = []
    for t in window.words:
        middle = (float(t["start"]) + float(t["end"])) / 2
        part = window.part_of(min(middle, window.seconds))
        start = window.input_time(min(float(t["start"]), window.seconds), part)
        end = window.input_time(min(float(t["end"]), window.seconds), part)
        words.append(Word(offset + start, offset + max(start, end), t["word"], t["probability"]))
    groups: list[list[Word]] = []
    for word in words:
        if not groups or _ends(groups[-1], word):
            groups.append([])
        groups[-1].append(word)
    segments = []
    for group in groups:
        text = "".join(w.word for w in group).strip()
        if not text:
            continue
        segment = Segment(
            start=group[0].start,
            end=group[-1].end,
            text=text,
            words=tuple(group) if options.word_timestamps else (),
            avg_logprob=window.avg_logprob,
            no_speech_prob=window.no_speech_prob,
            compression_ratio=window.compression_ratio,
        )
        if not is_hallucination(segment, options):
            segments.append(segment)
    return segments


def _ends(group: list[Word], next_word: Word) -> bool:
    """Whether a segment of *group* ends before *next_word*."""
    last = group[-1].word.strip()
    if last.endswith(SENTENCE_END) and last.lower() not in TITLES:
        return True
    if next_word.start - group[-1].end >= SEGMENT_PAUSE:
        return True
    return group[-1].end - group[0].start >= SEGMENT_LONG and last.endswith(CLAUSE_END)
