"""The progress bar of `livewhisper file`: audio seconds done of the total, and speed."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class AudioSecondsColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        total = f"{task.total:.0f}" if task.total is not None else "?"
        return Text(f"{task.completed:.0f}/{total} s", style="progress.download")


class SpeedColumn(ProgressColumn):
    """Audio seconds transcribed per wall-clock second (the real-time factor, inverted)."""

    def render(self, task: Task) -> Text:
        started = task.fields.get("started")
        if not started or not task.completed:
            return Text("", style="progress.data.speed")
        speed = task.completed / max(1e-6, time.monotonic() - started)
        return Text(f"{speed:.1f}x real time", style="progress.data.speed")


def file_progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}", justify="left"),
        BarColumn(bar_width=None),
        AudioSecondsColumn(),
        SpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
