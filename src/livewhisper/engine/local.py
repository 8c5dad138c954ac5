"""The local engine: one faster-whisper model, loaded in this process, that turns
16 kHz audio into segments. It meets `engine.contract.Transcriber`."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from livewhisper.audio.pcm import SAMPLE_RATE, frame_energy, quietest
from livewhisper.engine import models
from livewhisper.engine.contract import FileInfo, Request, TranscribeOptions, Transcription
from livewhisper.engine.guards import is_hallucination, repeats_itself
from livewhisper.engine.lanes import LaneDecoder, deal, encode, segments_of
from livewhisper.engine.lanes import plan as lanes_plan
from livewhisper.errors import ModelError
from livewhisper.transcript import Segment, Word

log = logging.getLogger(__name__)


#: Seconds of silence after the audio in a fitted window (`TranscribeOptions.fit_window`):
#: Whisper needs to see the speech end to stop cleanly.
FIT_PAD = 10.0

#: Tokens a live utterance's decode may generate: `BASE_TOKENS` plus
#: `TOKENS_PER_SECOND` for each second of its audio, at most `MAX_NEW_TOKENS`.
#: Speech is about 4-5 tokens a second, timestamps included; a decode that goes on
#: far past that is a loop. Unbounded, such a loop runs to the model's limit of
#: 448 tokens, and in the full window's temperature fallback it does so again at
#: each of the six temperatures with five hypotheses: a 1 s utterance took 12 s
#: that way here, and every stream of a server waited behind it.
BASE_TOKENS = 20
TOKENS_PER_SECOND = 12
#: At most half the model's 448 tokens: the other half is the previous text's.
MAX_NEW_TOKENS = 220

#: Live utterances decoded in one batch (`Engine.transcribe_many`) on a CPU: the
#: shortest window of a batch is at least this share of its longest (each is padded
#: to the longest, and on a CPU the encoder's time grows with the window)...
WINDOW_SHARE = 0.75
#: ...and each keeps at least this share of its previous text (CTranslate2 wants
#: the prompts of a batch equally long, so the longer ones lose their oldest words).
CONTEXT_SHARE = 0.75

#: `Engine.auto_batch_size` on each kind of device. On a CPU a generation step
#: costs much the same whatever the windows in it, and the windows little more
#: (measured on 2 cores: 16 windows generated 4, 8 and 16 at a time took 1, 0.77
#: and 0.75 of the time with tiny.en, 1, 0.80 and 0.77 with base), while the
#: encoder and the alignment take them one by one (`engine.lanes`): the fewer the
#: steps, the less time.
AUTO_BATCH_CPU = 16
AUTO_BATCH_GPU = 16
#: `Engine.live_batch` on each kind of device.
LIVE_BATCH_CPU = 4
LIVE_BATCH_GPU = 16
#: Peak memory one more 30 s window in a batch costs on a CPU: `WINDOW_BYTES` plus
#: `WINDOW_BYTES_PER_MODEL_BYTE` of the model file's size (its float16 weights).
#: bench/batch_memory.py measured 68 MiB for tiny.en (a 72 MiB file) and 90 MiB
#: for base (138 MiB) when a batch was encoded in one call; the line through them.
#: Encoded one window at a time, as they are now on a CPU (`lanes.encode`), a
#: window costs `file` 31 and 54 MiB and the live batch 19 and 33: the rule errs
#: on the side of memory.
WINDOW_BYTES = 44 * 2**20
WINDOW_BYTES_PER_MODEL_BYTE = 1 / 3
#: The automatic batch sizes take at most this share of the memory available when
#: the model is loaded, so that `auto` never drives a small machine into swap.
BATCH_MEMORY_SHARE = 0.25

#: Punctuation joined to the word after / before it in word timings (faster-whisper's).
PREPEND_PUNCTUATION = "\"'“¿([{-"
APPEND_PUNCTUATION = "\"'.。,，!！?？:：”)]}、"


@dataclass(frozen=True)
class ModelOptions:
    """Which model to load, and where it runs."""

    model: str = models.DEFAULT_MODEL
    device: str = "auto"  # "cpu", "cuda" or "auto"
    compute_type: str = "default"  # "default" is int8 on the CPU, float16 on CUDA
    threads: int = 0  # CPU threads; 0 lets CTranslate2 choose
    download: bool = True  # allow a Hub download for models not on this machine


def token_budget(seconds: float) -> int:
    """The tokens a decode of a live utterance of *seconds* may generate."""
    return min(MAX_NEW_TOKENS, BASE_TOKENS + int(TOKENS_PER_SECOND * seconds))


def fitted_window(seconds: float) -> int:
    """The seconds of a fitted window for *seconds* of audio (`FIT_PAD` more)."""
    return math.ceil(seconds + FIT_PAD)


def fits(seconds: float) -> bool:
    """Whether *seconds* of audio get a fitted window: Whisper's own is 30 s."""
    return seconds >= 0.1 and fitted_window(seconds) < 30


