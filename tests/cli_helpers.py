"""Running the real `livewhisper` command line as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from scripted_decoder import Heard

TESTS = Path(__file__).parent
DATA = TESTS / "data"


def livewhisper_command(heard: Heard | None = None) -> list[str]:
    """The command that runs the CLI; with *heard*, its decoder is scripted to answer
    that (see `scripted_decoder`)."""
    if heard is None:
        return [sys.executable, "-m", "livewhisper"]
    return [sys.executable, str(TESTS / "scripted_decoder.py"), heard.json()]


def run_cli(
    *args: str | os.PathLike[str],
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 300,
    cwd: str | os.PathLike[str] | None = None,
    heard: Heard | None = None,
) -> subprocess.CompletedProcess[str]:
    """`python -m livewhisper ARGS...`, text output; stdin is *input* or nothing."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("FORCE_COLOR", None)
    full_env.pop("NO_COLOR", None)
    proc = subprocess.run(
        [*livewhisper_command(heard), *map(str, args)],
        input=input,
        capture_output=True,
        env=full_env,
        timeout=timeout,
        cwd=cwd,
    )
    return subprocess.CompletedProcess(
        proc.args,
        proc.returncode,
        proc.stdout.decode("utf-8", "replace"),
        proc.stderr.decode("utf-8", "replace"),
    )
