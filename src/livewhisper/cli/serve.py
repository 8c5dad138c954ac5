"""``livewhisper serve``, and the ``--serve`` options of ``livewhisper listen``.

`serve_options` adds ``--serve`` and the server's options to a click command and
hands the command one ``serve`` argument: None without ``--serve``, else a
`ServeSettings`. `server_options` adds the same options (no ``--serve``) to
``serve``, which always serves and has no local microphone. `serving` starts the
server over a scheduler for either.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.console import Console

from livewhisper.cli.options import (
    CliError,
    build_model_options,
    close_engine,
    decode_options,
    load_engine,
    model_options,
    notice_printer,
    stack_options,
    stderr_console,
)
from livewhisper.errors import LivewhisperError
from livewhisper.serve.options import ServerOptions, is_loopback

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from livewhisper.engine.scheduler import Scheduler
    from livewhisper.live.stream import StreamOptions
    from livewhisper.serve.thread import ServerThread

F = TypeVar("F", bound=Callable[..., Any])

_NAMES = (
    "host",
    "port",
    "token",
    "no_token",
    "allow_origin",
    "certfile",
    "keyfile",
    "self_signed",
    "max_clients",
    "max_session",
    "idle_timeout",
    "send_timeout",
    "header_timeout",
    "max_upload_mb",
)


@dataclass(frozen=True)
class ServeSettings:
    """What ``--serve`` (or ``serve``) and the server's options asked for."""

    options: ServerOptions
    self_signed: bool = False
    local: bool = True  # also transcribe the local microphone (session "local")
    max_upload_mb: float = 100.0  # the largest upload to /v1/audio/transcriptions


def serve_options(func: F) -> F:
    """Add ``--serve`` and the server's options; the command gets ``serve=ServeSettings|None``."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        values = {name: kwargs.pop(name) for name in _NAMES}
        serve, serve_only = kwargs.pop("serve"), kwargs.pop("serve_only")
        settings = settings_from(values, local=not serve_only) if serve or serve_only else None
        kwargs["serve"] = settings
        return func(*args, **kwargs)

    flags = [
        click.option(
            "--serve",
            is_flag=True,
            help="Also serve a web page where browsers are remote microphones, "
            "a caption view, and a WebSocket API (see docs/server.md).",
        ),
        click.option(
            "--serve-only",
            is_flag=True,
            help="Serve browsers without listening to a local microphone (implies --serve; "
            "the same as 'livewhisper serve').",
        ),
    ]
    return stack_options(wrapper, flags + _server_option_list("With --serve: "))  # type: ignore[return-value]


def server_options(func: F) -> F:
    """Add the server's options (those of ``listen --serve``); the command gets
    ``settings=ServeSettings``, without a local microphone."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        values = {name: kwargs.pop(name) for name in _NAMES}
        kwargs["settings"] = settings_from(values, local=False)
        return func(*args, **kwargs)

    return stack_options(wrapper, _server_option_list(""))  # type: ignore[return-value]