def batch_key(options: TranscribeOptions) -> TranscribeOptions:
    """What requests decoded in one batch must share: every setting but the
    language and the previous text, which each request has its own of."""
    return dataclasses.replace(
        options, language=None, initial_prompt=None, context=None, context_language=None
    )


def bands(items: Iterable[int], size: Callable[[int], float], share: float) -> list[list[int]]:
    """*items* in groups, largest *size* first, each item at least *share* of the
    largest in its group."""
    out: list[list[int]] = []
    for i in sorted(items, key=size, reverse=True):
        if out and size(i) >= share * size(out[-1][0]):
            out[-1].append(i)
        else:
            out.append([i])
    return out


def prompt_groups(previous: list[list[int]], cap: int) -> list[tuple[list[int], int]]:
    """The indexes of *previous* (each request's previous-text tokens) in groups
    that can be decoded as one batch, each with the number of the latest tokens all
    of the group keep (at most *cap*, what faster-whisper keeps)."""
    length = [min(len(p), cap) for p in previous]
    without = [i for i, n in enumerate(length) if n == 0]
    groups = [(without, 0)] if without else []
    with_text = (i for i, n in enumerate(length) if n)
    for band in bands(with_text, lambda i: length[i], CONTEXT_SHARE):
        groups.append((band, min(length[i] for i in band)))
    return groups


