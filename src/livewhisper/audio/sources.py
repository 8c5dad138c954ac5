"""Audio sources for live sessions: a PortAudio microphone, a file played as if it
were one, and raw PCM on standard input. Every source yields 16 kHz mono float32.

sounddevice (and so the PortAudio library) is imported only when a device is used,
so ``livewhisper file`` works on a machine without it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import IO, Any, Protocol

import numpy as np

from livewhisper.audio.pcm import SAMPLE_RATE, Resampler, from_pcm16
from livewhisper.errors import AudioError, DeviceError

log = logging.getLogger(__name__)

_POLL = 0.1  # seconds a source waits for audio before it looks at the stop event again
_WATCH = 0.5  # seconds between two looks whether a sound server's source is still there
_ENV_LOCK = threading.Lock()


def sounddevice() -> ModuleType:
    """Import sounddevice, or say how to install the PortAudio library it needs."""
    try:
        import sounddevice as sd
    except OSError as exc:  # sounddevice raises OSError when libportaudio is missing
        raise DeviceError(
            "The PortAudio library is not installed, so no audio device can be used: "
            "run 'sudo apt-get install libportaudio2' (Debian, Ubuntu) or "
            "'brew install portaudio' (macOS)."
        ) from exc
    module: ModuleType = sd
    return module


# --------------------------------------------------------------------------- devices


@dataclass(frozen=True)
class InputDevice:
    """An input as ``livewhisper devices`` lists it: a PortAudio device, or a source
    of the PulseAudio / PipeWire server read through PortAudio's ``pulse`` device."""

    index: int  # the number `devices` shows and --device takes
    name: str
    hostapi: str
    channels: int
    samplerate: float
    default: bool = False
    #: What the computer plays (a monitor, a loopback device), not a microphone.
    system: bool = False
    #: The sound server's name of the source; None for a plain PortAudio device.
    pulse: str | None = None
    #: The PortAudio device to open (the ``pulse`` device for a server source).
    portaudio: int | None = None

    def __str__(self) -> str:
        return f"{self.index} {self.name!r} ({self.hostapi})"


#: Names of loopback devices that carry what the computer plays where the system
#: has no monitors of its own: BlackHole, Loopback and Soundflower on macOS, VB-Audio's
#: CABLE and "Stereo Mix" on Windows.
LOOPBACK_NAMES = ("blackhole", "loopback", "soundflower", "cable output", "stereo mix")


def list_input_devices() -> list[InputDevice]:
    """The devices that can record, in PortAudio's order, then the sources of the
    PulseAudio / PipeWire server (where there is one and PortAudio reaches it)."""
    sd = sounddevice()
    try:
        devices = sd.query_devices()
        hostapis = sd.query_hostapis()
        default_in = sd.default.device[0]
    except sd.PortAudioError as exc:
        raise DeviceError(f"Cannot list audio devices: {exc}.") from exc
    found = [
        InputDevice(
            index=d["index"],
            name=d["name"],
            hostapi=hostapis[d["hostapi"]]["name"],
            channels=d["max_input_channels"],
            samplerate=float(d["default_samplerate"]),
            default=d["index"] == default_in,
            system=any(word in d["name"].lower() for word in LOOPBACK_NAMES),
        )
        for d in devices
        if d["max_input_channels"] > 0
    ]
    return found + _server_sources(found)


def _server_sources(portaudio: list[InputDevice]) -> list[InputDevice]:
    from livewhisper.audio import pulse

    through = next((d for d in portaudio if d.name == pulse.PORTAUDIO_DEVICE), None)
    if through is None:
        return []
    server = pulse.server()
    if server is None:
        return []
    first = max(d.index for d in portaudio) + 1
    return [
        InputDevice(
            index=first + i,
            name=s.description,
            hostapi="PulseAudio",
            channels=s.channels,
            samplerate=s.samplerate,
            system=s.monitor,
            pulse=s.name,
            portaudio=through.index,
        )
        for i, s in enumerate(server.sources)
    ]


