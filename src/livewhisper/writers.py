"""Transcript formats, written a segment at a time.

Every writer except ``json`` writes each segment as soon as it is given one, so a
transcript on a pipe or on disk grows while the audio is transcribed, and a live
session's ``--output`` file holds every line that was shown. ``json`` is one document
and is written when the writer ends.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO, cast

from livewhisper.errors import OutputError, cannot_write
from livewhisper.transcript import Segment

FORMATS = ("txt", "srt", "vtt", "json", "jsonl", "tsv")


def timestamp(seconds: float, sep: str = ".", always_hours: bool = True) -> str:
    """``01:02:03.456`` (``sep=","`` for SRT)."""
    ms = max(0, round(seconds * 1000))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    head = f"{hours:02d}:" if always_hours or hours else ""
    return f"{head}{minutes:02d}:{secs:02d}{sep}{ms:03d}"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _source(extra: Mapping[str, Any] | None) -> str | None:
    """The input a segment was heard on, when a session has several."""
    source = (extra or {}).get("source")
    return None if source is None else _one_line(str(source))


def _labelled(text: str, extra: Mapping[str, Any] | None) -> str:
    """``[them] text`` for a segment of one of several inputs, else *text*."""
    source = _source(extra)
    return text if source is None or not text else f"[{source}] {text}"


class Writer:
    """Base class: ``begin()``, ``write(segment)`` per segment, ``end()``."""

    def __init__(self, out: TextIO, *, sync: bool = False) -> None:
        self.out = out
        self.sync = sync
        self.count = 0

    def begin(self) -> None:
        pass

    def write(self, segment: Segment, extra: Mapping[str, Any] | None = None) -> None:
        text = self.format(segment, extra)
        if text:
            self._emit(text)
        self.count += 1

    def format(self, segment: Segment, extra: Mapping[str, Any] | None) -> str:
        raise NotImplementedError

    def end(self, meta: Mapping[str, Any] | None = None) -> None:
        self._flush()

    def _emit(self, text: str) -> None:
        try:
            self.out.write(text)
        except OSError as exc:
            raise cannot_write(_name(self.out), exc) from exc
        self._flush()

    def _flush(self) -> None:
        try:
            self.out.flush()
            if self.sync:
                os.fsync(self.out.fileno())
        except OSError as exc:
            raise cannot_write(_name(self.out), exc) from exc


class WholeWrites(io.TextIOBase):
    """A transcript file written without a buffer, each write (a segment) whole or
    not at all: a write that fails part way, as on a full disk, is cut off again, so
    the file always ends where a segment ends and stays a valid transcript."""

    def __init__(self, fd: int, name: str) -> None:
        self.fd = fd
        self._name = name
        try:
            self.size = os.lseek(fd, 0, os.SEEK_END)
        except OSError:  # a pipe or a device: nothing to cut back to
            self.size = 0

    @property
    def name(self) -> str:
        return self._name

    def write(self, text: str) -> int:
        data = text.encode("utf-8")
        done = 0
        try:
            while done < len(data):
                done += os.write(self.fd, data[done:])
        except OSError:
            if done:
                with contextlib.suppress(OSError):
                    os.ftruncate(self.fd, self.size)
                    os.lseek(self.fd, self.size, os.SEEK_SET)
            raise
        self.size += done
        return len(text)

    def fileno(self) -> int:
        return self.fd

    def close(self) -> None:
        if not self.closed:
            super().close()
            os.close(self.fd)


def whole_writes(path: str | os.PathLike[str], *, append: bool = False) -> TextIO:
    """*path* opened as `WholeWrites` (created if need be; with *append*, continued)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    fd = os.open(path, flags, 0o666)
    return cast(TextIO, WholeWrites(fd, os.fspath(path)))


def _name(out: TextIO) -> str:
    if out is sys.stdout:
        return "standard output"
    return str(getattr(out, "name", "output"))


class TxtWriter(Writer):
    def format(self, segment: Segment, extra: Mapping[str, Any] | None) -> str:
        text = _labelled(_one_line(segment.text), extra)
        return f"{text}\n" if text else ""


class SrtWriter(Writer):
    def __init__(self, out: TextIO, *, sync: bool = False, first_index: int = 1) -> None:
        super().__init__(out, sync=sync)
        self.index = first_index

    def format(self, segment: Segment, extra: Mapping[str, Any] | None) -> str:
        text = _labelled(_one_line(segment.text), extra)
        if not text:
            return ""
        start, end = timestamp(segment.start, ","), timestamp(segment.end, ",")
        cue = f"{self.index}\n{start} --> {end}\n{text}\n\n"
        self.index += 1
        return cue


class VttWriter(Writer):
    def __init__(self, out: TextIO, *, sync: bool = False, header: bool = True) -> None:
        super().__init__(out, sync=sync)
        self.header = header

    def begin(self) -> None:
        if self.header:
            self._emit("WEBVTT\n\n")

    def format(self, segment: Segment, extra: Mapping[str, Any] | None) -> str:
        text = _one_line(segment.text)
        if not text:
            return ""
        if segment.words:
            # Inline timestamp tags mark when each word is spoken (karaoke-style cues).
            parts = [segment.words[0].word.strip()]
            for w in segment.words[1:]:
                parts.append(f"<{timestamp(w.start)}>{w.word.strip()}")
            text = " ".join(p for p in parts if p)
        source = _source(extra)
        if source is not None:  # a voice span: who speaks the cue
            text = f"<v {source.translate(_NOT_IN_VOICE)}>{text}"
        return f"{timestamp(segment.start)} --> {timestamp(segment.end)}\n{text}\n\n"


