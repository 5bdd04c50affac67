"""Entry scripts of the video-text tasks and the run machinery they share (``engine``)."""