def find_device(spec: str | int | None = None) -> InputDevice:
    """An input device by index, by case-insensitive name substring (a sound
    server's source also by its own name), or the default."""
    devices = list_input_devices()
    if not devices:
        raise DeviceError(
            "No audio input device found: plug in a microphone, check that the sound "
            "server (PulseAudio, PipeWire) is running, or use --input FILE or --input -."
        )
    listing = "run 'livewhisper devices' to list them"
    if spec is None or str(spec).strip() == "":
        for d in devices:
            if d.default:
                return d
        return devices[0]
    text = str(spec).strip()
    if text.isdigit():
        index = int(text)
        for d in devices:
            if d.index == index:
                return d
        raise DeviceError(f"There is no input device with index {index}; {listing}.")

    def names(d: InputDevice) -> list[str]:
        return [d.name.lower()] + ([d.pulse.lower()] if d.pulse else [])

    wanted = text.lower()
    matches = [d for d in devices if any(wanted in n for n in names(d))]
    exact = [d for d in matches if wanted in names(d)]
    if len(exact) == 1:
        return exact[0]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise DeviceError(f"No input device name contains {text!r}; {listing}.")
    shown = ", ".join(str(d) for d in matches)
    raise DeviceError(f"{text!r} matches several input devices ({shown}); give the index.")


def system_device() -> InputDevice:
    """What the computer plays: the monitor of the default output of the PulseAudio /
    PipeWire server, else a loopback device (BlackHole, Stereo Mix, CABLE Output)."""
    from livewhisper.audio import pulse

    devices = list_input_devices()
    server = pulse.server() if any(d.pulse for d in devices) else None
    if server is not None and server.default_monitor is not None:
        for d in devices:
            if d.pulse == server.default_monitor:
                return d
    loopback = [d for d in devices if d.system and d.pulse is None]
    if loopback:
        return loopback[0]
    raise DeviceError(
        "No system audio to capture here: on Linux it needs a PulseAudio or PipeWire "
        "server and the ALSA pulse plugin (apt-get install libasound2-plugins); on "
        "macOS a loopback device such as BlackHole; on Windows 'Stereo Mix' or VB-CABLE "
        "(see docs/listen.md, Meetings); or give the device with --device."
    )


# --------------------------------------------------------------------------- sources


@contextlib.contextmanager
def _pulse_source(name: str | None) -> Iterator[None]:
    """While PortAudio opens its ``pulse`` device: the sound server's source it
    records from (ALSA's pulse plugin reads ``PULSE_SOURCE`` when the device opens,
    so each stream of one process can have its own)."""
    if name is None:
        yield
        return
    with _ENV_LOCK:
        before = os.environ.get("PULSE_SOURCE")
        os.environ["PULSE_SOURCE"] = name
        try:
            yield
        finally:
            if before is None:
                del os.environ["PULSE_SOURCE"]
            else:
                os.environ["PULSE_SOURCE"] = before


class Source(Protocol):
    """Where a live session's audio comes from."""

    name: str
    overflows: int

    def blocks(self, stop: threading.Event) -> Iterator[np.ndarray]:
        """16 kHz mono float32 blocks until the input ends or *stop* is set.

        A source that fails raises after it has yielded all the audio it had.
        """
        ...

    def close(self) -> None: ...