#: What a WebVTT voice annotation cannot hold.
_NOT_IN_VOICE = str.maketrans({"<": None, ">": None, "&": None})


class TsvWriter(Writer):
    """``start<TAB>end<TAB>text`` with times in integer milliseconds; with *sources*
    (a session of several inputs), a fourth column names the input."""

    def __init__(
        self, out: TextIO, *, sync: bool = False, header: bool = True, sources: bool = False
    ) -> None:
        super().__init__(out, sync=sync)
        self.header = header
        self.sources = sources

    def begin(self) -> None:
        if self.header:
            self._emit("start\tend\ttext\tsource\n" if self.sources else "start\tend\ttext\n")

    def format(self, segment: Segment, extra: Mapping[str, Any] | None) -> str:
        text = _one_line(segment.text).replace("\t", " ")
        if not text:
            return ""
        line = f"{round(segment.start * 1000)}\t{round(segment.end * 1000)}\t{text}"
        if self.sources:
            line += "\t" + (_source(extra) or "").replace("\t", " ")
        return line + "\n"


class JsonlWriter(Writer):
    """One JSON object per line: the segment's fields, plus *extra* (such as the file)."""

    def format(self, segment: Segment, extra: Mapping[str, Any] | None) -> str:
        record = {**(extra or {}), **segment.to_dict()}
        return json.dumps(record, ensure_ascii=False) + "\n"


class JsonWriter(Writer):
    """One JSON document: metadata, the segments and the whole text."""

    def __init__(self, out: TextIO, *, sync: bool = False) -> None:
        super().__init__(out, sync=sync)
        self.segments: list[dict[str, Any]] = []

    def format(self, segment: Segment, extra: Mapping[str, Any] | None) -> str:
        self.segments.append(segment.to_dict())
        return ""

    def end(self, meta: Mapping[str, Any] | None = None) -> None:
        document = {
            **(meta or {}),
            "text": " ".join(s["text"] for s in self.segments if s["text"]),
            "segments": self.segments,
        }
        self._emit(json.dumps(document, ensure_ascii=False, indent=2) + "\n")


def make_writer(fmt: str, out: TextIO, *, sync: bool = False) -> Writer:
    """A writer for *fmt* (one of `FORMATS`) on the open text stream *out*."""
    writers: dict[str, type[Writer]] = {
        "txt": TxtWriter,
        "srt": SrtWriter,
        "vtt": VttWriter,
        "tsv": TsvWriter,
        "jsonl": JsonlWriter,
        "json": JsonWriter,
    }
    try:
        return writers[fmt](out, sync=sync)
    except KeyError:
        raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}") from None


def format_for_path(path: str | os.PathLike[str], allowed: tuple[str, ...] = FORMATS) -> str:
    """The format named by a file's extension (``.txt`` -> ``txt``)."""
    ext = Path(path).suffix.lower().lstrip(".")
    if ext == "text":
        ext = "txt"
    if ext not in allowed:
        raise OutputError(
            f"Cannot tell the format of {path} from its extension; "
            f"name it with one of: {', '.join('.' + f for f in allowed)}."
        )
    return ext


class AppendingTranscript:
    """A transcript file that grows as a live session goes: appended, flushed and
    synced to disk after every segment, so nothing shown is lost to a crash.

    An existing file is continued: SRT numbering goes on from its last cue, and
    the VTT and TSV headers are written only into an empty file. With *sources* (a
    session of several inputs) each line names its input: ``[them]`` before the
    text of txt and srt, a ``<v them>`` voice span in vtt, a ``source`` field in
    jsonl and a column in tsv.
    """

    def __init__(
        self, path: str | os.PathLike[str], fmt: str | None = None, *, sources: bool = False
    ) -> None:
        self.path = Path(path)
        self.fmt = fmt or format_for_path(path, ("txt", "srt", "vtt", "jsonl", "tsv"))
        try:
            existing = self.path.read_text(encoding="utf-8") if self.path.exists() else ""
            self._file = whole_writes(self.path, append=True)
        except OSError as exc:
            raise cannot_write(self.path, exc) from exc
        self.writer: Writer
        if self.fmt == "srt":
            cues = sum(1 for line in existing.splitlines() if " --> " in line)
            self.writer = SrtWriter(self._file, sync=True, first_index=cues + 1)
        elif self.fmt == "vtt":
            self.writer = VttWriter(self._file, sync=True, header=not existing.strip())
        elif self.fmt == "tsv":
            self.writer = TsvWriter(
                self._file, sync=True, header=not existing.strip(), sources=sources
            )
        else:
            self.writer = make_writer(self.fmt, self._file, sync=True)
        self.writer.begin()

    def write(self, segment: Segment, extra: Mapping[str, Any] | None = None) -> None:
        self.writer.write(segment, extra)

    def close(self) -> None:
        if not self._file.closed:
            try:
                self.writer.end()
            finally:
                self._file.close()

    def __enter__(self) -> AppendingTranscript:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
