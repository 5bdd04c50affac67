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

import math

import numpy as np
import torch
import torch.nn.functional as F

from .rand_augment import VideoRandAugment
from .random_erasing import RandomErasing

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def frames_to_tensor(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (T, H, W, 3) frames -> uint8 (T, 3, H, W) tensor."""
    clip = torch.from_numpy(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
    if clip.dim() != 4 or clip.shape[-1] != 3 or clip.dtype != torch.uint8:
        raise ValueError(f"expected uint8 frames (T, H, W, 3), got {clip.dtype} {tuple(clip.shape)}")
    return clip.permute(0, 3, 1, 2)


def resize_clip(clip: torch.Tensor, size: tuple[int, int], interpolation: str = "bilinear") -> torch.Tensor:
    """Resize a (T, C, H, W) clip to (height, width); uint8 input comes back as float in 0..255."""
    clip = clip.float()
    if tuple(clip.shape[-2:]) == tuple(size):
        return clip
    shrinking = size[0] < clip.shape[-2] or size[1] < clip.shape[-1]
    out = F.interpolate(clip, size=size, mode=interpolation, align_corners=False, antialias=shrinking)
    return out.clamp_(0, 255)


def short_side_size_of(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(height, width) after resizing so the shorter side is `short_side`, keeping the aspect ratio."""
    if height <= width:
        return short_side, max(short_side, round(width * short_side / height))
    return max(short_side, round(height * short_side / width)), short_side


def crop_offsets(length: int, crop: int, num_crops: int) -> list[int]:
    """Start positions of `num_crops` crops of size `crop` evenly spread over `length` (centred if one)."""
    if crop > length:
        raise ValueError(f"crop {crop} larger than the frame side {length}")
    if num_crops == 1:
        return [(length - crop) // 2]
    return [round(i * (length - crop) / (num_crops - 1)) for i in range(num_crops)]


def uniform_crop(clip: torch.Tensor, size: int, crop_index: int, num_crops: int) -> torch.Tensor:
    """Square crop number `crop_index` of `num_crops` taken along the long side, centred on the short one."""
    height, width = clip.shape[-2:]
    if not 0 <= crop_index < num_crops:
        raise ValueError(f"crop_index {crop_index} is not in [0, {num_crops})")
    along_width = width >= height
    tops = crop_offsets(height, size, 1 if along_width else num_crops)
    lefts = crop_offsets(width, size, num_crops if along_width else 1)
    top, left = (tops[0], lefts[crop_index]) if along_width else (tops[crop_index], lefts[0])
    return clip[..., top : top + size, left : left + size]


def random_resized_crop_box(
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator | None = None,
) -> tuple[int, int, int, int]:
    """(top, left, crop_height, crop_width) with area fraction in `scale` and aspect (w / h) log-uniform in `ratio`.

    Ten tries; then the largest centred crop whose aspect is clamped into `ratio`.
    """
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        area_u, ratio_u, top_u, left_u = torch.rand(4, generator=generator, dtype=torch.float64).tolist()
        target_area = area * (scale[0] + area_u * (scale[1] - scale[0]))
        aspect = math.exp(log_ratio[0] + ratio_u * (log_ratio[1] - log_ratio[0]))
        crop_width = round(math.sqrt(target_area * aspect))
        crop_height = round(math.sqrt(target_area / aspect))
        if 0 < crop_width <= width and 0 < crop_height <= height:
            top = int(top_u * (height - crop_height + 1))
            left = int(left_u * (width - crop_width + 1))
            return top, left, crop_height, crop_width
    aspect = width / height
    if aspect < ratio[0]:
        crop_width, crop_height = width, round(width / ratio[0])
    elif aspect > ratio[1]:
        crop_height, crop_width = height, round(height * ratio[1])
    else:
        crop_height, crop_width = height, width
    return (height - crop_height) // 2, (width - crop_width) // 2, crop_height, crop_width


def normalize_clip(clip: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """(T, C, H, W) float in 0..255 -> normalised (C, T, H, W)."""
    mean_t = torch.tensor(mean, dtype=clip.dtype).view(1, -1, 1, 1) * 255.0
    std_t = torch.tensor(std, dtype=clip.dtype).view(1, -1, 1, 1) * 255.0
    return ((clip - mean_t) / std_t).permute(1, 0, 2, 3).contiguous()


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