class Microphone:
    """A PortAudio input device, opened at its own sample rate and channel count.

    The PortAudio callback only copies the block and enqueues it; downmixing and
    resampling happen in `blocks`, on the caller's thread.
    """

    def __init__(
        self,
        device: InputDevice,
        *,
        samplerate: float | None = None,
        channels: int | None = None,
        stall_timeout: float = 5.0,
        max_queued_s: float = 120.0,
        block_ms: int = 50,
    ) -> None:
        self.device = device
        # A sound server's source is read as 16 kHz mono: the server converts it.
        own_rate = SAMPLE_RATE if device.pulse else device.samplerate
        self.samplerate = float(samplerate or own_rate)
        # A device's own channel count, but no more than two: a multi-channel
        # interface is read as its first pair and downmixed.
        self.channels = channels or (1 if device.pulse else max(1, min(device.channels, 2)))
        self.stall_timeout = stall_timeout
        self.block_ms = block_ms
        self.name = f"{device.name} ({device.hostapi}, {self.samplerate:g} Hz)"
        self.overflows = 0
        self._stream: Any = None
        self._queue: queue.Queue[np.ndarray] = queue.Queue(
            maxsize=max(1, int(max_queued_s * 1000 / block_ms))
        )
        self._finished = threading.Event()
        self._closing = False
        self._callback_error: str | None = None
        self._watch: Any = None  # audio.pulse.SourceWatch of a sound server's source

    def open(self) -> Microphone:
        sd = sounddevice()
        device = self.device
        try:
            with _pulse_source(device.pulse):
                self._stream = sd.InputStream(
                    device=device.index if device.portaudio is None else device.portaudio,
                    samplerate=self.samplerate,
                    channels=self.channels,
                    dtype="float32",
                    # 50 ms blocks: a tenth of the wake-ups of PortAudio's default here
                    # (measured: 0.7% of a core instead of 2.7% while idle).
                    blocksize=int(self.samplerate * self.block_ms / 1000),
                    callback=self._callback,
                    finished_callback=self._finished.set,
                )
            self._stream.start()
        except (sd.PortAudioError, ValueError) as exc:
            self.close()
            raise DeviceError(
                f"Cannot open input device {self.device} at {self.samplerate:g} Hz with "
                f"{self.channels} channel(s): {exc}."
            ) from exc
        if device.pulse is not None:
            from livewhisper.audio.pulse import SourceWatch

            self._watch = SourceWatch(device.pulse)
        return self

    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        if status.input_overflow:
            self.overflows += 1
        try:
            self._queue.put_nowait(indata.copy())
        except queue.Full:  # the consumer is far behind: this block is lost
            self.overflows += 1

    def blocks(self, stop: threading.Event) -> Iterator[np.ndarray]:
        if self._stream is None:
            self.open()
        resample = Resampler(self.samplerate)
        last_audio = last_look = time.monotonic()
        while not stop.is_set():
            if self._watch is not None and time.monotonic() - last_look >= _WATCH:
                last_look = time.monotonic()
                if self._watch.gone():
                    # The server has moved the stream to another source: what is
                    # queued may be that source's, so it is not used.
                    yield resample(np.zeros((0, self.channels), np.float32), last=True)
                    raise DeviceError(
                        f"Input {self.device.name!r} went away (unplugged, or the call "
                        "ended); the transcript so far is kept."
                    )
            try:
                block = self._queue.get(timeout=_POLL)
            except queue.Empty:
                if self._finished.is_set():
                    break
                if time.monotonic() - last_audio > self.stall_timeout:
                    raise DeviceError(
                        f"Input device {self.device} delivered no audio for "
                        f"{self.stall_timeout:g} s; check that it is connected and not "
                        "used exclusively by another program."
                    ) from None
                continue
            last_audio = time.monotonic()
            out = resample(block)
            if len(out):
                yield out
        if self._finished.is_set() and not self._closing:
            # PortAudio ended the stream on its own: the device went away.
            while not self._queue.empty():
                yield resample(self._queue.get_nowait())
            yield resample(np.zeros((0, self.channels), np.float32), last=True)
            raise DeviceError(
                f"Input device {self.device} stopped delivering audio (it was unplugged, "
                "or its sound server stopped); the transcript so far is kept."
            )
        yield resample(np.zeros((0, self.channels), np.float32), last=True)

    def close(self) -> None:
        self._closing = True
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.close()
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.abort()
                stream.close()
            except Exception as exc:  # a vanished device can fail to close: nothing to do
                log.debug("closing the input stream failed: %s", exc)

    def __enter__(self) -> Microphone:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()


