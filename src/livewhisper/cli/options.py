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
    from livewhisper.engine.remote import Lost, RemoteOptions

F = TypeVar("F", bound=Callable[..., Any])

MODEL_HELP = (
    "Model: a size name (tiny.en, base, small, medium, large-v3, turbo, distil-...), "
    "a Hugging Face repo id, or a CTranslate2 model directory. tiny.en and base "
    "are embedded and work offline. With --engine: the engine's model name."
)
MODEL_DEFAULT = f"{models.DEFAULT_MODEL}; with --engine, the first model the engine lists"
#: The model's placement options: a remote engine places its own model.
LOCAL_ONLY = {
    "model_device": "--model-device",
    "compute_type": "--compute-type",
    "threads": "--threads",
}


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


def engine_options() -> list[Callable[[Any], Any]]:
    """``--engine`` and ``--engine-key``: decoding on a server that speaks OpenAI's
    audio API; the command gets ``engine_url`` and ``engine_key``."""
    return [
        click.option(
            "--engine",
            "engine_url",
            envvar="LIVEWHISPER_ENGINE",
            default=None,
            metavar="URL",
            help="Decode on a server that speaks OpenAI's audio API "
            "(/v1/audio/transcriptions: livewhisper serve, speaches, vLLM...) instead of "
            "a local model, such as http://gpu-box:8000. Env: LIVEWHISPER_ENGINE.",
        ),
        click.option(
            "--engine-key",
            "engine_key",
            envvar="LIVEWHISPER_ENGINE_KEY",
            default=None,
            metavar="KEY",
            help="With --engine: the key it wants (sent as a bearer token). "
            "Env: LIVEWHISPER_ENGINE_KEY.",
        ),
    ]


def model_options(func: F, *, device_flags: tuple[str, ...] = ("--device", "--model-device")) -> F:
    """The options that choose and place the model, shared by every command that loads
    one: a local model, or a remote engine (``--engine``).

    Where ``--device`` means the audio device (``listen``), pass
    ``device_flags=("--model-device",)``.
    """
    options = [
        click.option("--model", "-m", default=None, show_default=MODEL_DEFAULT, help=MODEL_HELP),
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
        *engine_options(),
        click.option(
            "--engine-wait",
            type=click.FloatRange(min=0),
            default=60.0,
            show_default=True,
            help="With --engine: seconds utterances wait for an engine that stopped "
            "answering before they are reported as not transcribed.",
        ),
        click.option(
            "--engine-requests",
            type=click.IntRange(min=1),
            default=8,
            show_default=True,
            help="With --engine: requests in flight at once (each stream has one at a "
            "time); 1 sends them one after another.",
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
    model: str | None,
    model_device: str,
    compute_type: str,
    threads: int,
    engine_url: str | None = None,
    engine_key: str | None = None,
    engine_wait: float = 60.0,
    engine_requests: int = 8,
) -> ModelOptions | RemoteOptions:
    """The local model, or with *engine_url* the remote engine, the options ask for.
    Placing a model (``--threads``...) on the command line with ``--engine`` is a
    usage error: the engine places its own."""
    if engine_url:
        from livewhisper.engine.remote import RemoteOptions

        ctx = click.get_current_context(silent=True)
        if ctx is not None:
            for name, flag in LOCAL_ONLY.items():
                if ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE:
                    raise click.UsageError(
                        f"{flag} places a local model: leave it out with --engine, "
                        "which decodes on the engine's own."
                    )
        return RemoteOptions(
            url=engine_url,
            model=model,
            key=engine_key,
            max_wait=engine_wait,
            concurrency=engine_requests,
        )
    from livewhisper.engine.local import ModelOptions

    return ModelOptions(
        model=model or models.DEFAULT_MODEL,
        device=model_device,
        compute_type=compute_type,
        threads=threads,
    )


def load_engine(
    model_opts: ModelOptions | RemoteOptions,
    transcribe_opts: TranscribeOptions,
    *,
    on_notice: Callable[[str], None] | None = None,
) -> Transcriber:
    """Load the model (or reach the engine) and check it can do what was asked; a
    LivewhisperError otherwise. *on_notice* hears what a remote engine has to say
    mid-session (it stopped answering, it is back, what was not transcribed)."""
    from livewhisper.engine.factory import load_engine as load
    from livewhisper.engine.remote import RemoteEngine

    engine = load(model_opts, transcribe_opts)
    if isinstance(engine, RemoteEngine):
        engine.on_notice = on_notice
    return engine


def notice_printer(console: Console) -> Callable[[str], None]:
    """A remote engine's notices, as lines on *console* (stderr)."""

    def say(message: str) -> None:
        line = f"livewhisper: {message[:1].lower()}{message[1:]}"
        console.print(line, style="yellow", highlight=False, markup=False, soft_wrap=True)

    return say


def engine_losses(engine: Transcriber, since: int = 0) -> list[Lost]:
    """What a remote engine did not transcribe (after its first *since* losses)."""
    from livewhisper.engine.remote import RemoteEngine

    return list(engine.losses[since:]) if isinstance(engine, RemoteEngine) else []


def lost_summary(gaps: list[Lost], shown: int = 5) -> str:
    """One sentence on what a remote engine did not transcribe: ``2 utterances were
    not transcribed (12.3 s to 15.8 s, 20.1 s to 24.0 s): the engine at ... did not
    answer for 60 s (ConnectError).``"""
    spans = ", ".join(g.span() for g in gaps[:shown])
    if len(gaps) > shown:
        spans += f" and {len(gaps) - shown} more"
    count = "1 utterance was" if len(gaps) == 1 else f"{len(gaps)} utterances were"
    return f"{count} not transcribed ({spans}): {gaps[-1].reason}."


def close_engine(engine: Transcriber) -> None:
    """Close a remote engine's connections (a local model needs nothing)."""
    from livewhisper.engine.remote import RemoteEngine

    if isinstance(engine, RemoteEngine):
        engine.close()
