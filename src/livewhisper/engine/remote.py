"""A remote engine: decoding done by a server that speaks OpenAI's audio API
(``POST /v1/audio/transcriptions``): another ``livewhisper serve``, speaches, vLLM
or OpenAI itself. It meets `engine.contract.Transcriber`, so everything else
(segmenting, partials, context, outputs, the server) stays local and unchanged.

Each utterance or window goes as a 16 kHz mono 16-bit WAV file, asking for
``verbose_json`` with segment (and, when asked, word) times, which map back to
`Segment` and `Word` shifted by the offset. One `httpx.Client` keeps its
connections alive. The engine is thread-safe and says how many requests it keeps
in flight (`concurrency`, `RemoteOptions.concurrency`): the scheduler runs that many
workers, so the finals and partials of many streams are decoded at once, each
stream's in order.

Faults lose nothing silently. An engine that cannot be reached at the start is an
`EngineError` naming the URL. One that fails or stalls later is retried with
backoff (a 429's ``Retry-After`` is honoured) while utterances wait, in order, in
the scheduler's queue; an outage is waited out for at most
`RemoteOptions.max_wait` seconds from its start. Past that, a live utterance is
given up as a `Lost` span (in `RemoteEngine.losses`, and told to *on_notice*), and
its stream goes on; a window of an upload raises `EngineError`; a file's decode
(`transcribe_blocks`) stops there, the loss saying how far it got.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import random
import threading
import time
import wave
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from livewhisper.audio.pcm import SAMPLE_RATE, to_pcm16
from livewhisper.engine.batch import windows
from livewhisper.engine.contract import FileInfo, TranscribeOptions, Transcription
from livewhisper.engine.guards import is_hallucination, repeats_itself
from livewhisper.errors import EngineError, ModelError
from livewhisper.transcript import Segment, Word

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

#: The model asked for when the engine lists none (OpenAI's name for Whisper).
FALLBACK_MODEL = "whisper-1"
#: Answers worth asking again: the engine is busy, restarting or behind a proxy.
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
#: Seconds between tries: doubling from the first, never above the last.
BACKOFF = (0.25, 8.0)
#: Once an outage has lasted `RemoteOptions.max_wait`, an utterance is sent (a
#: probe) only if this many seconds have passed since the last try failed; those
#: in between are given up at once, so a long outage never holds the queue.
PROBE_INTERVAL = 5.0
#: Shorter audio is not worth a request (an empty end of input).
MIN_SECONDS = 0.1


@dataclass(frozen=True)
class RemoteOptions:
    """Where the engine is, and how long to wait for it."""

    url: str  # the server (``http://host:8000``) or its API base (``.../v1``)
    model: str | None = None  # None: the first model the engine lists, else whisper-1
    key: str | None = None  # sent as ``Authorization: Bearer``
    timeout: float = 30.0  # seconds for one request's answer
    connect_timeout: float = 5.0
    max_wait: float = 60.0  # seconds utterances wait for an engine that stopped answering
    audio_format: str = "wav"  # or "flac": a third of the bytes, more CPU both ends
    #: Requests in flight at most (the scheduler's workers, the open connections).
    concurrency: int = 8

    @property
    def base(self) -> str:
        """The API's base URL: the URL as given when it ends in ``/v1``, else with it."""
        url = self.url.rstrip("/")
        return url if url.endswith("/v1") else url + "/v1"


@dataclass(frozen=True)
class Lost:
    """Audio the engine never transcribed: stream or input seconds."""

    start: float
    end: float | None  # None: to the end of the input (a file's decode stopped)
    reason: str

    def span(self) -> str:
        end = "the end" if self.end is None else f"{self.end:.1f} s"
        return f"{self.start:.1f} s to {end}"


class _Unavailable(Exception):
    """The engine did not answer within the wait allowed; the reason is the message."""


