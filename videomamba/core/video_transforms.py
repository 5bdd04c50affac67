"""Clip-level tensor ops shared by the video tasks: every frame of a clip gets the same geometry.

Decoded frames arrive as uint8 (T, H, W, 3) arrays: `frames_to_tensor` makes them (T, 3, H, W),
`resize_clip` / the crop helpers keep that layout, and `normalize_clip` returns the float
(C, T, H, W) tensor the VideoMamba patch embedding takes. The task pipelines (video_sm's train /
eval / pretrain transforms, video_mm's `ClipTransform`) are built from these.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "crop_offsets",
    "frames_to_tensor",
    "normalize_clip",
    "random_resized_crop_box",
    "resize_clip",
    "short_side_size_of",
    "uniform_crop",
]

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
