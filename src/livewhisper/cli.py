"""The `livewhisper` command line: a thin layer over the Python API."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO, TypeVar

import click
from rich.console import Console

from livewhisper import __version__, models
from livewhisper.errors import LivewhisperError, OutputError

F = TypeVar("F", bound=Callable[..., Any])

MODEL_HELP = (
    "Model: a size name (tiny.en, base, small, medium, large-v3, turbo, distil-...), "
    "a Hugging Face repo id, or a CTranslate2 model directory. tiny.en and base "
    "are embedded and work offline."
)


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False)


def fail(message: str) -> None:
    """Print a one-line error for the user on stderr."""
    click.echo(f"livewhisper: error: {message}", err=True)


class CliError(click.ClickException):
    """An error that ends the command: one line on stderr, exit code 1."""

    def show(self, file: Any = None) -> None:
        fail(self.format_message())


def stack_options(func: F, options: list[Callable[[Any], Any]]) -> F:
    """Apply click option decorators in the order they are listed (the first on top)."""
    for option in reversed(options):
        func = option(func)
    return func


def model_options(func: F, *, device_flags: tuple[str, ...] = ("--device", "--model-device")) -> F:
    """The options that choose and place the model, shared by every command that loads one.

    Where ``--device`` means the audio device (``listen``), pass
    ``device_flags=("--model-device",)``.
    """
    options = [
        click.option(
            "--model", "-m", default=models.DEFAULT_MODEL, show_default=True, help=MODEL_HELP
        ),
        click.option(
            *device_flags,
            "model_device",
            type=click.Choice(["auto", "cpu", "cuda"]),
            default="auto",
            show_default=True,
            help="Where the model runs.",
        ),
        click.option(
            "--compute-type",
            default="default",
            show_default=True,
            help="CTranslate2 compute type: int8, int8_float16, float16, float32... "
            "'default' is int8 on the CPU and float16 on CUDA.",
        ),
        click.option(
            "--threads",
            type=click.IntRange(min=0),
            default=0,
            show_default=True,
            help="CPU threads for the model (0: let CTranslate2 choose).",
        ),
    ]
    return stack_options(func, options)


def decode_options(func: F) -> F:
    """The options that steer decoding, shared by `file` and `listen`."""
    options = [
        click.option(
            "--language",
            "-l",
            default=None,
            help="Language code of the speech (en, es, fr...); detected when left out.",
        ),
        click.option(
            "--task",
            type=click.Choice(["transcribe", "translate"]),
            default="transcribe",
            show_default=True,
            help="translate: into English (needs a multilingual model).",
        ),
        click.option(
            "--beam-size",
            type=click.IntRange(min=1),
            default=5,
            show_default=True,
            help="Beam search width (1 is greedy and fastest).",
        ),
        click.option(
            "--initial-prompt",
            default=None,
            help="Text to steer spelling and style, such as names and terms.",
        ),
    ]
    return stack_options(func, options)


class LazyGroup(click.Group):
    """A group whose live commands are imported only when they run (or help lists
    them), so `livewhisper file` starts without loading the audio and server code."""

    lazy = {
        "listen": "livewhisper.cli_live:listen_command",
        "devices": "livewhisper.cli_live:devices_command",
        "check": "livewhisper.cli_live:check_command",
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy:
            module, attr = self.lazy[cmd_name].split(":")
            command: click.Command = getattr(importlib.import_module(module), attr)
            return command
        return super().get_command(ctx, cmd_name)


def build_model_options(model: str, model_device: str, compute_type: str, threads: int) -> Any:
    from livewhisper.engine import ModelOptions

    return ModelOptions(
        model=model, device=model_device, compute_type=compute_type, threads=threads
    )


def load_engine(model_opts: Any, transcribe_opts: Any) -> Any:
    """Load the model and check it can do what was asked; a LivewhisperError otherwise."""
    from livewhisper.engine import Engine

    engine = Engine(model_opts)
    engine.check(transcribe_opts)
    return engine


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "LIVEWHISPER"},
)
@click.version_option(__version__, "--version", "-V", prog_name="livewhisper")
@click.option("-v", "--verbose", count=True, help="More log messages on stderr (-vv for debug).")
def main(verbose: int) -> None:
    """Local live speech-to-text with Whisper: microphone, files and browsers.

    \b
    Examples:
      livewhisper listen                       transcribe the microphone live
      livewhisper file talk.wav                print the transcript of a file
      livewhisper file *.mp3 -f srt -o subs/   subtitles for many files
      livewhisper models                       the models on this machine
    """
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


# --------------------------------------------------------------------------- file


@dataclass
class _Target:
    """Where one input's transcript goes, in one format."""

    fmt: str
    path: Path | None  # None: standard output


