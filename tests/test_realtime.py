"""The OpenAI Realtime transcription route (`serve.ws_realtime`), through a real uvicorn
server on a free port.

The protocol tests use a scripted stream (loud frames are speech; it emits partials
and finals from another thread, as the scheduler's worker does) and an engine that
answers with the length of the audio, so event order, ids, times, errors and auth
are tested on their own; the ``slow`` tests run the real model on real speech, one
through the ``openai`` SDK's realtime client.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from livewhisper.audio.pcm import Resampler
from livewhisper.engine.contract import TranscribeOptions, Transcription
from livewhisper.engine.scheduler import Scheduler
from livewhisper.errors import ModelError
from livewhisper.live.contract import Emit, StreamStatus
from livewhisper.live.stream import LiveStream, StreamOptions
from livewhisper.metrics import word_error_rate as wer
from livewhisper.serve.options import ServerOptions
from livewhisper.serve.realtime_events import (
    RealtimeError,
    SessionConfig,
    append_samples,
    commit_options,
    decode_event,
    error_event,
    event_type,
    parse_session,
    session_event,
)
from livewhisper.serve.realtime_items import InputBuffer, Items, Utterances
from livewhisper.serve.streams import StreamBacklog, StreamFactory, StreamRequest, live_streams
from livewhisper.serve.thread import ServerThread
from livewhisper.serve.ws_realtime import realtime_routes
from livewhisper.transcript import Segment, TextEvent
from test_server_protocol import messages_until_closed

T = TypeVar("T")
LIBRIVOX = "librivox_sense_and_sensibility_01_austen_64kb-0880.flac"
TIMEOUT = 60.0
FRAME = 480  # 30 ms at 16 kHz
COMPLETED = "conversation.item.input_audio_transcription.completed"


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 180))


# --- stand-ins for the model and the stream ---------------------------------------------


class LengthEngine:
    """Answers every decode with the length of its audio ("0.5 seconds") and the prompt."""

    name = "length"

    def check(self, options: TranscribeOptions) -> None:
        if options.language not in (None, "en", "fr"):
            raise ModelError(f"Unknown language {options.language!r}: use a code such as en.")

    def transcribe(
        self, audio: np.ndarray, options: TranscribeOptions | None = None, *, offset: float = 0.0
    ) -> Transcription:
        seconds = len(audio) / 16_000
        text = f"{seconds:.1f} seconds"
        if options is not None and options.initial_prompt:
            text += f" after {options.initial_prompt}"
        return Transcription([Segment(offset, offset + seconds, text)], "en", 1.0, seconds)


class ScriptedStream:
    """Loud 30 ms frames are speech. Every 0.3 s of speech gives a partial whose committed
    words are one more ``w<n>``; 0.3 s of quiet ends the utterance with a final."""

    worker = ThreadPoolExecutor(max_workers=1)
    error: BaseException | None = None

    def __init__(self, request: StreamRequest, emit: Emit) -> None:
        self.key = object()
        self.request = request
        self.emit = emit
        self.rest = np.zeros(0, np.float32)
        self.frames = 0
        self.next_id = 0
        self.open: tuple[int, float] | None = None  # id, start
        self.speech = 0
        self.quiet = 0
        self.fed = 0

    def feed(self, samples: np.ndarray) -> None:
        assert samples.dtype == np.float32 and samples.ndim == 1
        self.fed += len(samples)
        data = np.concatenate([self.rest, samples])
        whole = len(data) - len(data) % FRAME
        for i in range(0, whole, FRAME):
            self._frame(float(np.abs(data[i : i + FRAME]).max()) > 0.05)
        self.rest = data[whole:]

    def _frame(self, loud: bool) -> None:
        self.frames += 1
        now = self.frames * FRAME / 16_000
        if loud:
            if self.open is None:
                self.open = (self.next_id, now - FRAME / 16_000)
                self.next_id += 1
                self.speech = 0
            self.quiet = 0
            self.speech += 1
            if self.speech % 10 == 0:
                uid, start = self.open
                stable = " ".join(f"w{n}" for n in range(self.speech // 10))
                event = TextEvent("partial", uid, stable + " more", start, now, "en", stable)
                self.worker.submit(self.emit, event)
        elif self.open is not None:
            self.quiet += 1
            if self.quiet == 10:
                self._close(now)

    def _close(self, now: float) -> None:
        assert self.open is not None
        uid, start = self.open
        words = " ".join(f"w{n}" for n in range(max(1, self.speech // 10)))
        self.worker.submit(self.emit, TextEvent("final", uid, words + ".", start, now, "en"))
        self.open = None

    def finish(self, timeout: float | None = None) -> bool:
        if self.open is not None:
            self._close(self.frames * FRAME / 16_000)
        self.worker.submit(lambda: None).result(timeout)
        return True

    def status(self) -> StreamStatus:
        return StreamStatus(state="speech" if self.open is not None else "listening")


def scripted_streams(made: list[ScriptedStream] | None = None) -> StreamFactory:
    def make(request: StreamRequest, emit: Emit) -> ScriptedStream:
        stream = ScriptedStream(request, emit)
        if made is not None:
            made.append(stream)
        return stream

    return make


# --- the server and a client ------------------------------------------------------------


def realtime_server(
    make_stream: StreamFactory,
    scheduler: Scheduler,
    backlog: StreamBacklog | None = None,
    **options: Any,
) -> ServerThread:
    """The server (*options*: its `ServerOptions`) with the realtime route, on a free port."""
    routes = realtime_routes(scheduler, model_name="tiny.en")
    return ServerThread(
        ServerOptions(port=0, **options), make_stream, backlog=backlog, extra_routes=routes
    )


def realtime_url(server: ServerThread) -> str:
    return f"ws://127.0.0.1:{server.port}/v1/realtime?intent=transcription"


@contextlib.contextmanager
def serving(make_stream: StreamFactory, scheduler: Scheduler, **kw: Any) -> Iterator[str]:
    """The server with the realtime route (*kw*: `realtime_server`'s), running; its URL."""
    with realtime_server(make_stream, scheduler, **kw) as server:
        yield realtime_url(server)


@pytest.fixture
def fake() -> Iterator[Scheduler]:
    with Scheduler(LengthEngine()) as scheduler:  # type: ignore[arg-type]
        yield scheduler


async def recv(ws: ClientConnection) -> dict[str, Any]:
    message = await asyncio.wait_for(ws.recv(), TIMEOUT)
    assert isinstance(message, str)
    event = json.loads(message)
    assert isinstance(event, dict) and event["event_id"].startswith("event_")
    return event


async def recv_until(ws: ClientConnection, done: Callable[[dict[str, Any]], bool]) -> list[Any]:
    """Events up to and including the first that *done* accepts."""
    seen = []
    while True:
        seen.append(await recv(ws))
        if done(seen[-1]):
            return seen


def of_type(kind: str) -> Callable[[dict[str, Any]], bool]:
    return lambda event: bool(event["type"] == kind)


async def send(ws: ClientConnection, kind: str, **fields: Any) -> None:
    await ws.send(json.dumps({"type": kind, **fields}))


def session(turn_detection: Any = "server_vad", rate: int = 16_000, **t: Any) -> dict[str, Any]:
    turn = {"type": turn_detection} if turn_detection else None
    audio_input = {"format": {"type": "audio/pcm", "rate": rate}, "turn_detection": turn}
    if t:
        audio_input["transcription"] = t
    return {"type": "transcription", "audio": {"input": audio_input}}


async def configure(ws: ClientConnection, **kw: Any) -> dict[str, Any]:
    assert (await recv(ws))["type"] == "session.created"
    await send(ws, "session.update", session=session(**kw))
    updated = await recv(ws)
    assert updated["type"] == "session.updated", updated
    return updated


def pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def tone(seconds: float, rate: int = 16_000) -> np.ndarray:
    n = int(seconds * rate)
    return (0.3 * np.sin(2 * np.pi * 220 * np.arange(n) / rate)).astype(np.float32)


def silence(seconds: float, rate: int = 16_000) -> np.ndarray:
    return np.zeros(int(seconds * rate), np.float32)


async def append(ws: ClientConnection, samples: np.ndarray, rate: int = 16_000) -> None:
    """*samples* as appends of 100 ms each, as fast as the server takes them."""
    data = pcm16(samples)
    step = rate // 10 * 2
    for i in range(0, len(data), step):
        chunk = base64.b64encode(data[i : i + step]).decode()
        await send(ws, "input_audio_buffer.append", audio=chunk)


async def commit(ws: ClientConnection, samples: np.ndarray, rate: int = 16_000) -> list[Any]:
    """Append *samples*, commit them, and the events up to their transcript."""
    await append(ws, samples, rate)
    await send(ws, "input_audio_buffer.commit")
    return await recv_until(ws, of_type(COMPLETED))


def by_item(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    items: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        if "item_id" in event:
            items.setdefault(event["item_id"], []).append(event)
    return items


def check_item(events: list[dict[str, Any]]) -> str:
    """An item's events come as the Realtime API's do; its transcript."""
    kinds = [e["type"].rsplit(".", 1)[-1] for e in events]
    stop = kinds.index("speech_stopped")
    assert kinds[0] == "speech_started" and set(kinds[1:stop]) <= {"delta"}, kinds
    assert kinds[stop:] in (
        ["speech_stopped", "committed", "completed"],
        ["speech_stopped", "committed", "delta", "completed"],  # the rest of the final
    ), kinds
    assert events[0]["audio_start_ms"] < events[stop]["audio_end_ms"]
    assert events[-1]["content_index"] == 0 and events[-1]["usage"]["type"] == "duration"
    transcript: str = events[-1]["transcript"]
    return transcript


# --- the session's settings (no server) ---------------------------------------------------


def test_session_update_parses_both_shapes_and_keeps_what_is_left_out() -> None:
    base = SessionConfig()
    assert base == SessionConfig(rate=24_000, vad=True, language=None, prompt=None)
    update = {"type": "session.update", "session": session(None, 16_000, language="fr")}
    config, dialect = parse_session(base, update)
    assert (config, dialect) == (SessionConfig(16_000, False, "fr", None), "ga")
    # Only what is given changes: the rate and turn detection stay.
    only_prompt = session(rate=16_000, prompt="names: Dashwood")
    del only_prompt["audio"]["input"]["turn_detection"], only_prompt["audio"]["input"]["format"]
    config, _ = parse_session(config, {"type": "session.update", "session": only_prompt})
    assert config == SessionConfig(16_000, False, "fr", "names: Dashwood")
    beta = {
        "type": "transcription_session.update",
        "session": {
            "input_audio_format": "pcm16",
            "input_audio_transcription": {"model": "whisper-1", "language": ""},
            "turn_detection": {"type": "server_vad", "silence_duration_ms": 700},
        },
    }
    config, dialect = parse_session(config, beta)
    assert (config, dialect) == (SessionConfig(24_000, True, None, "names: Dashwood"), "beta")


def test_client_events_are_checked_and_errors_name_them() -> None:
    assert event_type(decode_event('{"type": "input_audio_buffer.commit"}')) == (
        "input_audio_buffer.commit"
    )
    for text, code in [("{x", "invalid_json"), ("[1]", "invalid_type")]:
        with pytest.raises(RealtimeError) as info:
            decode_event(text)
        assert info.value.code == code
    with pytest.raises(RealtimeError) as info:
        event_type({"type": "response.create"})
    assert error_event(info.value, "e7") == {
        "type": "error",
        "error": {
            "message": info.value.message,
            "type": "invalid_request_error",
            "param": "type",
            "code": "invalid_value",
            "event_id": "e7",
        },
    }
    assert error_event(info.value, 7)["error"]["event_id"] is None  # not a client's id


def test_appends_carry_an_odd_byte_to_the_next() -> None:
    pcm = pcm16(np.array([0.5, -0.5], np.float32))
    resampler = Resampler(16_000)
    samples, carry = append_samples(resampler, b"", base64.b64encode(pcm[:3]).decode())
    assert len(samples) == 1 and carry == pcm[2:3]
    samples, carry = append_samples(resampler, carry, base64.b64encode(pcm[3:]).decode())
    assert carry == b"" and samples.tolist() == [pytest.approx(-0.5, abs=1e-3)]
    with pytest.raises(RealtimeError) as info:
        append_samples(resampler, b"", "@@")
    assert (info.value.code, info.value.param) == ("invalid_value", "audio")


def test_the_session_as_the_client_is_told_it_and_how_commits_decode() -> None:
    config = SessionConfig(16_000, False, "fr", "Dashwood")
    ga = session_event("updated", config, "ga", "sess_1", "tiny.en")
    assert ga["type"] == "session.updated"
    audio_input = ga["session"]["audio"]["input"]
    assert audio_input["format"] == {"type": "audio/pcm", "rate": 16_000}
    assert audio_input["turn_detection"] is None
    assert audio_input["transcription"] == {
        "model": "tiny.en",
        "language": "fr",
        "prompt": "Dashwood",
    }
    beta = session_event("created", SessionConfig(), "beta", "sess_1", "tiny.en")
    assert beta["type"] == "transcription_session.created"
    assert beta["session"]["turn_detection"] == {"type": "server_vad"}
    assert beta["session"]["input_audio_transcription"]["prompt"] == ""
    # A commit is decoded with the server's settings, and the session's on top.
    base = TranscribeOptions(language="en", initial_prompt="the server's", vad_filter=False)
    assert commit_options(base, SessionConfig()) == dataclasses.replace(base, vad_filter=True)
    mine = commit_options(base, config)
    assert (mine.language, mine.initial_prompt) == ("fr", "Dashwood")


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"].rsplit(".", 1)[-1] for e in events]


def test_utterances_become_items_whose_deltas_only_add() -> None:
    items = Items("ab")
    utterances = Utterances(items, base=2.0)  # the stream started 2 s into the session
    first = utterances.on_event(TextEvent("partial", 0, "hello wor", 0.5, 1.0, "en", "hello"))
    assert first == [
        {
            "type": "input_audio_buffer.speech_started",
            "item_id": "item_ab0000",
            "audio_start_ms": 2500,
        },
        {
            "type": "conversation.item.input_audio_transcription.delta",
            "item_id": "item_ab0000",
            "content_index": 0,
            "delta": "hello",
        },
    ]
    # Committed words that do not go on from what was said add nothing.
    assert utterances.on_event(TextEvent("partial", 0, "hollow", 0.5, 1.2, "en", "hollow")) == []
    last = utterances.on_event(TextEvent("final", 0, "hello world.", 0.5, 1.5, "en"))
    assert kinds(last) == ["speech_stopped", "committed", "delta", "completed"]
    assert last[0]["audio_end_ms"] == 3500 and last[1]["previous_item_id"] is None
    assert last[2]["delta"] == " world."
    assert last[3]["transcript"] == "hello world." and last[3]["usage"]["seconds"] == 1.0
    late = TextEvent("partial", 0, "hello", 0.5, 1.6, "en", "hello")
    assert utterances.on_event(late) == []  # after its final
    # An utterance that ends without a final is completed with no transcript.
    assert kinds(utterances.on_event(TextEvent("partial", 1, "um", 2.0, 2.5, "en"))) == [
        "speech_started"
    ]
    empty = utterances.without_text()
    assert kinds(empty) == ["speech_stopped", "committed", "completed"]
    assert empty[1]["previous_item_id"] == "item_ab0000" and empty[2]["transcript"] == ""
    assert utterances.open == {}


def test_the_input_buffer_holds_a_manual_sessions_audio_until_a_commit() -> None:
    buffer = InputBuffer(1.0)
    buffer.add(silence(0.05), 800)
    with pytest.raises(RealtimeError) as info:
        buffer.commit()
    assert info.value.code == "input_audio_buffer_commit_empty"
    assert "only has 50.00ms" in info.value.message
    buffer.add(silence(0.9), 1600)
    with pytest.raises(RealtimeError) as info:
        buffer.add(silence(0.1), 16_000)
    assert info.value.code == "input_audio_buffer_full"
    buffer.add(silence(0.1), 16_000, bounded=False)  # the resampler's tail at a commit
    assert buffer.start == 800
    assert len(buffer.commit()) == 16_800 and len(buffer) == 0


def test_a_streams_prompt_is_its_initial_prompt(fake: Scheduler) -> None:
    server_options = StreamOptions(transcribe=TranscribeOptions(initial_prompt="the server's"))
    make, _ = live_streams(fake, server_options)
    plain = make(StreamRequest(), lambda event: None)
    asked = make(StreamRequest(language="fr", prompt="Dashwood"), lambda event: None)
    assert isinstance(plain, LiveStream) and isinstance(asked, LiveStream)
    assert plain.options.transcribe.initial_prompt == "the server's"
    assert asked.options.transcribe.initial_prompt == "Dashwood"
    assert asked.options.transcribe.language == "fr"


# --- the protocol, on scripted streams ----------------------------------------------------


def test_server_vad_items_start_grow_and_complete_in_order(fake: Scheduler) -> None:
    made: list[ScriptedStream] = []

    async def main(url: str) -> None:
        async with connect(url) as ws:
            created = await recv(ws)
            assert created["type"] == "session.created"
            assert created["session"]["type"] == "transcription"
            assert created["session"]["audio"]["input"]["format"] == {
                "type": "audio/pcm",
                "rate": 24_000,
            }
            assert created["session"]["audio"]["input"]["turn_detection"]["type"] == "server_vad"
            await send(ws, "session.update", session=session(rate=16_000))
            updated = await recv(ws)
            assert updated["type"] == "session.updated"
            assert updated["session"]["audio"]["input"]["transcription"]["model"] == "tiny.en"
            audio = [silence(0.5), tone(1.0), silence(0.6), tone(0.7), silence(0.6)]
            await append(ws, np.concatenate(audio))
            events = await recv_until(ws, of_type(COMPLETED))
            events += await recv_until(ws, of_type(COMPLETED))
        items = by_item(events)
        assert len(items) == 2
        first, second = items.values()
        assert [check_item(first), check_item(second)] == ["w0 w1 w2.", "w0 w1."]
        deltas = [e["delta"] for e in first if e["type"].endswith("delta")]
        # The words as they are committed, each once, and what the final adds.
        assert deltas == ["w0", " w1", " w2", "."]
        # Session milliseconds, counted in samples.
        assert first[0]["audio_start_ms"] == pytest.approx(500, abs=40)
        assert second[0]["audio_start_ms"] == pytest.approx(2100, abs=40)
        committed = [e for e in events if e["type"] == "input_audio_buffer.committed"]
        assert committed[0]["previous_item_id"] is None
        assert committed[1]["previous_item_id"] == committed[0]["item_id"]
        assert len(made) == 1 and made[0].request == StreamRequest(partials=True)

    with serving(scripted_streams(made), fake) as url:
        run(main(url))


def test_manual_commits_are_decoded_as_one_utterance_each(fake: Scheduler) -> None:
    async def main(url: str) -> None:
        async with connect(url) as ws:
            await configure(ws, turn_detection=None, rate=24_000, prompt="Dashwood")
            first = await commit(ws, tone(1.0, 24_000), rate=24_000)  # resampled to 16 kHz
            assert [e["type"] for e in first] == [
                "input_audio_buffer.committed",
                "conversation.item.input_audio_transcription.delta",
                "conversation.item.input_audio_transcription.completed",
            ]
            assert first[0]["previous_item_id"] is None
            assert first[-1]["transcript"] == "1.0 seconds after Dashwood"
            assert first[-1]["usage"] == {"type": "duration", "seconds": pytest.approx(1.0, 0.01)}
            second = await commit(ws, silence(0.5, 24_000), rate=24_000)
            assert second[0]["previous_item_id"] == first[0]["item_id"]
            assert second[-1]["transcript"] == "0.5 seconds after Dashwood"

    with serving(scripted_streams(), fake) as url:
        run(main(url))


def test_clear_drops_the_buffered_audio(fake: Scheduler) -> None:
    async def main(url: str) -> None:
        async with connect(url) as ws:
            await configure(ws, turn_detection=None)
            await append(ws, tone(0.8))
            await send(ws, "input_audio_buffer.clear")
            assert (await recv(ws))["type"] == "input_audio_buffer.cleared"
            await send(ws, "input_audio_buffer.commit", event_id="c1")
            error = await recv(ws)
            assert error["type"] == "error"
            assert error["error"]["code"] == "input_audio_buffer_commit_empty"
            assert error["error"]["event_id"] == "c1"
            events = await commit(ws, tone(0.3))
            assert events[-1]["transcript"] == "0.3 seconds"

    with serving(scripted_streams(), fake) as url:
        run(main(url))


def test_clear_with_server_vad_drops_the_open_utterance(fake: Scheduler) -> None:
    async def main(url: str) -> None:
        async with connect(url) as ws:
            await configure(ws)
            await append(ws, np.concatenate([tone(0.5), silence(0.5), tone(0.7)]))
            await send(ws, "input_audio_buffer.clear")
            events = await recv_until(ws, of_type("input_audio_buffer.cleared"))
            await append(ws, np.concatenate([silence(0.3), tone(0.4), silence(0.5)]))
            events += await recv_until(ws, of_type(COMPLETED))
            if sum(e["type"].endswith("completed") for e in events) < 2:
                events += await recv_until(ws, of_type(COMPLETED))
        items = list(by_item(events).values())
        # The utterance that ended is transcribed; the open one was cleared; the next is new.
        done = [check_item(i) for i in items if i[-1]["type"].endswith("completed")]
        assert done == ["w0.", "w0."]
        # The cleared one was started if its first partial came before the clear, and
        # then it only grew.
        cleared = [[e["type"] for e in i] for i in items if i[-1]["type"] != COMPLETED]
        assert len(cleared) <= 1, cleared
        for kinds in cleared:
            assert kinds[0] == "input_audio_buffer.speech_started"
            assert set(kinds[1:]) <= {"conversation.item.input_audio_transcription.delta"}

    with serving(scripted_streams(), fake) as url:
        run(main(url))


def test_commit_with_server_vad_ends_the_utterance_now(fake: Scheduler) -> None:
    async def main(url: str) -> None:
        async with connect(url) as ws:
            await configure(ws)
            await send(ws, "input_audio_buffer.commit")
            assert (await recv(ws))["error"]["code"] == "input_audio_buffer_commit_empty"
            events = await commit(ws, tone(0.7))
            assert check_item(list(by_item(events).values())[0]) == "w0 w1."

    with serving(scripted_streams(), fake) as url:
        run(main(url))


def event(kind: object = None, **fields: Any) -> str:
    """A client event as text, with ``event_id`` "e1" (no ``type`` when *kind* is None)."""
    typed = {} if kind is None else {"type": kind}
    return json.dumps({**typed, "event_id": "e1", **fields})


UPDATE = "session.update"
APPEND = "input_audio_buffer.append"
#: A malformed event, the code and param of the error it gets.
MALFORMED: list[tuple[str, str, str | None]] = [
    ("{not json", "invalid_json", None),
    ("[1, 2]", "invalid_type", None),
    (event(), "missing_required_parameter", "type"),
    (event(7), "invalid_type", "type"),
    (event("response.create"), "invalid_value", "type"),
    (event(APPEND), "missing_required_parameter", "audio"),
    (event(APPEND, audio=5), "invalid_type", "audio"),
    (event(APPEND, audio="@@"), "invalid_value", "audio"),
    (event(UPDATE), "missing_required_parameter", "session"),
    (event(UPDATE, session=[]), "invalid_type", "session"),
    (event(UPDATE, session={}), "missing_required_parameter", "session.type"),
    (event(UPDATE, session={"type": "realtime"}), "invalid_value", "session.type"),
    (
        event(UPDATE, session=session(rate="24000")),  # type: ignore[arg-type]
        "invalid_type",
        "session.audio.input.format.rate",
    ),
    (
        event(UPDATE, session=session(rate=96_000)),
        "invalid_value",
        "session.audio.input.format.rate",
    ),
    (
        event(UPDATE, session=session("semantic_vad")),
        "invalid_value",
        "session.audio.input.turn_detection.type",
    ),
    (
        event(UPDATE, session=session(language="xx")),
        "invalid_value",
        "session.audio.input.transcription.language",
    ),
    (
        event("transcription_session.update", session={"input_audio_format": "g711_ulaw"}),
        "invalid_value",
        "session.input_audio_format",
    ),
]


def test_malformed_events_each_get_an_error_and_the_session_goes_on(fake: Scheduler) -> None:
    async def main(url: str) -> None:
        async with connect(url) as ws:
            await configure(ws, turn_detection=None)
            for text, code, param in MALFORMED:
                await ws.send(text)
                event = await recv(ws)
                assert event["type"] == "error", text
                error = event["error"]
                assert (error["type"], error["code"], error["param"]) == (
                    "invalid_request_error",
                    code,
                    param,
                ), text
                assert error["message"]
                assert error["event_id"] == ("e1" if '"e1"' in text else None), text
            await ws.send(b"\x00\x01")
            assert (await recv(ws))["error"]["code"] == "invalid_value"
            # Nothing above changed the session: still manual, 16 kHz, and working.
            events = await commit(ws, tone(0.5))
            assert events[-1]["transcript"] == "0.5 seconds"

    with serving(scripted_streams(), fake) as url:
        run(main(url))


def test_the_beta_transcription_session_events(fake: Scheduler) -> None:
    async def main(url: str) -> None:
        async with connect(url, additional_headers={"OpenAI-Beta": "realtime=v1"}) as ws:
            created = await recv(ws)
            assert created["type"] == "transcription_session.created"
            assert created["session"]["input_audio_format"] == "pcm16"
            update = {
                "input_audio_transcription": {"model": "gpt-4o-transcribe", "language": "en"},
                "turn_detection": None,
            }
            await send(ws, "transcription_session.update", session=update)
            updated = await recv(ws)
            assert updated["type"] == "transcription_session.updated"
            assert updated["session"]["turn_detection"] is None
            assert updated["session"]["input_audio_transcription"]["language"] == "en"
            events = await commit(ws, tone(0.4, 24_000), rate=24_000)
            assert events[-1]["transcript"] == "0.4 seconds"

    with serving(scripted_streams(), fake) as url:
        run(main(url))


def test_a_token_is_required_when_the_server_has_one(fake: Scheduler) -> None:
    async def main(url: str) -> None:
        for headers, query in [({}, ""), ({"Authorization": "Bearer wrong"}, "&token=wrong")]:
            with pytest.raises(InvalidStatus) as refused:
                async with connect(url + query, additional_headers=headers):
                    pass
            assert refused.value.response.status_code == 401
            body = json.loads(refused.value.response.body or b"{}")
            assert body["error"]["code"] == "invalid_api_key"
        async with connect(url, additional_headers={"Authorization": "Bearer s3cret"}) as ws:
            assert (await recv(ws))["type"] == "session.created"
        async with connect(url + "&token=s3cret") as ws:
            assert (await recv(ws))["type"] == "session.created"
        protocols = ["realtime", "openai-insecure-api-key.s3cret"]
        async with connect(url, subprotocols=protocols) as ws:  # type: ignore[arg-type]
            assert ws.subprotocol == "realtime"
            assert (await recv(ws))["type"] == "session.created"
        # The server's origin check comes after the token, as for its other clients.
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url + "&token=s3cret", origin="http://elsewhere"):  # type: ignore[arg-type]
                pass
        assert refused.value.response.status_code == 403

    with serving(scripted_streams(), fake, token="s3cret") as url:
        run(main(url))


def test_the_prompt_goes_to_the_live_stream_and_a_new_one_ends_the_utterance(
    fake: Scheduler,
) -> None:
    made: list[ScriptedStream] = []

    async def main(url: str) -> None:
        async with connect(url) as ws:
            await configure(ws, prompt="Dashwood")
            await append(ws, tone(0.7))  # an utterance in progress
            await send(ws, "session.update", session=session(prompt="Marianne"))
            events = await recv_until(ws, of_type("session.updated"))
            assert events[-2]["type"] == COMPLETED and events[-2]["transcript"] == "w0 w1."
            events = await commit(ws, tone(0.4))
            assert events[-1]["transcript"] == "w0."
        assert [stream.request.prompt for stream in made] == ["Dashwood", "Marianne"]

    with serving(scripted_streams(made), fake) as url:
        run(main(url))


def test_a_stop_sends_the_open_utterances_completed_then_1001(fake: Scheduler) -> None:
    server = realtime_server(scripted_streams(), fake).start()

    async def main() -> None:
        async with connect(realtime_url(server)) as ws:
            await configure(ws)
            await append(ws, tone(0.7))  # the utterance goes on
            events = await recv_until(ws, lambda e: e.get("delta") == " w1")  # the audio is in
            stopping = asyncio.create_task(asyncio.to_thread(server.stop))
            events += await messages_until_closed(ws)
            assert (ws.close_code, ws.close_reason) == (1001, "server shutting down")
            await stopping
        (item,) = by_item(events).values()
        assert check_item(item) == "w0 w1."

    try:
        run(main())
    finally:
        server.stop()


def test_an_idle_session_gets_its_last_text_then_1008(fake: Scheduler) -> None:
    async def main(url: str) -> None:
        async with connect(url) as ws:
            await configure(ws)
            await append(ws, tone(0.7))
            events = await messages_until_closed(ws)
            assert ws.close_code == 1008 and "idle timeout" in (ws.close_reason or "")
        (item,) = by_item(events).values()
        assert check_item(item) == "w0 w1."

    with serving(scripted_streams(), fake, idle_timeout=1.0) as url:
        run(main(url))


def test_a_realtime_client_past_max_clients_is_refused_like_the_others(fake: Scheduler) -> None:
    async def refused(url: str) -> int:
        with pytest.raises(InvalidStatus) as info:
            async with connect(url):
                pass
        return info.value.response.status_code

    async def main(server: ServerThread) -> None:
        url, page = realtime_url(server), f"ws://127.0.0.1:{server.port}/ws"
        async with connect(url) as ws:
            assert (await recv(ws))["type"] == "session.created"
            assert len(server.server.audio) == 1  # counted with the other audio clients
            assert [await refused(url), await refused(page)] == [503, 503]
        while server.server.audio:  # its place is freed once it has ended
            await asyncio.sleep(0.01)
        async with connect(page):
            assert await refused(url) == 503
        while server.server.audio:
            await asyncio.sleep(0.01)
        async with connect(url) as ws:
            assert (await recv(ws))["type"] == "session.created"

    with realtime_server(scripted_streams(), fake, max_clients=1) as server:
        run(main(server))


# --- the real model on real speech ----------------------------------------------------


@pytest.fixture(scope="module")
def scheduler(engine: Any) -> Iterator[Scheduler]:
    with Scheduler(engine) as running_scheduler:
        yield running_scheduler


def to_24k(samples: np.ndarray) -> np.ndarray:
    import soxr

    out: np.ndarray = soxr.resample(samples, 16_000, 24_000).astype(np.float32)
    return out


@pytest.mark.slow
def test_server_vad_session_through_the_openai_sdk(
    scheduler: Scheduler, speech: Callable[[str], np.ndarray], references: dict[str, str]
) -> None:
    """Three clips with pauses, at 24 kHz (the SDK's default format), in real time."""
    openai = pytest.importorskip("openai")
    from livewhisper.serve.streams import live_streams

    names = ["jfk.flac", "goforward.flac", LIBRIVOX]
    gap = silence(1.5)
    audio = to_24k(np.concatenate([gap, *(x for n in names for x in (speech(n), gap))]))

    async def main(url: str) -> list[dict[str, Any]]:
        client = openai.AsyncOpenAI(api_key="s3cret", base_url=url.replace("ws", "http", 1))
        async with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
            first = await conn.recv()
            assert first.type == "session.created"
            await conn.session.update(
                session={
                    "type": "transcription",
                    "audio": {
                        "input": {
                            "format": {"type": "audio/pcm", "rate": 24000},
                            "transcription": {"model": "gpt-4o-transcribe", "language": "en"},
                            "turn_detection": {"type": "server_vad"},
                        }
                    },
                }
            )
            events: list[dict[str, Any]] = []

            async def sender() -> None:
                loop = asyncio.get_running_loop()
                t0, step = loop.time(), 2400  # 100 ms
                data = pcm16(audio)
                for n, i in enumerate(range(0, len(audio), step), 1):
                    chunk = base64.b64encode(data[2 * i : 2 * (i + step)]).decode()
                    await conn.input_audio_buffer.append(audio=chunk)
                    await asyncio.sleep(max(0.0, t0 + n * 0.1 - loop.time()))
                # Turning server VAD off ends the stream: the answer comes after its text.
                manual = {"type": "transcription", "audio": {"input": {"turn_detection": None}}}
                await conn.session.update(session=manual)

            task = asyncio.create_task(sender())
            while not (task.done() and events and events[-1]["type"] == "session.updated"):
                event = await asyncio.wait_for(conn.recv(), TIMEOUT)
                events.append(event.model_dump())
            await task
        return events

    make, backlog = live_streams(scheduler)
    with serving(make, scheduler, backlog=backlog, token="s3cret") as url:
        events = run(main(url.split("/realtime")[0]))
    assert events[0]["type"] == "session.updated"
    assert events[-1]["session"]["audio"]["input"]["turn_detection"] is None
    events = events[1:-1]
    assert not [e for e in events if e["type"] == "error"]
    items = by_item(events)
    transcripts = [check_item(item) for item in items.values()]
    assert len(transcripts) >= 3
    reference = " ".join(references[n] for n in names)
    assert wer(reference, " ".join(transcripts)) <= 0.3, transcripts
    assert any(e["type"].endswith("delta") for e in events)  # text while speaking
    starts = [item[0]["audio_start_ms"] for item in items.values()]
    assert starts == sorted(starts) and starts[0] >= 1000


@pytest.mark.slow
def test_manual_commits_of_real_speech(
    scheduler: Scheduler, speech: Callable[[str], np.ndarray], references: dict[str, str]
) -> None:
    from livewhisper.serve.streams import live_streams

    names = ["goforward.flac", "jfk.flac"]

    async def main(url: str) -> list[str]:
        texts = []
        async with connect(url) as ws:
            await configure(ws, turn_detection=None, language="en")
            for name in names:
                events = await commit(
                    ws, np.concatenate([silence(0.3), speech(name), silence(0.3)])
                )
                texts.append(events[-1]["transcript"])
        return texts

    make, _ = live_streams(scheduler)
    with serving(make, scheduler) as url:
        texts = run(main(url))
    for name, text in zip(names, texts, strict=True):
        assert wer(references[name], text) <= 0.2, (name, text)
