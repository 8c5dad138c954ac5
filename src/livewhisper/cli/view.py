"""The Rich live view of a listening session, drawn on stderr."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from types import TracebackType

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from livewhisper.live.contract import StreamStatus
from livewhisper.live.sinks import format_event
from livewhisper.transcript import TextEvent

_STATES = {
    "listening": ("● listening", "green"),
    "speech": ("● hearing speech", "bold yellow"),
    "transcribing": ("● transcribing", "cyan"),
}


def meter(level_db: float, width: int = 20, floor: float = -60.0) -> Text:
    """A bar for an input level in dBFS, *floor* (empty) to 0 (full)."""
    fill = round(width * min(1.0, max(0.0, (level_db - floor) / -floor)))
    style = "green" if level_db < -12 else "yellow" if level_db < -3 else "red"
    bar = Text("▮" * fill, style=style)
    bar.append("▯" * (width - fill), style="dim")
    return bar


class LiveView:
    """Status line, level meter, model and device, last latency and, when *show_lines*,
    the most recent finished lines. `status` is polled on each refresh.

    Events arrive on the scheduler's thread and `render` runs on Rich's refresh
    thread: the lines and the partial are guarded by a lock, and `render` works on
    a copy of them."""

    def __init__(
        self,
        console: Console,
        status: Callable[[], StreamStatus],
        *,
        model: str,
        device: str,
        show_lines: bool = True,
        lines: int = 5,
        quiet_after: float = 10.0,
        auto_refresh: bool = True,
        inputs: Callable[[], list[InputStatus]] | None = None,
    ) -> None:
        self.console = console
        self.status = status
        self.inputs = inputs
        self.model = model
        self.device = device
        self.show_lines = show_lines
        self.quiet_after = quiet_after
        self._lock = threading.Lock()
        self.lines: deque[str] = deque(maxlen=lines)
        self.partial: TextEvent | None = None
        self._live = Live(
            console=console,
            get_renderable=self.render,
            auto_refresh=auto_refresh,
            refresh_per_second=8,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
        )

    def add_final(self, event: TextEvent) -> None:
        """Take an event: a final becomes a line, a partial the line still changing."""
        with self._lock:
            if event.type == "partial":
                self.partial = event
                return
            if self.partial is not None and self.partial.id <= event.id:
                self.partial = None
            if self.show_lines:
                self.lines.append(format_event(event))

    add_event = add_final

    def print_line(self, line: str) -> None:
        """Print a finished line above the live region, where it stays."""
        self.console.print(line, markup=False, highlight=False, emoji=False, soft_wrap=True)

    def render(self) -> RenderableType:
        s = self.status()
        label, style = _STATES[s.state]
        head = Text.assemble((label, style), "  ", meter(s.level_db), f" {s.level_db:4.0f} dBFS")
        rows: list[RenderableType] = []
        if self.inputs is not None:
            # One row per input, and the first line says how the engine keeps up.
            listed = self.inputs()
            width = max((len(name or "") for name, _, _ in listed), default=0)
            for name, each, running in listed:
                rows.append(input_row(name or "", each, running, width))
            head = Text(f"● {len(listed)} inputs", style="green")
            s = replace(
                s,
                last_latency=next(
                    (x.last_latency for _, x, _ in listed if x.last_latency is not None), None
                ),
                behind=max((x.behind for _, x, _ in listed), default=0.0),
                overflows=sum(x.overflows for _, x, _ in listed),
                time=max((x.time for _, x, _ in listed), default=s.time),
            )
        if s.last_latency is not None:
            head.append(f"   last {s.last_latency:.2f} s", style="dim")
        if s.behind >= 1.0:  # speech waiting for text: the engine is slower than speech
            head.append(f"   behind by {s.behind:.0f} s", style="bold red")
        if s.overflows:
            head.append(f"   overflows {s.overflows}", style="bold red")
        info = Text(f"{self.model} · {self.device} · {_clock(s.time)}", style="dim")
        with self._lock:
            lines, partial = list(self.lines), self.partial
        parts: list[RenderableType] = [Text(line) for line in lines]
        if partial is not None:
            parts.append(partial_text(partial))
        parts += [*rows, head, info] if rows else [head, info]
        if s.silent_for >= self.quiet_after and s.state == "listening":
            parts.append(
                Text(
                    f"Nothing heard for {s.silent_for:.0f} s: check the microphone "
                    f"(level {s.level_db:.0f} dBFS; is it muted, or the wrong device?)",
                    style="bold yellow",
                )
            )
        return Group(*parts)

    def refresh(self) -> None:
        self._live.refresh()

    def start(self) -> LiveView:
        self._live.start()
        return self

    def stop(self) -> None:
        self._live.stop()

    def __enter__(self) -> LiveView:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def partial_text(event: TextEvent) -> Text:
    """A partial line: its committed words plain, the tail that may still change
    dimmed and in italics (after its input's label, in a session of several)."""
    stable = event.stable if event.text.startswith(event.stable) else ""
    tail = event.text[len(stable) :]
    label = f"[{event.source}] " if event.source is not None else ""
    return Text.assemble(label, stable, (tail, "dim italic"))


#: An input of a session of several: its label, its status, whether it still runs.
InputStatus = tuple[str | None, StreamStatus, bool]


def input_row(name: str, status: StreamStatus, running: bool, width: int = 0) -> Text:
    """One input's line in the view: its label, state and level, or that it ended."""
    row = Text(f"{name:<{width}}  ", style="bold")
    if not running:
        row.append("○ ended", style="dim")
        return row
    label, style = _STATES[status.state]
    row.append_text(Text.assemble((f"{label:<16}", style), " ", meter(status.level_db, 12)))
    row.append(f" {status.level_db:4.0f} dBFS")
    if status.overflows:
        row.append(f"   overflows {status.overflows}", style="bold red")
    return row


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"
