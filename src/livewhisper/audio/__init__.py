"""Audio in: the one PCM format, files and containers of any kind, devices and pipes."""
