"""``livewhisper listen``: live text from a microphone, a file or standard input."""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import threading
from typing import TYPE_CHECKING, Any

import click

from livewhisper.audio.pcm import SAMPLE_RATE
from livewhisper.cli.options import (
    CliError,
    build_model_options,
    close_engine,
    decode_options,
    engine_losses,
    fail,
    load_engine,
    lost_summary,
    model_options,
    notice_printer,
    stderr_console,
)
from livewhisper.cli.serve import ServeSettings, serve_options, serve_until_interrupted, serving
from livewhisper.errors import LivewhisperError

if TYPE_CHECKING:
    from rich.console import Console

    from livewhisper.cli.view import LiveView
    from livewhisper.engine.contract import Transcriber
    from livewhisper.live.session import Input, Outputs, Partials, Session, SessionResult
    from livewhisper.transcript import TextEvent

LISTEN_EPILOG = "The JSON events are described in docs/listen.md."


def _live_model_options(func: Any) -> Any:
    """The model options of `file`, except that --device here is the audio device."""
    return model_options(func, device_flags=("--model-device",))


@click.command("listen", epilog=LISTEN_EPILOG)
@click.option(
    "--device",
    "-d",
    "devices",
    multiple=True,
    metavar="[LABEL=]INDEX|NAME",
    help="Input device: an index or part of a name from 'livewhisper devices' "
    "(default: the system's default input). Repeat it to hear several at once, each "
    "labelled on its lines: --device me=USB --device them=Monitor.",
)
@click.option(
    "--system",
    is_flag=True,
    help="Also hear what the computer plays (the monitor of the default output), "
    "labelled 'system'.",
)
@click.option(
    "--mic/--no-mic",
    default=True,
    show_default=True,
    help="With --system: --no-mic hears the system audio alone.",
)
@click.option(
    "--device-rate",
    type=click.IntRange(min=1000),
    default=None,
    help="Open the device at this sample rate instead of its own default.",
)
@click.option(
    "--input",
    "-i",
    "input_path",
    default=None,
    metavar="FILE|-",
    help="Instead of a device: play FILE as if it were a microphone, or read raw "
    "16-bit mono PCM from standard input (-).",
)
@click.option(
    "--speed",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="With --input FILE: play this many times faster than real time (0: no pacing).",
)
@click.option(
    "--rate",
    type=click.IntRange(min=1000),
    default=SAMPLE_RATE,
    show_default=True,
    help="With --input -: the sample rate of the raw PCM.",
)
@_live_model_options
@decode_options
@click.option(
    "--vad-level",
    type=click.IntRange(0, 3),
    default=3,
    show_default=True,
    help="How strictly a frame must sound like speech (0 lenient, 3 strict).",
)
@click.option(
    "--silence-ms",
    type=click.IntRange(min=90),
    default=500,
    show_default=True,
    help="Silence that ends an utterance, in milliseconds.",
)
@click.option(
    "--sentence-silence-ms",
    type=click.IntRange(min=0),
    default=300,
    show_default=True,
    help="Silence after the end of a sentence that ends the utterance sooner, in "
    "milliseconds (at least --silence-ms: only --silence-ms ends one).",
)
@click.option(
    "--max-utterance",
    type=click.FloatRange(min=5.0),
    default=15.0,
    show_default=True,
    help="Cut longer speech at its quietest point near this many seconds.",
)
@click.option(
    "--format",
    "-f",
    "fmt",
    type=click.Choice(["text", "jsonl"]),
    default="text",
    show_default=True,
    help="Standard output: one line of text, or one JSON event, per utterance.",
)
@click.option(
    "--output",
    "-o",
    default=None,
    metavar="FILE",
    help="Also append the transcript to FILE (.txt, .srt, .vtt, .jsonl or .tsv), "
    "synced to disk after every utterance.",
)
@click.option(
    "--save-audio", default=None, metavar="FILE.wav", help="Keep the session's audio (16 kHz)."
)
@click.option(
    "--partials/--no-partials",
    default=None,
    help="Show text while it is being spoken, settling word by word. Default: in the "
    "live view and with --format jsonl; with --format text on stdout only when given.",
)
@click.option(
    "--context-words",
    type=click.IntRange(min=0),
    default=80,
    show_default=True,
    help="Words of the last finals given to the model with each utterance, as a file's "
    "decode has the words before each window; 0: each utterance alone.",
)
@click.option("--quiet", "-q", is_flag=True, help="No live view, no status messages.")
@serve_options
def listen_command(
    devices: tuple[str, ...],
    system: bool,
    mic: bool,
    device_rate: int | None,
    input_path: str | None,
    speed: float,
    rate: int,
    model: str | None,
    model_device: str,
    compute_type: str,
    threads: int,
    engine_url: str | None,
    engine_key: str | None,
    engine_wait: float,
    engine_requests: int,
    language: str | None,
    task: str,
    beam_size: int,
    initial_prompt: str | None,
    vad_level: int,
    silence_ms: int,
    sentence_silence_ms: int,
    max_utterance: float,
    fmt: str,
    output: str | None,
    save_audio: str | None,
    partials: bool | None,
    context_words: int,
    quiet: bool,
    serve: ServeSettings | None,
) -> None:
    """Transcribe the microphone live; Ctrl-C ends the session.

    Each finished utterance is printed as a line (or a JSON event with
    --format jsonl). On a terminal a live view on stderr shows the status,
    the input level and the latency.

    \b
    Examples:
      livewhisper listen
      livewhisper listen --device USB --language en -o meeting.srt
      livewhisper listen --system -o call.vtt
      livewhisper listen --device me=USB --device them=Monitor
      livewhisper listen --format jsonl | jq -r 'select(.type == "final") | .text'
      livewhisper listen --input talk.wav --speed 2
      livewhisper listen --engine http://gpu-box:8000 --engine-key KEY
      arecord -f S16_LE -r 16000 -c 1 -t raw | livewhisper listen --input -
    """
    from livewhisper.engine.contract import TranscribeOptions
    from livewhisper.engine.scheduler import Scheduler
    from livewhisper.live.context import ContextOptions
    from livewhisper.live.recorder import AudioRecorder
    from livewhisper.live.segmenter import SegmenterOptions
    from livewhisper.live.session import Input, Session, partials_for
    from livewhisper.live.stream import StreamOptions

    if input_path is not None and (devices or device_rate is not None or system):
        raise click.UsageError("--input replaces the audio device: leave out --device.")
    if not mic and not system:
        raise click.UsageError("--no-mic leaves nothing to hear: add --system.")
    if not mic and devices:
        raise click.UsageError("--no-mic hears the system audio alone: leave out --device.")
    wanted = _wanted_inputs(devices, system=system, mic=mic)
    if len(wanted) > 1 and save_audio is not None:
        raise click.UsageError("--save-audio records one input: leave it out with several.")
    transcribe = TranscribeOptions(
        language=language, task=task, beam_size=beam_size, initial_prompt=initial_prompt
    ).for_utterance()
    console = stderr_console()
    show_view = not quiet and console.is_terminal
    wants = partials_for(partials, fmt, view=show_view)
    options = StreamOptions(
        segmenter=SegmenterOptions(silence_ms=silence_ms, max_utterance_s=max_utterance),
        transcribe=transcribe,
        vad_level=vad_level,
        partials=wants.stream,
        sentence_silence=sentence_silence_ms / 1000 if sentence_silence_ms < silence_ms else None,
        context=ContextOptions(words=context_words),
    )
    with contextlib.ExitStack() as stack:
        try:
            outputs = _open_outputs(stack, output, sources=len(wanted) > 1)
            recorder = None
            if save_audio is not None:
                recorder = AudioRecorder(save_audio)
                stack.callback(recorder.close)
            source = None
            inputs: list[Input] = []
            if len(wanted) > 1:
                inputs = _open_inputs(stack, wanted, device_rate)
            elif serve is None or serve.local:
                device = wanted[0][1] if wanted else None
                source = _open_local(serve, input_path, device, device_rate, speed, rate, console)
            if source is not None:
                stack.callback(source.close)
                inputs = [Input(source)]
            chosen = build_model_options(
                model,
                model_device,
                compute_type,
                threads,
                engine_url,
                engine_key,
                engine_wait,
                engine_requests,
            )
            notices = _EngineNotices(console, quiet=quiet)
            engine = load_engine(chosen, transcribe, on_notice=notices)
            notices.engine = engine
            stack.callback(close_engine, engine)  # after the scheduler's last finals
        except LivewhisperError as exc:
            raise CliError(str(exc)) from exc
        scheduler = stack.enter_context(Scheduler(engine))
        if serve is not None:
            try:
                served = dataclasses.replace(options, partials=wants.served)
                server = stack.enter_context(serving(serve, scheduler, served, console))
            except LivewhisperError as exc:
                raise CliError(str(exc)) from exc
            if not inputs:  # --serve-only: browsers, no local microphone
                from livewhisper.cli.signals import interrupts

                stop = threading.Event()
                # The stop is inside too: a second signal while sessions finish exits.
                with interrupts(stop):
                    serve_until_interrupted(stop)
                    stack.close()
                return
            outputs.server = server.local_emitter()
        say = notice_printer(console)
        session = Session(
            inputs,
            scheduler,
            options,
            recorder=recorder,
            on_input_end=lambda label, exc: say(f"{label}: {exc}"),
            on_notice=say,
            system=_system_labels(inputs),
        )
        label = engine.name if engine_url is None else f"{engine.name} at {engine_url}"
        result = _run(session, outputs, console, label, fmt, wants, quiet=quiet, notices=notices)
    if not quiet:
        console.print(str(result.summary), highlight=False, markup=False)
        if session.merge is not None and session.merge.dropped:
            count = len(session.merge.dropped)
            lines = "1 microphone line" if count == 1 else f"{count} microphone lines"
            console.print(
                f"Left out {lines} that repeated the system audio (a loudspeaker heard by "
                "the microphone).",
                highlight=False,
                markup=False,
            )
    # What the engine failed on, or a remote one did not answer for in time.
    lost = [g for _, stream in session.streams for g in stream.losses]
    gaps = sorted([*engine_losses(engine), *lost], key=lambda g: g.start)
    if result.error is not None:
        if isinstance(result.error.__cause__, BrokenPipeError):
            _quiet_stdout()
            sys.exit(0)
        if gaps:
            fail(lost_summary(gaps))
        fail(str(result.error))
        sys.exit(1)
    if gaps:
        fail(lost_summary(gaps))
        sys.exit(1)


