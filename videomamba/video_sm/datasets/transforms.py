"""Clip-level transforms: the same crop, flip and colour ops for every frame of a clip.

Decoded frames arrive as uint8 (T, H, W, 3) arrays; transforms return float (C, T, H, W) tensors
normalised with ImageNet statistics, the layout the VideoMamba patch embedding takes.

- `VideoTrainTransform` (fine-tuning): video RandAugment -> random resized crop (scale 0.08-1,
  aspect 3/4-4/3) -> horizontal flip (off for SSv2, where direction is the label) -> normalise ->
  cube random erasing; the original's order.
- `VideoEvalTransform` (validation and multi-view test): resize the short side to
  ``short_side_size``, then crop ``input_size`` squares at `num_crops` evenly spaced positions along
  the long side (one centred crop when num_crops == 1). The original cropped ``short_side_size``
  squares at test time and ``input_size`` at validation; both equal in every released script, and
  we crop ``input_size`` in both so the model always sees its input size.
- `VideoPretrainTransform` (masked pretraining): TSN multi-scale crop with fixed offsets -> resize ->
  optional flip -> normalise.
"""

from __future__ import annotations

import numpy as np
import torch

from videomamba.core.video_rand_augment import VideoRandAugment
from videomamba.core.video_transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    frames_to_tensor,
    normalize_clip,
    random_resized_crop_box,
    resize_clip,
    short_side_size_of,
    uniform_crop,
)

from .random_erasing import RandomErasing


class VideoTrainTransform:
    """Fine-tuning augmentation of one clip (see the module notes for the order).

    Args:
        input_size: output side in pixels.
        scale, ratio: random resized crop area fraction and aspect range.
        hflip: probability of a horizontal flip (0 for SSv2).
        auto_augment: RandAugment policy (``--aa``) or None.
        random_erasing: a configured `RandomErasing` or None.
        interpolation: used to resize the crop (the original used bilinear here).
        mean, std: normalisation statistics.
    """

    def __init__(
        self,
        input_size: int = 224,
        *,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        hflip: float = 0.5,
        auto_augment: str | None = "rand-m7-n4-mstd0.5-inc1",
        random_erasing: RandomErasing | None = None,
        interpolation: str = "bilinear",
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
    ) -> None:
        self.input_size = input_size
        self.scale, self.ratio = scale, ratio
        self.hflip = hflip
        fill = tuple(round(255 * m) for m in mean)
        self.rand_augment = VideoRandAugment(auto_augment, fill=fill) if auto_augment else None
        self.random_erasing = random_erasing
        self.interpolation = interpolation
        self.mean, self.std = mean, std

    def __call__(self, frames: np.ndarray | torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 (T, H, W, 3) -> normalised float (C, T, input_size, input_size)."""
        clip = frames_to_tensor(frames)
        if self.rand_augment is not None:
            clip = self.rand_augment(clip, generator)
        top, left, crop_height, crop_width = random_resized_crop_box(
            clip.shape[-2], clip.shape[-1], self.scale, self.ratio, generator
        )
        clip = clip[..., top : top + crop_height, left : left + crop_width]
        clip = resize_clip(clip, (self.input_size, self.input_size), self.interpolation)
        if float(torch.rand(1, generator=generator)) < self.hflip:
            clip = clip.flip(-1)
        clip = normalize_clip(clip, self.mean, self.std)
        if self.random_erasing is not None:
            clip = self.random_erasing(clip, generator)
        return clip


class VideoEvalTransform:
    """Short-side resize and one of `num_crops` evenly spaced square crops (a centre crop when one)."""

    def __init__(
        self,
        input_size: int = 224,
        short_side_size: int = 224,
        num_crops: int = 1,
        *,
        interpolation: str = "bilinear",
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
    ) -> None:
        if short_side_size < input_size:
            raise ValueError(f"short_side_size {short_side_size} must be at least input_size {input_size}")
        self.input_size, self.short_side_size, self.num_crops = input_size, short_side_size, num_crops
        self.interpolation = interpolation
        self.mean, self.std = mean, std

    def __call__(self, frames: np.ndarray | torch.Tensor, crop_index: int = 0) -> torch.Tensor:
        """uint8 (T, H, W, 3) -> normalised float (C, T, input_size, input_size) for crop `crop_index`."""
        clip = frames_to_tensor(frames)
        size = short_side_size_of(clip.shape[-2], clip.shape[-1], self.short_side_size)
        clip = resize_clip(clip, size, self.interpolation)
        clip = uniform_crop(clip, self.input_size, crop_index, self.num_crops)
        return normalize_clip(clip, self.mean, self.std)


def multi_scale_crop_box(
    height: int,
    width: int,
    input_size: int,
    scales: tuple[float, ...] = (1.0, 0.875, 0.75, 0.66),
    max_distort: int = 1,
    generator: torch.Generator | None = None,
) -> tuple[int, int, int, int]:
    """TSN multi-scale crop: (top, left, crop_height, crop_width).

    Side lengths are scales of the short side (snapped to `input_size` within 3 px), height and
    width at most `max_distort` scale steps apart; the position is one of 13 fixed offsets (corners,
    centre, edge midpoints and quarter points).
    """
    base = min(height, width)
    sides = [int(base * s) for s in scales]
    sides = [input_size if abs(s - input_size) < 3 else s for s in sides]
    pairs = [(h, w) for i, h in enumerate(sides) for j, w in enumerate(sides) if abs(i - j) <= max_distort]
    crop_height, crop_width = pairs[int(torch.randint(len(pairs), (1,), generator=generator))]
    crop_height, crop_width = min(crop_height, height), min(crop_width, width)
    step_y, step_x = (height - crop_height) / 4, (width - crop_width) / 4
    grid = [(0, 0), (0, 4), (4, 0), (4, 4), (2, 2), (2, 0), (2, 4), (4, 2), (0, 2), (1, 1), (1, 3), (3, 1), (3, 3)]
    gy, gx = grid[int(torch.randint(len(grid), (1,), generator=generator))]
    return int(gy * step_y), int(gx * step_x), crop_height, crop_width


class VideoPretrainTransform:
    """Masked-pretraining augmentation: multi-scale crop, resize, optional flip, normalise."""

    def __init__(
        self,
        input_size: int = 224,
        *,
        scales: tuple[float, ...] = (1.0, 0.875, 0.75, 0.66),
        hflip: bool = True,
        interpolation: str = "bilinear",
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
    ) -> None:
        self.input_size, self.scales, self.hflip = input_size, scales, hflip
        self.interpolation = interpolation
        self.mean, self.std = mean, std

    def __call__(self, frames: np.ndarray | torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 (T, H, W, 3) -> normalised float (C, T, input_size, input_size)."""
        clip = frames_to_tensor(frames)
        top, left, crop_height, crop_width = multi_scale_crop_box(
            clip.shape[-2], clip.shape[-1], self.input_size, self.scales, generator=generator
        )
        clip = clip[..., top : top + crop_height, left : left + crop_width]
        clip = resize_clip(clip, (self.input_size, self.input_size), self.interpolation)
        if self.hflip and float(torch.rand(1, generator=generator)) < 0.5:
            clip = clip.flip(-1)
        return normalize_clip(clip, self.mean, self.std)