def _server_option_list(lead: str) -> list[Callable[[Any], Any]]:
    """The server's options; *lead* starts the help of each (``With --serve: ``)."""

    def say(text: str) -> str:
        return lead + text if lead else text[:1].upper() + text[1:]

    defaults = ServerOptions()
    return [
        click.option(
            "--host",
            default=defaults.host,
            show_default=True,
            help=say("the address to bind; 0.0.0.0 for every interface."),
        ),
        click.option(
            "--port",
            type=click.IntRange(0, 65535),
            default=defaults.port,
            show_default=True,
            help=say("the port (0: any free port)."),
        ),
        click.option(
            "--token",
            default=None,
            help=say(
                "a secret every connection must give (?token=... or Authorization: "
                "Bearer). Off loopback one is generated and printed unless --no-token."
            ),
        ),
        click.option(
            "--no-token",
            is_flag=True,
            help=say("off loopback, allow anyone who can reach the port."),
        ),
        click.option(
            "--allow-origin",
            multiple=True,
            metavar="ORIGIN",
            help=say(
                "another web origin whose pages may connect "
                "(e.g. https://studio.example); repeatable; * for any."
            ),
        ),
        click.option(
            "--certfile",
            type=click.Path(exists=True, dir_okay=False),
            default=None,
            help=say("serve https with this certificate (PEM)."),
        ),
        click.option(
            "--keyfile",
            type=click.Path(exists=True, dir_okay=False),
            default=None,
            help="With --certfile: its private key (PEM), if not in the certificate file.",
        ),
        click.option(
            "--self-signed",
            is_flag=True,
            help=say(
                "serve https with a self-signed certificate made with openssl "
                "(browsers on other machines need https for the microphone)."
            ),
        ),
        click.option(
            "--max-clients",
            type=click.IntRange(min=1),
            default=defaults.max_clients,
            show_default=True,
            help=say("browsers streaming audio at once."),
        ),
        click.option(
            "--max-session",
            type=click.FloatRange(min=1),
            default=defaults.max_session_seconds / 60,
            show_default=True,
            help=say("minutes a connection may last."),
        ),
        click.option(
            "--idle-timeout",
            type=click.FloatRange(min=1),
            default=defaults.idle_timeout,
            show_default=True,
            help=say("seconds without audio before a connection is closed."),
        ),
        click.option(
            "--send-timeout",
            type=click.FloatRange(min=1),
            default=defaults.send_timeout,
            show_default=True,
            help=say(
                "seconds a message may wait for a client to read it; then its connection is closed."
            ),
        ),
        click.option(
            "--header-timeout",
            type=click.FloatRange(min=1),
            default=defaults.header_timeout,
            show_default=True,
            help=say("seconds a request's headers may take to arrive (408 after)."),
        ),
        click.option(
            "--max-upload-mb",
            type=click.FloatRange(min=0.1),
            default=100.0,
            show_default=True,
            help=say("megabytes a file sent to /v1/audio/transcriptions may have (413 above)."),
        ),
    ]


def settings_from(values: dict[str, Any], *, local: bool = True) -> ServeSettings:
    """Check the option values together; raise click.UsageError for a bad combination."""
    if values["keyfile"] and not values["certfile"]:
        raise click.UsageError("--keyfile goes with --certfile.")
    if values["self_signed"] and values["certfile"]:
        raise click.UsageError("Use --self-signed or --certfile, not both.")
    if values["token"] is not None and values["no_token"]:
        raise click.UsageError("Use --token or --no-token, not both.")
    if values["token"] == "":
        raise click.UsageError("--token cannot be empty.")
    options = ServerOptions(
        host=values["host"],
        port=values["port"],
        token=values["token"],
        allow_origins=tuple(values["allow_origin"]),
        certfile=values["certfile"],
        keyfile=values["keyfile"],
        no_token=values["no_token"],
        max_clients=values["max_clients"],
        max_session_seconds=values["max_session"] * 60,
        idle_timeout=values["idle_timeout"],
        send_timeout=values["send_timeout"],
        header_timeout=values["header_timeout"],
    )
    return ServeSettings(
        options,
        self_signed=values["self_signed"],
        local=local,
        max_upload_mb=values["max_upload_mb"],
    )


def prepare(settings: ServeSettings, console: Console) -> ServerOptions:
    """Final server options: a token off loopback, a certificate for --self-signed."""
    from livewhisper.serve.admission import with_token

    options = with_token(settings.options)  # the server does the same: shown in the URLs
    if settings.self_signed:
        from livewhisper.serve import tls

        cert = tls.self_signed(tls.local_names(options.host))
        options = replace(options, certfile=str(cert.certfile), keyfile=str(cert.keyfile))
        console.print(
            f"Self-signed certificate for {', '.join(cert.names)}; browsers will warn once. "
            f"SHA-256 fingerprint: {cert.fingerprint}",
            highlight=False,
            markup=False,
        )
    elif options.certfile is not None:
        from livewhisper.serve import tls

        tls.check_pair(options.certfile, options.keyfile)
    return options


@contextlib.contextmanager
def serving(
    settings: ServeSettings,
    scheduler: Scheduler,
    stream_options: StreamOptions | None,
    console: Console,
    *,
    extra_routes: Sequence[BaseRoute] = (),
) -> Iterator[ServerThread]:
    """Start the server over *scheduler*, print where to open it, stop it at the end
    (open sessions get their last finals, then close). *extra_routes* go to
    `livewhisper.serve.app.create_app`."""
    from livewhisper.serve.streams import live_streams
    from livewhisper.serve.thread import ServerThread

    options = prepare(settings, console)
    make, backlog = live_streams(scheduler, stream_options)
    routes = [*_openai_routes(settings, options, scheduler, stream_options), *extra_routes]
    server = ServerThread(options, make, backlog=backlog, extra_routes=routes)
    try:
        server.start()
    except OSError as exc:
        raise LivewhisperError(
            f"Cannot serve on {options.host}:{options.port} ({exc.strerror or exc}); "
            "choose another --port or --host."
        ) from exc
    try:
        announce(server, options, settings, console)
        yield server
    finally:
        server.stop()


