"""Signals are the command line's business: the core only offers a stop event."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

#: What ends a session normally: Ctrl-C, and what systemd, Docker, ``timeout`` and
#: ``kill`` send (SIGTERM), and a closed terminal (SIGHUP).
ENDING = tuple(
    s
    for s in (signal.SIGINT, getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None))
    if s
)


@contextlib.contextmanager
def interrupts(
    stop: threading.Event, *, before_exit: Callable[[], None] | None = None
) -> Iterator[None]:
    """Own the ending signals while the block runs: the first sets *stop*, so the
    session ends normally (its open utterance is transcribed and written, the
    summary printed, exit status 0); a second exits at once with 128 + the signal's
    number, after *before_exit* (such as stopping the live view, so the terminal is
    left clean). What is already written stays whole: transcript lines are synced
    as they are written. Off the main thread, where Python cannot take signals,
    nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if not stop.is_set():
            stop.set()
            return
        if before_exit is not None:
            with contextlib.suppress(Exception):
                before_exit()
        os._exit(128 + signum)

    previous = {s: signal.signal(s, handler) for s in ENDING}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)
