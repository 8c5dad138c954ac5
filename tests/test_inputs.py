"""Several inputs at once: a microphone and the system audio (what the computer
plays), labelled apart, in one transcript in time order, without the echo of a
loudspeaker; an input that goes away.

End to end on a private PulseAudio server with virtual speakers (a null sink, the
default output, whose monitor is the system audio) beside the virtual microphone;
the real CLI; the real model on real speech. Besides: the pure merge of finals and
the labelled transcript formats.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from livewhisper.engine.scheduler import JobResult, Scheduler
from livewhisper.live.merge import Merge, repeated
from livewhisper.live.sinks import format_event
from livewhisper.metrics import word_error_rate as wer
from livewhisper.transcript import Segment, TextEvent
from livewhisper.writers import SrtWriter, TsvWriter, TxtWriter, VttWriter
from test_live_e2e import Listen
from test_scheduler import FakeEngine, job
from vmic import VirtualMic, meeting  # noqa: F401  (fixture)

DATA = Path(__file__).parent / "data"


def final(source: str, start: float, end: float, text: str, uid: int = 0) -> TextEvent:
    return TextEvent("final", uid, text, start, end, source=source)


# --------------------------------------------------------------------------- merge


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_merge_holds_a_final_while_another_input_may_send_an_earlier_one() -> None:
    state: dict[str, tuple[bool, float | None]] = {"mic": (False, None), "system": (False, 3.0)}
    clock = Clock()
    merge = Merge(
        ("mic", "system"), frozenset({"system"}), unfinished=state.__getitem__, clock=clock
    )
    late = final("mic", 5.0, 6.0, "my answer")
    assert merge.take(late) == []  # the system's open utterance started before it
    state["system"] = (True, None)  # closed, waiting for the engine
    assert merge.tick() == []
    state["system"] = (False, None)
    early = final("system", 3.0, 5.5, "their question")
    assert merge.take(early) == [early, late]  # in time order
    # Speech that started after a final does not hold it.
    state["system"] = (False, 9.0)
    assert merge.take(final("mic", 7.0, 8.0, "next")) == [final("mic", 7.0, 8.0, "next")]


def test_merge_holds_no_longer_than_its_hold() -> None:
    clock = Clock()
    merge = Merge(("a", "b"), unfinished=lambda label: (True, 0.0), hold=2.0, clock=clock)
    event = final("a", 1.0, 2.0, "hello there")
    assert merge.take(event) == []
    clock.now = 1.0
    assert merge.tick() == []
    clock.now = 2.0
    assert merge.tick() == [event]


def test_merge_drops_a_microphone_echo_of_the_system_audio() -> None:
    merge = Merge(("mic", "system"), frozenset({"system"}))
    said = final("system", 10.0, 14.0, "Ask not what your country can do for you.")
    assert merge.take(said) == [said]
    echo = final("mic", 10.3, 14.2, "ask not what your country can do for you")
    assert merge.take(echo) == [] and merge.dropped == [echo]
    # The same words at another moment, or other words at the same moment, stay.
    later = final("mic", 30.0, 33.0, "ask not what your country can do for you")
    other = final("mic", 10.5, 13.0, "I think we should ship on Friday")
    assert merge.take(later) == [later]
    assert merge.take(other) == [other]


def test_merge_drops_an_echo_decoded_before_its_system_copy() -> None:
    state: dict[str, tuple[bool, float | None]] = {"mic": (False, None), "system": (True, None)}
    merge = Merge(("mic", "system"), frozenset({"system"}), unfinished=state.__getitem__)
    echo = final("mic", 2.1, 5.0, "go forward ten meters")
    assert merge.take(echo) == []
    state["system"] = (False, None)
    said = final("system", 2.0, 4.9, "Go forward 10 meters.")
    assert merge.take(said) == [said] and merge.dropped == [echo]


def test_merge_holds_a_microphone_line_while_a_longer_system_utterance_may_be_its_copy() -> None:
    # The other side's sentence is one 8 s utterance; the microphone's echo of it
    # closes in two pieces long before it (the same start: heard at once).
    state: dict[str, tuple[bool, float | None]] = {"mic": (False, None), "system": (False, 0.4)}
    clock = Clock()
    merge = Merge(
        ("mic", "system"), frozenset({"system"}), unfinished=state.__getitem__, clock=clock
    )
    first = final("mic", 0.4, 3.2, "And so am I fellow Americans.")
    second = final("mic", 3.7, 5.3, "Ask not!")
    assert merge.take(first) == [] and merge.take(second) == []
    clock.now = 6.0  # past `hold`: the order no longer holds them, the echo may
    assert merge.tick() == []
    state["system"] = (False, None)
    said = final("system", 0.4, 8.4, "And so, my fellow Americans ask not what your country")
    assert merge.take(said) == [said] and merge.dropped == [first, second]
    # A microphone line is held no longer than `echo_hold`, copy or not.
    state["system"] = (False, 9.0)
    mine = final("mic", 9.5, 11.0, "Can you hear me?")
    assert merge.take(mine) == []
    clock.now += merge.echo_hold
    assert merge.tick() == [mine]


def test_repeated_is_the_share_of_words_said_again_in_order() -> None:
    assert repeated("Go forward, ten meters.", "go forward ten meters") == 1.0
    # Half of a system line, cut elsewhere and misheard a little.
    half = "And so, my fellow Americans asked not"
    whole = "And so, my fellow Americans ask not what your country can do for you."
    assert repeated(half, whole) == pytest.approx(6 / 7)
    assert repeated("the cat sat", "a dog ran") == 0.0
    assert repeated("meters ten forward go", "go forward ten meters") == 0.25
    assert repeated("", "anything") == 0.0


def test_merge_finds_an_echo_that_spans_two_system_lines() -> None:
    merge = Merge(("mic", "system"), frozenset({"system"}))
    merge.take(final("system", 2.0, 10.3, "And so my fellow Americans ask not what your country"))
    merge.take(final("system", 10.4, 13.7, "Ask what you can do for your country."))
    echo = final("mic", 7.7, 13.8, "what your country ask what you can do for your country")
    assert merge.take(echo) == [] and merge.dropped == [echo]


def test_the_microphone_goes_first_when_the_engine_is_behind() -> None:
    engine, done = FakeEngine(hold_first=True), []
    results: list[JobResult] = done
    with Scheduler(engine) as scheduler:
        scheduler.prefer("mic")
        scheduler.submit(job("system", "final", 0, results))
        assert engine.started.wait(5)  # the engine is busy; the rest queue up
        scheduler.submit(job("system", "final", 1, results))
        scheduler.submit(job("system", "final", 2, results))
        scheduler.submit(job("mic", "final", 1, results))
        scheduler.submit(job("mic", "final", 2, results))
        scheduler.submit(job("mic", "partial", 3, results))
        engine.release.set()
        assert scheduler.wait_idle(timeout=10)
    assert engine.calls == [
        "system:final:0",
        "mic:final:1",
        "mic:final:2",
        "system:final:1",
        "system:final:2",
        "mic:partial:3",
    ]


# --------------------------------------------------------------------------- formats


def test_labelled_lines_in_every_format() -> None:
    segment = Segment(1.0, 2.5, "Hello there.")
    extra = {"source": "them"}
    out = io.StringIO()
    TxtWriter(out).write(segment, extra)
    SrtWriter(out).write(segment, extra)
    VttWriter(out, header=False).write(segment, extra)
    tsv = TsvWriter(out, sources=True)
    tsv.begin()
    tsv.write(segment, extra)
    assert out.getvalue() == (
        "[them] Hello there.\n"
        "1\n00:00:01,000 --> 00:00:02,500\n[them] Hello there.\n\n"
        "00:00:01.000 --> 00:00:02.500\n<v them>Hello there.\n\n"
        "start\tend\ttext\tsource\n1000\t2500\tHello there.\tthem\n"
    )
    assert format_event(final("them", 1.0, 2.5, "Hello there.")) == "[them] Hello there."
    # A single input's lines are as they were.
    plain = io.StringIO()
    VttWriter(plain, header=False).write(segment, None)
    TsvWriter(plain, header=False).write(segment, None)
    assert (
        plain.getvalue()
        == "00:00:01.000 --> 00:00:02.500\nHello there.\n\n1000\t2500\tHello there.\n"
    )
    assert format_event(TextEvent("final", 0, "Hello there.", 1.0, 2.5)) == "Hello there."


# --------------------------------------------------------------------------- view


def test_the_view_shows_each_input_and_labels_the_lines() -> None:
    from rich.console import Console

    from livewhisper.cli.view import LiveView
    from livewhisper.live.contract import StreamStatus

    console = Console(file=io.StringIO(), width=100, force_terminal=False, color_system=None)
    inputs = [
        ("mic", StreamStatus(state="speech", level_db=-20.0, time=12.0), True),
        ("system", StreamStatus(level_db=-70.0, last_latency=0.8), False),
    ]
    view = LiveView(
        console,
        lambda: inputs[0][1],
        model="tiny.en",
        device="mic (USB), system (Monitor)",
        inputs=lambda: inputs,
        auto_refresh=False,
    )
    view.add_event(final("system", 1.0, 2.0, "Can you hear me?"))
    view.add_event(TextEvent("partial", 1, "Yes I can", 2.5, 3.0, stable="Yes", source="mic"))
    console.print(view.render())
    lines = [line.rstrip() for line in console.file.getvalue().splitlines()]  # type: ignore[attr-defined]
    assert lines[0] == "[system] Can you hear me?"
    assert lines[1] == "[mic] Yes I can"
    assert lines[2].startswith("mic     ● hearing speech") and "-20 dBFS" in lines[2]
    assert lines[3] == "system  ○ ended"
    assert lines[4].startswith("● 2 inputs   last 0.80 s")
    assert lines[5] == "tiny.en · mic (USB), system (Monitor) · 0:12"


# --------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--no-mic"], "--no-mic leaves nothing to hear: add --system."),
        (["--device", "me=a", "--device", "me=b"], "the label 'me' is given to two inputs"),
        (["--device", "me="], "give a device, or LABEL=DEVICE"),
        (["--system", "--input", "talk.wav"], "--input replaces the audio device"),
        (["--system", "--save-audio", "x.wav"], "--save-audio records one input"),
    ],
)
def test_input_options_that_do_not_fit_are_one_line(args: list[str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "livewhisper", "listen", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr, result.stderr


# --------------------------------------------------------------------------- end to end


def finals_by(run: Listen, source: str) -> list[dict[str, object]]:
    return [e for e in run.finals() if e.get("source") == source]


def text_of(events: list[dict[str, object]]) -> str:
    return " ".join(str(e["text"]) for e in events)


@pytest.mark.slow
@pytest.mark.mic
def test_devices_and_check_show_the_system_audio(meeting: VirtualMic) -> None:  # noqa: F811
    env = meeting.environ()
    listing = subprocess.run(
        [sys.executable, "-m", "livewhisper", "devices"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listing.returncode == 0, listing.stderr
    rows = [line for line in listing.stdout.splitlines() if not line.startswith("--system")]
    monitor = [line for line in rows if "VirtualSpeakers" in line]
    assert len(monitor) == 1 and "system" in monitor[0].split(), listing.stdout
    index = monitor[0].split()[0]
    assert f"--system records {index} 'Monitor of VirtualSpeakers'." in listing.stdout
    mic = [line for line in rows if " VirtualMic " in f" {line} "]
    assert len(mic) == 1 and "system" not in mic[0].split(), listing.stdout
    check = subprocess.run(
        [sys.executable, "-m", "livewhisper", "check", "--seconds", "0.5"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    line = [x for x in check.stdout.splitlines() if "system audio" in x]
    assert line and line[0].startswith("ok") and "vmic_speakers.monitor" in check.stdout


@pytest.mark.slow
@pytest.mark.mic
def test_microphone_and_system_audio_at_once_labelled_and_in_order(
    meeting: VirtualMic,  # noqa: F811
    tmp_path: Path,
    references: dict[str, str],
) -> None:
    out = tmp_path / "call.vtt"
    run = Listen(["--system", "-f", "jsonl", "--no-partials", "-o", str(out)], meeting.environ())
    run.wait_line("stderr", "Listening to", 90)
    # Both talking at once...
    them = meeting.play_system(DATA / "jfk.flac")
    me = meeting.play(DATA / "pocketsphinx_librivox_austen_5utt.flac")
    assert them.wait(60) == 0 and me.wait(60) == 0
    # ...then in turns.
    run.wait_for("stdout", lambda lines: len(lines) >= 4, 60)
    assert meeting.play(DATA / "goforward.flac").wait(30) == 0
    run.wait_for("stdout", lambda lines: "orward" in (lines[-1] if lines else ""), 30)
    before = len(run.lines["stdout"])
    assert (
        meeting.play_system(DATA / "librivox_sense_and_sensibility_01_austen_64kb-0880.flac").wait(
            30
        )
        == 0
    )
    # Its line, whatever the model makes of "ill-disposed" on this CPU.
    run.wait_for("stdout", lambda lines: '"system"' in " ".join(lines[before:]), 30)
    run.interrupt()
    assert run.finish(60) == 0, run.report()

    events = run.finals()
    assert {e.get("source") for e in events} == {"mic", "system"}, run.report()
    system = finals_by(run, "system")
    mic = finals_by(run, "mic")
    jfk = references["jfk.flac"]
    austen = references["pocketsphinx_librivox_austen_5utt.flac"]
    assert wer(jfk, text_of(system[:-1])) <= 0.3, run.report()
    assert wer(austen, text_of(mic[:-1])) <= 0.35, run.report()
    assert wer(references["goforward.flac"], str(mic[-1]["text"])) <= 0.5, run.report()
    ill = references["librivox_sense_and_sensibility_01_austen_64kb-0880.flac"]
    assert wer(ill, str(system[-1]["text"])) <= 0.5, run.report()
    # Each input's lines in its own order, the two interleaved (not one after the
    # other), and the turns in the order they were taken.
    for lines in (system, mic):
        starts = [float(str(e["start"])) for e in lines]
        assert starts == sorted(starts), run.report()
    sources = [e["source"] for e in events]
    assert sources.index("mic") < len(system) - 1, run.report()
    assert sources[-2:] == ["mic", "system"], run.report()
    # The file holds the same lines, each with its voice.
    cues = out.read_text(encoding="utf-8")
    assert cues.count("<v system>") == len(system) and cues.count("<v mic>") == len(mic)
    assert str(system[0]["text"]) in cues


@pytest.mark.slow
@pytest.mark.mic
def test_an_input_that_goes_away_ends_alone(
    meeting: VirtualMic,  # noqa: F811
    tmp_path: Path,
    references: dict[str, str],
) -> None:
    out = tmp_path / "call.txt"
    run = Listen(["--system", "-o", str(out)], meeting.environ())
    run.wait_line("stderr", "Listening to", 90)
    assert meeting.play_system(DATA / "jfk.flac").wait(30) == 0
    run.wait_for("stdout", lambda lines: "country" in " ".join(lines[-1:]), 60)
    meeting.remove_speakers()  # the call ends: its monitor goes away
    run.wait_line("stderr", "went away", 30)
    assert meeting.play(DATA / "goforward.flac").wait(30) == 0
    run.wait_for("stdout", lambda lines: "[mic]" in " ".join(lines), 60)
    run.interrupt()
    assert run.finish(60) == 0, run.report()
    ended = [line for line in run.lines["stderr"] if "went away" in line]
    assert len(ended) == 1 and ended[0].startswith("livewhisper: system: "), run.report()
    assert "Traceback" not in "\n".join(run.lines["stderr"])
    said = [line.removeprefix("[system] ") for line in run.stdout if line.startswith("[system]")]
    heard = [line.removeprefix("[mic] ") for line in run.stdout if line.startswith("[mic]")]
    assert wer(references["jfk.flac"], " ".join(said)) <= 0.3, run.report()
    assert wer(references["goforward.flac"], " ".join(heard)) <= 0.5, run.report()
    assert out.read_text(encoding="utf-8").strip() == "\n".join(run.stdout).strip()


@pytest.mark.slow
@pytest.mark.mic
def test_the_only_input_going_away_ends_the_session_cleanly(
    meeting: VirtualMic,  # noqa: F811
    tmp_path: Path,
    references: dict[str, str],
) -> None:
    out = tmp_path / "system.srt"
    run = Listen(["--system", "--no-mic", "-o", str(out)], meeting.environ())
    run.wait_line("stderr", "Listening to", 90)
    assert meeting.play_system(DATA / "goforward.flac").wait(30) == 0
    run.wait_for("stdout", lambda lines: bool(lines), 60)
    meeting.remove_speakers()
    rc = run.finish(60)
    assert rc == 1, run.report()
    errors = run.errors()
    assert len(errors) == 1 and "went away" in errors[0], run.report()
    assert "Traceback" not in "\n".join(run.lines["stderr"])
    assert any(line.startswith("Listened ") for line in run.lines["stderr"]), run.report()
    assert wer(references["goforward.flac"], " ".join(run.stdout)) <= 0.5, run.report()
    assert run.stdout[0] in out.read_text(encoding="utf-8")  # one input: no label


@pytest.mark.slow
@pytest.mark.mic
def test_a_loudspeaker_heard_by_the_microphone_is_transcribed_once(
    meeting: VirtualMic,  # noqa: F811
    references: dict[str, str],
) -> None:
    run = Listen(["--system", "-f", "jsonl", "--no-partials"], meeting.environ())
    run.wait_line("stderr", "Listening to", 90)
    both = [meeting.play_system(DATA / "jfk.flac"), meeting.play(DATA / "jfk.flac")]
    assert all(player.wait(30) == 0 for player in both)
    run.wait_for("stdout", lambda lines: "country" in " ".join(lines), 60)
    run.interrupt()
    assert run.finish(60) == 0, run.report()
    assert wer(references["jfk.flac"], text_of(finals_by(run, "system"))) <= 0.3, run.report()
    echoed = text_of(finals_by(run, "mic")).split()
    assert len(echoed) <= 4, run.report()  # at most a stray word of the echo is left
    assert any("Left out" in line for line in run.lines["stderr"]), run.report()


@pytest.mark.slow
@pytest.mark.mic
def test_listen_serve_captions_the_labelled_inputs(
    meeting: VirtualMic,  # noqa: F811
    references: dict[str, str],
) -> None:
    import json

    from websockets.sync.client import connect

    from test_server_protocol import cli_server

    args = ["listen", "--system", "--quiet", "-f", "jsonl", "--no-partials"]
    with cli_server(*args, "--serve", "--port", "0", env=meeting.environ()) as (proc, port, _):
        with connect(f"ws://127.0.0.1:{port}/ws/captions?session=local") as captions:
            assert json.loads(captions.recv(30))["type"] == "ready"
            assert meeting.play_system(DATA / "jfk.flac").wait(30) == 0
            assert meeting.play(DATA / "goforward.flac").wait(30) == 0
            events: list[dict[str, object]] = []
            while not any(e.get("source") == "mic" and e["type"] == "final" for e in events):
                events.append(json.loads(captions.recv(60)))
            proc.send_signal(2)  # Ctrl-C: the session ends, the feed closes
            out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    finals = [e for e in events if e["type"] == "final"]
    assert {e["session"] for e in finals} == {"local"}
    said = " ".join(str(e["text"]) for e in finals if e["source"] == "system")
    heard = " ".join(str(e["text"]) for e in finals if e["source"] == "mic")
    assert wer(references["jfk.flac"], said) <= 0.3, finals
    assert wer(references["goforward.flac"], heard) <= 0.5, finals
    printed = [json.loads(line) for line in out.splitlines()]
    shown = [(e["source"], e["text"]) for e in printed if e["type"] == "final"]
    assert shown[: len(finals)] == [(e["source"], e["text"]) for e in finals]