class _EngineNotices:
    """A remote engine's notices (on the scheduler's thread): a line on stderr, above
    the live view when there is one, and the view's model line saying that the
    engine is not answering while it is not. With --quiet, none: what was lost is
    still said at the end."""

    def __init__(self, console: Console, *, quiet: bool) -> None:
        self.say = notice_printer(console)
        self.quiet = quiet
        self.engine: Transcriber | None = None
        self.view: LiveView | None = None
        self.label = ""

    def __call__(self, message: str) -> None:
        from livewhisper.engine.remote import RemoteEngine

        view, engine = self.view, self.engine
        if view is not None and isinstance(engine, RemoteEngine):
            view.model = self.label + (" (not answering)" if engine.down else "")
        if not self.quiet:
            self.say(message)


def _run(
    session: Session,
    outputs: Outputs,
    console: Console,
    model: str,
    fmt: str,
    wants: Partials,
    *,
    quiet: bool,
    notices: _EngineNotices | None = None,
) -> SessionResult:
    """Run the session to its end with the live view (on a terminal) and the
    outputs; Ctrl-C ends it normally, a second Ctrl-C at once."""
    from livewhisper.cli.signals import interrupts
    from livewhisper.live.sinks import format_event, line_sink

    view = None
    if not quiet and console.is_terminal:
        from livewhisper.cli.view import LiveView

        stdout_is_view = sys.stdout.isatty()
        view = LiveView(
            console,
            session.status,
            model=model,
            device=_names(session),
            show_lines=not stdout_is_view,
            inputs=session.statuses if len(session.inputs) > 1 else None,
        )
        outputs.view = view.add_final
        if notices is not None:
            notices.view, notices.label = view, model
    if view is not None and sys.stdout.isatty():
        printer = view.print_line  # the view shows the partials

        def print_final(event: TextEvent) -> None:
            if event.type == "final":
                printer(format_event(event, fmt))

        outputs.stdout = print_final
    else:
        outputs.stdout = line_sink(fmt, partials=wants.stdout)
    session.sinks = outputs.sinks()
    if not quiet:
        console.print(
            f"Listening to {_names(session)} with {model}; press Ctrl-C to stop.",
            highlight=False,
            markup=False,
        )
    try:
        with interrupts(session.stop, before_exit=None if view is None else view.stop):
            if view is None:
                return session.run()
            with view:
                return session.run()
    except BrokenPipeError:
        _quiet_stdout()
        sys.exit(0)