def _openai_routes(
    settings: ServeSettings,
    options: ServerOptions,
    scheduler: Scheduler,
    stream_options: StreamOptions | None,
) -> list[BaseRoute]:
    """The OpenAI audio API (REST and Realtime) on the same port, with the same
    token: made after `prepare`, which may have generated it."""
    from livewhisper.serve.openai_audio import openai_routes
    from livewhisper.serve.ws_realtime import realtime_routes

    transcribe = stream_options.transcribe if stream_options is not None else None
    return [
        *openai_routes(scheduler, token=options.token, max_upload_mb=settings.max_upload_mb),
        *realtime_routes(scheduler, model_name=scheduler.engine.name, transcribe=transcribe),
    ]


def announce(
    server: ServerThread, options: ServerOptions, settings: ServeSettings, console: Console
) -> None:
    def say(text: str, style: str | None = None) -> None:
        console.print(text, style=style, highlight=False, markup=False)

    say(f"Serving on {server.url('/')}  (open it in a browser)", "bold")
    say(f"Captions:   {server.url('/captions')}")
    if options.host in ("0.0.0.0", "::"):
        from livewhisper.serve import tls

        for name in tls.local_names(options.host):
            if not is_loopback(name) and any(c.isdigit() for c in name.split(".")[0]):
                say(f"On the LAN: {server.url('/', host=name)}")
    if not options.loopback:
        if options.token is None:
            say(
                "Warning: serving off loopback without a token: anyone who can reach "
                "this port can use the microphone API and read transcripts.",
                "yellow",
            )
        if not options.tls:
            say(
                "Note: browsers on other machines allow the microphone only over https; "
                "add --self-signed (or --certfile/--keyfile).",
                "yellow",
            )


def serve_until_interrupted(stop: threading.Event | None = None) -> None:
    """Block until Ctrl-C, SIGTERM or SIGHUP (or *stop* is set); the caller's
    ``serving`` block then stops the server, which closes every open session."""
    from livewhisper.cli.signals import interrupts

    stop = stop or threading.Event()
    with interrupts(stop), contextlib.suppress(KeyboardInterrupt):
        # In steps: a signal the OS hands to another thread does not wake a wait on
        # this one, and Python runs the handler only on the main thread.
        while not stop.wait(0.2):
            pass


SERVE_EPILOG = "The page, the caption view and the WebSocket API are described in docs/server.md."


@click.command("serve", epilog=SERVE_EPILOG)
@model_options
@decode_options
@server_options
def serve_command(
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
    settings: ServeSettings,
) -> None:
    """Serve browsers and programs as microphones, with live captions, over one
    model; no local microphone (as 'listen --serve-only'). Ctrl-C, SIGTERM or
    SIGHUP ends it: open sessions get their last text, then close.

    \b
    Examples:
      livewhisper serve                          http://127.0.0.1:8000/
      livewhisper serve --host 0.0.0.0 --self-signed --model base
      livewhisper serve --language en --max-clients 4
      livewhisper serve --host 0.0.0.0 --engine http://gpu-box:8000   (see docs/scaling.md)
    """
    from livewhisper.cli.signals import interrupts
    from livewhisper.engine.contract import TranscribeOptions
    from livewhisper.engine.scheduler import Scheduler
    from livewhisper.live.stream import StreamOptions

    transcribe = TranscribeOptions(
        language=language, task=task, beam_size=beam_size, initial_prompt=initial_prompt
    ).for_utterance()
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
        engine = load_engine(chosen, transcribe, on_notice=notice_printer(console))
    except LivewhisperError as exc:
        raise CliError(str(exc)) from exc
    stop = threading.Event()
    # The whole stop is inside: a second signal while the sessions finish exits at once.
    try:
        with interrupts(stop), Scheduler(engine) as scheduler:
            try:
                with serving(settings, scheduler, StreamOptions(transcribe=transcribe), console):
                    serve_until_interrupted(stop)
            except LivewhisperError as exc:
                raise CliError(str(exc)) from exc
    finally:
        close_engine(engine)  # after the scheduler's last finals
