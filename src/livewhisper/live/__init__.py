"""Live transcription: the segmenter, partial agreement, context, streams and sessions."""