class RemoteEngine:
    """Whisper behind an OpenAI-compatible HTTP API.

    *on_notice* hears, on the calling thread, when the engine stops answering, when
    it answers again, and each span given up; without it they are logged as
    warnings."""

    def __init__(
        self,
        options: RemoteOptions,
        *,
        on_notice: Callable[[str], None] | None = None,
    ) -> None:
        import httpx

        if not options.url.startswith(("http://", "https://")):
            raise EngineError(
                f"The engine {options.url!r} is not a URL: give it as http://host:port "
                "(or https://)."
            )
        if options.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.options = options
        self.on_notice = on_notice
        self.losses: list[Lost] = []
        headers = {"Authorization": f"Bearer {options.key}"} if options.key else {}
        self._client = httpx.Client(
            base_url=options.base,
            headers=headers,
            timeout=httpx.Timeout(options.timeout, connect=options.connect_timeout),
            # Idle connections are dropped before uvicorn's 5 s keep-alive ends, so a
            # request never races the server closing the connection it reuses.
            limits=httpx.Limits(
                max_connections=options.concurrency,
                max_keepalive_connections=options.concurrency,
                keepalive_expiry=4.0,
            ),
        )
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._down_since: float | None = None  # monotonic time of the outage's first failure
        self._failures = 0  # tries failed in a row
        self._last_failure = 0.0
        self._reason = ""
        self._refused: dict[tuple[str | None, str], ModelError] = {}
        self._verbose = True  # asking for verbose_json (segment times), until refused
        try:
            self.models = self._list_models()
        except BaseException:
            self._client.close()
            raise
        self.model = options.model or (self.models[0] if self.models else FALLBACK_MODEL)

    @property
    def name(self) -> str:
        return self.model

    @property
    def concurrency(self) -> int:
        """Requests it takes at once: the scheduler runs this many workers."""
        return self.options.concurrency

    @property
    def url(self) -> str:
        return self.options.url

    @property
    def down(self) -> bool:
        """The last try failed: the engine is not answering now."""
        with self._lock:
            return self._failures > 0

    def close(self) -> None:
        """Stop waiting for the engine and close the connections (idempotent)."""
        self._closed.set()
        self._client.close()

    def __enter__(self) -> RemoteEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ the contract

    def check(self, options: TranscribeOptions) -> None:
        """Raise `ModelError` for a language code Whisper does not know, or for what
        the engine refused in a `round_trip` with these options. (What else it
        cannot do, only it knows: a decode it refuses is a `ModelError` then.)"""
        from faster_whisper.tokenizer import _LANGUAGE_CODES

        if options.language is not None and options.language not in _LANGUAGE_CODES:
            raise ModelError(
                f"Unknown language {options.language!r}: use a code such as en, es, fr, de "
                "or ja, or leave --language out to detect it."
            )
        with self._lock:
            refused = self._refused.get((options.language, options.task))
        if refused is not None:
            raise refused

    def round_trip(self, options: TranscribeOptions | None = None) -> float:
        """Send half a second of silence with *options* (the language, the task) and
        return the seconds the answer took. A refusal (a language the engine does
        not know, translation by an English-only model) is a `ModelError`, kept for
        `check`; no answer is an `EngineError`. Not retried: it says how things are."""
        options = options or TranscribeOptions()
        silence = np.zeros(SAMPLE_RATE // 2, np.float32)
        started = time.monotonic()
        try:
            self._request(
                silence, dataclasses.replace(options, word_timestamps=False), patient=False
            )
        except ModelError as exc:
            with self._lock:
                self._refused[options.language, options.task] = exc
            raise
        except _Unavailable as exc:
            raise EngineError(f"{str(exc)[:1].upper()}{str(exc)[1:]}.") from None
        return time.monotonic() - started

    def transcribe(
        self, audio: np.ndarray, options: TranscribeOptions | None = None, *, offset: float = 0.0
    ) -> Transcription:
        """Transcribe 16 kHz mono float32 *audio*; times shifted by *offset*.

        A provisional pass (``fit_fallback`` off: a partial) is tried once and gives
        no text when the engine does not answer. A live utterance (``fit_window``,
        as `TranscribeOptions.for_utterance` sets it) that waited in vain is a
        `Lost` span and no text; anything else (a window of an upload) raises
        `EngineError`."""
        options = options or TranscribeOptions()
        seconds = len(audio) / SAMPLE_RATE
        empty = Transcription([], options.language, 0.0, seconds)
        if seconds < MIN_SECONDS:
            return empty
        provisional = options.fit_window and not options.fit_fallback
        try:
            result = self._decode(audio, options, offset, patient=not provisional)
        except _Unavailable as exc:
            if provisional:
                return empty
            lost = self._lose(offset, offset + seconds, str(exc))
            if options.fit_window:
                return empty
            raise EngineError(f"{lost.reason}; {lost.span()} was not transcribed.") from None
        return result

    def transcribe_blocks(
        self,
        blocks: Iterable[np.ndarray],
        options: TranscribeOptions | None = None,
        *,
        window: float = 600.0,
        info: FileInfo | None = None,
        on_decoded: Callable[[float], None] | None = None,
    ) -> Iterator[Segment]:
        """Transcribe a long input a window of at most 30 s at a time (cut at quiet
        points, as `engine.batch.windows` cuts uploads), each with the text of the
        one before as its prompt, in the language of the first with speech.

        *window* is not used: one request holds one window. If the engine does not
        answer within `RemoteOptions.max_wait`, the segments stop there, and the
        `Lost` span in `losses` says from where."""
        options = options or TranscribeOptions()
        info = info if info is not None else FileInfo()

        def read() -> Iterator[np.ndarray]:
            for block in blocks:
                info.duration += len(block) / SAMPLE_RATE
                if on_decoded is not None:
                    on_decoded(info.duration)
                yield block

        offset, previous, language = 0.0, "", options.language
        for audio in windows(read()):
            asked = dataclasses.replace(options, language=language)
            if options.condition_on_previous_text and previous:
                asked = dataclasses.replace(asked, context=previous)
            try:
                result = self._decode(audio, asked, offset, patient=True)
            except _Unavailable as exc:
                self._lose(offset, None, str(exc), tell=False)  # the caller says it
                return
            if result.segments:
                previous = result.text
                language = language or result.language
                if info.language is None:
                    info.language = result.language
                    info.language_probability = result.language_probability
            for segment in result.segments:
                info.segments.append(segment)
                yield segment
            offset += len(audio) / SAMPLE_RATE

    # ------------------------------------------------------------------ decoding

    def _decode(
        self, audio: np.ndarray, options: TranscribeOptions, offset: float, *, patient: bool
    ) -> Transcription:
        body = self._request(audio, options, patient=patient)
        result = _transcription(body, options, offset, len(audio) / SAMPLE_RATE)
        if options.context and repeats_itself(result.text):
            # As the local engine does: previous text can make Whisper say a
            # sentence twice; the audio alone is decoded again.
            log.info("a decode with context repeated itself; decoding it without")
            plain = dataclasses.replace(options, context=None)
            body = self._request(audio, plain, patient=patient)
            result = _transcription(body, plain, offset, len(audio) / SAMPLE_RATE)
        return result

    def _request(
        self, audio: np.ndarray, options: TranscribeOptions, *, patient: bool = True
    ) -> dict[str, Any]:
        """POST *audio*; the answer's JSON. Tries again with backoff while the outage
        is younger than `max_wait` (once if not *patient*), then `_Unavailable`.
        A refusal is a `ModelError` (400, 422) or an `EngineError`."""
        import httpx

        translate = options.task == "translate"
        path = "/audio/translations" if translate else "/audio/transcriptions"
        upload = {"file": _encoded(audio, self.options.audio_format)}
        tries = 0
        while True:
            fields = _fields(self.model, options, translate, self._verbose)
            self._may_try()
            retry_after: float | None = None
            try:
                response = self._client.post(path, data=fields, files=upload)
            except httpx.TimeoutException:
                problem = f"no answer within {self.options.timeout:g} s"
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                if response.status_code < 400:
                    self._answered()
                    return self._json(response)
                if self._verbose and _refuses_verbose(response):
                    # An engine without segment times (gpt-4o-transcribe, some
                    # servers): plain text from now on, each decode one segment.
                    log.info("the engine at %s has no verbose_json: asking for json", self.url)
                    self._verbose = False
                    continue
                if response.status_code not in RETRY_STATUS:
                    raise self._refusal(response)
                problem = f"{response.status_code} {response.reason_phrase}".strip()
                retry_after = _retry_after(response.headers.get("Retry-After"))
            tries += 1
            wait = self._failed(problem, tries, retry_after)
            if not patient or wait is None:
                raise _Unavailable(self._reason)
            if self._closed.wait(wait):
                raise _Unavailable(f"{self._reason} (stopped waiting)")

    def _may_try(self) -> None:
        """Raise `_Unavailable` without a request while the engine has been down
        longer than utterances wait and the last try failed under `PROBE_INTERVAL`
        ago."""
        with self._lock:
            if self._down_since is None:
                return
            now = time.monotonic()
            past = now - self._down_since >= self.options.max_wait
            if past and now - self._last_failure < PROBE_INTERVAL:
                raise _Unavailable(self._reason)

    def _failed(self, problem: str, tries: int, retry_after: float | None) -> float | None:
        """Note a failed try; the seconds to wait before the next, or None when the
        outage has lasted as long as utterances wait."""
        now = time.monotonic()
        with self._lock:
            first = self._down_since is None
            if first:
                self._down_since = now
            self._failures += 1
            self._last_failure = now
            waited = now - (self._down_since or now)
            self._reason = (
                f"the engine at {self.url} did not answer for {waited:.0f} s ({problem})"
                if waited >= 1
                else f"the engine at {self.url} did not answer ({problem})"
            )
            # A connection the server closed as it was reused fails once: the second
            # failure in a row is the one told.
            tell = self._failures == 2
        if tell:
            self._notice(
                f"The engine at {self.url} is not answering ({problem}); transcription "
                f"waits for it up to {self.options.max_wait:g} s."
            )
        low, high = BACKOFF
        wait = min(high, low * 2.0 ** (tries - 1)) * random.uniform(0.8, 1.2)
        if retry_after is not None:
            wait = max(wait, retry_after)
        if waited + wait > self.options.max_wait:
            return None
        return wait

    def _answered(self) -> None:
        with self._lock:
            since, failures = self._down_since, self._failures
            self._down_since, self._failures = None, 0
        if since is not None and failures >= 2:
            self._notice(
                f"The engine at {self.url} answers again, after {time.monotonic() - since:.0f} s."
            )

    def _lose(self, start: float, end: float | None, reason: str, *, tell: bool = True) -> Lost:
        lost = Lost(start, end, reason)
        with self._lock:
            self.losses.append(lost)
        if tell:
            self._notice(f"Not transcribed: {lost.span()}: {reason}.")
        else:
            log.info("not transcribed: %s: %s", lost.span(), reason)
        return lost

    def _notice(self, message: str) -> None:
        if self.on_notice is not None:
            self.on_notice(message)
        else:
            log.warning("%s", message)

    # ------------------------------------------------------------------ answers

    def _json(self, response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise EngineError(
                f"The engine at {self.url} did not answer with the OpenAI audio API's JSON "
                f"(HTTP {response.status_code}, {response.headers.get('Content-Type', '?')}): "
                "check the URL."
            )
        return body

    def _refusal(self, response: httpx.Response) -> EngineError | ModelError:
        """The error for an answer that asking again will not change."""
        status, said = response.status_code, _message(response)
        if status in (401, 403):
            return EngineError(
                f"The engine at {self.url} refused the key ({status}: {said}): give it "
                "with --engine-key or LIVEWHISPER_ENGINE_KEY."
            )
        if status == 404:
            return EngineError(
                f"The engine at {self.url} has no model {self.model!r} or no audio API "
                f"(404: {said}): choose one of its models with --model, or check the URL."
            )
        if status in (400, 422):
            return ModelError(f"The engine at {self.url} refused the request: {said}")
        return EngineError(f"The engine at {self.url} failed ({status}: {said}).")

    def _list_models(self) -> list[str]:
        """The engine's models (``GET /v1/models``): also the check that it answers."""
        import httpx

        try:
            response = self._client.get("/models")
        except httpx.TransportError as exc:
            raise EngineError(
                f"Cannot reach the engine at {self.url} ({type(exc).__name__}: {exc}); "
                "check the URL and that the server is running."
            ) from None
        if response.status_code in (401, 403):
            raise self._refusal(response)
        if response.status_code >= 400:  # not every server lists its models
            log.info("the engine at %s lists no models (%s)", self.url, response.status_code)
            return []
        data = self._json(response).get("data")
        if not isinstance(data, list):
            return []
        return [str(m["id"]) for m in data if isinstance(m, dict) and "id" in m]


def _fields(
    model: str, options: TranscribeOptions, translate: bool, verbose: bool = True
) -> dict[str, Any]:
    """The form fields of a request: only OpenAI's own, so any engine takes them.
    Without *verbose*, plain ``json``: text without times."""
    fields: dict[str, Any] = {
        "model": model,
        "response_format": "verbose_json" if verbose else "json",
        "temperature": f"{options.temperature[0]:g}",
    }
    prompt = _prompt(options)
    if prompt:
        fields["prompt"] = prompt
    if translate:
        return fields  # the translations route takes no language or granularities
    if options.language:
        fields["language"] = options.language
    if verbose:
        fields["timestamp_granularities[]"] = (
            ["segment", "word"] if options.word_timestamps else ["segment"]
        )
    if options.hotwords:
        fields["keywords[]"] = [k.strip() for k in options.hotwords.split(",") if k.strip()]
    return fields


def _prompt(options: TranscribeOptions) -> str | None:
    """The initial prompt, then the context, as the local engine gives Whisper its
    previous text; context said in another language than the one asked for is left
    out. (With no language asked for, the context goes: the engine detects the
    language itself, and a stream's last language is the likely one.)"""
    context = options.context
    if context and options.language and options.context_language not in (None, options.language):
        context = None
    parts = [p.strip() for p in (options.initial_prompt, context) if p and p.strip()]
    return " ".join(parts) or None


def _encoded(audio: np.ndarray, fmt: str) -> tuple[str, bytes, str]:
    """The audio as a file to upload: 16 kHz mono 16-bit WAV, or FLAC."""
    pcm = to_pcm16(audio)
    buf = io.BytesIO()
    if fmt == "flac":
        import av

        with av.open(buf, "w", format="flac") as out:
            stream = out.add_stream("flac", rate=SAMPLE_RATE, layout="mono")
            frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = SAMPLE_RATE
            for packet in [*stream.encode(frame), *stream.encode(None)]:
                out.mux(packet)
        return "audio.flac", buf.getvalue(), "audio/flac"
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(pcm.tobytes())
    return "audio.wav", buf.getvalue(), "audio/wav"


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds: a number, or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _refuses_verbose(response: httpx.Response) -> bool:
    """A 400 or 422 that names the response format: the engine has no verbose_json."""
    said = _message(response)
    return response.status_code in (400, 422) and (
        "verbose_json" in said or "response_format" in said
    )


def _message(response: httpx.Response) -> str:
    """What an error answer says: OpenAI's ``{"error": {"message"}}``, FastAPI's
    ``{"detail"}``, or its text."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:200] or response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if body.get("detail"):
            return str(body["detail"])
    return str(body)[:200]


# ---------------------------------------------------------------------- the answer


def _transcription(
    body: dict[str, Any], options: TranscribeOptions, offset: float, duration: float
) -> Transcription:
    """``verbose_json`` as a `Transcription`: times clamped to the audio and shifted by
    *offset*, each word in the segment it starts in, and what the guards take for
    invented text dropped. An answer without segments is one segment over the audio."""

    def clamp(value: Any) -> float:
        return offset + min(max(_number(value, 0.0), 0.0), duration)

    raw = [s for s in body.get("segments") or [] if isinstance(s, dict)]
    if not raw and str(body.get("text", "")).strip():
        raw = [{"start": 0.0, "end": duration, "text": body["text"]}]
    words = [w for w in body.get("words") or [] if isinstance(w, dict) and w.get("word")]
    segments = []
    for i, s in enumerate(raw):
        start, end, text = clamp(s.get("start")), clamp(s.get("end")), str(s.get("text", ""))
        n = len(words) if i == len(raw) - 1 else 0
        while n < len(words) and clamp(words[n].get("start")) < end:
            n += 1
        mine, words = words[:n], words[n:]
        spelt = _spelt(text, [str(w["word"]).strip() for w in mine])
        segment = Segment(
            start=start,
            end=max(start, end),
            text=text.strip(),
            words=tuple(
                Word(
                    clamp(w.get("start")),
                    clamp(w.get("end")),
                    t,
                    _number(w.get("probability"), 1.0),
                )
                for w, t in zip(mine, spelt, strict=True)
            ),
            avg_logprob=_number(s.get("avg_logprob"), 0.0),
            no_speech_prob=_number(s.get("no_speech_prob"), 0.0),
            compression_ratio=_number(s.get("compression_ratio"), 0.0),
        )
        if segment.text and not is_hallucination(segment, options):
            segments.append(segment)
    # When a language was asked for, the text is in it (OpenAI answers its name,
    # "english", where Whisper's code is "en").
    language = options.language or str(body.get("language") or "").lower() or None
    return Transcription(segments, language, 0.0, duration)


def _spelt(text: str, words: list[str]) -> list[str]:
    """The words as faster-whisper spells them, from the segment's *text*: each with
    the space before it and the punctuation after it (OpenAI's words have neither;
    a live stream regroups words at spaces), so that joined they give the text."""
    starts: list[int | None] = []
    at = 0
    for word in words:
        found = text.find(word, at) if word else -1
        starts.append(found if found >= 0 else None)
        at = found + len(word) if found >= 0 else at
    out = []
    for k, word in enumerate(words):
        begin = starts[k]
        if begin is None:
            out.append(" " + word)
            continue
        after = next((j for j in starts[k + 1 :] if j is not None), len(text))
        piece = text[begin : len(text[:after].rstrip())]
        glued = k > 0 and begin > 0 and not text[begin - 1].isspace()
        out.append(piece if glued else " " + piece)
    return out


def _number(value: Any, default: float) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default
