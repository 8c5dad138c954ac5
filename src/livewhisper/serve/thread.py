"""The server on an event loop thread of its own, for a program that is not asyncio."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

from starlette.routing import BaseRoute

from livewhisper.live.contract import Emit
from livewhisper.serve.options import ServerOptions
from livewhisper.serve.server import LiveServer
from livewhisper.serve.streams import StreamBacklog, StreamFactory

T = TypeVar("T")


class ServerThread:
    """A `LiveServer` (uvicorn) on its own event loop thread.

    ``start`` returns once the port is bound (or raises what stopped it); ``stop``
    closes every connection (their open utterances are transcribed and sent, then
    1001) and ends the thread. Both are idempotent; it is also a context manager.
    """

    def __init__(
        self,
        options: ServerOptions,
        make_stream: StreamFactory,
        *,
        backlog: StreamBacklog | None = None,
        extra_routes: Sequence[BaseRoute] = (),
    ) -> None:
        self.server = LiveServer(options, make_stream, backlog=backlog, extra_routes=extra_routes)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> ServerThread:
        if self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._run, name="livewhisper-server", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            await self.server.start()
        except BaseException as exc:
            self._error = exc
            self._started.set()
            return
        self._started.set()
        try:
            await self._stop.wait()
        finally:
            await self.server.close()

    def stop(self, timeout: float | None = 30.0) -> None:
        loop, stop, thread = self._loop, self._stop, self._thread
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop has just ended
                loop.call_soon_threadsafe(stop.set)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The server's event loop, for `asyncio.run_coroutine_threadsafe`."""
        assert self._loop is not None, "start the server first"
        return self._loop

    @property
    def port(self) -> int:
        """The port bound (the free one chosen for port 0), once started."""
        return self.server.port

    def url(self, path: str = "/", host: str | None = None) -> str:
        return self.server.url(path, host)

    def local_emitter(self) -> Emit:
        loop = self._loop
        assert loop is not None, "start the server first"
        future = asyncio.run_coroutine_threadsafe(_call(self.server.local_emitter), loop)
        return future.result()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _call(func: Callable[[], T]) -> T:
    return func()
