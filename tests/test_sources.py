"""Audio sources without a sound card: resampling, stdin, files, and PortAudio faked."""

from __future__ import annotations

import io
import os
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from livewhisper.audio import sources
from livewhisper.audio.pcm import SAMPLE_RATE, Resampler
from livewhisper.audio.sources import FileSource, InputDevice, Microphone, StdinSource
from livewhisper.errors import AudioError, DeviceError

DATA = Path(__file__).parent / "data"


def tone(freq: float, rate: int, seconds: float = 1.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def resample_in_blocks(rate: int, audio: np.ndarray, block: int = 441) -> np.ndarray:
    r = Resampler(rate)
    out = [r(audio[i : i + block]) for i in range(0, len(audio), block)]
    out.append(r(audio[:0], last=True))
    return np.concatenate(out)


def test_resampler_keeps_a_tone_and_its_level() -> None:
    out = resample_in_blocks(48000, tone(1000, 48000, 2.0))
    assert abs(len(out) - 32000) <= 2
    body = out[1600:-1600]
    spectrum = np.abs(np.fft.rfft(body * np.hanning(len(body))))
    peak_hz = np.argmax(spectrum) * SAMPLE_RATE / len(body)
    assert abs(peak_hz - 1000) < 5
    assert np.sqrt(np.mean(body**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)


def test_resampler_filters_what_16k_cannot_hold() -> None:
    # 12 kHz at 44.1 kHz would alias to 4 kHz if samples were merely dropped.
    out = resample_in_blocks(44100, tone(12000, 44100, 2.0))
    assert np.sqrt(np.mean(out[1600:-1600] ** 2)) < 0.001


def test_resampler_downmixes_channels() -> None:
    stereo = np.stack([tone(500, SAMPLE_RATE), -tone(500, SAMPLE_RATE)], axis=1)
    assert np.allclose(Resampler(SAMPLE_RATE)(stereo), 0.0)
    both = np.stack([tone(500, SAMPLE_RATE), tone(500, SAMPLE_RATE)], axis=1)
    assert np.allclose(Resampler(SAMPLE_RATE)(both), tone(500, SAMPLE_RATE))


def collect(source: Any, stop: threading.Event | None = None) -> np.ndarray:
    blocks = list(source.blocks(stop or threading.Event()))
    return np.concatenate(blocks) if blocks else np.zeros(0, np.float32)


def pcm(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def test_stdin_source_reads_a_pipe_split_at_odd_bytes() -> None:
    samples = tone(440, SAMPLE_RATE, 0.5)
    data = pcm(samples)
    read_fd, write_fd = os.pipe()

    def writer() -> None:
        for i in range(0, len(data), 333):  # odd-sized pieces, split inside samples
            os.write(write_fd, data[i : i + 333])
        os.close(write_fd)

    threading.Thread(target=writer).start()
    with os.fdopen(read_fd, "rb") as stream:
        out = collect(StdinSource(SAMPLE_RATE, stream))
    assert np.allclose(out, samples, atol=2 / 32768)


def test_stdin_source_odd_total_is_an_error_after_the_audio() -> None:
    source = StdinSource(SAMPLE_RATE, io.BytesIO(pcm(np.full(160, 0.25, np.float32)) + b"\x07"))
    got: list[np.ndarray] = []
    with pytest.raises(AudioError, match="odd number"):
        for block in source.blocks(threading.Event()):
            got.append(block)
    assert sum(len(b) for b in got) == 160


def test_stdin_source_resamples() -> None:
    out = collect(StdinSource(8000, io.BytesIO(pcm(tone(300, 8000, 1.0)))))
    assert abs(len(out) - SAMPLE_RATE) <= 2


def test_stdin_source_stops_while_no_data_comes() -> None:
    read_fd, write_fd = os.pipe()
    stop = threading.Event()
    with os.fdopen(read_fd, "rb") as stream:
        timer = threading.Timer(0.3, stop.set)
        timer.start()
        started = time.monotonic()
        assert len(collect(StdinSource(SAMPLE_RATE, stream), stop)) == 0
        assert time.monotonic() - started < 3
    os.close(write_fd)


def test_file_source_unpaced_gives_the_decoded_samples(
    speech: Callable[[str], np.ndarray],
) -> None:
    out = collect(FileSource(DATA / "goforward.flac", speed=0))
    assert np.array_equal(out, speech("goforward.flac"))


def test_file_source_is_paced() -> None:
    started = time.monotonic()
    out = collect(FileSource(DATA / "goforward.flac", speed=4))
    elapsed = time.monotonic() - started
    assert len(out) / SAMPLE_RATE / 4 - 0.05 <= elapsed < len(out) / SAMPLE_RATE / 4 + 1.0


def test_file_source_stops_on_the_event() -> None:
    stop = threading.Event()
    source = FileSource(DATA / "jfk.flac", speed=1)
    got = 0
    for block in source.blocks(stop):
        got += len(block)
        if got >= 8000:
            stop.set()
    assert got < SAMPLE_RATE


def test_file_source_missing_file() -> None:
    with pytest.raises(AudioError, match="no such file"):
        FileSource("/nonexistent.wav")


# --------------------------------------------------------------------------- devices


DEVICES = [
    InputDevice(0, "HDA Intel PCH: ALC3246 Analog (hw:0,0)", "ALSA", 2, 44100.0),
    InputDevice(3, "USB Audio Device: Mic (hw:2,0)", "ALSA", 1, 48000.0),
    InputDevice(5, "pulse", "ALSA", 32, 44100.0),
    InputDevice(6, "default", "ALSA", 32, 44100.0, default=True),
]


@pytest.fixture
def devices(monkeypatch: pytest.MonkeyPatch) -> list[InputDevice]:
    monkeypatch.setattr(sources, "list_input_devices", lambda: list(DEVICES))
    return DEVICES


def test_find_device_by_index_name_or_default(devices: list[InputDevice]) -> None:
    assert sources.find_device(None).name == "default"
    assert sources.find_device("3").index == 3
    assert sources.find_device(5).name == "pulse"
    assert sources.find_device("usb").index == 3
    assert sources.find_device("DEFAULT").index == 6


def test_find_device_errors(devices: list[InputDevice]) -> None:
    with pytest.raises(DeviceError, match="no input device with index 9"):
        sources.find_device("9")
    with pytest.raises(DeviceError, match="No input device name contains 'webcam'"):
        sources.find_device("webcam")
    with pytest.raises(DeviceError, match="matches several"):
        sources.find_device("hw:")


def test_no_devices_at_all(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "list_input_devices", lambda: [])
    with pytest.raises(DeviceError, match="No audio input device found"):
        sources.find_device(None)


def test_missing_portaudio_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    class NoPortAudio:
        def find_spec(self, name: str, *args: object) -> None:
            if name == "sounddevice":
                raise OSError("PortAudio library not found")

    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    monkeypatch.setattr(sys, "meta_path", [NoPortAudio(), *sys.meta_path])
    with pytest.raises(DeviceError, match="apt-get install libportaudio2"):
        sources.sounddevice()


class FakeStream:
    """Stands in for sounddevice.InputStream: the test drives the callback."""

    last: FakeStream

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.aborted = False
        FakeStream.last = self

    def start(self) -> None:
        pass

    def abort(self) -> None:
        self.aborted = True

    def close(self) -> None:
        pass

    def push(self, block: np.ndarray, overflow: bool = False) -> None:
        status = types.SimpleNamespace(input_overflow=overflow)
        self.kwargs["callback"](block, len(block), None, status)

    def vanish(self) -> None:
        self.kwargs["finished_callback"]()


@pytest.fixture
def fake_portaudio(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    module = types.SimpleNamespace(InputStream=FakeStream, PortAudioError=RuntimeError)
    monkeypatch.setattr(sources, "sounddevice", lambda: module)
    yield


def test_microphone_opens_at_the_device_rate_and_downmixes(fake_portaudio: None) -> None:
    mic = Microphone(DEVICES[0]).open()
    stream = FakeStream.last
    assert stream.kwargs["samplerate"] == 44100 and stream.kwargs["channels"] == 2
    block = np.stack([tone(440, 44100, 1.0), tone(440, 44100, 1.0)], axis=1)
    buffer = block.copy()
    stream.push(buffer)
    buffer[:] = 0  # PortAudio reuses its buffer: the callback must have copied it
    stream.push(np.zeros((441, 2), np.float32), overflow=True)
    stop = threading.Event()
    got = []
    for out in mic.blocks(stop):
        got.append(out)
        if sum(len(b) for b in got) >= 15000:
            stop.set()
    audio = np.concatenate(got)
    assert np.sqrt(np.mean(audio[2000:15000] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.02)
    assert mic.overflows == 1
    mic.close()
    assert stream.aborted


def test_microphone_that_vanishes_gives_its_audio_then_a_device_error(
    fake_portaudio: None,
) -> None:
    mic = Microphone(DEVICES[1]).open()
    stream = FakeStream.last
    assert stream.kwargs["channels"] == 1 and stream.kwargs["samplerate"] == 48000
    stream.push(np.full((48000, 1), 0.1, np.float32))
    stream.vanish()
    got: list[np.ndarray] = []
    with pytest.raises(DeviceError, match="stopped delivering audio"):
        for block in mic.blocks(threading.Event()):
            got.append(block)
    assert abs(sum(len(b) for b in got) - SAMPLE_RATE) <= 2


def test_microphone_that_stalls_is_reported(fake_portaudio: None) -> None:
    mic = Microphone(DEVICES[1], stall_timeout=0.3).open()
    with pytest.raises(DeviceError, match="delivered no audio for 0.3 s"):
        collect(mic)


def test_microphone_that_cannot_open(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(**kwargs: Any) -> None:
        raise RuntimeError("Invalid sample rate [PaErrorCode -9997]")

    module = types.SimpleNamespace(InputStream=refuse, PortAudioError=RuntimeError)
    monkeypatch.setattr(sources, "sounddevice", lambda: module)
    with pytest.raises(DeviceError, match=r"Cannot open input device 3 .* Invalid sample rate"):
        Microphone(DEVICES[1], samplerate=SAMPLE_RATE).open()
