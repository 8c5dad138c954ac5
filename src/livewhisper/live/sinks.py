"""Where a live stream's events go: lines on a text stream, a transcript file."""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from livewhisper.errors import cannot_write
from livewhisper.live.contract import Emit
from livewhisper.transcript import Segment, TextEvent


def format_event(event: TextEvent, fmt: str = "text") -> str:
    """One line for *event*: its text, or its JSON (``fmt="jsonl"``; see docs/listen.md)."""
    if fmt == "jsonl":
        return json.dumps(event.to_dict(), ensure_ascii=False)
    if event.source is not None:  # one of several inputs
        return f"[{event.source}] {event.text}"
    return event.text


def line_sink(fmt: str = "text", out: TextIO | None = None, *, partials: bool = False) -> Emit:
    """One line per final on *out* (the current stdout if None), flushed each time.

    With *partials*, partial events are written too: as JSON lines in ``jsonl``; in
    ``text`` each partial is written after a carriage return without a newline, so on
    a terminal it replaces the previous one in place and the final ends the line."""
    shown = 0  # characters of the partial now on the line

    def emit(event: TextEvent) -> None:
        nonlocal shown
        stream = out or sys.stdout
        if event.type == "partial":
            if not partials:
                return
            if fmt == "text":
                line = format_event(event)
                _write(stream, "\r" + line + " " * max(0, shown - len(line)))
                shown = len(line)
                return
        elif fmt == "text" and shown:
            line = format_event(event)
            _write(stream, "\r" + line + " " * max(0, shown - len(line)) + "\n")
            shown = 0
            return
        _write(stream, format_event(event, fmt) + "\n")

    return emit


def _write(out: TextIO, text: str) -> None:
    try:
        out.write(text)
        out.flush()
    except OSError as exc:
        name = "standard output" if out is sys.stdout else getattr(out, "name", "output")
        raise cannot_write(str(name), exc) from exc


def transcript_sink(transcript: Any) -> Emit:
    """Append each final to a `writers.AppendingTranscript` (synced to disk per line);
    partials are skipped."""

    def emit(event: TextEvent) -> None:
        if event.type != "final":
            return
        extra = {"type": event.type, "id": event.id, "language": event.language}
        if event.source is not None:
            extra["source"] = event.source
        transcript.write(Segment(event.start, event.end, event.text), extra)

    return emit
