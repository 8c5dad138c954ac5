"""The server: browsers as microphones, captions, and the protocols they speak."""
