"""OpenAI's audio API on the server, driven by the official ``openai`` SDK.

The routes run in a Starlette app under uvicorn on a free port. What the SDK sees
of the answers (every format, words, streaming, errors) is tested on the real
model and real speech, against the reference with a margin; what the routes do
with the model's time (windows, order, limits) with an engine that answers at once.
"""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import threading
import time
import warnings
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from livewhisper.audio.pcm import SAMPLE_RATE
from livewhisper.engine.contract import TranscribeOptions, Transcription
from livewhisper.engine.scheduler import Job, Scheduler
from livewhisper.errors import ModelError
from livewhisper.metrics import word_error_rate
from livewhisper.transcript import Segment

openai = pytest.importorskip("openai")
starlette_routing = pytest.importorskip("starlette.routing")

from livewhisper.serve.openai_audio import openai_routes  # noqa: E402

DATA = Path(__file__).parent / "data"
TOKEN = "secret-token"
MAX_WER = 0.15
JFK = "jfk.flac"
LONG = "asterisk_en_60s.flac"  # 75 s: four windows


@contextlib.contextmanager
def serving(routes: list[Any]) -> Iterator[str]:
    """*routes* in a Starlette app under uvicorn on a free port, in a thread; the
    base URL of the API. The socket listens before the thread starts, so a client
    can connect at once."""
    import uvicorn
    from starlette.applications import Starlette

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    config = uvicorn.Config(Starlette(routes=routes), lifespan="off", ws="none", log_config=None)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def client(url: str, key: str = TOKEN) -> Any:
    return openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=120)


def upload(name: str) -> tuple[str, bytes, str]:
    return (name, (DATA / name).read_bytes(), "audio/flac")


