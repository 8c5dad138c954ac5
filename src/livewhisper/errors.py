"""Errors a user can act on. Each message is one sentence that says what to do."""

from __future__ import annotations

import errno
import os


class LivewhisperError(Exception):
    """Base class: the message is shown to the user as it is."""


class ModelError(LivewhisperError):
    """A model could not be found, assembled or loaded."""


class EngineError(LivewhisperError):
    """A remote engine could not be reached, refused the request, or stopped answering."""


class AudioError(LivewhisperError):
    """An audio input could not be read or decoded."""


class DeviceError(LivewhisperError):
    """An audio device could not be found, opened or kept open."""


class OutputError(LivewhisperError):
    """A transcript could not be written."""


def cannot_write(what: str | os.PathLike[str], exc: OSError) -> OutputError:
    """The error for an output that failed to write: ``Cannot write out.srt:
    Permission denied.``, or for a full disk ``Disk full writing out.srt: free space
    or write it elsewhere.`` Raise it ``from exc``."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        where = os.fspath(what)
        return OutputError(f"Disk full writing {where}: free space or write it elsewhere.")
    return OutputError(f"Cannot write {os.fspath(what)}: {exc.strerror or exc}.")
