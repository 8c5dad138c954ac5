"""``livewhisper devices`` and ``livewhisper check``: what this machine can hear."""

from __future__ import annotations

import sys
import threading
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from livewhisper.cli.options import (
    MODEL_DEFAULT,
    MODEL_HELP,
    CliError,
    engine_options,
    stack_options,
)
from livewhisper.engine import models
from livewhisper.errors import LivewhisperError


@click.command("devices")
def devices_command() -> None:
    """List the audio input devices; * marks the default, "system" what the
    computer plays (the monitors of outputs, loopback devices), the others are
    microphones.

    \b
    Pass the index or part of the name to 'livewhisper listen --device';
    'livewhisper listen --system' adds the system audio of the default output.
    """
    from livewhisper.audio.sources import list_input_devices, system_device

    try:
        devices = list_input_devices()
    except LivewhisperError as exc:
        raise CliError(str(exc)) from exc
    if not devices:
        raise CliError(
            "No audio input device found: plug in a microphone or check that the sound "
            "server (PulseAudio, PipeWire) is running."
        )
    table = Table(box=None, header_style="bold")
    for column in ("", "index", "name", "kind", "host API", "channels", "default rate"):
        table.add_column(column, justify="right" if column in ("index", "channels") else "left")
    for d in devices:
        table.add_row(
            "*" if d.default else "",
            str(d.index),
            d.name,
            "system" if d.system else "",
            d.hostapi,
            str(d.channels),
            f"{d.samplerate:g} Hz",
        )
    # Piped (to grep, to a file), a row stays one line whatever its length.
    out = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
    out.print(table)
    try:
        system = system_device()
    except LivewhisperError:
        out.print(
            "No system audio here (no monitor or loopback device); see docs/listen.md, Meetings.",
            markup=False,
        )
    else:
        out.print(f"--system records {system.index} {system.name!r}.", markup=False)


# --------------------------------------------------------------------------- check


def _engine_options(func: Any) -> Any:
    return stack_options(func, engine_options())


@click.command("check")
@click.option("--device", "-d", default=None, metavar="INDEX|NAME", help="Device to test.")
@click.option("--model", "-m", default=None, show_default=MODEL_DEFAULT, help=MODEL_HELP)
@_engine_options
@click.option(
    "--seconds", type=click.FloatRange(0.5, 30), default=2.0, show_default=True, help="Level test."
)
def check_command(
    device: str | None,
    model: str | None,
    engine_url: str | None,
    engine_key: str | None,
    seconds: float,
) -> None:
    """Check the set-up for live transcription: PortAudio, the input devices, a
    level test of the microphone, and the model (or, with --engine, the remote
    engine: that it answers, its models, and a timed round trip).

    \b
    Examples:
      livewhisper check
      livewhisper check --device USB --model base
      livewhisper check --engine http://gpu-box:8000
    """
    out = Console(highlight=False)
    problems = 0

    def report(ok: bool, what: str, detail: str) -> None:
        nonlocal problems
        problems += not ok
        mark = "[green]ok[/]  " if ok else "[red]FAIL[/]"
        out.print(f"{mark} {what}: ", end="")
        out.print(detail, markup=False)

    from livewhisper.audio.sources import (
        Microphone,
        find_device,
        list_input_devices,
        sounddevice,
        system_device,
    )

    try:
        sd = sounddevice()
        report(True, "PortAudio", sd.get_portaudio_version()[1])
        devices = list_input_devices()
        report(bool(devices), "input devices", ", ".join(str(d) for d in devices) or "none")
        chosen = find_device(device)
        report(True, "device", f"{chosen}, {chosen.channels} ch, {chosen.samplerate:g} Hz")
        _level_test(Microphone(chosen, stall_timeout=seconds + 3), seconds, report)
    except LivewhisperError as exc:
        report(False, "audio", str(exc))
    _check_system(report, system_device)
    if engine_url:
        _check_engine(engine_url, engine_key, model, report)
    else:
        try:
            location = models.locate(model or models.DEFAULT_MODEL, download=False)
            report(True, "model", f"{location.name} ({location.origin}) at {location.path}")
        except LivewhisperError as exc:
            report(False, "model", str(exc))
    if problems:
        sys.exit(1)


def _check_system(report: Any, system_device: Any) -> None:
    """Whether system audio can be captured here, and how: it is not a failure of
    the set-up when it cannot (a microphone is all most sessions need)."""
    from livewhisper.audio.pulse import server

    try:
        system = system_device()
    except LivewhisperError as exc:
        report(True, "system audio", "not available: " + str(exc))
        return
    if system.pulse is not None:
        found = server()
        how = f"the monitor {system.pulse!r}" + (f" of {found.name}" if found else "")
        how += ", read through PortAudio's 'pulse' device"
    else:
        how = f"the loopback device {system}"
    report(True, "system audio", f"--system records {how}")


def _check_engine(url: str, key: str | None, model: str | None, report: Any) -> None:
    """The remote engine: it answers, what it serves, and a timed round trip of half a
    second of audio (the time is the engine's decode and the network's, both ways)."""
    from livewhisper.engine.remote import RemoteEngine, RemoteOptions

    try:
        with RemoteEngine(RemoteOptions(url=url, model=model, key=key)) as engine:
            listed = ", ".join(engine.models) or "none listed"
            report(True, "engine", f"{url} answers; models: {listed}; using {engine.name}")
            seconds = min(engine.round_trip() for _ in range(3))
            report(True, "round trip", f"{seconds * 1000:.0f} ms for 0.5 s of audio (best of 3)")
    except LivewhisperError as exc:
        report(False, "engine", str(exc))


def _level_test(mic: Any, seconds: float, report: Any) -> None:
    import numpy as np

    from livewhisper.audio.pcm import SAMPLE_RATE, level_db

    stop = threading.Event()
    got: list[Any] = []
    with mic:
        for block in mic.blocks(stop):
            got.append(block)
            if sum(len(b) for b in got) >= seconds * SAMPLE_RATE:
                break
    audio = np.concatenate(got) if got else np.zeros(0, np.float32)
    rms = level_db(audio)
    peak = 20 * np.log10(max(float(np.max(np.abs(audio), initial=0.0)), 1e-5))
    heard = f"{len(audio) / SAMPLE_RATE:.1f} s, level {rms:.0f} dBFS, peak {peak:.0f} dBFS"
    if mic.overflows:
        heard += f", {mic.overflows} overflows"
    if peak < -60:
        report(False, "level test", heard + ": silent; is the microphone muted or unplugged?")
    else:
        report(True, "level test", heard)