def translate(api: Any, **fields: Any) -> Any:
    """``audio.translations.create``, which this SDK marks deprecated: the route is
    still OpenAI's, and the one way to ask Whisper for its translation."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        return api.audio.translations.create(**fields)


# --- what the routes do with the model's time: an engine that answers at once -------


class WindowEngine:
    """English only, like tiny.en; each window becomes the segment "window N" over
    its audio, and the options it was decoded with are kept. Clear `release` to
    hold the worker in the next decode (`entered` says when it is there)."""

    name = "tiny.en"

    def __init__(self) -> None:
        self.decoded: list[tuple[float, float, TranscribeOptions]] = []
        self.release = threading.Event()
        self.release.set()
        self.entered = threading.Event()

    def check(self, options: TranscribeOptions) -> None:
        if options.task == "translate" or options.language not in (None, "en"):
            raise ModelError("Model tiny.en knows only English: use a multilingual model.")

    def transcribe(
        self, audio: np.ndarray, options: TranscribeOptions | None = None, *, offset: float = 0.0
    ) -> Transcription:
        self.entered.set()
        assert self.release.wait(30)
        seconds = len(audio) / SAMPLE_RATE
        self.decoded.append((offset, seconds, options or TranscribeOptions()))
        text = f"window {len(self.decoded)}"
        return Transcription([Segment(offset, offset + seconds, text)], "en", 1.0, seconds)


@pytest.fixture
def fake() -> Iterator[tuple[str, WindowEngine, Scheduler]]:
    engine = WindowEngine()
    with Scheduler(engine) as scheduler:  # type: ignore[arg-type]
        routes = openai_routes(scheduler, token=TOKEN, max_upload_mb=1, max_uploads=1)
        with serving(routes) as url:
            yield url, engine, scheduler


def test_models_lists_the_loaded_model_under_both_names(fake: Any) -> None:
    url, _, _ = fake
    with client(url) as api:
        ids = [m.id for m in api.models.list()]
        assert ids == ["tiny.en", "whisper-1"]
        model = api.models.retrieve("whisper-1")
        assert (model.id, model.object, model.owned_by) == ("whisper-1", "model", "livewhisper")
        with pytest.raises(openai.NotFoundError) as info:
            api.models.retrieve("gpt-4o-transcribe")
    assert info.value.body["code"] == "model_not_found"


@pytest.mark.parametrize("key", ["", "wrong-token"])
def test_a_missing_or_wrong_token_is_401(fake: Any, key: str) -> None:
    url, engine, _ = fake
    with client(url, key=key or "unused") as api:
        headers = {"Authorization": ""} if not key else {}
        with pytest.raises(openai.AuthenticationError) as info:
            api.models.list(extra_headers=headers)
        assert info.value.body["code"] == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            api.audio.transcriptions.create(
                model="whisper-1", file=upload(JFK), extra_headers=headers
            )
    assert engine.decoded == []


def test_an_unknown_model_is_404(fake: Any) -> None:
    url, engine, _ = fake
    with client(url) as api, pytest.raises(openai.NotFoundError) as info:
        api.audio.transcriptions.create(model="large-v3", file=upload(JFK))
    assert info.value.status_code == 404
    assert info.value.body == {
        "message": info.value.body["message"],
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }
    assert "tiny.en" in info.value.body["message"]
    assert engine.decoded == []


@pytest.mark.parametrize(
    "file",
    [
        ("noise.flac", b"this is not audio at all" * 100, "audio/flac"),
        ("empty.wav", b"", "audio/wav"),
    ],
    ids=["unreadable", "empty"],
)
def test_unreadable_or_empty_audio_is_400(fake: Any, file: tuple[str, bytes, str]) -> None:
    url, engine, _ = fake
    with client(url) as api, pytest.raises(openai.BadRequestError) as info:
        api.audio.transcriptions.create(model="whisper-1", file=file)
    assert info.value.body["param"] == "file"
    assert file[0] in info.value.body["message"]
    assert engine.decoded == []


def test_audio_without_samples_is_400(fake: Any) -> None:
    url, _, _ = fake
    header_only = io.BytesIO()
    with wave.open(header_only, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(SAMPLE_RATE)
    with client(url) as api, pytest.raises(openai.BadRequestError) as info:
        api.audio.transcriptions.create(
            model="whisper-1", file=("none.wav", header_only.getvalue())
        )
    assert "no audio" in info.value.body["message"]


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"response_format": "diarized_json"}, "response_format"),
        ({"known_speaker_names": ["agent"]}, "known_speaker_names"),
        ({"chunking_strategy": {"type": "server_vad", "threshold": 0.5}}, "chunking_strategy"),
        ({"include": ["logprobs"]}, "include"),
        ({"languages": ["en", "fr"]}, "languages"),
        ({"timestamp_granularities": ["word"]}, "timestamp_granularities"),
        ({"temperature": 1.5}, "temperature"),
        ({"language": "fr"}, "language"),
        ({"stream": True, "response_format": "srt"}, "stream"),
        ({"extra_body": {"beam_size": 2}}, "beam_size"),
    ],
)
def test_what_the_local_model_cannot_honour_is_400(
    fake: Any, fields: dict[str, Any], param: str
) -> None:
    url, engine, _ = fake
    with client(url) as api, pytest.raises(openai.BadRequestError) as info:
        api.audio.transcriptions.create(model="whisper-1", file=upload(JFK), **fields)
    assert info.value.body["param"] == param
    assert info.value.body["message"]
    assert engine.decoded == []


def test_translation_by_an_english_only_model_is_400(fake: Any) -> None:
    url, _, _ = fake
    with client(url) as api, pytest.raises(openai.BadRequestError) as info:
        translate(api, model="whisper-1", file=upload(JFK))
    assert info.value.body["param"] == "model"
    assert "English" in info.value.body["message"]


def test_an_upload_over_the_limit_is_413(fake: Any) -> None:
    url, engine, _ = fake
    big = (DATA / LONG).read_bytes()  # 0.87 MB, twice over the limit of 1 MB here
    with client(url) as api, pytest.raises(openai.APIStatusError) as info:
        api.audio.transcriptions.create(model="whisper-1", file=("big.flac", big + big))
    assert info.value.status_code == 413
    assert info.value.body["code"] == "file_too_large"
    assert engine.decoded == []


def test_an_upload_while_the_server_is_full_is_429(fake: Any) -> None:
    url, engine, _ = fake
    engine.release.clear()
    first: dict[str, Any] = {}

    def transcribe() -> None:
        with client(url) as api:
            first["text"] = api.audio.transcriptions.create(model="whisper-1", file=upload(JFK))

    worker = threading.Thread(target=transcribe)
    worker.start()
    try:
        assert engine.entered.wait(30)  # the one upload this server takes is decoding
        with client(url) as api, pytest.raises(openai.RateLimitError) as info:
            api.audio.transcriptions.create(model="whisper-1", file=upload(JFK))
        assert info.value.body["code"] == "rate_limit_exceeded"
        assert info.value.response.headers["Retry-After"]
    finally:
        engine.release.set()
        worker.join(30)
    assert first["text"].text == "window 1"


def test_a_client_that_goes_away_stops_its_upload(
    fake: Any, caplog: pytest.LogCaptureFixture
) -> None:
    url, engine, _ = fake
    caplog.set_level(logging.INFO, "livewhisper.serve.openai_audio")
    engine.release.clear()  # the first window takes longer than the client waits
    with client(url) as api, pytest.raises(openai.APITimeoutError):
        api.with_options(timeout=1.0).audio.transcriptions.create(
            model="whisper-1", file=upload(LONG)
        )
    # Once the server has seen the client go (not before: a window decoded by then
    # is fairly decoded), the engine may finish the first window.
    deadline = time.monotonic() + 10
    while not any("went away" in r.getMessage() for r in caplog.records):
        assert time.monotonic() < deadline, "the server did not see the client go"
        time.sleep(0.01)
    engine.release.set()
    # The upload's slot comes free (the SDK retries the 429 of a slot not free yet)...
    with client(url) as api:
        result = api.with_options(max_retries=3).audio.transcriptions.create(
            model="whisper-1", file=upload(JFK)
        )
    assert result.text == "window 2"
    # ...and the first upload's windows after the first were never decoded.
    assert [offset for offset, _, _ in engine.decoded] == [0.0, 0.0]


def test_a_long_upload_is_decoded_a_window_at_a_time(fake: Any) -> None:
    url, engine, _ = fake
    with client(url) as api:
        result = api.audio.transcriptions.create(
            model="tiny.en", file=upload(LONG), response_format="verbose_json"
        )
    windows = [(offset, seconds) for offset, seconds, _ in engine.decoded]
    # Cut in the pauses of each window's last 10 s: windows of 20 to 30 s.
    assert len(windows) == 4
    assert all(20.0 <= seconds <= 30.0 for _, seconds in windows[:-1])
    ends = [offset + seconds for offset, seconds in windows]
    assert [offset for offset, _ in windows] == [0.0, *ends[:-1]]  # nothing lost or repeated
    assert result.duration == pytest.approx(ends[-1], abs=1e-3)
    assert [s.seek for s in result.segments] == [round(o * 100) for o, _ in windows]
    # Each window gets the text of the one before as Whisper's previous text.
    contexts = [o.context for _, _, o in engine.decoded]
    assert contexts == [None, "window 1", "window 2", "window 3"]
    assert result.text == "window 1 window 2 window 3 window 4"


def test_the_fields_reach_the_engine(fake: Any) -> None:
    url, engine, _ = fake
    with client(url) as api:
        api.audio.transcriptions.create(
            model="whisper-1",
            file=upload(JFK),
            language="en",
            prompt="Inaugural address.",
            temperature=0.4,
            keywords=["Americans", "country"],
            chunking_strategy="auto",
            response_format="verbose_json",
            timestamp_granularities=["word", "segment"],
        )
    (_, _, options), *_ = engine.decoded
    assert options.language == "en" and options.task == "transcribe"
    assert options.initial_prompt == "Inaugural address."
    assert options.temperature == pytest.approx((0.4, 0.6, 0.8, 1.0))
    assert options.hotwords == "Americans, country"
    assert options.word_timestamps


def test_live_finals_go_before_the_next_window_of_an_upload(fake: Any) -> None:
    url, engine, scheduler = fake
    engine.release.clear()
    order: list[str] = []
    answered = threading.Event()

    def transcribe() -> None:
        with client(url) as api:
            api.audio.transcriptions.create(model="whisper-1", file=upload(LONG))
        answered.set()

    worker = threading.Thread(target=transcribe)
    worker.start()
    assert engine.entered.wait(30)  # the upload's first window is decoding
    live = Job(
        "live",
        "final",
        0,
        np.zeros(SAMPLE_RATE, np.float32),
        123.0,
        TranscribeOptions(),
        lambda result: order.append(f"live final after {len(engine.decoded) - 1} windows"),
    )
    scheduler.submit(live)
    engine.release.set()
    worker.join(30)
    assert answered.is_set()
    # The final came while window 1 was decoding: it went before the next window.
    assert order == ["live final after 1 windows"]
    assert [offset for offset, _, _ in engine.decoded].index(123.0) == 1


# --- the answers on real speech ---------------------------------------------------


@pytest.fixture(scope="module")
def real(engine: Any) -> Iterator[str]:
    with Scheduler(engine) as scheduler, serving(openai_routes(scheduler, token=TOKEN)) as url:
        yield url


def _srt_text(document: str) -> str:
    lines = [line for line in document.splitlines() if line.strip()]
    return " ".join(line for line in lines if "-->" not in line and not line.isdigit())


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["json", "text", "srt", "vtt", "verbose_json"])
def test_every_response_format(real: str, references: dict[str, str], fmt: str) -> None:
    with client(real) as api:
        result = api.audio.transcriptions.create(
            model="whisper-1", file=upload(JFK), response_format=fmt
        )
    if fmt == "json":
        text = result.text
        assert result.usage.seconds == pytest.approx(11.0, abs=0.1)
    elif fmt == "text":
        text = result
    elif fmt == "srt":
        assert result.startswith("1\n00:00:00,") and " --> " in result
        text = _srt_text(result)
    elif fmt == "vtt":
        assert result.startswith("WEBVTT\n\n00:00:")
        text = _srt_text(result.removeprefix("WEBVTT"))
    else:
        text = result.text
        assert result.language == "en" and result.duration == pytest.approx(11.0, abs=0.1)
        assert result.segments and result.words is None
        assert " ".join(s.text.strip() for s in result.segments) == result.text
        assert all(0 <= s.start < s.end <= result.duration for s in result.segments)
    assert word_error_rate(references[JFK], text) <= MAX_WER, text


@pytest.mark.slow
def test_word_timestamps(real: str, references: dict[str, str]) -> None:
    with client(real) as api:
        result = api.audio.transcriptions.create(
            model="whisper-1",
            file=upload(JFK),
            response_format="verbose_json",
            timestamp_granularities=["word"],
        )
    assert result.segments is None  # words only, as OpenAI answers
    words = result.words
    assert word_error_rate(references[JFK], " ".join(w.word for w in words)) <= MAX_WER
    assert all(w.word == w.word.strip() and w.start <= w.end for w in words)
    starts = [w.start for w in words]
    assert starts == sorted(starts) and words[-1].end <= result.duration + 1e-3
    # "ask not" is said at about 4.5 s into the clip.
    asked = next(w for w in words if w.word.lower().startswith("not"))
    assert 3.5 < asked.start < 6.0


@pytest.mark.slow
def test_a_long_file_over_several_windows(
    real: str, engine: Any, speech: Callable[[str], np.ndarray], references: dict[str, str]
) -> None:
    with client(real) as api:
        result = api.audio.transcriptions.create(
            model="whisper-1", file=upload(LONG), response_format="verbose_json"
        )
    whole = " ".join(s.text for s in engine.transcribe_blocks([speech(LONG)]))
    reference = references[LONG]
    assert word_error_rate(reference, result.text) <= word_error_rate(reference, whole) + 0.05
    assert result.segments[-1].end > 60.0  # later windows' times are offset, not restarted
    starts = [s.start for s in result.segments]
    assert starts == sorted(starts)


@pytest.mark.slow
def test_streaming_sends_deltas_then_the_whole_text(real: str, references: dict[str, str]) -> None:
    with client(real) as api:
        events = list(
            api.audio.transcriptions.create(model="whisper-1", file=upload(LONG), stream=True)
        )
    *deltas, done = events
    assert {e.type for e in deltas} == {"transcript.text.delta"} and len(deltas) > 3
    assert done.type == "transcript.text.done"
    assert "".join(e.delta for e in deltas) == done.text
    assert word_error_rate(references[LONG], done.text) <= 0.35, done.text


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["webm", "ogg"])
def test_any_format_ffmpeg_decodes(
    real: str, references: dict[str, str], encoded_speech: Callable[[str, str], bytes], fmt: str
) -> None:
    with client(real) as api:
        result = api.audio.transcriptions.create(
            model="whisper-1", file=(f"jfk.{fmt}", encoded_speech(JFK, fmt)), response_format="text"
        )
    assert word_error_rate(references[JFK], result) <= MAX_WER, result


@pytest.mark.slow
def test_translation_with_base() -> None:
    from conftest import model_threads
    from livewhisper.engine.local import Engine, ModelOptions

    base = Engine(ModelOptions(model="base", threads=model_threads()))
    spanish = "es_agent-alreadyon.flac"
    english = (
        "That agent has already been authenticated. Please enter your agent number "
        "followed by the pound key."
    )
    with Scheduler(base) as scheduler, serving(openai_routes(scheduler, token=None)) as url:
        with client(url, key="anything") as api:
            translated = translate(
                api, model="base", file=upload(spanish), response_format="verbose_json"
            )
            heard = api.audio.transcriptions.create(
                model="base", file=upload(spanish), response_format="verbose_json"
            )
    assert heard.language == "es" and "agente" in heard.text.lower()
    assert translated.language == "en"  # the text's, as OpenAI answers
    assert "agente" not in translated.text.lower()
    assert word_error_rate(english, translated.text) <= 0.6, translated.text


@pytest.mark.slow
def test_livewhisper_serve_speaks_the_openai_audio_api_on_its_port(
    references: dict[str, str], speech: Callable[[str], np.ndarray]
) -> None:
    """The real command: ``livewhisper serve`` answers the official SDK on
    /v1/audio/transcriptions and a Realtime client on /v1/realtime, with its token,
    on the port of its page."""
    import asyncio
    import base64
    import json

    from websockets.asyncio.client import connect

    from test_server_protocol import cli_server

    with cli_server("serve", "--port", "0", "--token", "s3cret") as (proc, port, _):
        api = client(f"http://127.0.0.1:{port}/v1", key="s3cret")
        text = api.audio.transcriptions.create(model="whisper-1", file=upload("jfk.flac")).text
        assert word_error_rate(references["jfk.flac"], text) <= 0.15, text
        assert [m.id for m in api.models.list().data][:1]  # the loaded model is listed

        async def realtime() -> str:
            url = f"ws://127.0.0.1:{port}/v1/realtime?intent=transcription"
            headers = {"Authorization": "Bearer s3cret"}
            async with connect(url, additional_headers=headers) as ws:
                assert json.loads(await ws.recv())["type"].endswith("session.created")
                audio = base64.b64encode(
                    (np.clip(speech("goforward.flac"), -1, 1) * 32767).astype("<i2").tobytes()
                ).decode()
                session = {
                    "type": "transcription",
                    "audio": {
                        "input": {
                            "format": {"type": "audio/pcm", "rate": 16000},
                            "turn_detection": None,
                        }
                    },
                }
                await ws.send(json.dumps({"type": "session.update", "session": session}))
                await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": audio}))
                await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
                while True:
                    event = json.loads(await asyncio.wait_for(ws.recv(), 60))
                    assert event["type"] != "error", event
                    if event["type"].endswith("input_audio_transcription.completed"):
                        return str(event["transcript"])

        heard = asyncio.run(realtime())
        assert word_error_rate(references["goforward.flac"], heard) <= 0.3, heard
        proc.terminate()
        assert proc.wait(30) == 0
