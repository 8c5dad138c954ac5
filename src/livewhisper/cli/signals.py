"""Signals are the command line's business: the core only offers a stop event."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any


@contextlib.contextmanager
def interrupts(
    stop: threading.Event, *, before_exit: Callable[[], None] | None = None
) -> Iterator[None]:
    """Own Ctrl-C (SIGINT) while the block runs: the first sets *stop*, so the session
    ends normally (its open utterance is transcribed and written); a second exits at
    once with status 130, after *before_exit* (such as stopping the live view, so
    the terminal is left clean). Off the main thread, where Python cannot take
    signals, nothing changes."""
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
        os._exit(130)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
