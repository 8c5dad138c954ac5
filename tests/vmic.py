"""A virtual microphone for end-to-end tests: a private PulseAudio daemon whose
default source plays back whatever is played into its null sink.

With ``speakers=True`` the daemon also has virtual speakers: a second null sink,
the default output, whose monitor is the system audio (what ``listen --system``
hears); `play_system` plays into it and `remove_speakers` unplugs it, as a call
that ends does. `remove_mic` unplugs the microphone.

PortAudio reaches it through ALSA's pulse plugin (devices ``pulse`` and ``default``).
The recording process needs `VirtualMic.env` in its environment *before* it imports
sounddevice. Packages: pulseaudio, pulseaudio-utils, libasound2-plugins, libportaudio2.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

SINK = "vmic_sink"
SOURCE = "vmic"
SPEAKERS = "vmic_speakers"
_NEEDED = ("pulseaudio", "pactl", "paplay")
_ALSA_PULSE = Path("/usr/share/alsa/alsa.conf.d/50-pulseaudio.conf")


def missing() -> str | None:
    """What this machine lacks for a virtual microphone, or None."""
    for tool in _NEEDED:
        if shutil.which(tool) is None:
            return f"{tool} (apt-get install pulseaudio pulseaudio-utils)"
    if not _ALSA_PULSE.exists():
        return "the ALSA pulse plugin (apt-get install libasound2-plugins)"
    return None


class VirtualMic:
    def __init__(self, directory: Path, rate: int = 48_000, *, speakers: bool = False) -> None:
        self.dir = directory
        self.rate = rate
        self.speakers = speakers
        self.pid: int | None = None
        self.env = {
            "PULSE_SERVER": f"unix:{directory / 'native'}",
            "PULSE_RUNTIME_PATH": str(directory),
            "PULSE_STATE_PATH": str(directory / "state"),
            "PULSE_COOKIE": str(directory / "cookie"),
        }

    def environ(self) -> dict[str, str]:
        """os.environ plus what a process needs to use this microphone."""
        return {**os.environ, **self.env}

    def _pactl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["pactl", *args], env=self.environ(), capture_output=True, text=True, timeout=10
        )

    def start(self, timeout: float = 15.0) -> None:
        (self.dir / "state").mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        script = self.dir / "vmic.pa"
        script.write_text(
            f"load-module module-native-protocol-unix auth-anonymous=1 "
            f"socket={self.dir / 'native'}\n"
            f"load-module module-null-sink sink_name={SINK} rate={self.rate} channels=1 "
            "channel_map=mono sink_properties=device.description=VirtualMicSink\n"
            f"load-module module-remap-source master={SINK}.monitor source_name={SOURCE} "
            "channels=1 channel_map=mono master_channel_map=mono "
            "source_properties=device.description=VirtualMic\n"
            # An idle null sink renders in 2 s blocks and a new recorder would lose its
            # first seconds; a low-latency loopback keeps the sink's latency short.
            "load-module module-null-sink sink_name=vmic_keepalive rate=16000 channels=1 "
            "channel_map=mono\n"
            f"load-module module-loopback source={SINK}.monitor sink=vmic_keepalive "
            "latency_msec=60 source_dont_move=true sink_dont_move=true\n"
            f"set-default-sink {SINK}\nset-default-source {SOURCE}\n"
        )
        if self.speakers:
            with script.open("a") as out:
                out.write(
                    f"load-module module-null-sink sink_name={SPEAKERS} rate=48000 channels=2 "
                    "sink_properties=device.description=VirtualSpeakers\n"
                    # Kept awake as the microphone's sink is, so no recording loses its start.
                    f"load-module module-loopback source={SPEAKERS}.monitor "
                    "sink=vmic_keepalive latency_msec=60 source_dont_move=true "
                    "sink_dont_move=true\n"
                    f"set-default-sink {SPEAKERS}\n"
                )
        env = {**self.environ(), "XDG_RUNTIME_DIR": str(self.dir), "HOME": str(self.dir)}
        subprocess.run(
            [
                "pulseaudio",
                "-n",
                "-F",
                str(script),
                "--exit-idle-time=-1",
                "--daemonize=yes",
                "--use-pid-file=yes",
                "--disallow-exit=yes",
                f"--log-target=file:{self.dir / 'pulseaudio.log'}",
                "--log-level=notice",
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            check=True,
            timeout=timeout,
        )
        deadline = time.monotonic() + timeout
        while self._pactl("info").returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"PulseAudio did not start; see {self.dir}/pulseaudio.log")
            time.sleep(0.05)
        self.pid = int((self.dir / "pid").read_text().strip())
        # Wait for the 2 s block the sink began before the loopback attached.
        while time.monotonic() < deadline and self._sink_latency_us() >= 200_000:
            time.sleep(0.05)

    def _sink_latency_us(self) -> int:
        name = None
        for line in self._pactl("list", "sinks").stdout.splitlines():
            words = line.split()
            if words[:1] == ["Name:"]:
                name = words[1]
            elif name == SINK and words[:1] == ["Latency:"]:
                return int(words[1])
        return 0

    def play(self, path: Path, sink: str = SINK) -> subprocess.Popen[bytes]:
        """Start playing *path* into the microphone, in real time; returns the player."""
        return subprocess.Popen(
            ["paplay", f"--device={sink}", str(path)], env=self.environ(), stdin=subprocess.DEVNULL
        )

    def play_system(self, path: Path) -> subprocess.Popen[bytes]:
        """Start playing *path* on the virtual speakers (the system audio)."""
        assert self.speakers, "a VirtualMic(speakers=True) has speakers"
        return self.play(path, SPEAKERS)

    def _unload(self, argument: str) -> None:
        for line in self._pactl("list", "short", "modules").stdout.splitlines():
            if argument in line:
                self._pactl("unload-module", line.split()[0])
                return
        raise RuntimeError(f"no module with {argument} is loaded")

    def remove_speakers(self) -> None:
        """Unplug the speakers: their monitor source goes away."""
        self._unload(f"sink_name={SPEAKERS}")

    def remove_mic(self) -> None:
        """Unplug the microphone: its source goes away."""
        self._unload(f"source_name={SOURCE}")

    def stop(self) -> None:
        """Stop the daemon (only the one this object started)."""
        pid, self.pid = self.pid, None
        if pid is None:
            return
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() != "pulseaudio":
                return
            os.kill(pid, signal.SIGTERM)
        except (OSError, ProcessLookupError):
            return
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.05)
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)


def _start(tmp: Path, rate: int = 48_000, *, speakers: bool = False) -> VirtualMic:
    reason = missing()
    if reason is not None:
        pytest.skip(f"no virtual microphone on this machine: missing {reason}")
    mic = VirtualMic(tmp, rate, speakers=speakers)
    mic.start()
    return mic


@pytest.fixture(scope="session")
def virtual_mic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VirtualMic]:
    """One virtual microphone for the whole test session."""
    # A short path: the daemon's socket path must fit in a sockaddr_un.
    mic = _start(tmp_path_factory.mktemp("vmic"))
    try:
        yield mic
    finally:
        mic.stop()


@pytest.fixture
def private_mic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VirtualMic]:
    """A virtual microphone of one's own, for a test that kills it."""
    mic = _start(tmp_path_factory.mktemp("vmic_private"))
    try:
        yield mic
    finally:
        mic.stop()


@pytest.fixture
def meeting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VirtualMic]:
    """A virtual microphone and virtual speakers of one's own (the test may unplug
    either)."""
    mic = _start(tmp_path_factory.mktemp("vmic_meeting"), speakers=True)
    try:
        yield mic
    finally:
        mic.stop()
