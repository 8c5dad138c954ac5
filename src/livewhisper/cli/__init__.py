"""The `livewhisper` command line: one module per command, over the Python API."""
