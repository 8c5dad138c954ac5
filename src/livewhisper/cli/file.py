"""``livewhisper file``: transcripts of audio and video files."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import click

from livewhisper.cli.options import (
    CliError,
    build_model_options,
    decode_options,
    fail,
    load_engine,
    model_options,
    stderr_console,
)
from livewhisper.errors import LivewhisperError, OutputError


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
            from livewhisper.cli.progress import file_progress

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
    from livewhisper.audio.files import open_audio
    from livewhisper.engine.contract import FileInfo
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
