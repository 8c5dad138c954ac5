"""Decoding: the engine contract, the local faster-whisper engine, models, the scheduler."""
