"""Which frames of a video a clip takes: the frame-index samplers all video tasks share.

Samplers return frame indices only, so they are pure functions and tested as such:
- `sparse_segment_indices`: one frame per equal segment (Kinetics_sparse, LVU, pretraining);
- `tsn_segment_indices`: TSN segments as the SSv2 datasets use them;
- `dense_clip_indices`: a window of ``clip_len`` frames at a fixed interval (Kinetics dense);
- `interval_indices`, `fps_indices`, `sample_indices`: video_mm's ``rand``/``middle``/``fps{x}``.
Every sampler accepts videos shorter than the clip; what it does then is documented per function.
Random choices use torch's generator (the global one when none is given) because DataLoader seeds
torch differently in every worker, whereas numpy's global state would be copied into all of them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import torch

from videomamba.core.video_decode import VideoInfo

# Modes: "train" draws at random, "val" is the single deterministic view, "test" is view
# `view_index` of `num_views` deterministic temporal views.

_MODES = ("train", "val", "test")


def _check_sampler_args(num_frames: int, num_samples: int, mode: str, view_index: int, num_views: int) -> None:
    if num_frames <= 0:
        raise ValueError(f"cannot sample from a video with {num_frames} frames")
    if num_samples <= 0:
        raise ValueError(f"number of frames to sample must be positive, got {num_samples}")
    if mode not in _MODES:
        raise ValueError(f"sampling mode must be one of {_MODES}, got {mode!r}")
    if num_views <= 0 or not 0 <= view_index < num_views:
        raise ValueError(f"view_index {view_index} is not in [0, {num_views})")


def _uniform(size: int, generator: torch.Generator | None) -> list[float]:
    return torch.rand(size, generator=generator, dtype=torch.float64).tolist()


def sparse_segment_indices(
    num_frames: int,
    num_segments: int,
    *,
    mode: str = "train",
    view_index: int = 0,
    num_views: int = 1,
    generator: torch.Generator | None = None,
) -> list[int]:
    """One frame from each of `num_segments` equal segments spanning the first to the last frame.

    Segment i covers positions [s·i, s·(i+1)] with s = (num_frames − 1) / num_segments (the original
    Kinetics_sparse definition). ``train``: a random frame between the segment's rounded bounds.
    ``val``: the segment centre. ``test``: the frame at fraction (view_index + 1) / (num_views + 1)
    of each segment, so views are evenly shifted copies of one another and ``val`` equals the single
    test view. The result is non-decreasing. A video with fewer frames than segments gets repeated
    frames, spread evenly over time.
    """
    _check_sampler_args(num_frames, num_segments, mode, view_index, num_views)
    segment = (num_frames - 1) / num_segments
    if mode == "train":
        draws = _uniform(num_segments, generator)
        indices = []
        for i, u in enumerate(draws):
            low, high = round(segment * i), round(segment * (i + 1))
            indices.append(low + min(int(u * (high - low + 1)), high - low))
        return indices
    fraction = 0.5 if mode == "val" else (view_index + 1) / (num_views + 1)
    return [min(int(segment * (i + fraction)), num_frames - 1) for i in range(num_segments)]


def tsn_segment_indices(
    num_frames: int,
    num_segments: int,
    *,
    mode: str = "train",
    view_index: int = 0,
    num_views: int = 1,
    generator: torch.Generator | None = None,
) -> list[int]:
    """TSN segment sampling as the SSv2 datasets use it: `num_segments` segments of num_frames / num_segments.

    ``train``: a uniformly random frame inside each segment. ``val``: segment centres. ``test``: the
    frame at fraction view_index / num_views of each segment. For two views this is exactly the
    original's SSv2 test (view 0 = segment starts, view 1 = segment centres) while accepting any
    number of views (the original only worked for two). Short videos repeat frames, spread evenly.
    """
    _check_sampler_args(num_frames, num_segments, mode, view_index, num_views)
    tick = num_frames / num_segments
    if mode == "train":
        fractions = _uniform(num_segments, generator)
    else:
        fraction = 0.5 if mode == "val" else view_index / num_views
        fractions = [fraction] * num_segments
    return [min(int(tick * (i + f)), num_frames - 1) for i, f in enumerate(fractions)]


def dense_clip_indices(
    num_frames: int,
    clip_len: int,
    frame_interval: int,
    *,
    mode: str = "train",
    view_index: int = 0,
    num_views: int = 1,
    generator: torch.Generator | None = None,
) -> list[int]:
    """`clip_len` frames taken every `frame_interval` frames from one window (VideoMAE's dense sampling).

    The window spans (clip_len − 1)·frame_interval + 1 frames. ``train``: a uniformly random start.
    ``val``: the centred window. ``test``: view starts evenly spaced from the first possible start
    to the last (the centred window when num_views == 1). The start is never negative (the
    original's validation window could be). When the video is shorter than the window the clip
    starts at frame 0 and indices past the end repeat the last frame.
    """
    _check_sampler_args(num_frames, clip_len, mode, view_index, num_views)
    if frame_interval <= 0:
        raise ValueError(f"frame_interval must be positive, got {frame_interval}")
    last_start = max(0, num_frames - ((clip_len - 1) * frame_interval + 1))
    if mode == "train":
        start = int(torch.randint(last_start + 1, (1,), generator=generator))
    elif mode == "val" or num_views == 1:
        start = last_start // 2
    else:
        start = view_index * last_start // (num_views - 1)
    return [min(start + k * frame_interval, num_frames - 1) for k in range(clip_len)]


def interval_indices(
    num_frames: int,
    num_samples: int,
    *,
    mode: str = "rand",
    generator: torch.Generator | None = None,
) -> list[int]:
    """video_mm's ``rand``/``middle`` sampling: `num_samples` equal intervals, one frame from each.

    ``rand`` draws a frame uniformly from each interval, its last frame included (the original's
    draw excluded it). ``middle`` takes each interval's midpoint. With fewer frames than samples the
    intervals shrink below one frame and frames repeat, spread evenly (the original padded the end
    with the last frame instead).
    """
    if mode not in ("rand", "middle"):
        raise ValueError(f"interval sampling mode must be 'rand' or 'middle', got {mode!r}")
    _check_sampler_args(num_frames, num_samples, "val", 0, 1)
    width = num_frames / num_samples
    fractions = _uniform(num_samples, generator) if mode == "rand" else [0.5] * num_samples
    return [min(int(width * (i + f)), num_frames - 1) for i, f in enumerate(fractions)]


def fps_indices(num_frames: int, video_fps: float, target_fps: float, *, max_samples: int | None = None) -> list[int]:
    """Frames at a fixed rate `target_fps`: the frame shown at the middle of every 1/target_fps seconds.

    Returns as many frames as the video holds at that rate (at least one), truncated to the first
    `max_samples` when given.
    """
    if num_frames <= 0 or video_fps <= 0 or target_fps <= 0:
        raise ValueError(f"invalid fps sampling: {num_frames} frames at {video_fps} fps, target {target_fps} fps")
    step = video_fps / target_fps
    count = max(1, math.ceil(num_frames / step - 0.5))
    if max_samples is not None:
        count = min(count, max_samples)
    return [min(int(step * (k + 0.5)), num_frames - 1) for k in range(count)]


def pad_indices(indices: Sequence[int], length: int) -> list[int]:
    """Pad with the last index (or truncate) to exactly `length` indices."""
    if not indices:
        raise ValueError("cannot pad an empty index list")
    indices = list(indices)[:length]
    return indices + [indices[-1]] * (length - len(indices))


def frames_within_seconds(num_frames: int, fps: float, max_seconds: float | None) -> int:
    """How many leading frames fall within the first `max_seconds` (video_mm's ``trimmed30``)."""
    if max_seconds is None:
        return num_frames
    return max(1, min(num_frames, int(fps * max_seconds)))


def sample_indices(
    sample_type: str,
    info: VideoInfo,
    num_samples: int,
    *,
    max_seconds: float | None = None,
    generator: torch.Generator | None = None,
) -> list[int]:
    """video_mm's sampler by name: ``rand``, ``middle`` or ``fps{x}`` (e.g. ``fps0.5``).

    `max_seconds` restricts sampling to the start of the video (30 for ``trimmed30``). ``fps``
    sampling returns exactly `num_samples` indices: truncated, or padded with the last index.
    """
    usable = frames_within_seconds(info.num_frames, info.fps, max_seconds)
    if sample_type in ("rand", "middle"):
        return interval_indices(usable, num_samples, mode=sample_type, generator=generator)
    match = re.fullmatch(r"fps(\d+(?:\.\d*)?|\.\d+)", sample_type)
    if match is None:
        raise ValueError(f"unknown sample_type {sample_type!r}; use 'rand', 'middle' or 'fps<rate>'")
    indices = fps_indices(usable, info.fps, float(match.group(1)), max_samples=num_samples)
    return pad_indices(indices, num_samples)
