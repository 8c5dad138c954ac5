"""`livewhisper listen` end to end: the real CLI as a subprocess, the real model,
real speech through a real PortAudio device (the virtual microphone), a file, stdin."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from cli_helpers import livewhisper_command
from livewhisper.metrics import word_error_rate as wer
from scripted_decoder import CONFIDENT, INVENTED, Heard, cli_calls
from vmic import VirtualMic

DATA = Path(__file__).parent / "data"

pytestmark = pytest.mark.slow


class Listen:
    """``livewhisper -v listen ARGS`` running, its output collected line by line."""

    def __init__(
        self,
        args: list[str],
        env: dict[str, str] | None = None,
        stdin: bytes | None = None,
        heard: Heard | None = None,
    ) -> None:
        env = {k: v for k, v in (env or os.environ).items() if k not in ("FORCE_COLOR", "NO_COLOR")}
        self.proc = subprocess.Popen(
            [*livewhisper_command(heard), "-v", "listen", *args],
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        self.lines: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self._cond = threading.Condition()
        self._readers = [
            threading.Thread(target=self._read, args=(name, pipe), daemon=True)
            for name, pipe in (("stdout", self.proc.stdout), ("stderr", self.proc.stderr))
        ]
        for t in self._readers:
            t.start()
        if stdin is not None:
            threading.Thread(target=self._write, args=(stdin,), daemon=True).start()

    def _write(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.close()
        except BrokenPipeError:
            pass

    def _read(self, name: str, pipe: object) -> None:
        for raw in pipe:  # type: ignore[attr-defined]
            with self._cond:
                self.lines[name].append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._cond.notify_all()

    def wait_for(self, name: str, found: Callable[[list[str]], bool], timeout: float) -> None:
        with self._cond:
            came = self._cond.wait_for(
                lambda: found(self.lines[name]) or self.proc.poll() is not None, timeout
            )
            seen = found(self.lines[name])
        if not came:
            self.proc.kill()  # not left running into the next test
            self.finish(10)
            pytest.fail(f"timed out waiting on {name}:\n{self.report()}")
        if not seen:
            self.finish(5)
            pytest.fail(f"exited before the expected {name} output:\n{self.report()}")

    def wait_line(self, name: str, text: str, timeout: float) -> None:
        self.wait_for(name, lambda lines: any(text in line for line in lines), timeout)

    def interrupt(self) -> None:
        self.proc.send_signal(signal.SIGINT)

    def finish(self, timeout: float) -> int:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"did not exit:\n{self.report()}")
        for t in self._readers:
            t.join(5)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()
        return rc

    @property
    def stdout(self) -> list[str]:
        return self.lines["stdout"]

    def finals(self) -> list[dict[str, object]]:
        """The final events of jsonl output so far."""
        events = [json.loads(line) for line in list(self.stdout)]
        return [e for e in events if e["type"] == "final"]

    def errors(self) -> list[str]:
        return [line for line in self.lines["stderr"] if "error:" in line.lower()]

    def report(self) -> str:
        return "\n".join(["--- stdout", *self.stdout, "--- stderr", *self.lines["stderr"]])


def joined(events: list[dict[str, object]]) -> str:
    return " ".join(str(e["text"]) for e in events)


def pcm(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


# --------------------------------------------------------------------------- microphone


@pytest.mark.mic
def test_microphone_jsonl_output_file_and_ctrl_c(
    virtual_mic: VirtualMic, tmp_path: Path, references: dict[str, str]
) -> None:
    out, audio = tmp_path / "live.srt", tmp_path / "session.wav"
    run = Listen(
        ["--device", "pulse", "--format", "jsonl", "-o", str(out), "--save-audio", str(audio)],
        virtual_mic.environ(),
    )
    run.wait_line("stderr", "Listening to pulse (ALSA, 44100 Hz)", 60)
    player = virtual_mic.play(DATA / "jfk.flac")
    assert player.wait(30) == 0
    # Wait until the clip's text is in (its last utterance, or most of it: Ctrl-C
    # transcribes what is still open).
    reference = references["jfk.flac"]
    run.wait_for("stdout", lambda _: wer(reference, joined(run.finals())) < 0.25, 60)
    run.interrupt()
    assert run.finish(60) == 0, run.report()

    everything = [json.loads(line) for line in run.stdout]
    events = [e for e in everything if e["type"] == "final"]
    partials = [e for e in everything if e["type"] == "partial"]
    assert events, run.report()
    # Partial text came while speaking, each with the id of the final replacing it,
    # and its settled prefix really is a prefix.
    assert partials, run.report()
    for p in partials:
        assert p["id"] in {e["id"] for e in events}
        assert p["text"].startswith(p["stable"])
    text = joined(events)
    assert wer(reference, text) < 0.25, text
    assert [e["id"] for e in events] == sorted({e["id"] for e in events})
    for e in events:
        assert e["type"] == "final" and e["language"] == "en"
        assert set(e) >= {"type", "id", "text", "start", "end", "language"}
        assert 0 <= e["start"] < e["end"]
    assert all(a["end"] <= b["start"] for a, b in zip(events, events[1:], strict=False))
    # The whole clip is about 11 s of speech, played after listening started.
    assert 10 < events[-1]["end"] - events[0]["start"] < 16

    srt = out.read_text(encoding="utf-8")
    assert srt.count(" --> ") == len(events)
    for e in events:
        assert e["text"] in srt
    with wave.open(str(audio)) as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1
        assert w.getnframes() / 16000 >= events[-1]["end"]
    assert any(line.startswith("Listened ") for line in run.lines["stderr"]), run.report()
    assert not run.errors(), run.report()


@pytest.mark.mic
def test_microphone_at_48k_ctrl_c_mid_utterance_keeps_it(
    virtual_mic: VirtualMic, tmp_path: Path, speech: Callable[[str], np.ndarray]
) -> None:
    # 3.5 s of the JFK clip, cut off mid-sentence: the utterance is still open when
    # the player ends, and a long --silence-ms keeps it open until Ctrl-C (however
    # the words heard so far end).
    clip = tmp_path / "cut.wav"
    with wave.open(str(clip), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm(speech("jfk.flac")[: int(3.5 * 16000)]))
    run = Listen(
        ["--device", "pulse", "--device-rate", "48000"]
        + ["--silence-ms", "3000", "--sentence-silence-ms", "3000"],
        virtual_mic.environ(),
    )
    run.wait_line("stderr", "Listening to pulse (ALSA, 48000 Hz)", 60)
    player = virtual_mic.play(clip)
    run.wait_line("stderr", "speech started", 30)
    assert player.wait(30) == 0
    assert run.stdout == []  # nothing final yet: the utterance is open
    run.interrupt()
    assert run.finish(60) == 0, run.report()
    # The clip's first 3.5 s are "And so, my fellow Americans" (and perhaps the start
    # of "ask"): the open utterance was transcribed, not lost. Each of the five words
    # is 20 %, and tiny.en hears them as "And so am I fellow Americans" (40 %).
    assert wer("And so, my fellow Americans", " ".join(run.stdout)) <= 0.6, run.report()
    summary = [line for line in run.lines["stderr"] if line.startswith("Listened ")]
    assert len(summary) == 1 and "1 utterance" in summary[0], run.report()


@pytest.mark.mic
def test_device_vanishing_keeps_transcript_and_says_so(
    private_mic: VirtualMic, tmp_path: Path, references: dict[str, str]
) -> None:
    out = tmp_path / "kept.txt"
    run = Listen(["--device", "pulse", "-o", str(out)], private_mic.environ())
    run.wait_line("stderr", "Listening to", 60)
    assert private_mic.play(DATA / "goforward.flac").wait(30) == 0
    run.wait_for("stdout", lambda lines: bool(lines), 60)
    private_mic.stop()  # the sound server goes away mid-session
    rc = run.finish(60)
    assert rc == 1, run.report()
    errors = run.errors()
    assert len(errors) == 1 and "stopped delivering audio" in errors[0], run.report()
    assert wer(references["goforward.flac"], " ".join(run.stdout)) <= 0.5, run.report()
    assert out.read_text(encoding="utf-8").strip() == "\n".join(run.stdout).strip()


@pytest.mark.mic
def test_bad_device_index_is_one_line(virtual_mic: VirtualMic) -> None:
    run = Listen(["--device", "99"], virtual_mic.environ())
    assert run.finish(60) == 1
    assert run.errors() == [
        "livewhisper: error: There is no input device with index 99; "
        "run 'livewhisper devices' to list them."
    ], run.report()
    assert run.stdout == []


@pytest.mark.mic
def test_devices_lists_the_virtual_microphone(virtual_mic: VirtualMic) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "livewhisper", "devices"],
        env=virtual_mic.environ(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()[1:]]
    assert ["*", "1", "default", "ALSA", "32", "44100", "Hz"] in rows, result.stdout
    assert ["0", "pulse", "ALSA", "32", "44100", "Hz"] in rows, result.stdout


# --------------------------------------------------------------------------- file and stdin


def test_input_file_plays_in_real_time(references: dict[str, str]) -> None:
    started = time.monotonic()
    run = Listen(["--input", str(DATA / "goforward.flac")])
    assert run.finish(60) == 0, run.report()
    assert time.monotonic() - started >= 2.7  # paced like a microphone: 2.8 s of audio
    assert wer(references["goforward.flac"], " ".join(run.stdout)) <= 0.5, run.report()


def test_stdin_raw_pcm_resampled(
    speech: Callable[[str], np.ndarray], references: dict[str, str]
) -> None:
    import soxr

    name = "librivox_sense_and_sensibility_01_austen_64kb-0880.flac"
    audio = soxr.resample(speech(name), 16000, 44100)
    silence = np.zeros(44100, np.float32)
    run = Listen(
        ["--input", "-", "--rate", "44100", "--format", "jsonl"],
        stdin=pcm(np.concatenate([silence, audio, silence])),
    )
    assert run.finish(60) == 0, run.report()
    events = [e for e in map(json.loads, run.stdout) if e["type"] == "final"]
    assert len(events) == 1, run.report()
    # Eight words, each 12.5 %: tiny.en hears "ill disposed" as "old-sposed" (25 %).
    assert wer(references[name], events[0]["text"]) <= 0.4, events[0]["text"]
    assert 0.5 < events[0]["start"] < 1.0 and 3.5 < events[0]["end"] < 4.5


def test_stdin_odd_byte_count_is_an_error_after_the_text(
    speech: Callable[[str], np.ndarray], references: dict[str, str]
) -> None:
    data = pcm(speech("goforward.flac")) + b"\x01"
    run = Listen(["--input", "-"], stdin=data)
    assert run.finish(60) == 1
    assert wer(references["goforward.flac"], " ".join(run.stdout)) <= 0.5, run.report()
    errors = run.errors()
    assert len(errors) == 1 and "odd number" in errors[0], run.report()


def test_noise_clicks_and_silence_give_no_text(speech: Callable[[str], np.ndarray]) -> None:
    rng = np.random.default_rng(1)
    noise = speech("alsa_Noise_noise_only.flac")
    clicks = np.zeros(16000 * 2, np.float32)  # keyboard-like clatter: short sharp bursts
    for start in rng.integers(0, len(clicks) - 200, 25):
        clicks[start : start + 160] += rng.normal(0, 0.3, 160).astype(np.float32)
    hiss = rng.normal(0, 0.01, 16000 * 2).astype(np.float32)
    silence = np.zeros(16000 * 2, np.float32)
    audio = pcm(np.concatenate([silence, noise, silence, clicks, hiss, noise, silence]))
    args = ["--input", "-", "--vad-level", "0", "--format", "jsonl"]
    # What the model makes of noise depends on the CPU's kernels: the decoder is
    # scripted to answer Whisper's " you" of no speech. VAD level 0 lets the noise
    # through to it, and the guards must drop every partial and final.
    run = Listen(args, stdin=audio, heard=INVENTED)
    assert run.finish(120) == 0, run.report()
    assert run.stdout == [], run.report()
    assert cli_calls("\n".join(run.lines["stderr"])) > 0, run.report()
    # The same noise heard as confident speech does give text.
    run = Listen(args, stdin=audio, heard=CONFIDENT)
    assert run.finish(120) == 0, run.report()
    finals = {e["text"] for e in run.finals()}
    assert finals == {"Thank you."}, run.report()


def test_unwritable_output_is_one_line() -> None:
    run = Listen(["--input", "-", "-o", "/nonexistent-dir/out.txt"], stdin=b"")
    assert run.finish(60) == 1
    assert run.errors() == [
        "livewhisper: error: Cannot write /nonexistent-dir/out.txt: No such file or directory."
    ], run.report()
