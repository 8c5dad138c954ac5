"""The `livewhisper` command group; each command is imported only when it runs."""

from __future__ import annotations

import importlib
import logging

import click

from livewhisper import __version__


class LazyGroup(click.Group):
    """A group whose live commands are imported only when they run (or help lists
    them), so `livewhisper file` starts without loading the audio and server code."""

    lazy = {
        "check": "livewhisper.cli.devices:check_command",
        "devices": "livewhisper.cli.devices:devices_command",
        "file": "livewhisper.cli.file:file_command",
        "listen": "livewhisper.cli.listen:listen_command",
        "models": "livewhisper.cli.models:models_command",
        "serve": "livewhisper.cli.serve:serve_command",
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy:
            module, attr = self.lazy[cmd_name].split(":")
            command: click.Command = getattr(importlib.import_module(module), attr)
            return command
        return super().get_command(ctx, cmd_name)


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
