"""The audio of one stream as a client sends it, decoded and fed off the event loop.

Binary messages are raw 16-bit PCM at the client's rate, or a container stream
(WebM, Ogg, WAV) cut anywhere. PCM is converted, resampled to 16 kHz and fed in a
worker thread, one message at a time: the connection reads its next message only
after that, which pushes back on a client while its stream waits for room in the
scheduler. Container audio goes to a `StreamDecoder`, which decodes and feeds on its
own thread and bounds the bytes waiting for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import numpy as np

from livewhisper.audio.containers import ContainerError, ContainerKind, StreamDecoder, sniff
from livewhisper.audio.pcm import Resampler, from_pcm16
from livewhisper.live.contract import AudioStream
from livewhisper.serve.close import CLOSE_INTERNAL, CLOSE_INVALID, ProtocolError

T = TypeVar("T")

log = logging.getLogger(__name__)


class Offload:
    """The blocking calls of one connection (feeding, finishing), one at a time, each in
    a thread of the loop's executor."""

    def __init__(self) -> None:
        self._current: asyncio.Future[Any] | None = None

    async def run(self, func: Callable[..., T], *args: Any) -> T:
        """Run *func* off the loop. A cancelled caller does not stop it: `settle` waits
        for it, so a stream is never fed and finished at the same time."""
        future = asyncio.ensure_future(asyncio.to_thread(func, *args))
        self._current = future
        return await asyncio.shield(future)

    async def settle(self) -> None:
        """Wait for the call running now, if any (one whose caller was cancelled)."""
        if self._current is not None:
            await asyncio.wait([self._current])


def check_stream(stream: AudioStream, session_id: str | None) -> None:
    """Raise the close (1011) for a stream whose engine or outputs failed."""
    error = stream.error
    if error is not None:
        log.error("stream of session %s failed: %s", session_id, error)
        raise ProtocolError(CLOSE_INTERNAL, f"transcription failed: {error}")


class AudioIntake:
    """Feeds one stream from binary messages; `close` ends its audio.

    The first message fixes the kind (PCM, or the container it starts with); a later
    message that starts a new container stream (a restarted recorder) is decoded as
    a new recording. *fail* ends the connection when the decoder's thread finds the
    stream undecodable. ``fed`` counts the 16 kHz samples fed.
    """

    def __init__(
        self,
        stream: AudioStream,
        rate: int,
        offload: Offload,
        *,
        fail: Callable[[ProtocolError], None],
        max_pending: int,
        session_id: str | None,
    ) -> None:
        self.stream = stream
        self.rate = rate
        self.fed = 0
        self.session_id = session_id
        self._offload = offload
        self._fail = fail
        self._max_pending = max_pending
        self._loop = asyncio.get_running_loop()
        self._mode: ContainerKind | Literal["pcm"] | None = None
        self._resampler: Resampler | None = None
        self._decoder: StreamDecoder | None = None

    async def write(self, data: bytes) -> None:
        if not data:
            return
        kind = sniff(data)
        if self._mode is None:
            self._mode = kind or "pcm"
        elif self._mode != "pcm" and kind is not None:
            await self._close_decoder()
            self._mode = kind
        if self._mode == "pcm":
            await self._write_pcm(data)
            return
        if self._decoder is None:
            self._decoder = self._new_decoder(self._mode)
        try:
            self._decoder.write(data)
        except ContainerError as exc:
            raise ProtocolError(CLOSE_INVALID, f"audio stream: {exc}") from None

    async def close(self) -> None:
        """The end of this stream's audio: what the decoder or the resampler holds is
        fed. Idempotent; the caller then finishes the stream."""
        await self._offload.settle()
        await self._close_decoder()
        resampler, self._resampler = self._resampler, None
        if resampler is not None:
            await self._feed(resampler, b"", last=True)

    async def _write_pcm(self, data: bytes) -> None:
        if len(data) % 2:
            raise ProtocolError(
                CLOSE_INVALID, f"odd byte count ({len(data)}) in 16-bit PCM audio frame"
            )
        if self._resampler is None:
            self._resampler = Resampler(self.rate)
        await self._feed(self._resampler, data)

    async def _feed(self, resampler: Resampler, data: bytes, last: bool = False) -> None:
        fed = await self._offload.run(self._feed_pcm, resampler, data, last)
        if fed:
            self.fed += fed
            check_stream(self.stream, self.session_id)

    def _feed_pcm(self, resampler: Resampler, data: bytes, last: bool) -> int:  # worker
        samples = resampler(from_pcm16(data), last=last)
        if len(samples):
            self.stream.feed(samples)
        return len(samples)

    def _new_decoder(self, kind: ContainerKind) -> StreamDecoder:
        stream, loop, fail = self.stream, self._loop, self._fail

        def on_samples(block: np.ndarray) -> None:  # decoder thread
            stream.feed(block)
            loop.call_soon_threadsafe(self._count, len(block))

        def on_end(reason: str | None) -> None:  # decoder thread
            if reason is not None:
                loop.call_soon_threadsafe(
                    fail, ProtocolError(CLOSE_INVALID, f"audio stream: {reason}")
                )

        return StreamDecoder(
            kind,
            on_samples,
            on_end,
            max_pending=self._max_pending,
            name=self.session_id or "container",
        )

    def _count(self, samples: int) -> None:
        self.fed += samples

    async def _close_decoder(self) -> None:
        if self._decoder is not None:
            decoder, self._decoder = self._decoder, None
            decoder.close()
            await self._offload.run(decoder.join)
            await asyncio.sleep(0)  # let the counts it queued on the loop run