def _names(session: Session) -> str:
    """What a session hears: its source, or each input's label and source."""
    if len(session.inputs) == 1:
        return session.source.name
    return ", ".join(f"{i.label} ({i.source.name})" for i in session.inputs)


def _quiet_stdout() -> None:
    """The reader of stdout went away (such as `| head`): stop without a traceback."""
    import os

    with contextlib.suppress(OSError):
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115


def _open_outputs(
    stack: contextlib.ExitStack, output: str | None, *, sources: bool = False
) -> Outputs:
    from livewhisper.live.session import Outputs
    from livewhisper.live.sinks import transcript_sink
    from livewhisper.writers import AppendingTranscript

    if output is None:
        return Outputs()
    transcript = AppendingTranscript(output, sources=sources)
    stack.callback(transcript.close)
    return Outputs(transcript=transcript_sink(transcript))


def _open_local(
    serve: ServeSettings | None,
    input_path: str | None,
    device: str | None,
    device_rate: int | None,
    speed: float,
    rate: int,
    console: Console,
) -> Any:
    """The local input, or None where the server can go on without one: ``--serve``
    on a machine with no microphone (a headless server) serves browsers alone."""
    from livewhisper.errors import DeviceError

    try:
        return _open_source(input_path, device, device_rate, speed, rate)
    except DeviceError as exc:
        if serve is None or input_path is not None or device is not None:
            raise
        reason = str(exc).split(":")[0]
        console.print(
            f"livewhisper: note: {reason[:1].lower()}{reason[1:]}; serving browsers only, "
            "as --serve-only does.",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
        return None


#: The label of the system audio that --system adds.
SYSTEM = "system"


def _wanted_inputs(
    devices: tuple[str, ...], *, system: bool, mic: bool
) -> list[tuple[str, str | None]]:
    """(label, device) of each input asked for; device None: the default input,
    ``SYSTEM``: the default output's monitor. Labels are unique."""
    wanted: list[tuple[str, str | None]] = []
    for spec in devices:
        label, sep, device = spec.partition("=")
        if not sep:
            label, device = spec.strip(), spec
        label, device = label.strip(), device.strip()
        if not label or not device:
            raise click.BadParameter(
                f"{spec!r}: give a device, or LABEL=DEVICE such as me=USB.", param_hint="--device"
            )
        wanted.append((label, device))
    if mic and not wanted and (system or not devices):
        wanted.append(("mic", None))
    if system:
        wanted.append((SYSTEM, SYSTEM))
    labels = [label for label, _ in wanted]
    twice = sorted({label for label in labels if labels.count(label) > 1})
    if twice:
        raise click.BadParameter(
            f"the label {twice[0]!r} is given to two inputs; give each its own (me=..., them=...).",
            param_hint="--device",
        )
    if not system and not devices:
        return []  # the default input, or --input: one source, as before
    return wanted


def _open_inputs(
    stack: contextlib.ExitStack, wanted: list[tuple[str, str | None]], device_rate: int | None
) -> list[Input]:
    """Open each input; the first to fail is a one-line error, the others closed."""
    from livewhisper.audio.sources import Microphone, find_device, system_device
    from livewhisper.live.session import Input

    inputs = []
    for label, spec in wanted:
        device = system_device() if spec == SYSTEM else find_device(spec)
        rate = None if spec == SYSTEM else device_rate
        source = Microphone(device, samplerate=rate).open()
        stack.callback(source.close)
        inputs.append(Input(source, label))
    return inputs


def _system_labels(inputs: list[Input]) -> frozenset[str]:
    """The labels of the inputs that carry what the computer plays."""
    return frozenset(
        i.label
        for i in inputs
        if i.label is not None
        and (i.label == SYSTEM or getattr(getattr(i.source, "device", None), "system", False))
    )


def _open_source(
    input_path: str | None, device: str | None, device_rate: int | None, speed: float, rate: int
) -> Any:
    from livewhisper.audio.sources import (
        FileSource,
        Microphone,
        StdinSource,
        find_device,
        system_device,
    )

    if input_path == "-":
        return StdinSource(rate)
    if input_path is not None:
        return FileSource(input_path, speed=speed)
    if device == SYSTEM:
        return Microphone(system_device()).open()
    return Microphone(find_device(device), samplerate=device_rate).open()


# --------------------------------------------------------------------------- devices
