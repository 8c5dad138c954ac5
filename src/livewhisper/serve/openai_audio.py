"""OpenAI's audio API on the local model: ``/v1/audio/transcriptions``,
``/v1/audio/translations`` and ``/v1/models``, as Starlette routes.

Clients written for OpenAI (its SDKs, curl scripts) work unchanged against the
server's model: the model names ``whisper-1`` and the loaded model's own name
both mean that model. An upload is decoded a window at a time as batch jobs of
the scheduler the live sessions share (`engine.batch`), behind their work, so a
long file never holds up live captions for more than one window. A short upload
(one window, under 20 s: an utterance a remote front-end sends) is decoded in a
window fitted to it, as live utterances are, and the usual way only if that
result looks wrong: a 3 s clip then costs a 13 s encode, not 30 s. Fields the local
model cannot honour are refused with a 400 that says so; errors come in OpenAI's
shape, ``{"error": {"message", "type", "param", "code"}}``. docs/openai-api.md
lists every field.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import IO, Any, cast

import numpy as np
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route
from starlette.types import Message, Receive, Scope, Send

from livewhisper.audio.files import AudioFile, open_audio
from livewhisper.engine.batch import BatchDecode, windows
from livewhisper.engine.contract import TranscribeOptions, Transcription
from livewhisper.engine.scheduler import Scheduler, SchedulerStopped
from livewhisper.errors import AudioError, ModelError
from livewhisper.serve import openai_errors as errors
from livewhisper.serve.admission import token_given
from livewhisper.serve.openai_errors import OpenAIError
from livewhisper.transcript import Segment
from livewhisper.writers import make_writer

log = logging.getLogger(__name__)

#: The model name OpenAI's clients send; here it means the loaded model.
OPENAI_MODEL = "whisper-1"
FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
#: The fields each route reads (a list field without its ``[]``).
TRANSCRIPTION_FIELDS = frozenset(
    {
        "file",
        "model",
        "language",
        "prompt",
        "temperature",
        "response_format",
        "timestamp_granularities",
        "keywords",
        "stream",
        "chunking_strategy",
    }
)
TRANSLATION_FIELDS = frozenset({"file", "model", "prompt", "temperature", "response_format"})
#: OpenAI's fields that the local model cannot honour, and why.
UNSUPPORTED = {
    "include": "token log probabilities are not returned by this server",
    "known_speaker_names": "speaker names need a diarizing model, which this server does not have",
    "known_speaker_references": "speaker references need a diarizing model, which this server "
    "does not have",
    "languages": "give one language in `language`, or leave it out to detect it",
}
#: Whisper's fallback: from the temperature asked for up to 1 in these steps.
TEMPERATURE_STEP = 0.2


def openai_routes(
    scheduler: Scheduler,
    *,
    token: str | None,
    max_upload_mb: float = 100,
    max_uploads: int = 2,
) -> list[BaseRoute]:
    """The routes of OpenAI's audio API over *scheduler*'s model.

    *token*: required as ``Authorization: Bearer <token>`` (the SDKs' API key) when
    set. *max_upload_mb*: the largest request body (413 above). *max_uploads*:
    uploads received or decoded at once (429 beyond: the model is shared with live
    sessions).
    """
    if max_upload_mb <= 0 or max_uploads < 1:
        raise ValueError("max_upload_mb must be positive and max_uploads at least 1")
    api = _AudioApi(scheduler, token, int(max_upload_mb * 1_000_000), max_uploads)
    return [
        Route("/v1/audio/transcriptions", api.transcriptions, methods=["POST"]),
        Route("/v1/audio/translations", api.translations, methods=["POST"]),
        Route("/v1/models", api.models, methods=["GET"]),
        Route("/v1/models/{model:path}", api.model, methods=["GET"]),
    ]


@dataclass(frozen=True)
class AudioRequest:
    """What an upload asks for, checked."""

    upload: UploadFile
    options: TranscribeOptions
    response_format: str = "json"
    segments: bool = True  # verbose_json: segments
    words: bool = False  # verbose_json: words
    stream: bool = False  # server-sent events


class _AudioApi:
    def __init__(
        self, scheduler: Scheduler, token: str | None, max_bytes: int, max_uploads: int
    ) -> None:
        self.scheduler = scheduler
        self.token = token
        self.max_bytes = max_bytes
        self.max_uploads = max_uploads
        self.uploads = 0  # being received or decoded; only the event loop changes it
        self.created = int(time.time())

    @property
    def model_ids(self) -> tuple[str, ...]:
        return (self.scheduler.engine.name, OPENAI_MODEL)

    # ---------------------------------------------------------------- models

    async def models(self, request: Request) -> Response:
        try:
            self._authorize(request)
        except OpenAIError as exc:
            return exc.response()
        return JSONResponse({"object": "list", "data": [self._model(m) for m in self.model_ids]})

    async def model(self, request: Request) -> Response:
        try:
            self._authorize(request)
            return JSONResponse(self._model(self._known_model(request.path_params["model"])))
        except OpenAIError as exc:
            return exc.response()

    def _model(self, name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": self.created, "owned_by": "livewhisper"}

    def _known_model(self, name: str) -> str:
        if name not in self.model_ids:
            raise OpenAIError(
                f"The model `{name}` does not exist on this server: it serves "
                f"{self.scheduler.engine.name}, as `{self.scheduler.engine.name}` or "
                f"`{OPENAI_MODEL}`.",
                param="model",
                code=errors.MODEL_NOT_FOUND,
                status=404,
            )
        return name

    def _authorize(self, request: Request) -> None:
        if not token_given(self.token, request):
            raise errors.invalid_api_key()

    # ---------------------------------------------------------------- audio

    async def transcriptions(self, request: Request) -> Response:
        return await self._audio(request, "transcribe")

    async def translations(self, request: Request) -> Response:
        return await self._audio(request, "translate")

    async def _audio(self, request: Request, task: str) -> Response:
        """Every check, then the decode; cleaning up is handed to a streamed answer."""
        declared = request.headers.get("Content-Length", "")
        body = _LimitedBody(
            request.receive, self.max_bytes, int(declared) if declared.isdigit() else None
        )
        async with contextlib.AsyncExitStack() as cleanup:
            try:
                self._authorize(request)
                self._take_upload_slot()
                cleanup.callback(self._release_upload_slot)
                form = await self._read_form(request, body)
                cleanup.push_async_callback(form.close)
                asked = self._parse(form, task)
                audio = await asyncio.to_thread(_open, asked.upload)
                reader = _Reader(audio)
                cleanup.callback(reader.close_soon)
                first, alone = await asyncio.to_thread(reader.first)
                if first is None:
                    raise reader.error() or OpenAIError(
                        f"{audio.name}: the file contains no audio.", param="file"
                    )
                options = asked.options
                if alone:
                    options = dataclasses.replace(options, fit_window=True)
                decode = BatchDecode(self.scheduler, options)
                cleanup.callback(decode.close)
                decoded = _decoded(decode, reader, first)
                if asked.stream:
                    return _EventStream(_events(decoded, reader), cleanup.pop_all())
                results = await _unless_disconnected(_collect(decoded), request.receive)
                problem = reader.error()
                if problem is not None:
                    raise problem
                return _document(asked, task, decode, results)
            except OpenAIError as exc:
                # A client still sending its file would not hear an answer given
                # before the body has been read: the closed socket resets it.
                await body.drain(2 * self.max_bytes)
                return exc.response()

    def _take_upload_slot(self) -> None:
        if self.uploads >= self.max_uploads:
            raise OpenAIError(
                f"The server is taking {self.uploads} uploads already, as many as it "
                "takes at once; try again in a moment.",
                type=errors.RATE_LIMIT,
                code=errors.RATE_LIMIT_EXCEEDED,
                status=429,
                headers={"Retry-After": "2"},
            )
        self.uploads += 1

    def _release_upload_slot(self) -> None:
        self.uploads -= 1

    async def _read_form(self, request: Request, body: _LimitedBody) -> FormData:
        """The multipart body, at most `max_bytes` of it (413 past that)."""
        if not request.headers.get("Content-Type", "").startswith("multipart/form-data"):
            raise OpenAIError(
                "Send the request as multipart/form-data, with the audio in the `file` field.",
            )
        declared = request.headers.get("Content-Length", "")
        try:
            if declared.isdigit() and int(declared) > self.max_bytes:
                raise _TooLarge
            return await Request(request.scope, body.receive).form(max_files=1, max_fields=100)
        except _TooSlow:
            raise OpenAIError(
                f"The request's body stopped arriving for {BODY_TIMEOUT:g} s; send it again.",
                status=408,
            ) from None
        except _TooLarge:
            raise OpenAIError(
                f"The request is larger than this server's limit of "
                f"{self.max_bytes / 1_000_000:g} MB.",
                param="file",
                code=errors.FILE_TOO_LARGE,
                status=413,
            ) from None
        except HTTPException as exc:  # what Starlette makes of a malformed body
            raise OpenAIError(f"The multipart body cannot be read: {exc.detail}") from None

    def _parse(self, form: FormData, task: str) -> AudioRequest:
        fields: dict[str, list[str | UploadFile]] = {}
        for key, value in form.multi_items():
            name = key.split("[", 1)[0]
            if name == "chunking_strategy" and (key != name or value != "auto"):
                raise OpenAIError(
                    "Only chunking_strategy=auto is supported: the server cuts long audio "
                    "at pauses itself.",
                    param="chunking_strategy",
                    code=errors.UNSUPPORTED_VALUE,
                )
            if name in UNSUPPORTED:
                raise OpenAIError(f"`{name}` is not supported: {UNSUPPORTED[name]}.", param=name)
            known = TRANSCRIPTION_FIELDS if task == "transcribe" else TRANSLATION_FIELDS
            if name not in known:
                raise OpenAIError(f"Unrecognized request argument supplied: {key}", param=key)
            fields.setdefault(name, []).append(value)

        def text(name: str) -> str | None:
            values = fields.get(name)
            if not values:
                return None
            if len(values) > 1 or not isinstance(values[0], str):
                raise OpenAIError(f"`{name}` must be given once, as text.", param=name)
            return values[0]

        model = text("model")
        if model is None:
            raise OpenAIError("You must provide a model parameter.", param="model")
        self._known_model(model)
        uploads = fields.get("file", [])
        if len(uploads) != 1 or not isinstance(uploads[0], UploadFile):
            raise OpenAIError("Send the audio as one file in the `file` field.", param="file")
        response_format = text("response_format") or "json"
        if response_format not in FORMATS:
            raise OpenAIError(
                f"response_format {response_format!r} is not supported: use one of "
                f"{', '.join(FORMATS)} (diarized_json needs a diarizing model).",
                param="response_format",
                code=errors.UNSUPPORTED_VALUE,
            )
        granularities = {str(g) for g in fields.get("timestamp_granularities", [])}
        if granularities - {"segment", "word"}:
            raise OpenAIError(
                "timestamp_granularities[] takes `segment` and `word`.",
                param="timestamp_granularities",
            )
        if granularities and response_format != "verbose_json":
            raise OpenAIError(
                "timestamp_granularities[] needs response_format=verbose_json.",
                param="timestamp_granularities",
            )
        stream = _boolean(text("stream"), "stream")
        if stream and response_format not in ("json", "text"):
            raise OpenAIError(
                "stream=true sends text events: use response_format json or text.",
                param="stream",
            )
        keywords = [k.strip() for k in fields.get("keywords", []) if isinstance(k, str)]
        options = TranscribeOptions(
            language=(text("language") or "").lower() or None,
            task=task,
            initial_prompt=text("prompt") or None,
            word_timestamps="word" in granularities,
            temperature=_temperatures(text("temperature")),
            hotwords=", ".join(k for k in keywords if k) or None,
        )
        self._check(options)
        return AudioRequest(
            upload=uploads[0],
            options=options,
            response_format=response_format,
            segments=not granularities or "segment" in granularities,
            words="word" in granularities,
            stream=stream,
        )

    def _check(self, options: TranscribeOptions) -> None:
        """What the model cannot do (a language it does not know, translation by an
        English-only model) is a 400 naming the field."""
        engine = self.scheduler.engine
        for param, asked in (
            ("model", dataclasses.replace(options, language=None)),
            ("language", options),
        ):
            try:
                engine.check(asked)
            except ModelError as exc:
                raise OpenAIError(str(exc), param=param, code=errors.UNSUPPORTED_VALUE) from None


def _boolean(value: str | None, name: str) -> bool:
    if value is None or value.lower() == "false":
        return False
    if value.lower() == "true":
        return True
    raise OpenAIError(f"`{name}` must be true or false, not {value!r}.", param=name)


def _temperatures(value: str | None) -> tuple[float, ...]:
    """The temperatures to try, as Whisper does: the one asked for (0 by default), then
    higher ones in steps of `TEMPERATURE_STEP` up to 1 while a decode looks wrong."""
    try:
        first = float(value) if value else 0.0
    except ValueError:
        first = -1.0
    if not 0.0 <= first <= 1.0:
        raise OpenAIError(
            f"temperature must be a number from 0 to 1, not {value!r}.", param="temperature"
        )
    steps = int((1.0 - first) / TEMPERATURE_STEP + 1e-9)
    return tuple(round(first + TEMPERATURE_STEP * i, 6) for i in range(steps + 1))


# -------------------------------------------------------------------- the body


#: Seconds a request body may go without a byte arriving (a slow client holds an
#: upload slot): then 408.
BODY_TIMEOUT = 30.0


class _TooLarge(Exception):
    pass


class _TooSlow(Exception):
    pass


class _LimitedBody:
    """The request's ``receive``, raising `_TooLarge` past *limit* bytes of body, and
    `_TooSlow` when no byte arrives for `BODY_TIMEOUT`. *declared*: the
    Content-Length, if given."""

    def __init__(self, receive: Receive, limit: int, declared: int | None = None) -> None:
        self._receive = receive
        self.limit = limit
        self.declared = declared
        self.size = 0
        self.more = True  # some of the body has not arrived yet

    async def receive(self) -> Message:
        message = await self._next()
        if self.size > self.limit:
            raise _TooLarge
        return message

    async def drain(self, up_to: int) -> None:
        """Read the rest of the body away, unless more than *up_to* bytes in all (or
        declared so), or it stops arriving."""
        if self.declared is not None and self.declared > up_to:
            return
        with contextlib.suppress(_TooSlow):
            while self.more and self.size <= up_to:
                await self._next()

    async def _next(self) -> Message:
        try:
            message = await asyncio.wait_for(self._receive(), BODY_TIMEOUT)
        except asyncio.TimeoutError:
            raise _TooSlow from None
        if message["type"] == "http.request":
            self.size += len(message.get("body", b""))
            self.more = bool(message.get("more_body", False))
        else:  # the client went away
            self.more = False
        return message


# -------------------------------------------------------------------- the audio


class _NamedFile:
    """An uploaded file under the name the client gave it (for `open_audio`'s messages)."""

    def __init__(self, file: IO[bytes], name: str) -> None:
        self._file = file
        self.name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._file, attr)


def _open(upload: UploadFile) -> AudioFile:
    named = cast(IO[bytes], _NamedFile(upload.file, upload.filename or "the upload"))
    try:
        return open_audio(named)
    except AudioError as exc:
        raise OpenAIError(str(exc), param="file") from None


class _Reader:
    """The windows of an opened upload, read one at a time in a worker thread of the
    event loop's; closed once no thread is reading it."""

    def __init__(self, audio: AudioFile) -> None:
        self.audio = audio
        self._windows = windows(audio.blocks())
        self._ahead: list[np.ndarray] = []  # read by `first`, not yet by `next`
        self._lock = threading.Lock()

    def next(self) -> np.ndarray | None:
        with self._lock:
            return self._ahead.pop() if self._ahead else next(self._windows, None)

    def first(self) -> tuple[np.ndarray | None, bool]:
        """The first window, and whether it is the only one (the second is read
        ahead for `next`)."""
        with self._lock:
            first = next(self._windows, None)
            following = None if first is None else next(self._windows, None)
            if following is not None:
                self._ahead.append(following)
            return first, following is None

    def error(self) -> OpenAIError | None:
        """Decoding stopped early (a corrupt or truncated file): a 400 that says so."""
        if self.audio.problem is None:
            return None
        return OpenAIError(f"{self.audio.name}: {self.audio.problem}.", param="file")

    def close(self) -> None:
        with self._lock:
            self._windows.close()
            self.audio.close()

    def close_soon(self) -> None:
        """Close in a thread of the loop's, after a read in progress (the event loop
        never waits for one)."""
        asyncio.get_running_loop().run_in_executor(None, self.close)


async def _decoded(
    decode: BatchDecode, reader: _Reader, first: np.ndarray
) -> AsyncIterator[tuple[float, Transcription]]:
    """Each window's start and transcription, decoded by the scheduler in turn."""
    audio: np.ndarray | None = first
    while audio is not None:
        start = decode.offset
        try:
            future = decode.submit(audio)
            transcription = await asyncio.wrap_future(future)
        except SchedulerStopped:
            raise OpenAIError(
                "The server is shutting down.",
                type=errors.SERVICE_UNAVAILABLE,
                code=errors.SERVER_IS_OVERLOADED,
                status=503,
            ) from None
        except Exception as exc:  # the engine failed: the client hears why
            log.exception("decoding a window of an upload failed")
            raise OpenAIError(
                f"Decoding failed: {exc}", type=errors.SERVER_ERROR, status=500
            ) from None
        yield start, transcription
        audio = await asyncio.to_thread(reader.next)


async def _collect(
    decoded: AsyncIterator[tuple[float, Transcription]],
) -> list[tuple[float, Transcription]]:
    return [item async for item in decoded]


async def _unless_disconnected(
    work: Coroutine[Any, Any, list[tuple[float, Transcription]]], receive: Receive
) -> list[tuple[float, Transcription]]:
    """The result of *work*, or, if the client goes away first, *work* cancelled (its
    window still queued is not decoded for nobody) and an empty list."""

    async def gone() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    task, watch = asyncio.ensure_future(work), asyncio.ensure_future(gone())
    try:
        await asyncio.wait((task, watch), return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            log.info("the client of an upload went away; its decoding stops")
            return []
        return task.result()
    finally:
        task.cancel()
        watch.cancel()


# -------------------------------------------------------------------- answers


def _document(
    asked: AudioRequest,
    task: str,
    decode: BatchDecode,
    results: list[tuple[float, Transcription]],
) -> Response:
    segments = [s for _, t in results for s in t.segments]
    text = Transcription(segments, decode.language).text
    fmt = asked.response_format
    if fmt == "text":
        return PlainTextResponse(text + "\n")
    if fmt in ("srt", "vtt"):
        media = "text/vtt" if fmt == "vtt" else "text/plain"
        return PlainTextResponse(_subtitles(fmt, segments), media_type=media)
    usage = {"type": "duration", "seconds": round(decode.offset, 3)}
    if fmt == "json":
        return JSONResponse(
            {"text": text, "usage": usage} if task == "transcribe" else {"text": text}
        )
    document: dict[str, Any] = {
        "task": task,
        # A translation's language is the text's, as OpenAI's: always English.
        "language": (decode.language or "") if task == "transcribe" else "en",
        "duration": round(decode.offset, 3),
        "text": text,
    }
    if asked.segments:
        numbered = enumerate((start, s) for start, t in results for s in t.segments)
        document["segments"] = [
            _verbose_segment(i, start, s, asked.options) for i, (start, s) in numbered
        ]
    if asked.words:
        document["words"] = [
            {"word": w.word.strip(), "start": round(w.start, 3), "end": round(w.end, 3)}
            for s in segments
            for w in s.words
        ]
    if task == "transcribe":
        document["usage"] = usage
    return JSONResponse(document)


def _verbose_segment(
    index: int, window_start: float, segment: Segment, options: TranscribeOptions
) -> dict[str, Any]:
    """A segment as OpenAI's verbose_json has it: *seek* is where its window starts
    (in 10 ms frames, as Whisper counts). The local engine keeps no tokens, nor the
    temperature a fallback reached: *tokens* is empty, *temperature* the first."""
    return {
        "id": index,
        "seek": round(window_start * 100),
        "start": round(segment.start, 3),
        "end": round(segment.end, 3),
        "text": " " + segment.text.strip(),
        "tokens": [],
        "temperature": options.temperature[0],
        "avg_logprob": segment.avg_logprob,
        "compression_ratio": segment.compression_ratio,
        "no_speech_prob": segment.no_speech_prob,
    }


def _subtitles(fmt: str, segments: list[Segment]) -> str:
    out = io.StringIO()
    writer = make_writer(fmt, out)
    writer.begin()
    for segment in segments:
        writer.write(segment)
    writer.end()
    return out.getvalue()


def _event(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


async def _events(
    decoded: AsyncIterator[tuple[float, Transcription]], reader: _Reader
) -> AsyncIterator[str]:
    """``transcript.text.delta`` for each segment as its window is decoded, then
    ``transcript.text.done`` with the whole text; an error after the answer has
    begun comes as an event in OpenAI's error shape, which the SDKs raise."""
    parts: list[str] = []
    try:
        async for _, transcription in decoded:
            for segment in transcription.segments:
                words = segment.text.strip()
                if words:
                    delta = f" {words}" if parts else words
                    parts.append(delta)
                    yield _event({"type": "transcript.text.delta", "delta": delta})
        problem = reader.error()
        if problem is not None:
            raise problem
    except OpenAIError as exc:
        yield _event(exc.body())
        return
    yield _event({"type": "transcript.text.done", "text": "".join(parts)})


class _EventStream(StreamingResponse):
    """Server-sent events that own the upload's clean-up, run once the answer ends
    however it ends (a client that goes away included)."""

    def __init__(self, events: AsyncIterator[str], cleanup: contextlib.AsyncExitStack) -> None:
        super().__init__(
            events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )
        self._cleanup = cleanup

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with self._cleanup:
            await super().__call__(scope, receive, send)
