"""Faults in the middle of a session: a full disk under an output, an engine that
fails on one utterance. Each is a line that says what happened and what to do,
what was written stays valid, the text so far is kept, and never a traceback.

A full disk is a small tmpfs (mounted here; the tests need root for it, as the
project's test machines give) or ``/dev/full``. The real command line runs as a
subprocess on real speech; its engine is made to fail on one utterance by running
it through this file (``python tests/test_faults.py FAIL_AT_SECONDS ARGS...``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from livewhisper.engine.contract import TranscribeOptions, Transcription
from livewhisper.engine.scheduler import Scheduler
from livewhisper.errors import EngineError, OutputError
from livewhisper.live.recorder import AudioRecorder
from livewhisper.live.segmenter import SegmenterOptions
from livewhisper.live.session import Session
from livewhisper.live.stream import LiveStream, StreamOptions
from livewhisper.metrics import word_error_rate as wer
from livewhisper.transcript import Segment, TextEvent
from livewhisper.writers import AppendingTranscript
from test_live import beeps as live_beeps
from test_live import loud

TESTS = Path(__file__).parent
DATA = TESTS / "data"
AUSTEN = DATA / "pocketsphinx_librivox_austen_5utt.flac"  # 27 s, five sentences
OPTIONS = StreamOptions(segmenter=SegmenterOptions(silence_ms=300, pre_roll_ms=150), partials=False)
SRT_CUE = re.compile(r"\d+\n\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}\n.+")


def reference(name: str) -> str:
    for line in (DATA / "transcripts.tsv").read_text(encoding="utf-8").splitlines():
        if line.startswith(name + "\t"):
            return line.split("\t", 1)[1]
    raise KeyError(name)


# --------------------------------------------------------------------------- helpers


class FailingEngine:
    """Transcribes any loud audio to its length in seconds, and raises on the
    utterances that hold one of the stream times in *fail_at*."""

    def __init__(self, *fail_at: float, error: Exception | None = None) -> None:
        self.fail_at = fail_at
        self.error = error or RuntimeError("out of memory")

    def transcribe(
        self, audio: np.ndarray, options: TranscribeOptions | None = None, *, offset: float = 0.0
    ) -> Transcription:
        end = offset + len(audio) / 16000
        if any(offset <= t < end for t in self.fail_at):
            raise self.error
        text = f"{len(audio) / 16000:.2f} s" if np.abs(audio).max() > 0.05 else ""
        return Transcription([Segment(offset, end, text)] if text else [], "en")


def beeps(*pattern: tuple[float, float]) -> np.ndarray:
    """(seconds of silence, seconds of sound) pairs, then a second of silence."""
    return np.concatenate([live_beeps(*pattern), np.zeros(16000, np.float32)])


class ArraySource:
    """Audio from an array, in 20 ms blocks, as fast as it is read, or *speed* times
    faster than real time (and then it ends when the session stops, as a device's
    blocks do)."""

    name = "array"
    overflows = 0

    def __init__(self, audio: np.ndarray, speed: float | None = None) -> None:
        self.audio = audio
        self.pause = 0.02 / speed if speed else 0.0

    def blocks(self, stop: threading.Event) -> Iterator[np.ndarray]:
        for i in range(0, len(self.audio), 320):
            if self.pause and stop.wait(self.pause):
                return
            yield self.audio[i : i + 320]

    def close(self) -> None:
        pass


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs: a disk that fills up."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"a small disk needs a tmpfs mount (root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, leave: int) -> None:
    """Fill *disk* up to *leave* bytes (a file that is not a transcript)."""
    stat = os.statvfs(disk)
    free = stat.f_bavail * stat.f_frsize
    (disk / "ballast").write_bytes(b"\0" * max(0, free - leave))


def srt_prefilled(path: Path, size: int) -> int:
    """An SRT file of about *size* bytes of earlier cues; their count."""
    cues, n = [], 0
    while sum(map(len, cues)) < size:
        n += 1
        cues.append(f"{n}\n00:00:{n % 60:02d},000 --> 00:00:{n % 60:02d},500\nearlier cue {n}\n\n")
    path.write_text("".join(cues), encoding="utf-8")
    return n


def srt_cues(text: str) -> list[str]:
    """The cues of a valid SRT file (every one whole); fails on anything else."""
    assert text.endswith("\n\n"), repr(text[-80:])
    cues = text.strip("\n").split("\n\n")
    for cue in cues:
        assert SRT_CUE.fullmatch(cue), repr(cue)
    return cues


def valid_wav_seconds(path: Path) -> float:
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 16000)
        frames = w.getnframes()
    assert path.stat().st_size == 44 + 2 * frames  # the header counts every sample
    return frames / 16000


def run(*args: str | os.PathLike[str], fail_at: float | None = None, stdout: object = None) -> Any:
    """The real CLI as a subprocess; with *fail_at*, its engine raises on the
    utterance that holds that stream second."""
    command = [sys.executable, "-m", "livewhisper"]
    if fail_at is not None:
        command = [sys.executable, __file__, str(fail_at)]
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "NO_COLOR")}
    return subprocess.run(
        [*command, *map(str, args)],
        stdout=stdout if stdout is not None else subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        timeout=300,
    )


def no_traceback(stderr: str) -> None:
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr


# --------------------------------------------------------------------------- engine errors


def test_an_engine_error_loses_one_utterance_and_the_stream_goes_on() -> None:
    events: list[TextEvent] = []
    notices: list[str] = []
    with Scheduler(FailingEngine(3.0)) as scheduler:
        stream = LiveStream(scheduler, OPTIONS, events.append, detector=loud)
        stream.on_notice = notices.append
        stream.feed(beeps((0.5, 1.0), (1.0, 1.0), (1.0, 1.0)))  # speech at 0.5, 2.5, 4.5 s
        assert stream.finish(timeout=10)
    assert stream.error is None
    assert [round(e.start) for e in events] == [0, 4]  # the first and the third
    (lost,) = stream.losses
    assert lost.start < 3.0 < lost.end and lost.end < 4.5
    assert lost.reason == "the engine failed (RuntimeError: out of memory)"
    assert notices == [f"Not transcribed: {lost.span()}: {lost.reason}."]
    assert stream.utterances == 2


def test_an_engine_that_keeps_failing_ends_the_stream() -> None:
    events: list[TextEvent] = []
    with Scheduler(FailingEngine(1.0, 3.0, 5.0, 7.0)) as scheduler:
        stream = LiveStream(scheduler, OPTIONS, events.append, detector=loud)
        stream.on_notice = lambda line: None
        stream.feed(beeps(*[(1.0, 1.0)] * 4))
        assert stream.finish(timeout=10)
    assert events == []
    assert isinstance(stream.error, EngineError)
    assert str(stream.error).startswith("The engine failed on 3 utterances in a row (")
    assert len(stream.losses) >= 3


def test_a_failed_partial_pass_is_not_an_error() -> None:
    class PartialsFail(FailingEngine):
        failed = 0

        def transcribe(
            self,
            audio: np.ndarray,
            options: TranscribeOptions | None = None,
            *,
            offset: float = 0.0,
        ) -> Transcription:
            if options is not None and options.word_timestamps:  # a partial pass
                self.failed += 1
                raise RuntimeError("no partials today")
            return super().transcribe(audio, options, offset=offset)

    events: list[TextEvent] = []
    options = StreamOptions(
        segmenter=SegmenterOptions(silence_ms=300, pre_roll_ms=150),
        partials=True,
        partial_interval=0.3,
        partial_min_audio=0.3,
    )
    engine = PartialsFail()
    with Scheduler(engine) as scheduler:
        stream = LiveStream(scheduler, options, events.append, detector=loud)
        audio = beeps((0.5, 2.0), (1.0, 2.0))
        for i in range(0, len(audio), 1600):
            stream.feed(audio[i : i + 1600])
            threading.Event().wait(0.01)  # let the partial passes run
        assert stream.finish(timeout=10)
    assert engine.failed > 0
    assert stream.error is None and stream.losses == []
    finals = [e.text for e in events if e.type == "final"]
    assert finals == ["2.34 s", "2.34 s"]  # 2 s, with the pre-roll and the tail


def test_a_session_names_what_the_engine_failed_on() -> None:
    shown: list[str] = []
    notices: list[str] = []
    with Scheduler(FailingEngine(3.0)) as scheduler:
        session = Session(
            ArraySource(beeps((0.5, 1.0), (1.0, 1.0), (1.0, 1.0))),
            scheduler,
            OPTIONS,
            [lambda e: shown.append(e.text)],
            on_notice=notices.append,
        )
        session.stream.segmenter.detector = loud  # type: ignore[attr-defined]
        result = session.run()
    assert result.error is None and result.summary.utterances == 2
    assert len(shown) == 2 and len(session.stream.losses) == 1
    assert len(notices) == 1 and notices[0].startswith("Not transcribed: ")


# --------------------------------------------------------------------------- outputs


def test_a_failing_output_is_dropped_and_the_others_go_on() -> None:
    shown: list[str] = []
    notices: list[str] = []
    calls = 0

    def full_disk(event: TextEvent) -> None:
        nonlocal calls
        calls += 1
        if calls >= 2:
            err = OSError(28, "No space left on device")
            raise OutputError(
                "Disk full writing out.srt: free space or write it elsewhere."
            ) from err

    with Scheduler(FailingEngine()) as scheduler:
        session = Session(
            ArraySource(beeps((0.5, 1.0), (1.0, 1.0), (1.0, 1.0))),
            scheduler,
            OPTIONS,
            [lambda e: shown.append(e.text), full_disk],
            on_notice=notices.append,
        )
        session.stream.segmenter.detector = loud  # type: ignore[attr-defined]
        result = session.run()
    assert len(shown) == 3  # the session went on
    assert calls == 2  # ... without the output that failed
    assert len(notices) == 1
    assert notices[0].startswith("Disk full writing out.srt: free space or write it elsewhere; ")
    assert notices[0].endswith(" on is not in it, and the session goes on without it.")
    assert isinstance(result.error, OutputError)
    assert str(result.error).startswith("Disk full writing out.srt")


def test_the_last_output_failing_ends_the_session() -> None:
    def full_disk(event: TextEvent) -> None:
        raise OutputError("Disk full writing standard output: free space or write it elsewhere.")

    # 41 s of audio at 10 times real time: the first final fails 0.2 s in. As fast
    # as it is read, a busy machine let the whole array be fed before that final ran.
    audio = beeps(*[(1.0, 1.0)] * 20)
    with Scheduler(FailingEngine()) as scheduler:
        session = Session(ArraySource(audio, speed=10), scheduler, OPTIONS, [full_disk])
        session.stream.segmenter.detector = loud  # type: ignore[attr-defined]
        result = session.run()
    assert isinstance(result.error, OutputError)
    assert result.summary.duration < 20  # it ended early


def test_a_transcript_file_on_a_full_disk_stays_valid(small_disk: Path) -> None:
    path = small_disk / "out.srt"
    fill(small_disk, 4096)
    transcript = AppendingTranscript(path)
    written = 0
    with pytest.raises(OutputError, match=r"^Disk full writing .*out\.srt: free space or "):
        for i in range(1000):
            transcript.write(Segment(i, i + 0.5, f"utterance number {i} of a long meeting"))
            written += 1
    transcript.close()
    cues = srt_cues(path.read_text(encoding="utf-8"))
    assert 10 < len(cues) == written  # every cue written is whole, and nothing more
    assert cues[-1].endswith(f"utterance number {written - 1} of a long meeting")


def test_a_recording_on_a_full_disk_stays_valid(small_disk: Path) -> None:
    recorder = AudioRecorder(small_disk / "session.wav")
    block = np.full(320, 0.1, np.float32)  # 20 ms
    with pytest.raises(OutputError, match=r"^Disk full writing .*session\.wav: free space"):
        for _ in range(10_000):
            recorder.write(block)
    recorder.write(block)  # closed: nothing more is written, and no error
    recorder.close()
    seconds = valid_wav_seconds(small_disk / "session.wav")
    assert seconds == recorder.seconds and 1.5 < seconds < 2.1  # 64 KiB of 16-bit audio


# --------------------------------------------------------------------------- the real CLI


@pytest.mark.slow
def test_listen_goes_on_when_the_disk_under_o_fills(small_disk: Path) -> None:
    out = small_disk / "meeting.srt"
    before = srt_prefilled(out, 64 * 1024 - 200)  # room for one cue, not five
    fill(small_disk, 0)
    result = run("listen", "--input", AUSTEN, "--speed", "0", "-o", out)
    no_traceback(result.stderr)
    assert result.returncode == 1
    # Every utterance still reached standard output.
    assert wer(reference(AUSTEN.name), result.stdout) < 0.25
    assert len(result.stdout.splitlines()) == 5
    lines = result.stderr.strip().splitlines()
    notice = [line for line in lines if "disk full writing" in line.lower()]
    assert len(notice) == 2, lines  # once when it happened, once at the end
    assert notice[0].startswith(f"livewhisper: disk full writing {out}: free space or write it ")
    assert notice[0].endswith("and the session goes on without it.")
    assert lines[-2].startswith("Listened 0:27")  # the summary
    assert lines[-1].startswith(f"livewhisper: error: Disk full writing {out}")
    # What was written is a valid SRT file: the cues before, then whole new ones.
    cues = srt_cues(out.read_text(encoding="utf-8"))
    assert len(cues) >= before and cues[before - 1].endswith(f"earlier cue {before}")
    assert all(cue.startswith(f"{n}\n") for n, cue in enumerate(cues, 1))


@pytest.mark.slow
def test_listen_goes_on_when_the_disk_under_save_audio_fills(small_disk: Path) -> None:
    wav = small_disk / "session.wav"
    result = run("listen", "--input", AUSTEN, "--speed", "0", "--save-audio", wav)
    no_traceback(result.stderr)
    assert result.returncode == 1
    assert wer(reference(AUSTEN.name), result.stdout) < 0.25
    notice = [line for line in result.stderr.splitlines() if "disk full" in line.lower()]
    assert len(notice) == 2, result.stderr
    held = re.search(r"it holds the first ([\d.]+) s of audio", notice[0])
    assert held is not None, notice[0]
    assert valid_wav_seconds(wav) == pytest.approx(float(held.group(1)), abs=0.05)
    assert 1.5 < float(held.group(1)) < 2.1


@pytest.mark.slow
def test_listen_with_stdout_on_a_full_disk(tmp_path: Path) -> None:
    out = tmp_path / "meeting.srt"
    with open("/dev/full", "w") as full:
        both = run("listen", "--input", AUSTEN, "--speed", "0", "-o", out, stdout=full)
        alone = run("listen", "--input", AUSTEN, "--speed", "0", stdout=full)
    # With -o, the file gets the whole transcript.
    no_traceback(both.stderr)
    assert both.returncode == 1
    cues = srt_cues(out.read_text(encoding="utf-8"))
    assert len(cues) == 5
    assert wer(reference(AUSTEN.name), " ".join(c.split("\n", 2)[2] for c in cues)) < 0.25
    assert "disk full writing standard output: free space" in both.stderr
    # Alone, nothing can take the text: the session ends at once, cleanly.
    no_traceback(alone.stderr)
    assert alone.returncode == 1
    lines = alone.stderr.strip().splitlines()
    assert lines[-2].startswith("Listened ")
    assert lines[-1] == (
        "livewhisper: error: Disk full writing standard output: free space or write it elsewhere."
    )


@pytest.mark.slow
def test_file_keeps_what_was_written_when_the_disk_fills(small_disk: Path) -> None:
    out = small_disk / "talk.jsonl"
    fill(small_disk, 4096)  # room for some of its 5.7 kB of segments with word times
    result = run("file", AUSTEN, "-f", "jsonl", "--word-timestamps", "-o", out)
    no_traceback(result.stderr)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    match = re.fullmatch(
        rf"livewhisper: error: Disk full writing {re.escape(str(out))}: free space or write it "
        r"elsewhere; the transcript goes to ([\d.]+) s\.",
        line,
    )
    assert match is not None, line
    text = out.read_text(encoding="utf-8")
    assert text.endswith("\n")
    segments = [json.loads(row) for row in text.splitlines()]  # every line whole
    assert 1 <= len(segments) < 5
    assert segments[-1]["end"] == pytest.approx(float(match[1]), abs=0.051)
    assert sorted(p.name for p in small_disk.iterdir()) == ["ballast", "talk.jsonl"]  # no temp


@pytest.mark.slow
def test_file_json_on_a_full_disk_leaves_nothing_half_written(small_disk: Path) -> None:
    out = small_disk / "talk.json"
    fill(small_disk, 4096)  # the document is written at the end, and does not fit
    result = run("file", AUSTEN, "-f", "json", "--word-timestamps", "-o", out)
    no_traceback(result.stderr)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line == (
        f"livewhisper: error: Disk full writing {out}: free space or write it elsewhere; "
        "nothing was kept."
    )
    assert sorted(p.name for p in small_disk.iterdir()) == ["ballast"]


@pytest.mark.slow
def test_file_to_stdout_on_a_full_disk() -> None:
    with open("/dev/full", "w") as full:
        result = run("file", AUSTEN, stdout=full)
    no_traceback(result.stderr)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "livewhisper: error: Disk full writing standard output: free space or write it "
        "elsewhere; nothing was kept."
    )


@pytest.mark.slow
def test_listen_goes_on_past_an_utterance_the_engine_fails_on() -> None:
    # The second sentence ("he was not an ill disposed young man") is at 7.5-10.7 s.
    result = run("listen", "--input", AUSTEN, "--speed", "0", "--format", "jsonl", fail_at=9.0)
    no_traceback(result.stderr)
    assert result.returncode == 1
    finals = [line for line in result.stdout.splitlines() if '"type": "final"' in line]
    assert len(finals) == 4
    assert "ill disposed young man" not in result.stdout.replace("-", " ")
    assert "Dashwood" in result.stdout and "amiable himself" in result.stdout
    lines = result.stderr.strip().splitlines()
    lost = [line for line in lines if line.startswith("livewhisper: not transcribed: ")]
    assert len(lost) == 1, lines
    span = re.match(r"livewhisper: not transcribed: ([\d.]+) s to ([\d.]+) s: ", lost[0])
    assert span is not None and float(span[1]) < 9.0 < float(span[2])
    assert lost[0].endswith("the engine failed (RuntimeError: out of memory (scripted)).")
    assert lines[-2].startswith("Listened 0:27") and "4 utterances" in lines[-2]
    assert lines[-1] == (
        f"livewhisper: error: 1 utterance was not transcribed ({span[1]} s to {span[2]} s): "
        "the engine failed (RuntimeError: out of memory (scripted))."
    )


def _run_failing_cli(fail_at: float, args: list[str]) -> None:
    """The livewhisper CLI whose local engine raises on the utterance that holds
    *fail_at* (stream seconds) and decodes every other one with the real model."""
    from livewhisper.cli.app import main
    from livewhisper.engine.local import Engine

    real = Engine.transcribe

    def transcribe(self: Engine, audio: np.ndarray, options: Any = None, **kw: Any) -> Any:
        offset = kw.get("offset", 0.0)
        if offset <= fail_at < offset + len(audio) / 16000:
            raise RuntimeError("out of memory (scripted)")
        return real(self, audio, options, **kw)

    Engine.transcribe = transcribe  # type: ignore[method-assign]
    main(args, prog_name="livewhisper")


if __name__ == "__main__":
    _run_failing_cli(float(sys.argv[1]), sys.argv[2:])
