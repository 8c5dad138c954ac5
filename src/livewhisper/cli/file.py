"""``livewhisper file``: transcripts of audio and video files."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from livewhisper.cli.options import (
    CliError,
    build_model_options,
    close_engine,
    decode_options,
    engine_losses,
    fail,
    load_engine,
    model_options,
    notice_printer,
    stderr_console,
)
from livewhisper.engine.files import Progress, Target, transcribe_file
from livewhisper.errors import LivewhisperError


def _plan_outputs(inputs: list[str], fmt: str, output: str | None) -> Callable[[str], list[Target]]:
    from livewhisper.writers import FORMATS

    formats = list(FORMATS) if fmt == "all" else [fmt]
    if output is None:
        if fmt == "all":
            raise click.UsageError("--format all writes several files: give a directory with -o.")
        return lambda _src: [Target(fmt, None)]
    out = Path(output)
    as_dir = len(inputs) > 1 or fmt == "all" or out.is_dir() or output.endswith(os.sep)
    if as_dir:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CliError(f"Cannot create output directory {out}: {exc.strerror or exc}.") from exc
        if not os.access(out, os.W_OK):
            raise CliError(f"Cannot write to output directory {out}: permission denied.")

        def per_input(src: str) -> list[Target]:
            stem = "stdin" if src == "-" else Path(src).stem
            return [Target(f, out / f"{stem}.{f}") for f in formats]

        return per_input
    parent = out.parent if str(out.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise CliError(f"Cannot write {out}: {parent} is not a directory.")
    if not parent.is_dir():
        raise CliError(f"Cannot write {out}: directory {parent} does not exist.")
    if not os.access(parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise CliError(f"Cannot write {out}: permission denied.")
    return lambda _src: [Target(fmt, out)]


@click.command("file")
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
@click.option(
    "--batch-size",
    default="auto",
    show_default=True,
    metavar="N|auto",
    callback=lambda _ctx, _param, value: _batch_size(value),
    help="Decode long audio in windows cut at pauses, up to N at a time (1: window "
    "after window, as plain faster-whisper does). auto: 16 (on a CPU, fewer where "
    "memory is short).",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def file_command(
    inputs: tuple[str, ...],
    fmt: str,
    output: str | None,
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
    word_timestamps: bool,
    vad_filter: bool,
    batch_size: int,
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
      livewhisper file talk.wav --engine http://gpu-box:8000
      ffmpeg -i video.mkv -f wav - | livewhisper file - --format vtt
    """
    from livewhisper.engine.contract import TranscribeOptions

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
        batch_size=batch_size,
    )
    console = stderr_console()
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
    try:
        engine = load_engine(chosen, options, on_notice=notice_printer(console))
    except LivewhisperError as exc:
        raise CliError(str(exc)) from exc

    show_progress = not quiet and console.is_terminal
    failed = 0
    with contextlib.ExitStack() as stack:
        stack.callback(close_engine, engine)
        progress = None
        if show_progress:
            from livewhisper.cli.progress import file_progress

            progress = stack.enter_context(file_progress(console))
        for src in inputs:
            lost = len(engine_losses(engine))
            try:
                transcribe_file(
                    engine,
                    src,
                    options,
                    targets_for(src),
                    label=len(inputs) > 1,
                    progress=None if progress is None else _bar(progress),
                )
                gaps = engine_losses(engine, lost)
                if gaps:  # the engine stopped answering part way
                    raise LivewhisperError(
                        f"{src}: {gaps[0].reason}; the transcript covers the first "
                        f"{gaps[0].start:.1f} s."
                    )
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


def _batch_size(value: str) -> int:
    """``auto`` (0: the engine chooses) or a number of windows, 1 or more."""
    if value == "auto":
        return 0
    if not value.isdigit() or int(value) < 1:
        raise click.BadParameter(f"{value!r}: give a number of windows (1 or more) or auto.")
    return int(value)


def _bar(progress: Any) -> Progress:
    """The progress bar's task for each input, kept up to date as it is transcribed."""

    def opened(name: str, declared: float | None) -> Callable[[float, float | None], None]:
        task = progress.add_task(Path(name).name, total=declared, started=time.monotonic())

        def advanced(seconds: float, total: float | None) -> None:
            if total is None:
                progress.update(task, completed=seconds)
            else:
                progress.update(task, total=total, completed=seconds)

        return advanced

    return opened
