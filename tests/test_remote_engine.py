"""The remote engine (``--engine URL``): decoding on a server that speaks OpenAI's
audio API.

The real ``livewhisper serve`` is the engine for the real ``file`` and ``listen``
commands (slow: the model decodes real speech). Faults (500, 429, a stall, an
engine that goes away) come from a small scripted HTTP server, which answers
made-up text: what is tested there is that the text arrives, or that its loss is
reported with its time span.
"""

from __future__ import annotations

import contextlib
import dataclasses
import email.parser
import email.policy
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest

from cli_helpers import DATA, run_cli
from livewhisper.engine.contract import TranscribeOptions, Transcription
from livewhisper.engine.remote import RemoteEngine, RemoteOptions, _spelt, _transcription
from livewhisper.engine.scheduler import Job, JobResult, Scheduler
from livewhisper.errors import EngineError, ModelError
from livewhisper.metrics import word_error_rate as wer
from livewhisper.transcript import Segment
from test_server_protocol import cli_server

JFK = DATA / "jfk.flac"
LONG = DATA / "asterisk_en_60s.flac"
SAID = "Hello there, general Kenobi."


def answer(seconds: float = 1.0, text: str = SAID) -> dict[str, Any]:
    """A verbose_json answer as OpenAI's: words without spaces or punctuation."""
    words = text.replace(",", "").replace(".", "").split()
    step = seconds / max(1, len(words))
    return {
        "task": "transcribe",
        "language": "english",
        "duration": seconds,
        "text": text,
        "segments": [
            {
                "id": 0,
                "start": 0.0,
                "end": seconds,
                "text": " " + text,
                "avg_logprob": -0.2,
                "no_speech_prob": 0.01,
                "compression_ratio": 1.1,
            }
        ],
        "words": [
            {"word": w, "start": i * step, "end": (i + 1) * step} for i, w in enumerate(words)
        ],
    }


# --- a scripted engine, for the faults --------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    fields: dict[str, list[str]] = field(default_factory=dict)
    audio: bytes = b""


class Stub:
    """An OpenAI audio API that answers POSTs as scripted: ``("ok",)``, ``(500,)``,
    ``(429, retry_after)``, ``("stall", seconds)``, ``("json-only",)`` (a 400 for
    verbose_json, plain text for json). The script is used in turn; its last step
    repeats."""

    def __init__(self, *script: tuple[Any, ...], models: list[str] | None = None) -> None:
        self.script = list(script) or [("ok",)]
        self.models = ["stub-whisper"] if models is None else models
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self.in_flight = 0
        self.most_in_flight = 0  # POSTs being answered at once, at most

    @property
    def posts(self) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.method == "POST"]

    def step(self) -> tuple[Any, ...]:
        with self.lock:
            return self.script.pop(0) if len(self.script) > 1 else self.script[0]

    def then(self, *script: tuple[Any, ...]) -> None:
        """Answer the next POSTs with *script* instead."""
        with self.lock:
            self.script = list(script)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out on a stall has gone: nothing to say


