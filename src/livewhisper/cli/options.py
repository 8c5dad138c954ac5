"""What the commands share: option groups, errors for the user, loading the engine."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.console import Console

from livewhisper.engine import models

if TYPE_CHECKING:
    from livewhisper.engine.contract import TranscribeOptions, Transcriber
    from livewhisper.engine.local import ModelOptions

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


def build_model_options(
    model: str, model_device: str, compute_type: str, threads: int
) -> ModelOptions:
    from livewhisper.engine.local import ModelOptions

    return ModelOptions(
        model=model, device=model_device, compute_type=compute_type, threads=threads
    )


def load_engine(model_opts: ModelOptions, transcribe_opts: TranscribeOptions) -> Transcriber:
    """Load the model and check it can do what was asked; a LivewhisperError otherwise."""
    from livewhisper.engine.factory import load_engine as load

    return load(model_opts, transcribe_opts)
