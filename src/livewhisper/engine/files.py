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
from typing import IO, TextIO, cast

from livewhisper.audio.files import open_audio
from livewhisper.engine.contract import FileInfo, TranscribeOptions, Transcriber
from livewhisper.errors import LivewhisperError, OutputError, cannot_write
from livewhisper.writers import WholeWrites, make_writer, whole_writes


@dataclass(frozen=True)
class Target:
    """Where one input's transcript goes, in one format."""

    fmt: str
    path: Path | None  # None: standard output


#: Told the input's name and declared duration (None if unknown) when it opens; it
#: returns what is told the seconds transcribed after each segment, and at the end
#: those seconds again with the input's real duration.
Progress = Callable[[str, float | None], Callable[[float, float | None], None]]


@dataclass
class Opened:
    """A target opened for writing: *out* is where its writer writes."""

    target: Target
    out: TextIO
    tmp: Path | None = None  # the temporary file renamed into place at the end
    kept: bool = True  # False: dropped at the end (it could not be written whole)


@contextlib.contextmanager
def open_targets(targets: list[Target]) -> Iterator[list[Opened]]:
    """Open each target: stdout as it is, files as temporary files renamed into place at
    the end, so a failed run never leaves half a transcript under the final name (one
    that is not `Opened.kept` is removed). Files are written a segment at a time, each
    whole or not at all (`writers.WholeWrites`), so one that filled the disk holds the
    segments before it and is still a valid transcript."""
    opened: list[Opened] = []
    try:
        for t in targets:
            if t.path is None:
                opened.append(Opened(t, sys.stdout))
                continue
            if t.path.exists() and not t.path.is_file():
                # A device or a pipe (/dev/stdout, a FIFO): written to as it is.
                try:
                    opened.append(Opened(t, whole_writes(t.path)))
                except OSError as exc:
                    raise cannot_write(t.path, exc) from exc
                continue
            try:
                fd, tmp_name = tempfile.mkstemp(prefix=f".{t.path.name}.", dir=t.path.parent)
            except OSError as exc:
                raise cannot_write(t.path, exc) from exc
            out = cast(TextIO, WholeWrites(fd, str(t.path)))
            opened.append(Opened(t, out, Path(tmp_name)))
        yield opened
        for o in opened:
            if o.tmp is not None and o.target.path is not None and o.kept:
                try:
                    o.out.close()
                    os.replace(o.tmp, o.target.path)
                except OSError as exc:
                    raise cannot_write(o.target.path, exc) from exc
    finally:
        for o in opened:
            if o.target.path is not None:
                with contextlib.suppress(OSError):
                    o.out.close()
            if o.tmp is not None:
                o.tmp.unlink(missing_ok=True)


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
    So does an output that cannot be written (a full disk): the decode stops there,
    each output keeps the segments written to it whole (a ``json`` document, written
    at the end, is then not kept), and the `OutputError` says how far they go.
    """
    audio = open_audio(source)
    info = FileInfo()
    advanced = progress(audio.name, audio.declared_duration) if progress is not None else None
    interrupted = False
    failure: OutputError | None = None
    written = 0.0  # the end of the last segment every output took
    with open_targets(targets) as opened:
        writers = [make_writer(o.target.fmt, o.out) for o in opened]
        extra = {"file": audio.name} if label else None
        try:
            for w in writers:
                w.begin()
            for segment in engine.transcribe_blocks(audio.blocks(), options, info=info):
                for w in writers:
                    w.write(segment, extra)
                written = segment.end
                if advanced is not None:
                    advanced(segment.end, None)
        except KeyboardInterrupt:
            # Keep what is done: the writers end and the files are renamed into place.
            interrupted = True
        except OutputError as exc:
            failure = exc  # what each output holds is whole: keep it, stop decoding
        meta = {
            "file": audio.name,
            "model": engine.name,
            "language": info.language,
            "duration": round(info.duration, 3),
        }
        for o, w in zip(opened, writers, strict=True):
            try:
                w.end(meta)
            except OutputError as exc:
                failure = failure or exc
                o.kept = False
        if failure is not None and not written:
            for o in opened:
                o.kept = False  # no empty transcript is left under the final name
        kept = any(o.kept and o.target.path is not None for o in opened)
    if failure is not None:
        held = f"the transcript goes to {written:.1f} s" if kept else "nothing was kept"
        raise OutputError(f"{str(failure).rstrip('.')}; {held}.")
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