def _plan_outputs(
    inputs: list[str], fmt: str, output: str | None
) -> Callable[[str], list[_Target]]:
    from livewhisper.writers import FORMATS

    formats = list(FORMATS) if fmt == "all" else [fmt]
    if output is None:
        if fmt == "all":
            raise click.UsageError("--format all writes several files: give a directory with -o.")
        return lambda _src: [_Target(fmt, None)]
    out = Path(output)
    as_dir = len(inputs) > 1 or fmt == "all" or out.is_dir() or output.endswith(os.sep)
    if as_dir:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CliError(f"Cannot create output directory {out}: {exc.strerror or exc}.") from exc
        if not os.access(out, os.W_OK):
            raise CliError(f"Cannot write to output directory {out}: permission denied.")

        def per_input(src: str) -> list[_Target]:
            stem = "stdin" if src == "-" else Path(src).stem
            return [_Target(f, out / f"{stem}.{f}") for f in formats]

        return per_input
    parent = out.parent if str(out.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise CliError(f"Cannot write {out}: {parent} is not a directory.")
    if not parent.is_dir():
        raise CliError(f"Cannot write {out}: directory {parent} does not exist.")
    if not os.access(parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise CliError(f"Cannot write {out}: permission denied.")
    return lambda _src: [_Target(fmt, out)]


@contextlib.contextmanager
def _open_targets(targets: list[_Target]) -> Iterator[list[tuple[_Target, TextIO]]]:
    """Open each target: stdout as it is, files as temporary files renamed into place at
    the end, so a failed run never leaves half a transcript under the final name."""
    opened: list[tuple[_Target, TextIO, Path | None]] = []
    try:
        for t in targets:
            if t.path is None:
                opened.append((t, sys.stdout, None))
                continue
            if t.path.exists() and not t.path.is_file():
                # A device or a pipe (/dev/stdout, a FIFO): written to as it is.
                try:
                    opened.append((t, open(t.path, "w", encoding="utf-8"), None))  # noqa: SIM115
                except OSError as exc:
                    raise OutputError(f"Cannot write {t.path}: {exc.strerror or exc}.") from exc
                continue
            try:
                fd, tmp_name = tempfile.mkstemp(prefix=f".{t.path.name}.", dir=t.path.parent)
            except OSError as exc:
                raise OutputError(f"Cannot write {t.path}: {exc.strerror or exc}.") from exc
            opened.append((t, open(fd, "w", encoding="utf-8"), Path(tmp_name)))  # noqa: SIM115
        yield [(t, f) for t, f, _ in opened]
        for t, f, tmp in opened:
            if tmp is not None and t.path is not None:
                try:
                    f.close()
                    os.replace(tmp, t.path)
                except OSError as exc:
                    raise OutputError(f"Cannot write {t.path}: {exc.strerror or exc}.") from exc
    finally:
        for t, f, tmp in opened:
            if t.path is not None:
                with contextlib.suppress(OSError):
                    f.close()
            if tmp is not None:
                tmp.unlink(missing_ok=True)


@main.command("file")
@click.argument("inputs", nargs=-1, required=True, metavar="PATH...")
@click.option(
    "--format",
    "-f",
    "fmt",
    type=click.Choice(["txt", "srt", "vtt", "json", "jsonl", "tsv", "all"]),
    default="txt",
    show_default=True,
    help="Transcript format. 'all' writes every format (needs -o DIR).",
)
@click.option(
    "--output",
    "-o",
    default=None,
    metavar="PATH",
    help="Write to this file (one input) or directory (several inputs, or --format all) "
    "instead of standard output.",
)
@model_options
@decode_options
@click.option(
    "--word-timestamps", is_flag=True, help="Time every word (json, jsonl, vtt show them)."
)
@click.option(
    "--vad-filter/--no-vad-filter",
    default=True,
    show_default=True,
    help="Skip long silences before decoding (Silero VAD).",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def file_command(
    inputs: tuple[str, ...],
    fmt: str,
    output: str | None,
    model: str,
    model_device: str,
    compute_type: str,
    threads: int,
    language: str | None,
    task: str,
    beam_size: int,
    initial_prompt: str | None,
    word_timestamps: bool,
    vad_filter: bool,
    quiet: bool,
) -> None:
    """Transcribe audio or video files (anything FFmpeg decodes; - reads stdin).

    The transcript goes to standard output, or to files with -o; a progress bar
    shows on stderr when it is a terminal. The exit code is 0 only if every
    input was transcribed.

    \b
    Examples:
      livewhisper file talk.wav
      livewhisper file interview.mp3 --format srt -o interview.srt
      livewhisper file a.flac b.m4a --format all -o transcripts/
      livewhisper file lecture.webm --model base --language fr --task translate
      ffmpeg -i video.mkv -f wav - | livewhisper file - --format vtt
    """
    from livewhisper.engine import TranscribeOptions

    if inputs.count("-") > 1:
        raise click.UsageError("Standard input (-) can be read only once.")
    targets_for = _plan_outputs(list(inputs), fmt, output)
    options = TranscribeOptions(
        language=language,
        task=task,
        beam_size=beam_size,
        initial_prompt=initial_prompt,
        word_timestamps=word_timestamps,
        vad_filter=vad_filter,
    )
    try:
        engine = load_engine(
            build_model_options(model, model_device, compute_type, threads), options
        )
    except LivewhisperError as exc:
        raise CliError(str(exc)) from exc

    console = stderr_console()
    show_progress = not quiet and console.is_terminal
    failed = 0
    with contextlib.ExitStack() as stack:
        progress = None
        if show_progress:
            from livewhisper.progress import file_progress

            progress = stack.enter_context(file_progress(console))
        for src in inputs:
            try:
                _transcribe_one(engine, src, options, targets_for(src), progress, len(inputs) > 1)
            except LivewhisperError as exc:
                failed += 1
                fail(str(exc))
            except KeyboardInterrupt as exc:
                fail(str(exc) or "interrupted.")
                sys.exit(130)
            except BrokenPipeError:
                # The reader of stdout went away (such as `| head`): stop quietly.
                with contextlib.suppress(OSError):
                    sys.stdout = open(os.devnull, "w")  # noqa: SIM115
                sys.exit(0)
    if failed:
        sys.exit(1)


def _transcribe_one(
    engine: Any,
    src: str,
    options: Any,
    targets: list[_Target],
    progress: Any,
    many: bool,
) -> None:
    from livewhisper.audiofile import open_audio
    from livewhisper.engine import FileInfo
    from livewhisper.writers import make_writer

    audio = open_audio(src)
    info = FileInfo()
    task_id = None
    if progress is not None:
        task_id = progress.add_task(
            Path(audio.name).name, total=audio.declared_duration, started=time.monotonic()
        )
    interrupted = False
    with _open_targets(targets) as opened:
        writers = [make_writer(t.fmt, f) for t, f in opened]
        extra = {"file": audio.name} if many else None
        for w in writers:
            w.begin()
        try:
            for segment in engine.transcribe_blocks(audio.blocks(), options, info=info):
                for w in writers:
                    w.write(segment, extra)
                if progress is not None:
                    progress.update(task_id, completed=segment.end)
        except KeyboardInterrupt:
            # Keep what is done: the writers end and the files are renamed into place.
            interrupted = True
        meta = {
            "file": audio.name,
            "model": engine.name,
            "language": info.language,
            "duration": round(info.duration, 3),
        }
        for w in writers:
            w.end(meta)
    if progress is not None:
        progress.update(task_id, total=info.duration, completed=info.duration)
    if interrupted:
        done = info.segments[-1].end if info.segments else 0.0
        raise KeyboardInterrupt(f"{audio.name}: interrupted; the transcript covers {done:.1f} s.")
    if audio.problem:
        raise LivewhisperError(
            f"{audio.name}: {audio.problem}; the transcript covers the first {info.duration:.1f} s."
        )


# --------------------------------------------------------------------------- models


@main.command("models")
def models_command() -> None:
    """List the models usable without the network, and where they live.

    \b
    Other size names (small, medium, large-v3, turbo...) are downloaded from the
    Hugging Face Hub on first use and listed here once cached.
    """
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    table.add_column("model")
    table.add_column("source")
    table.add_column("status")
    table.add_column("path", overflow="fold")
    for m in models.local_models():
        table.add_row(m.name, m.origin, m.note, str(m.path) if m.path else "-")
    Console().print(table)
