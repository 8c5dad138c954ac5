"""``livewhisper models``: the models usable without the network."""

from __future__ import annotations

import click
from rich.console import Console

from livewhisper.engine import models


@click.command("models")
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
