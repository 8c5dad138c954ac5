"""Transcribing files: an input decoded block by block through the engine, its
segments written as they come to every output asked for.

An output file is written under a temporary name and renamed into place at the
end, so a failed run never leaves half a transcript under the final name; an
interrupted run keeps what was transcribed.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TextIO

from livewhisper.audio.files import open_audio
from livewhisper.engine.contract import FileInfo, TranscribeOptions, Transcriber
from livewhisper.errors import LivewhisperError, cannot_write
from livewhisper.writers import make_writer


@dataclass(frozen=True)
class Target:
    """Where one input's transcript goes, in one format."""

    fmt: str
    path: Path | None  # None: standard output


#: Told the input's name and declared duration (None if unknown) when it opens; it
#: returns what is told the seconds transcribed after each segment, and at the end
#: those seconds again with the input's real duration.
Progress = Callable[[str, float | None], Callable[[float, float | None], None]]


@contextlib.contextmanager
def open_targets(targets: list[Target]) -> Iterator[list[tuple[Target, TextIO]]]:
    """Open each target: stdout as it is, files as temporary files renamed into place at
    the end, so a failed run never leaves half a transcript under the final name."""
    opened: list[tuple[Target, TextIO, Path | None]] = []
    try:
        for t in targets:
            if t.path is None:
                opened.append((t, sys.stdout, None))
                continue
            if t.path.exists() and not t.path.is_file():
                # A device or a pipe (/dev/stdout, a FIFO): written to as it is.
                try:
                    opened.append((t, open(t.path, "w", encoding="utf-8"), None))  # noqa: SIM115
                except OSError as exc:
                    raise cannot_write(t.path, exc) from exc
                continue
            try:
                fd, tmp_name = tempfile.mkstemp(prefix=f".{t.path.name}.", dir=t.path.parent)
            except OSError as exc:
                raise cannot_write(t.path, exc) from exc
            opened.append((t, open(fd, "w", encoding="utf-8"), Path(tmp_name)))  # noqa: SIM115
        yield [(t, f) for t, f, _ in opened]
        for t, f, tmp in opened:
            if tmp is not None and t.path is not None:
                try:
                    f.close()
                    os.replace(tmp, t.path)
                except OSError as exc:
                    raise cannot_write(t.path, exc) from exc
    finally:
        for t, f, tmp in opened:
            if t.path is not None:
                with contextlib.suppress(OSError):
                    f.close()
            if tmp is not None:
                tmp.unlink(missing_ok=True)


def transcribe_file(
    engine: Transcriber,
    source: str | os.PathLike[str] | IO[bytes],
    options: TranscribeOptions,
    targets: list[Target],
    *,
    label: bool = False,
    progress: Progress | None = None,
) -> FileInfo:
    """Transcribe one input (a path, ``-`` for stdin, or a binary stream) into
    *targets*; with *label*, every segment carries the input's name (several
    inputs into one output).

    Ctrl-C keeps what is done: the outputs are ended and renamed into place, then
    `KeyboardInterrupt` says how far the transcript goes. An input that fails part
    way (a truncated file) gives its transcript so far, then a `LivewhisperError`.
    """
    audio = open_audio(source)
    info = FileInfo()
    advanced = progress(audio.name, audio.declared_duration) if progress is not None else None
    interrupted = False
    with open_targets(targets) as opened:
        writers = [make_writer(t.fmt, f) for t, f in opened]
        extra = {"file": audio.name} if label else None
        for w in writers:
            w.begin()
        try:
            for segment in engine.transcribe_blocks(audio.blocks(), options, info=info):
                for w in writers:
                    w.write(segment, extra)
                if advanced is not None:
                    advanced(segment.end, None)
        except KeyboardInterrupt:
            # Keep what is done: the writers end and the files are renamed into place.
            interrupted = True
        meta = {
            "file": audio.name,
            "model": engine.name,
            "language": info.language,
            "duration": round(info.duration, 3),
        }
        for w in writers:
            w.end(meta)
    if advanced is not None:
        advanced(info.duration, info.duration)
    if interrupted:
        done = info.segments[-1].end if info.segments else 0.0
        raise KeyboardInterrupt(f"{audio.name}: interrupted; the transcript covers {done:.1f} s.")
    if audio.problem:
        raise LivewhisperError(
            f"{audio.name}: {audio.problem}; the transcript covers the first {info.duration:.1f} s."
        )
    return info
