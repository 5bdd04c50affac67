"""Reading media for video-text tasks: images and sampled video frames, as normalised (C, T, H, W) clips.

Videos go through the readers shared with video_sm (`videomamba.core.video_decode`: decord with a
PyAV fallback, frame folders, gifs) and the ``rand`` / ``middle`` / ``fps{x}`` samplers; ``max_seconds``
(``trimmed30``) restricts sampling to the start of each video. Images are one-frame clips.

Augmentation follows the original: training takes a random resized crop (scale 0.5-1, bicubic) and a
horizontal flip, identical for every frame; evaluation resizes to a square. Optional RandAugment
(``random_aug``) uses the clip-consistent implementation of `videomamba.core.video_rand_augment`.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from videomamba.core.frame_sampling import sample_indices
from videomamba.core.video_decode import VideoDecodeError, open_video
from videomamba.core.video_rand_augment import VideoRandAugment
from videomamba.core.video_transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    frames_to_tensor,
    normalize_clip,
    random_resized_crop_box,
    resize_clip,
)

__all__ = ["ClipTransform", "MediaReader", "read_image"]

# The original's RandAugment(2, 7), in timm's policy notation.
RANDOM_AUG_POLICY = "rand-m7-n2"


class ClipTransform:
    """uint8 frames (T, H, W, 3) -> normalised float (C, T, image_res, image_res)."""

    def __init__(self, image_res: int, train: bool, random_aug: bool = False, crop_scale: tuple = (0.5, 1.0)) -> None:
        self.image_res = image_res
        self.train = train
        self.crop_scale = tuple(crop_scale)
        fill = tuple(round(255 * m) for m in IMAGENET_MEAN)
        self.rand_augment = VideoRandAugment(RANDOM_AUG_POLICY, fill=fill) if (train and random_aug) else None

    def __call__(self, frames: np.ndarray) -> torch.Tensor:
        clip = frames_to_tensor(frames)
        if self.rand_augment is not None:
            clip = self.rand_augment(clip)
        if self.train:
            top, left, height, width = random_resized_crop_box(
                clip.shape[-2], clip.shape[-1], self.crop_scale, (3 / 4, 4 / 3)
            )
            clip = clip[..., top : top + height, left : left + width]
        clip = resize_clip(clip, (self.image_res, self.image_res), "bicubic")
        if self.train and float(torch.rand(1)) < 0.5:
            clip = clip.flip(-1)
        return normalize_clip(clip, IMAGENET_MEAN, IMAGENET_STD)


def read_image(path: str) -> np.ndarray:
    """An RGB image as a one-frame uint8 clip (1, H, W, 3); unreadable files raise VideoDecodeError."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return np.array(image.convert("RGB"))[None]
    except (OSError, ValueError) as error:
        raise VideoDecodeError(path, f"cannot read image: {error}") from error


class MediaReader:
    """Reads an image or `num_frames` sampled video frames and applies a `ClipTransform`."""

    def __init__(
        self,
        transform: ClipTransform,
        num_frames: int,
        sample_type: str,
        max_seconds: float | None = None,
        video_reader: str = "auto",
    ) -> None:
        self.transform = transform
        self.num_frames = num_frames
        self.sample_type = sample_type
        self.max_seconds = max_seconds
        self.video_reader = video_reader

    def read_frames(self, path: str, media_type: str) -> np.ndarray:
        if media_type == "image":
            return read_image(path)
        if not os.path.exists(path):
            raise VideoDecodeError(path, "file not found")
        with open_video(path, self.video_reader) as video:
            indices = sample_indices(self.sample_type, video.info, self.num_frames, max_seconds=self.max_seconds)
            return video.read(indices)

    def __call__(self, path: str, media_type: str) -> torch.Tensor:
        return self.transform(self.read_frames(path, media_type))
