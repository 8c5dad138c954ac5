"""livewhisper: local live speech-to-text with Whisper."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("livewhisper")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