def _handler(stub: Stub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            with stub.lock:
                stub.requests.append(Request("GET", self.path, dict(self.headers)))
            data = [{"id": m, "object": "model"} for m in stub.models]
            self._send(200, {"object": "list", "data": data})

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            request = Request("POST", self.path, dict(self.headers))
            head = f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode()
            form = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
            for part in form.iter_parts():
                name = part.get_param("name", header="content-disposition")
                payload = part.get_payload(decode=True)
                if name == "file":
                    request.audio = payload
                else:
                    request.fields.setdefault(str(name), []).append(payload.decode())
            with stub.lock:
                stub.requests.append(request)
                stub.in_flight += 1
                stub.most_in_flight = max(stub.most_in_flight, stub.in_flight)
            try:
                self._answer(request, stub.step())
            finally:
                with stub.lock:
                    stub.in_flight -= 1

        def _answer(self, request: Request, action: tuple[Any, ...]) -> None:
            if action[0] == "stall":
                time.sleep(action[1])
                action = ("ok",)
            if action[0] == "json-only":
                if request.fields["response_format"] == ["verbose_json"]:
                    self._send(400, {"detail": "Unsupported response_format: verbose_json"})
                else:
                    self._send(200, {"text": SAID})
            elif action[0] == "ok":
                # The audio's length, from the WAV's data size (16-bit mono 16 kHz).
                self._send(200, answer((len(request.audio) - 44) / 32000))
            elif action[0] == 429:
                self._send(429, {"error": {"message": "slow down"}}, {"Retry-After": action[1]})
            else:
                self._send(action[0], {"error": {"message": f"scripted {action[0]}"}})

    return Handler


@contextlib.contextmanager
def stub_engine(stub: Stub) -> Iterator[str]:
    """The stub on a free port; its URL."""
    server = _Server(("127.0.0.1", 0), _handler(stub))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def utterance(seconds: float = 1.0) -> np.ndarray:
    return np.full(int(seconds * 16000), 0.01, np.float32)


LIVE = TranscribeOptions(language="en").for_utterance()


# --- the answer, mapped back --------------------------------------------------------


def test_words_get_their_spaces_and_punctuation_from_the_text() -> None:
    text = " And so, my fellow Americans, re-record."
    assert _spelt(text, ["And", "so", "my", "fellow", "Americans", "re", "-record"]) == [
        " And",
        " so,",
        " my",
        " fellow",
        " Americans,",
        " re",
        "-record.",
    ]
    assert "".join(_spelt(text, ["And", "so", "my", "fellow", "Americans", "re-record"])) == text


def test_verbose_json_maps_to_segments_shifted_by_the_offset() -> None:
    body = answer(2.0)
    body["segments"].append(
        {"start": 1.9, "end": 3.5, "text": " you", "no_speech_prob": 0.99, "avg_logprob": -1.5}
    )
    result = _transcription(body, TranscribeOptions(language="en"), 10.0, 2.0)
    [segment] = result.segments  # the invented "you" from silence is dropped
    assert segment.text == SAID and (segment.start, segment.end) == (10.0, 12.0)
    assert "".join(w.word for w in segment.words) == " " + SAID
    assert all(10.0 <= w.start <= w.end <= 12.0 for w in segment.words)
    assert result.language == "en"  # asked for: OpenAI's "english" is not kept
    assert _transcription({"text": "plain"}, TranscribeOptions(), 0.0, 1.5).segments[0].end == 1.5


# --- faults, against the scripted engine ----------------------------------------------


def test_the_bearer_key_and_the_prompt_with_context_are_sent() -> None:
    stub = Stub()
    with stub_engine(stub) as url, RemoteEngine(RemoteOptions(url, key="sekret")) as engine:
        assert engine.name == "stub-whisper"  # the first model the engine lists
        options = TranscribeOptions(language="en", initial_prompt="Star Wars.")
        options = options.for_utterance()
        options = dataclasses.replace(options, context="It is over.", word_timestamps=True)
        result = engine.transcribe(utterance(), options, offset=3)
    assert result.text == SAID and result.segments[0].start == 3.0
    assert all(r.headers["Authorization"] == "Bearer sekret" for r in stub.requests)
    [post] = stub.posts
    assert post.path == "/v1/audio/transcriptions"
    assert post.fields["prompt"] == ["Star Wars. It is over."]
    assert post.fields["model"] == ["stub-whisper"] and post.fields["language"] == ["en"]
    assert post.fields["response_format"] == ["verbose_json"]
    assert post.fields["timestamp_granularities[]"] == ["segment", "word"]
    assert post.audio[:4] == b"RIFF" and len(post.audio) == 44 + 32000


@pytest.mark.parametrize(
    "fault", [(500,), (503,), (429, "1"), ("stall", 1.5)], ids=["500", "503", "429", "stall"]
)
def test_a_fault_is_retried_and_the_text_arrives(fault: tuple[Any, ...]) -> None:
    stub = Stub(fault, fault, ("ok",))
    notices: list[str] = []
    with stub_engine(stub) as url:
        options = RemoteOptions(url, timeout=0.5, max_wait=20)
        with RemoteEngine(options, on_notice=notices.append) as engine:
            started = time.monotonic()
            result = engine.transcribe(utterance(), LIVE)
            took = time.monotonic() - started
            assert not engine.down and engine.losses == []
    assert result.text == SAID
    assert len(stub.posts) == 3
    if fault[0] == 429:
        assert took >= 2.0  # Retry-After: 1, twice
    assert "is not answering" in notices[0] and "answers again" in notices[1], notices


def test_an_engine_down_longer_than_the_wait_loses_the_utterance_then_recovers() -> None:
    stub = Stub((503,), models=[])
    notices: list[str] = []
    with stub_engine(stub) as url:
        with RemoteEngine(RemoteOptions(url, max_wait=0.6), on_notice=notices.append) as engine:
            assert engine.name == "whisper-1"  # no model listed
            lost = engine.transcribe(utterance(1.5), LIVE, offset=4.0)
            assert lost.segments == [] and engine.down
            assert [(g.start, g.end) for g in engine.losses] == [(4.0, 5.5)]
            assert "503" in engine.losses[0].reason and url in engine.losses[0].reason
            # The outage is older than utterances wait (the clock moved on): the
            # next is lost at once, without a request, and so is a partial.
            engine._down_since -= 1
            asked = len(stub.posts)
            assert engine.transcribe(utterance(), LIVE, offset=6.0).segments == []
            assert engine.transcribe(utterance(), LIVE.for_partial()).segments == []
            assert len(stub.posts) == asked and len(engine.losses) == 2
            # Past the probe interval an utterance is tried again: the engine is back.
            stub.then(("ok",))
            engine._last_failure -= 10
            assert engine.transcribe(utterance(), LIVE, offset=9.0).text == SAID
            assert not engine.down
    assert any(n.startswith("Not transcribed: 4.0 s to 5.5 s") for n in notices), notices
    assert "answers again" in notices[-1]


def test_an_engine_without_verbose_json_gets_json() -> None:
    stub = Stub(("json-only",))
    with stub_engine(stub) as url, RemoteEngine(RemoteOptions(url)) as engine:
        first = engine.transcribe(utterance(2.0), LIVE, offset=1.0)
        engine.transcribe(utterance(), LIVE)
    [segment] = first.segments
    assert (segment.text, segment.start, segment.end) == (SAID, 1.0, 3.0)
    formats = [r.fields["response_format"] for r in stub.posts]
    assert formats == [["verbose_json"], ["json"], ["json"]]  # asked once, then remembered
    assert "timestamp_granularities[]" not in stub.posts[-1].fields


def test_an_upload_window_that_is_lost_raises() -> None:
    with stub_engine(Stub((500,))) as url:
        with RemoteEngine(RemoteOptions(url, max_wait=0.5)) as engine:
            with pytest.raises(EngineError, match=r"0\.0 s to 1\.0 s was not transcribed"):
                engine.transcribe(utterance(), TranscribeOptions())


def test_several_streams_have_requests_in_flight_at_once() -> None:
    stub = Stub(("stall", 0.4))
    done: list[JobResult] = []
    with stub_engine(stub) as url, RemoteEngine(RemoteOptions(url, concurrency=4)) as engine:
        with Scheduler(engine) as scheduler:
            assert scheduler.workers == 4
            for n in range(8):  # two finals each of four streams
                stream = f"s{n % 4}"
                job = Job(stream, "final", n, utterance(), 0.0, LIVE, done.append)
                scheduler.submit(job)
            assert scheduler.wait_idle(timeout=20)
    assert stub.most_in_flight == 4
    assert len(done) == 8 and all(r.transcription and r.transcription.text for r in done)
    for stream in ("s0", "s1", "s2", "s3"):  # each stream's finals in order
        assert [r.job.utterance for r in done if r.job.stream == stream] == sorted(
            r.job.utterance for r in done if r.job.stream == stream
        )


def test_a_refusal_is_not_retried() -> None:
    stub = Stub((400,))
    with stub_engine(stub) as url, RemoteEngine(RemoteOptions(url)) as engine:
        with pytest.raises(ModelError, match="scripted 400"):
            engine.round_trip(TranscribeOptions(language="en", task="translate"))
        with pytest.raises(ModelError, match="scripted 400"):  # remembered
            engine.check(TranscribeOptions(language="en", task="translate"))
        engine.check(TranscribeOptions(language="en"))
        with pytest.raises(ModelError, match="Unknown language"):
            engine.check(TranscribeOptions(language="klingon"))
    assert len(stub.posts) == 1
    assert stub.posts[0].path == "/v1/audio/translations"
    assert "language" not in stub.posts[0].fields


def test_unreachable_engine_is_one_line_naming_the_url() -> None:
    with stub_engine(Stub()) as url:
        pass  # the port is free again
    result = run_cli("file", JFK, "--engine", url)
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("livewhisper: error: Cannot reach the engine at " + url), line
    result = run_cli("file", JFK, "--engine", "gpu-box:8000")
    assert result.stderr.startswith("livewhisper: error: The engine 'gpu-box:8000' is not a URL")
    result = run_cli("file", JFK, "--threads", "2", env={"LIVEWHISPER_ENGINE": url})
    assert result.returncode == 2 and "--threads places a local model" in result.stderr


def test_engine_requests_sets_the_requests_in_flight() -> None:
    from livewhisper.cli.options import build_model_options

    chosen = build_model_options(None, "auto", "default", 0, "http://gpu:8000", None, 60.0, 3)
    assert isinstance(chosen, RemoteOptions) and chosen.concurrency == 3
    result = run_cli("file", JFK, "--engine", "http://127.0.0.1:9", "--engine-requests", "0")
    assert result.returncode == 2 and "--engine-requests" in result.stderr, result.stderr


def test_file_keeps_the_text_before_the_engine_went_away_and_says_where() -> None:
    stub = Stub(("ok",), ("ok",), (503,))  # the round trip, the first window
    with stub_engine(stub) as url:
        result = run_cli("file", LONG, "--engine", url, "--engine-wait", "1")
    assert result.returncode == 1
    assert result.stdout.strip() == SAID
    told, line = result.stderr.splitlines()
    assert told.startswith("livewhisper: the engine at " + url + " is not answering (503"), told
    assert line.startswith("livewhisper: error: ") and "did not answer" in line, line
    assert "(503 Service Unavailable)" in line, line
    assert "the transcript covers the first 2" in line, line  # a window of 20-30 s


def test_listen_reports_the_utterances_it_lost(references: dict[str, str]) -> None:
    stub = Stub(("ok",), (503,))  # the round trip, then nothing
    with stub_engine(stub) as url:
        args = ["listen", "--input", JFK, "--speed", "0", "--engine", url, "--engine-wait", "0.5"]
        result = run_cli(*args, "--format", "jsonl")
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    assert f"the engine at {url} is not answering (503 Service Unavailable)" in result.stderr
    last = result.stderr.splitlines()[-1]
    assert last.startswith("livewhisper: error: ") and "not transcribed (0." in last, last


def test_check_reports_the_engine() -> None:
    stub = Stub()
    with stub_engine(stub) as url:
        result = run_cli("check", "--engine", url, "--engine-key", "k")
    assert "engine: " + url + " answers; models: stub-whisper" in result.stdout, result.stdout
    assert "round trip: " in result.stdout
    assert all(r.headers.get("Authorization") == "Bearer k" for r in stub.requests)


# --- the real server as the engine ------------------------------------------------


@pytest.fixture(scope="module")
def engine_url() -> Iterator[str]:
    """``livewhisper serve`` with tiny.en on a free port, with a token."""
    with cli_server("serve", "--port", "0", "--token", "tok") as (_proc, port, _before):
        yield f"http://127.0.0.1:{port}"


@pytest.mark.slow
def test_file_with_the_real_server_as_engine(engine_url: str, references: dict[str, str]) -> None:
    result = run_cli(
        "file", JFK, "--format", "json", "--word-timestamps", "--engine", engine_url,
        env={"LIVEWHISPER_ENGINE_KEY": "tok"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    text = " ".join(s["text"] for s in document["segments"])
    assert wer(references["jfk.flac"], text) < 0.2, text
    assert document["model"] == "tiny.en"  # the first model the server lists
    for segment in document["segments"]:
        assert segment["words"]
        for word in segment["words"]:
            assert segment["start"] - 0.01 <= word["start"] <= word["end"] <= segment["end"] + 0.01


@pytest.mark.slow
def test_listen_with_the_real_server_as_engine(engine_url: str, references: dict[str, str]) -> None:
    name = "pocketsphinx_librivox_austen_5utt.flac"
    result = run_cli(
        "listen", "--input", DATA / name, "--speed", "0", "--format", "jsonl",
        "--engine", engine_url, "--engine-key", "tok",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    finals = [e for e in events if e["type"] == "final"]
    assert len(finals) >= 3
    assert wer(references[name], " ".join(e["text"] for e in finals)) < 0.3
    assert [e["id"] for e in finals] == sorted(e["id"] for e in finals)


@pytest.mark.slow
def test_a_wrong_key_is_one_line(engine_url: str) -> None:
    result = run_cli("file", JFK, "--engine", engine_url, "--engine-key", "nope")
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert "refused the key (401" in line and "--engine-key" in line, line


# --- livewhisper serve as an engine: what a short upload costs ---------------------


class Recording:
    """A scripted model for the server's scheduler: notes the options of each decode."""

    name = "tiny.en"

    def __init__(self) -> None:
        self.asked: list[TranscribeOptions] = []

    def check(self, options: TranscribeOptions) -> None:
        pass

    def transcribe(
        self, audio: np.ndarray, options: TranscribeOptions | None = None, *, offset: float = 0.0
    ) -> Transcription:
        assert options is not None
        self.asked.append(options)
        return Transcription([Segment(offset, offset + 1, "words")], "en")


def test_a_short_upload_is_decoded_in_a_window_fitted_to_it() -> None:
    from starlette.applications import Starlette
    from starlette.testclient import TestClient

    from livewhisper.engine.remote import _encoded
    from livewhisper.serve.openai_audio import openai_routes

    model = Recording()
    with Scheduler(model) as scheduler:  # type: ignore[arg-type]
        app = Starlette(routes=openai_routes(scheduler, token=None))
        with TestClient(app) as client:
            for seconds in (3.0, 50.0):
                name, data, mime = _encoded(utterance(seconds), "wav")
                response = client.post(
                    "/v1/audio/transcriptions",
                    data={"model": "whisper-1"},
                    files={"file": (name, data, mime)},
                )
                assert response.status_code == 200, response.text
    # The utterance of a front-end: one decode, fitted (the model falls back to the
    # full window itself if that looks wrong); a long file: its 30 s windows.
    short, *windows = model.asked
    assert short.fit_window and short.vad_filter
    assert len(windows) == 2 and not any(w.fit_window for w in windows)


# --- the real engine stopped and started again mid-session -------------------------


class Lines:
    """The lines of a pipe, read on a thread; `wait_for` one that contains a text."""

    def __init__(self, pipe: Any) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._thread.start()

    def _read(self, pipe: Any) -> None:
        for line in pipe:
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()

    def wait_for(self, text: str, timeout: float = 120) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: any(text in x for x in self.lines), timeout)

    def join(self, timeout: float = 30) -> list[str]:
        self._thread.join(timeout)
        return self.lines


@pytest.mark.slow
def test_listen_loses_nothing_when_the_real_engine_stops_and_comes_back(
    references: dict[str, str],
) -> None:
    import subprocess
    import sys

    name = "asterisk_en_60s.flac"
    with cli_server("serve", "--port", "0") as (engine, port, _):
        url = f"http://127.0.0.1:{port}"
        command = [
            sys.executable, "-m", "livewhisper", "listen", "--input", str(DATA / name),
            "--speed", "2", "--format", "jsonl", "--language", "en", "--engine", url,
            "--engine-wait", "240",
        ]  # fmt: skip
        listen = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        out, err = Lines(listen.stdout), Lines(listen.stderr)
        try:
            assert out.wait_for('"type": "final"'), err.lines
            engine.terminate()  # mid-session: the engine goes away
            engine.wait(30)
            assert err.wait_for("is not answering"), err.lines
            # The engine comes back on the same port while utterances wait.
            with cli_server("serve", "--port", str(port)):
                assert err.wait_for("answers again"), err.lines
                assert listen.wait(300) == 0, err.lines
        finally:
            if listen.poll() is None:
                listen.kill()
                listen.wait()
            events = [json.loads(line) for line in out.join()]
            told = "".join(err.join())
            for pipe in (listen.stdout, listen.stderr):
                if pipe is not None:
                    pipe.close()
    finals = [e for e in events if e["type"] == "final"]
    assert "not transcribed" not in told, told
    # Every utterance is there, in order: the text is as good as without the outage.
    assert [e["id"] for e in finals] == sorted(e["id"] for e in finals)
    assert wer(references[name], " ".join(e["text"] for e in finals)) < 0.35
    assert finals[-1]["end"] > 55  # up to the end of the recording


@pytest.mark.slow
def test_serve_with_a_second_serve_as_its_engine(references: dict[str, str]) -> None:
    import asyncio

    from websockets.asyncio.client import connect

    from livewhisper.audio.files import read_all

    name = "pocketsphinx_librivox_austen_5utt.flac"
    audio = read_all(DATA / name)
    pcm = np.clip(np.concatenate([audio, np.zeros(16000, np.float32)]), -1, 1) * 32767
    data = pcm.astype("<i2").tobytes()

    async def browser(port: int) -> list[dict[str, Any]]:
        async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
            await ws.send(json.dumps({"type": "start", "language": "en", "partials": True}))
            assert json.loads(await ws.recv())["type"] == "ready"
            # 100 ms frames in real time: a partial pass needs the utterance to be
            # still open when the engine answers, however slow the machine.
            for i in range(0, len(data), 3200):
                await ws.send(data[i : i + 3200])
                await asyncio.sleep(0.1)
            await ws.send(json.dumps({"type": "stop"}))
            messages = []
            while not messages or messages[-1]["type"] != "stopped":
                messages.append(json.loads(await asyncio.wait_for(ws.recv(), 120)))
            return messages

    with cli_server("serve", "--port", "0") as (_engine, engine_port, _):
        engine = f"http://127.0.0.1:{engine_port}"
        with cli_server("serve", "--port", "0", "--engine", engine) as (_front, port, told):
            messages = asyncio.run(browser(port))
    finals = [m for m in messages if m["type"] == "final"]
    assert len(finals) >= 3, messages
    assert wer(references[name], " ".join(m["text"] for m in finals)) < 0.3
    assert any(m["type"] == "partial" for m in messages)  # partials come from the engine too