def available_memory() -> int | None:
    """Bytes of memory this machine can still give without swapping (Linux's
    MemAvailable; elsewhere the free pages), or None where it does not say."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def window_bytes(weights: Path) -> float:
    """Peak memory one more window in a batch costs on a CPU with the model whose
    weights are the file *weights* (0 if it cannot be read)."""
    try:
        return WINDOW_BYTES + weights.stat().st_size * WINDOW_BYTES_PER_MODEL_BYTE
    except OSError:
        return 0.0


def memory_cap(window_bytes: float, available: int | None) -> int | None:
    """The most windows a batch may hold in `BATCH_MEMORY_SHARE` of *available*
    bytes, at *window_bytes* each (at least 1); None where memory is not known."""
    if available is None or window_bytes <= 0:
        return None
    return max(1, int(available * BATCH_MEMORY_SHARE // window_bytes))


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    try:
        import ctranslate2

        return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    except Exception:  # a broken CUDA install reports itself as an error: use the CPU
        return "cpu"


def resolve_compute_type(compute_type: str, device: str) -> str:
    if compute_type != "default":
        return compute_type
    return "float16" if device == "cuda" else "int8"


class Engine:
    """A loaded Whisper model. Not thread-safe: one thread owns it."""

    def __init__(self, options: ModelOptions | None = None) -> None:
        self.options = options or ModelOptions()
        self.location = models.locate(self.options.model, download=self.options.download)
        self.device = resolve_device(self.options.device)
        self.compute_type = resolve_compute_type(self.options.compute_type, self.device)
        from faster_whisper import WhisperModel

        try:
            self._model = WhisperModel(
                str(self.location.path),
                device=self.device,
                compute_type=self.compute_type,
                cpu_threads=self.options.threads,
            )
        except (RuntimeError, ValueError, OSError) as exc:
            raise ModelError(
                f"Cannot load model {self.options.model!r} from {self.location.path} on "
                f"{self.device} ({exc}); check the model files, or try --device cpu "
                "--compute-type int8."
            ) from exc
        self.multilingual = bool(self._model.model.is_multilingual)
        #: Windows a batch may hold in the memory left once the model is loaded.
        self._memory_cap = memory_cap(self.window_bytes, available_memory())

    @property
    def name(self) -> str:
        return self.location.name

    def auto_batch_size(self) -> int:
        """Windows decoded at a time when the user does not say: on a CPU the
        encoder costs each window the same however many there are, but the fewer
        the generation steps, the less time (`AUTO_BATCH_CPU`); a GPU runs a whole
        batch for little more than one window. On a CPU, no more than
        the memory allows (`memory_cap`)."""
        return self._batch_size(AUTO_BATCH_CPU, AUTO_BATCH_GPU)

    @property
    def live_batch(self) -> int:
        """Live jobs of different streams the scheduler hands over in one call
        (`transcribe_many`) at most; on a CPU, no more than the memory allows."""
        return self._batch_size(LIVE_BATCH_CPU, LIVE_BATCH_GPU)

    def _batch_size(self, cpu: int, gpu: int) -> int:
        """*gpu* on a GPU; on a CPU *cpu*, or fewer if the memory holds fewer."""
        if self.device == "cuda":
            return gpu
        return min(cpu, self._memory_cap or cpu)

    @property
    def window_bytes(self) -> float:
        """Peak memory one more window in a batch costs with this model, on a CPU."""
        return window_bytes(self.location.path / "model.bin")

    def check(self, options: TranscribeOptions) -> None:
        """Raise ModelError if this model cannot do what *options* ask."""
        from faster_whisper.tokenizer import _LANGUAGE_CODES

        if options.language is not None and options.language not in _LANGUAGE_CODES:
            raise ModelError(
                f"Unknown language {options.language!r}: use a code such as en, es, fr, de "
                "or ja, or leave --language out to detect it."
            )
        if not self.multilingual:
            if options.language not in (None, "en"):
                raise ModelError(
                    f"Model {self.name} knows only English and cannot transcribe "
                    f"{options.language!r}: use a multilingual model such as base "
                    "(pip install 'livewhisper[base]') or small."
                )
            if options.task == "translate":
                raise ModelError(
                    f"Model {self.name} knows only English, so it cannot translate: "
                    "use a multilingual model such as base or small."
                )

    def _prompt(self, options: TranscribeOptions, language: str | None) -> str | None:
        """The previous text for a decode in *language* (None: not known yet)."""
        context = options.context
        if context and options.context_language not in (None, language):
            context = None  # said in another language: it would pull the text towards it
        parts = [p.strip() for p in (options.initial_prompt, context) if p and p.strip()]
        return " ".join(parts) or None

    def _decode(
        self, audio: np.ndarray, options: TranscribeOptions, model: Any = None
    ) -> tuple[Iterable[Any], Any]:
        """faster-whisper's transcription of *audio*, on *model* (a WhisperModel; by
        default this engine's own)."""
        language = options.language
        if language is None and not self.multilingual:
            language = "en"
        prompt = self._prompt(options, language)
        return (model or self._model).transcribe(  # type: ignore[no-any-return]
            audio,
            language=language,
            task=options.task,
            beam_size=options.beam_size,
            initial_prompt=prompt,
            word_timestamps=options.word_timestamps,
            vad_filter=options.vad_filter,
            condition_on_previous_text=options.condition_on_previous_text,
            temperature=list(options.temperature),
            no_speech_threshold=options.no_speech_threshold,
            log_prob_threshold=options.log_prob_threshold,
            compression_ratio_threshold=options.compression_ratio_threshold,
            without_timestamps=options.without_timestamps,
            hotwords=options.hotwords,
            max_new_tokens=self._budget(audio, options, prompt),
        )

    def _budget(
        self, audio: np.ndarray, options: TranscribeOptions, prompt_text: str | None
    ) -> int | None:
        """The tokens a decode of *audio* may generate: a live utterance's (fitted
        first, then decoded the usual way when that looked wrong) is short, and what
        Whisper says past `token_budget` is a loop, not to be waited for. None (the
        model's limit) for anything else, and where the previous text
        (*prompt_text*) and hotwords leave less room than the budget (faster-whisper
        refuses a prompt and budget past the model's limit)."""
        if not options.fit_window:
            return None
        model = self._model
        half = model.max_length // 2 - 1  # faster-whisper keeps at most this of each

        def tokens(text: str | None) -> int:
            if not text or not text.strip():
                return 0
            ids = model.hf_tokenizer.encode(" " + text.strip(), add_special_tokens=False).ids
            return min(len(ids), int(half))

        # + previous-text marker, start of transcript, language, task, no timestamps
        prompt = tokens(prompt_text) + tokens(options.hotwords) + 5
        budget = token_budget(len(audio) / SAMPLE_RATE)
        return budget if prompt + budget <= model.max_length else None

    def stream(
        self, audio: np.ndarray, options: TranscribeOptions | None = None, *, offset: float = 0.0
    ) -> tuple[Iterator[Segment], Any]:
        """Start transcribing *audio*: the segments come lazily, as they are decoded.

        Returns the segment iterator and faster-whisper's info (language, duration).
        """
        options = options or TranscribeOptions()
        raw, info = self._decode(audio, options)
        duration = len(audio) / SAMPLE_RATE
        segments = (
            _segment(s, offset, duration)
            for s in raw
            if not is_hallucination(s, options) and s.text.strip()
        )
        return segments, info

    def transcribe(
        self, audio: np.ndarray, options: TranscribeOptions | None = None, *, offset: float = 0.0
    ) -> Transcription:
        """Transcribe 16 kHz mono float32 *audio*; times are shifted by *offset* seconds."""
        return self.transcribe_many([Request(audio, options or TranscribeOptions(), offset)])[0]

    def transcribe_many(self, requests: Sequence[Request]) -> list[Transcription]:
        """Transcribe several pieces of audio (live utterances of different streams)
        at once: what `transcribe` gives each, with the fitted windows of those
        that can share a decode (`_fit_groups`) encoded and decoded as one batch.

        A batch is one pass of the model for all of its requests, where one by one
        each is a pass: on a GPU a batch costs little more than one request; on 2
        CPU cores a batch of 4 took 0.63 of the time of its requests one by one
        with tiny.en and 0.83 with base (`bench/batch_cost.py`). A request whose
        fitted decode fails its checks is decoded again on its own, the usual way."""
        fitted: list[Transcription | None] = [None] * len(requests)
        for group in self._fit_groups(requests):
            decoded = (
                [self._fitted(*requests[group[0]])]
                if len(group) == 1
                else self._fitted_batch([requests[i] for i in group])
            )
            for i, result in zip(group, decoded, strict=True):
                fitted[i] = result
        return [self._finish(r, f) for r, f in zip(requests, fitted, strict=True)]

    def _finish(self, request: Request, fitted: Transcription | None) -> Transcription:
        audio, options, offset = request
        result = self._complete(audio, options, offset, fitted)
        if options.context and repeats_itself(result.text):
            # Previous text can lead Whisper to say a sentence of the audio twice (a
            # menu read on, where the same phrases come back): decode it alone.
            log.info("a decode with context repeated itself; decoding it without")
            alone = dataclasses.replace(options, context=None)
            again = self._fitted(audio, alone, offset) if alone.fit_window else None
            result = self._complete(audio, alone, offset, again)
        return result

    def _complete(
        self,
        audio: np.ndarray,
        options: TranscribeOptions,
        offset: float,
        fitted: Transcription | None,
    ) -> Transcription:
        """*fitted* if the fitted window gave a result, else the usual decode (or no
        text, for a provisional pass that may not fall back)."""
        if fitted is not None:
            return fitted
        seconds = len(audio) / SAMPLE_RATE
        if options.fit_window and not options.fit_fallback and fits(seconds):
            return Transcription([], options.language, 0.0, seconds)
        segments, info = self.stream(audio, options, offset=offset)
        return Transcription(list(segments), info.language, info.language_probability, seconds)

    def _fit_groups(self, requests: Sequence[Request]) -> list[list[int]]:
        """The indexes of *requests* with a fitted window, in groups that can be
        decoded as one batch: the same decoding settings, and windows of similar
        length (each is padded to its group's longest, which costs encoder time on a
        CPU; on a GPU the batch runs in parallel and any lengths go together)."""
        keyed: dict[TranscribeOptions, list[int]] = {}
        for i, (audio, options, _) in enumerate(requests):
            if options.fit_window and fits(len(audio) / SAMPLE_RATE):
                keyed.setdefault(batch_key(options), []).append(i)
        if not keyed:
            return []
        ratio = 0.0 if self.device == "cuda" else WINDOW_SHARE

        def window(i: int) -> int:
            return fitted_window(len(requests[i].audio) / SAMPLE_RATE)

        return [band for group in keyed.values() for band in bands(group, window, ratio)]

    def _fitted(
        self, audio: np.ndarray, options: TranscribeOptions, offset: float
    ) -> Transcription | None:
        """One decode over a window fitted to *audio*, or None to say
        "decode it the usual way".

        Whisper pads every input to 30 s, so the encoder costs as much for a 2 s
        utterance as for 30 s; on a small CPU that one pass is most of a live
        utterance's latency. Encoding the audio plus `FIT_PAD` s of silence costs a
        fraction of it. Without enough trailing silence Whisper tends to repeat
        itself, so a result is only kept if it passes the checks faster-whisper
        applies before falling back to a higher temperature (compression ratio and
        average log-probability) and does not say a run of words twice in a row
        (`guards.repeats_itself`). Otherwise None, and the caller decodes the full
        window with the whole fallback.
        """
        if not fits(len(audio) / SAMPLE_RATE):
            return None
        return self._fitted_batch([Request(audio, options, offset)])[0]

    def _fitted_batch(self, requests: Sequence[Request]) -> list[Transcription | None]:
        """`_fitted` for several requests with the same decoding settings
        (`batch_key`) at once, each padded to the longest one's window.

        (One decode written out step by step, in faster-whisper's own order:
        features, encoding, language, prompt, generation, checks, word times, so
        that it can be read against faster-whisper's code.)"""
        import ctranslate2
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        model = self._model
        options = requests[0].options  # the settings they share
        seconds = [len(r.audio) / SAMPLE_RATE for r in requests]
        window = max(fitted_window(s) for s in seconds)
        padded = np.zeros((len(requests), window * SAMPLE_RATE), np.float32)
        for row, r in zip(padded, requests, strict=True):
            row[: len(r.audio)] = r.audio
        features = np.stack([model.feature_extractor(row)[:, : window * 100] for row in padded])
        # One request keeps its encoding where the model runs; several are taken
        # apart, to be decoded in groups of equal prompt length and aligned one by
        # one (and on a CPU encoded one by one: `lanes.parts`).
        held = None
        if len(requests) == 1:
            encoded = model.model.encode(
                ctranslate2.StorageView.from_array(np.ascontiguousarray(features)), to_cpu=False
            )
        else:
            held = encode(model.model, features, self.device == "cuda")
            encoded = ctranslate2.StorageView.from_array(held)

        def encoding(rows: list[int]) -> Any:
            if held is None:
                return encoded
            return ctranslate2.StorageView.from_array(np.ascontiguousarray(held[rows]))

        languages: list[tuple[str, float]] = []
        detected = None
        for i, r in enumerate(requests):
            language = r.options.language or (None if self.multilingual else "en")
            if language is None:
                if detected is None:
                    detected = model.model.detect_language(encoded)
                token, probability = detected[i][0]
                languages.append((token[2:-2], probability))
            else:
                languages.append((language, 1.0))
        tokenizers = {
            language: Tokenizer(
                model.hf_tokenizer, self.multilingual, task=options.task, language=language
            )
            for language, _ in languages
        }
        previous = [
            tokenizers[language].encode(" " + text)
            if (text := self._prompt(r.options, language))
            else []
            for r, (language, _) in zip(requests, languages, strict=True)
        ]
        suppress = list(get_suppressed_tokens(tokenizers[languages[0][0]], (-1,)) or ())
        out: list[Transcription | None] = [None] * len(requests)
        for rows, keep in prompt_groups(previous, int(model.max_length // 2 - 1)):
            prompts = [
                model.get_prompt(
                    tokenizers[languages[i][0]],
                    previous[i][len(previous[i]) - keep :] if keep else [],
                    without_timestamps=options.without_timestamps,
                    hotwords=options.hotwords,
                )
                for i in rows
            ]
            budget = max(token_budget(seconds[i]) for i in rows)
            results = model.model.generate(
                encoding(rows),
                prompts,
                beam_size=options.beam_size,
                max_length=min(model.max_length, len(prompts[0]) + budget),
                return_scores=True,
                return_no_speech_prob=True,
                suppress_blank=True,
                suppress_tokens=suppress,
                max_initial_timestamp_index=50,
            )
            for i, result in zip(rows, results, strict=True):
                out[i] = self._checked(
                    result,
                    requests[i],
                    tokenizers[languages[i][0]],
                    languages[i],
                    lambda i=i: encoding([i]),  # type: ignore[misc]
                )
        return out

    def _checked(
        self,
        result: Any,
        request: Request,
        tokenizer: Any,
        language: tuple[str, float],
        encoding: Callable[[], Any],
    ) -> Transcription | None:
        """A fitted window's generation result as a Transcription, or None if it
        fails faster-whisper's checks; word times from the cross-attention against
        the window's encoding (*encoding*), as faster-whisper times a full window's."""
        from faster_whisper.transcribe import get_compression_ratio, merge_punctuations

        audio, options, offset = request
        seconds = len(audio) / SAMPLE_RATE
        tokens = result.sequences_ids[0]
        text_tokens = [t for t in tokens if t < tokenizer.eot]
        text = tokenizer.decode(text_tokens).strip()
        avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
        ratio = get_compression_ratio(text) if text else 0.0
        if text and (
            ratio > options.compression_ratio_threshold
            or avg_logprob < options.log_prob_threshold
            # "Americans, and, and, and, ...": a loop the ratio can miss on short text.
            or repeats_itself(text)
        ):
            return None
        words: tuple[Word, ...] = ()
        if text and options.word_timestamps:
            model = self._model
            timed = model.find_alignment(tokenizer, [text_tokens], encoding(), int(seconds * 100))
            timed = timed[0] if timed else []
            merge_punctuations(timed, PREPEND_PUNCTUATION, APPEND_PUNCTUATION)
            words = tuple(
                Word(
                    offset + min(float(w["start"]), seconds),
                    offset + min(float(w["end"]), seconds),
                    w["word"],
                    float(w["probability"]),
                )
                for w in timed
                if w["word"]
            )
        segment = Segment(
            start=offset,
            end=offset + seconds,
            text=text,
            words=words,
            avg_logprob=avg_logprob,
            no_speech_prob=result.no_speech_prob,
            compression_ratio=ratio,
        )
        keep = text and not is_hallucination(segment, options)
        return Transcription([segment] if keep else [], language[0], language[1], seconds)

    def transcribe_blocks(
        self,
        blocks: Iterable[np.ndarray],
        options: TranscribeOptions | None = None,
        *,
        window: float = 600.0,
        info: FileInfo | None = None,
        on_decoded: Callable[[float], None] | None = None,
    ) -> Iterator[Segment]:
        """Transcribe a long stream of 16 kHz blocks a window at a time.

        At most about *window* seconds of audio are held at once, so an input of any
        length fits in memory. A window is cut at its quietest point near the end,
        never mid-word, and the rest carries over to the next window.
        """
        options = options or TranscribeOptions()
        info = info if info is not None else FileInfo()
        limit = int(window * SAMPLE_RATE)
        pending: list[np.ndarray] = []
        pending_len = 0
        offset = 0.0
        previous_text = ""

        def run(audio: np.ndarray) -> Iterator[Segment]:
            nonlocal offset, previous_text
            opts = options
            if options.condition_on_previous_text and previous_text:
                prompt = f"{options.initial_prompt or ''} {previous_text}".strip()
                opts = dataclasses.replace(options, initial_prompt=prompt[-800:])
            batch = options.batch_size or self.auto_batch_size()
            if batch > 1:
                segments, language = self._stream_lanes(audio, opts, options, offset, batch)
                if info.language is None:
                    info.language, info.language_probability = language
            else:
                segments, result = self.stream(audio, opts, offset=offset)
                if info.language is None:
                    info.language = result.language
                    info.language_probability = result.language_probability
            texts = []
            for segment in segments:
                texts.append(segment.text)
                info.segments.append(segment)
                yield segment
            offset += len(audio) / SAMPLE_RATE
            if texts:
                previous_text = " ".join(texts)

        for block in blocks:
            pending.append(block)
            pending_len += len(block)
            info.duration += len(block) / SAMPLE_RATE
            if on_decoded is not None:
                on_decoded(info.duration)
            if pending_len >= limit:
                audio = np.concatenate(pending)
                cut = quietest_cut(audio, search_from=max(0, limit - 15 * SAMPLE_RATE))
                pending, pending_len = [audio[cut:]], len(audio) - cut
                yield from run(audio[:cut])
        if pending_len:
            audio = np.concatenate(pending)
            pending.clear()  # the blocks are copied: let them go before decoding
            yield from run(audio)

    def _stream_lanes(
        self,
        audio: np.ndarray,
        first: TranscribeOptions,
        rest: TranscribeOptions,
        offset: float,
        lanes: int,
    ) -> tuple[Iterator[Segment], tuple[str, float]]:
        """Segments of *audio* decoded in up to *lanes* batched lanes
        (`engine.lanes`), in time order: the first lane carries the text before
        *audio* (*first*'s initial prompt), the others start from *rest*'s. Also
        the language and its probability: given, or detected once on the speech at
        the start, as faster-whisper decodes a whole file in one language."""
        from faster_whisper.tokenizer import Tokenizer

        language, probability = rest.language, 1.0
        if language is None and not self.multilingual:
            language = "en"
        if language is None:
            language, probability, _ = self._model.detect_language(
                audio, vad_filter=rest.vad_filter
            )
        tokenizer = Tokenizer(
            self._model.hf_tokenizer, self.multilingual, task=rest.task, language=language
        )
        windows = lanes_plan(audio, rest.vad_filter, self.options.threads or os.cpu_count() or 1)
        runs = deal(windows, lanes)
        prompt = first.initial_prompt
        previous = tokenizer.encode(" " + prompt.strip()) if prompt and prompt.strip() else []
        decoder = LaneDecoder(self._model, tokenizer, dataclasses.replace(rest, language=language))
        segments = (
            s for w in decoder.run(windows, runs, previous) for s in segments_of(w, rest, offset)
        )
        return segments, (language, probability)


def quietest_cut(audio: np.ndarray, search_from: int, hop: int = SAMPLE_RATE // 50) -> int:
    """The sample index of the quietest 20 ms hop in ``audio[search_from:]``."""
    energy = frame_energy(audio[search_from:], hop)
    if len(energy) < 2:
        return len(audio)
    # Smoothed over 5 hops (100 ms) so a single quiet hop inside a word does not win.
    return search_from + quietest(energy, smooth=5, edges="zero") * hop + hop // 2


def _segment(s: Any, offset: float, duration: float) -> Segment:
    """Our Segment from faster-whisper's, shifted by *offset*.

    Whisper's last timestamp token can lie past the end of the audio it was given;
    times are clamped to the audio so no cue ends after the input does.
    """

    def clamp(t: float) -> float:
        return offset + min(max(t, 0.0), duration)

    words = tuple(
        Word(clamp(w.start), clamp(w.end), w.word, w.probability) for w in (s.words or ())
    )
    return Segment(
        start=clamp(s.start),
        end=clamp(s.end),
        text=s.text.strip(),
        words=words,
        avg_logprob=s.avg_logprob,
        no_speech_prob=s.no_speech_prob,
        compression_ratio=s.compression_ratio,
    )