class FileSource:
    """A file played as if it were a live microphone: paced in real time, or *speed*
    times faster (``speed=0`` for no pacing at all)."""

    def __init__(self, path: str | os.PathLike[str], *, speed: float = 1.0) -> None:
        from livewhisper.audio.files import open_audio

        if speed < 0:
            raise ValueError("speed must be 0 (no pacing) or more")
        self.audio = open_audio(path)  # raises AudioError with a sentence
        self.name = self.audio.name
        self.speed = speed
        self.overflows = 0

    def blocks(self, stop: threading.Event) -> Iterator[np.ndarray]:
        chunk = SAMPLE_RATE // 50  # 20 ms, about what a sound card delivers
        started = time.monotonic()
        played = 0
        for block in self.audio.blocks():
            for i in range(0, len(block), chunk):
                if self.speed:
                    due = started + played / SAMPLE_RATE / self.speed
                    if stop.wait(max(0.0, due - time.monotonic())):
                        return
                elif stop.is_set():
                    return
                piece = block[i : i + chunk]
                played += len(piece)
                yield piece
        if self.audio.problem:
            raise AudioError(f"{self.name}: {self.audio.problem}.")

    def close(self) -> None:
        self.audio.close()


class StdinSource:
    """Raw signed 16-bit little-endian mono PCM at *rate* Hz, from a binary stream.

    A thread reads the stream, so a session can stop while no data comes. A
    stream that ends with an odd number of bytes is reported once the audio
    before it is through.
    """

    def __init__(self, rate: int = SAMPLE_RATE, stream: IO[bytes] | None = None) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.stream = stream if stream is not None else sys.stdin.buffer
        self.name = f"<stdin> (s16le, {rate} Hz)"
        self.overflows = 0
        self.total_bytes = 0
        self._queue: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=256)
        self._thread: threading.Thread | None = None

    def _read(self) -> None:
        read_chunk = max(2, self.rate // 50 * 2)  # 20 ms
        try:
            fd: int | None = self.stream.fileno()
        except (OSError, ValueError, AttributeError):  # an in-memory stream
            fd = None
        try:
            while True:
                # os.read returns what a pipe has, rather than waiting for a full chunk.
                data = os.read(fd, read_chunk) if fd is not None else self.stream.read(read_chunk)
                if not data:
                    break
                self._queue.put(data)
        except OSError as exc:
            self._queue.put(exc)
        self._queue.put(None)

    def blocks(self, stop: threading.Event) -> Iterator[np.ndarray]:
        if self._thread is None:
            self._thread = threading.Thread(target=self._read, name="stdin-reader", daemon=True)
            self._thread.start()
        resample = Resampler(self.rate)
        carry = b""
        while not stop.is_set():
            try:
                item = self._queue.get(timeout=_POLL)
            except queue.Empty:
                continue
            if item is None:
                break
            if isinstance(item, BaseException):
                raise AudioError(f"Cannot read standard input: {item}.") from item
            self.total_bytes += len(item)
            data = carry + item
            even = len(data) - len(data) % 2
            carry = data[even:]
            if even:
                samples = from_pcm16(data[:even])
                out = resample(samples)
                if len(out):
                    yield out
        tail = resample(np.zeros(0, np.float32), last=True)
        if len(tail):
            yield tail
        if carry and not stop.is_set():
            raise AudioError(
                f"Standard input ended after {self.total_bytes} bytes, an odd number, so it "
                "is not 16-bit PCM throughout (check the arecord/ffmpeg format: s16le, "
                f"mono, {self.rate} Hz); the last byte was ignored."
            )

    def close(self) -> None:
        pass
