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
* The windows are dealt into up to *lanes* runs of consecutive windows. Step by
  step, the next window of every lane is encoded and decoded in one batch, each
  with the text its lane decoded so far as Whisper's previous text: only the
  first window of each lane starts without context.
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
#: A lane holds at least this many seconds of speech: its first window is decoded
#: without the text before it, so many short lanes cost accuracy.
LANE_MIN = 60.0
#: A segment ends after a word that ends a sentence, or before a pause this long.
SEGMENT_PAUSE = 1.0
#: A segment that runs this long ends at its next word that ends a clause.
SEGMENT_LONG = 12.0
#: Tokens of previous text a window is given at most (faster-whisper gives up to
#: 223): the words just before matter most, and a long prompt slows every step.
PREVIOUS_TOKENS = 223
#: faster-whisper's: a decode at a temperature above this does not pass its text on.
PROMPT_RESET_TEMPERATURE = 0.5
SENTENCE_END = (".", "?", "!", "。", "？", "！")
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


def plan(audio: np.ndarray, vad_filter: bool) -> list[Window]:
    """The windows of *audio*: its speech (Silero VAD, as faster-whisper's
    ``vad_filter``), packed into windows of at most `WINDOW` seconds that end
    between two stretches of speech; without *vad_filter*, the audio itself cut as
    an upload's windows are (`engine.batch.windows`)."""
    limit = int(WINDOW * SAMPLE_RATE)
    if not vad_filter:
        from livewhisper.engine.batch import windows as cut  # it imports engine.local

        out, at = [], 0.0
        for piece in cut([audio], window=WINDOW):
            out.append(Window(piece, [(0.0, len(piece) / SAMPLE_RATE, at)]))
            at += len(piece) / SAMPLE_RATE
        return out
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    # faster-whisper's own VAD settings, with no stretch of speech longer than a
    # window (a longer one is split at its quietest moment by the VAD).
    chunks = get_speech_timestamps(audio, VadOptions(max_speech_duration_s=WINDOW))
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


def deal(windows: list[Window], lanes: int) -> list[list[int]]:
    """Window indexes in up to *lanes* runs of consecutive windows of about equal
    speech, each of about `LANE_MIN` or more (a lane ends at a whole window)."""
    total = sum(w.seconds for w in windows)
    lanes = max(1, min(lanes, int(total // LANE_MIN), len(windows)))
    runs: list[list[int]] = [[] for _ in range(lanes)]
    done = 0.0
    for i, w in enumerate(windows):
        lane = min(lanes - 1, int(done / total * lanes)) if total else 0
        runs[lane].append(i)
        done += w.seconds
    return [r for r in runs if r]


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

    def _decode(self, windows: list[Window], histories: list[list[int]]) -> None:
        """Decode *windows* as one batch (each with its previous text), then those
        that look like failures again at the next temperatures; align the text."""
        import ctranslate2
        from faster_whisper.audio import pad_or_trim

        extractor = self.whisper.feature_extractor
        features = np.stack([pad_or_trim(extractor(w.audio)[:, :-1]) for w in windows])
        encoded = self.whisper.model.encode(
            ctranslate2.StorageView.from_array(np.ascontiguousarray(features)), to_cpu=True
        )
        encoded = np.asarray(encoded)
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
        alignment of text tokens against the encoding)."""
        import ctranslate2
        from faster_whisper.transcribe import merge_punctuations

        from livewhisper.engine.local import APPEND_PUNCTUATION, PREPEND_PUNCTUATION

        for w, enc in zip(windows, encoded, strict=True):
            text = [t for t in w.tokens if t < self.tokenizer.eot]
            if not text or w.silent:
                w.words = []
                continue
            timed = self.whisper.find_alignment(
                self.tokenizer,
                [text],
                ctranslate2.StorageView.from_array(np.ascontiguousarray(enc[None])),
                math.ceil(w.seconds * 100),
            )
            timed = timed[0] if timed else []
            merge_punctuations(timed, PREPEND_PUNCTUATION, APPEND_PUNCTUATION)
            w.words = [t for t in timed if t["word"]]


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
    if last.endswith(SENTENCE_END):
        return True
    if next_word.start - group[-1].end >= SEGMENT_PAUSE:
        return True
    return group[-1].end - group[0].start >= SEGMENT_LONG and last.endswith(CLAUSE_END)
