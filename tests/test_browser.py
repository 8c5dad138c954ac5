"""End to end in a real browser: headless Chromium whose microphone plays real speech.

The page is loaded from the real server on a free port, with the real model behind
it. Needs the Debian ``chromium`` package and the ``playwright`` Python package (its
driver only; no browser download).
"""

from __future__ import annotations

import asyncio
import shutil
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from livewhisper.metrics import word_error_rate as wer
from livewhisper.serve.options import ServerOptions
from livewhisper.serve.streams import live_streams
from livewhisper.serve.thread import ServerThread

CHROMIUM = "/usr/bin/chromium"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="needs Debian's chromium"),
]


def has_words(n: float, text: str) -> str:
    """A page condition: the JavaScript string *text* holds at least *n* words. The
    tests wait for an amount of text, not for words the model may spell its own way."""
    return f"(({text}) || '').split(/\\s+/).filter(Boolean).length >= {n}"


#: Most of the clip's 22 words: more than its first two utterances can make (14 words,
#: 16 seen), so its last utterance has come.
MOST_OF_JFK = 19


@pytest.fixture(scope="module")
def server(engine: Any) -> Iterator[ServerThread]:
    from livewhisper.engine.scheduler import Scheduler

    with Scheduler(engine) as scheduler:
        make, backlog = live_streams(scheduler)
        with ServerThread(ServerOptions(port=0), make, backlog=backlog) as thread:
            yield thread


@pytest.fixture(scope="module")
def microphone_wav(
    tmp_path_factory: pytest.TempPathFactory, speech: Callable[[str], np.ndarray]
) -> Path:
    """jfk.flac as WAV with 1 s of silence before (the fake device starts early) and after."""
    silence = np.zeros(16_000, np.float32)
    samples = np.concatenate([silence, speech("jfk.flac"), silence, silence])
    path = tmp_path_factory.mktemp("mic") / "jfk_padded.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
        out.writeframes((samples * 32767).astype("<i2").tobytes())
    return path


@pytest.fixture
def browser(tmp_path: Path, microphone_wav: Path) -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--autoplay-policy=no-user-gesture-required",
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={microphone_wav}%noloop",
            ],
        )
        try:
            yield context
        finally:
            context.close()


def test_page_streams_the_microphone_and_shows_the_transcript(
    server: ServerThread, browser: Any, references: dict[str, str]
) -> None:
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server.url("/"))
    assert page.title() == "livewhisper"
    page.click("#toggle")
    page.wait_for_function("document.querySelector('#state').dataset.state === 'live'")
    # The text appears while the microphone is still on, up to the clip's last utterance.
    page.wait_for_function(has_words(MOST_OF_JFK, "window.livewhisper.text()"), timeout=45_000)
    page.click("#toggle")  # stop: the open utterance is finished, then the socket closes
    page.wait_for_function("window.livewhisper.state === 'idle'", timeout=30_000)
    text = page.evaluate("window.livewhisper.text()")
    assert wer(references["jfk.flac"], text) < 0.2, text
    srt = page.evaluate("window.livewhisper.srt()")
    assert srt.startswith("1\n00:00:0") and " --> " in srt
    finals = page.locator("#transcript p.final")
    assert finals.count() >= 1
    assert errors == []


TUTORIAL_PAGE = """
<!doctype html><title>tutorial</title><div id="out"></div>
<script>
  window.received = 0;
  const socket = new WebSocket(`ws://${location.host}/ws/whisper/`);
  navigator.mediaDevices.getUserMedia({ audio: true }).then((stream) => {
    const recorder = new MediaRecorder(stream);
    let chunks = [];
    recorder.ondataavailable = (e) => chunks.push(e.data);
    recorder.start(500);
    setInterval(() => {
      if (!chunks.length || socket.readyState !== WebSocket.OPEN) return;
      socket.send(new Blob(chunks, { type: "audio/wav" }));  // really WebM/Opus
      chunks = [];
    }, 3000);
  });
  socket.onmessage = (event) => {
    window.received += 1;
    document.getElementById("out").textContent += JSON.parse(event.data).text + " ";
  };
</script>
"""


def test_tutorial_mediarecorder_client_works_unchanged(
    server: ServerThread, browser: Any, references: dict[str, str]
) -> None:
    page = browser.new_page()
    page.goto(server.url("/"))  # same origin as the server, as the tutorial's page would be
    page.set_content(TUTORIAL_PAGE)
    page.wait_for_function(
        has_words(MOST_OF_JFK, "document.getElementById('out').textContent"), timeout=90_000
    )
    text = page.inner_text("#out")
    assert "undefined" not in text
    assert wer(references["jfk.flac"], text) < 0.2, text


def test_page_reconnects_and_resumes_its_transcript(
    server: ServerThread, browser: Any, references: dict[str, str]
) -> None:
    page = browser.new_page()
    page.goto(server.url("/"))
    page.click("#toggle")
    page.wait_for_function("window.livewhisper.state === 'live'")
    session = page.evaluate("window.livewhisper.session")
    # The first utterance's text is in: drop the connection mid-session.
    page.wait_for_function(has_words(3, "window.livewhisper.text()"), timeout=45_000)

    async def drop_connections() -> int:
        # As if the network went away: no close frame, the page sees code 1006.
        # uvicorn's WebSocket protocols hold the sockets.
        connections = [
            protocol
            for protocol in server.server.uvicorn.server_state.connections
            if getattr(protocol, "scope", {}).get("type") == "websocket"
        ]
        for protocol in connections:
            protocol.transport.abort()
        return len(connections)

    dropped = asyncio.run_coroutine_threadsafe(drop_connections(), server.loop).result(10)
    assert dropped == 1
    page.wait_for_function("window.livewhisper.state === 'reconnecting'", timeout=10_000)
    page.wait_for_function("window.livewhisper.state === 'live'", timeout=20_000)
    assert page.evaluate("window.livewhisper.session") == session
    # Audio recorded while disconnected was kept and sent: the speech goes on to its end.
    page.wait_for_function(has_words(MOST_OF_JFK, "window.livewhisper.text()"), timeout=45_000)
    page.click("#toggle")
    page.wait_for_function("window.livewhisper.state === 'idle'", timeout=30_000)
    text = page.evaluate("window.livewhisper.text()")
    assert wer(references["jfk.flac"], text) < 0.3, text
