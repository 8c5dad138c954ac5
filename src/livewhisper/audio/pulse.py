"""The sources of a PulseAudio or PipeWire sound server: microphones and the
monitors of outputs (system audio), and whether one is still there.

PortAudio as packaged on Linux sees ALSA devices only; the server's sources reach
it through ALSA's ``pulse`` device, whose source the ``PULSE_SOURCE`` variable
chooses when a stream opens (`audio.sources.Microphone`). What PortAudio cannot
see, this module asks the server through pulsectl (ctypes bindings of libpulse,
imported lazily): the list of sources, which are monitors, the default output,
and, during a session, whether a source went away. The server moves a stream
whose source vanishes to the default source without telling the ALSA plugin, so
without the watch an unplugged headset would go on as the built-in microphone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import ModuleType
from typing import Any

log = logging.getLogger(__name__)

#: The PortAudio (ALSA) device through which the sound server's sources are read.
PORTAUDIO_DEVICE = "pulse"


@dataclass(frozen=True)
class PulseSource:
    name: str  # the server's name: alsa_output.pci-0000_00_1f.3.analog-stereo.monitor
    description: str  # what people see: "Monitor of Built-in Audio Analog Stereo"
    channels: int
    samplerate: float
    monitor: bool  # the monitor of an output: what the computer plays


def _pulsectl() -> ModuleType | None:
    try:
        import pulsectl
    except ImportError:  # pulsectl is a Linux dependency; elsewhere there is no server
        return None
    module: ModuleType = pulsectl
    return module


def _connect(client: str = "livewhisper") -> Any:
    """A connection to the sound server, or None when there is none to ask."""
    pulsectl = _pulsectl()
    if pulsectl is None:
        return None
    try:
        return pulsectl.Pulse(client, connect=True)
    except pulsectl.PulseError as exc:
        log.debug("no PulseAudio server: %s", exc)
        return None


@dataclass(frozen=True)
class Server:
    """What the sound server has: its name, its sources, the default ones."""

    name: str
    sources: tuple[PulseSource, ...]
    default_source: str | None
    default_monitor: str | None  # the monitor of the default output

    def find(self, name: str) -> PulseSource | None:
        return next((s for s in self.sources if s.name == name), None)


def server() -> Server | None:
    """The sound server's sources, or None where there is no PulseAudio or PipeWire
    server to ask (not Linux, no server running, or pulsectl not installed)."""
    pulse = _connect()
    if pulse is None:
        return None
    with pulse:
        info = pulse.server_info()
        found = tuple(
            PulseSource(
                name=s.name,
                description=s.description or s.name,
                channels=int(s.channel_count),
                samplerate=float(s.sample_spec.rate),
                monitor=s.monitor_of_sink != 0xFFFFFFFF,
            )
            for s in pulse.source_list()
        )
        sink = info.default_sink_name
        monitor = next((s.name for s in pulse.source_list() if s.name == f"{sink}.monitor"), None)
        return Server(
            name=f"{info.server_name} {info.server_version}",
            sources=found,
            default_source=info.default_source_name,
            default_monitor=monitor,
        )


class SourceWatch:
    """Tells whether one source of the server is still there. Owned by one thread
    (the one reading the audio): it keeps its own connection."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._pulse = _connect("livewhisper-watch")

    def gone(self) -> bool:
        """True once the source no longer exists (or the server went away)."""
        pulse = self._pulse
        if pulse is None:
            return False
        pulsectl = _pulsectl()
        assert pulsectl is not None
        try:
            pulse.get_source_by_name(self.name)
        except pulsectl.PulseIndexError:
            return True
        except pulsectl.PulseError:  # the server itself went away
            return True
        return False

    def close(self) -> None:
        pulse, self._pulse = self._pulse, None
        if pulse is not None:
            pulse.close()
