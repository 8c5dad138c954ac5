"""Giving the C heap's free memory back to the system while the engine is idle.

A decode allocates and frees tens of megabytes in CTranslate2's threads (the
encoder's output, the beams' caches, the features). glibc's allocator keeps what is
freed in its arenas for the next allocation rather than returning it, and the
arenas' high-water mark rises whenever a decode needs more than any before it (a
long utterance, a fallback with more hypotheses): a session of hours shows that as
steps of RSS that never come down, though the memory is free. `malloc_trim` hands
the free pages back. It costs a few milliseconds, and the next decode pays about as
much again to fault the pages back in (13 ms at the median for a tiny.en utterance
on 2 cores), so it is done when no job is waiting and at most once a minute.

Where the C library has no `malloc_trim` (macOS, musl), this does nothing.
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Callable


def _malloc_trim() -> Callable[[], None] | None:
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


class HeapTrimmer:
    """Releases the heap's free memory when asked, at most once every *every* s."""

    def __init__(
        self,
        every: float = 60.0,
        release: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.every = every
        self._release = release if release is not None else _malloc_trim()
        self._clock = clock
        self._last = -float("inf")
        self._lock = threading.Lock()

    @property
    def available(self) -> bool:
        return self._release is not None

    def idle(self) -> bool:
        """The engine has nothing to do: release the free memory if the last release
        was long enough ago. Returns whether it did."""
        if self._release is None:
            return False
        with self._lock:
            now = self._clock()
            if now - self._last < self.every:
                return False
            self._last = now
        self._release()
        return True
