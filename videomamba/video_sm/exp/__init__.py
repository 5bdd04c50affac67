"""Experiment scripts of video_sm, generated from the preset table in presets.py."""
