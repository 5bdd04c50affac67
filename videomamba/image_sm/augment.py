"""3-Augment (DeiT III, Touvron et al. 2022): crop + flip, then one of grayscale / solarize / blur.

Used for training when ``--ThreeAugment`` is set: RandomResizedCrop(scale 0.08-1, bicubic) and a
horizontal flip (or, with ``--src``, "simple random crop": resize, reflect-padded random crop,
flip), then exactly one of {grayscale, solarize, Gaussian blur with radius in [0.1, 2]}, an
optional colour jitter of strength ``--color-jitter``, and ImageNet normalisation.

Also here: `keep_posterize_bits`, a guard for timm's RandAugment under recent Pillow.
"""

from __future__ import annotations

import random

from PIL import Image, ImageFilter, ImageOps
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, auto_augment
from torchvision import transforms
from torchvision.transforms import InterpolationMode

__all__ = ["RandomGaussianBlur", "RandomSolarize", "keep_posterize_bits", "three_augment"]

_timm_posterize = auto_augment.posterize


def _posterize_at_least_one_bit(img: Image.Image, bits_to_keep: int, **kwargs) -> Image.Image:
    return _timm_posterize(img, max(1, int(bits_to_keep)), **kwargs)


def keep_posterize_bits() -> None:
    """Make timm's RandAugment posterize keep at least one bit.

    With ``inc1`` policies a magnitude of 10 (reached by ``mstd`` noise, or ``m10``) asks for 0 bits,
    which Pillow 13 rejects with a ValueError: a training run crashed at a random step. One bit is
    the nearest image Pillow accepts. Ops read timm's table when built, so call this first.
    """
    for name in ("Posterize", "PosterizeIncreasing", "PosterizeOriginal"):
        auto_augment.NAME_TO_OP[name] = _posterize_at_least_one_bit


class RandomGaussianBlur:
    """PIL Gaussian blur with a radius drawn uniformly from [radius_min, radius_max], applied with prob p."""

    def __init__(self, p: float = 1.0, radius_min: float = 0.1, radius_max: float = 2.0):
        self.p, self.radius_min, self.radius_max = p, radius_min, radius_max

    def __call__(self, img: Image.Image) -> Image.Image:
        if random.random() >= self.p:
            return img
        return img.filter(ImageFilter.GaussianBlur(radius=random.uniform(self.radius_min, self.radius_max)))


class RandomSolarize:
    """PIL solarize (invert pixels above 128), applied with prob p."""

    def __init__(self, p: float = 1.0, threshold: int = 128):
        self.p, self.threshold = p, threshold

    def __call__(self, img: Image.Image) -> Image.Image:
        return ImageOps.solarize(img, self.threshold) if random.random() < self.p else img


def three_augment(input_size: int, color_jitter: float = 0.3, simple_random_crop: bool = False) -> transforms.Compose:
    """The 3-Augment training transform for square inputs of ``input_size`` pixels."""
    if simple_random_crop:
        geometry = [
            transforms.Resize(input_size, interpolation=InterpolationMode.BICUBIC),
            transforms.RandomCrop(input_size, padding=4, padding_mode="reflect"),
            transforms.RandomHorizontalFlip(),
        ]
    else:
        geometry = [
            transforms.RandomResizedCrop(input_size, scale=(0.08, 1.0), interpolation=InterpolationMode.BICUBIC),
            transforms.RandomHorizontalFlip(),
        ]
    one_of = transforms.RandomChoice(
        [transforms.Grayscale(num_output_channels=3), RandomSolarize(p=1.0), RandomGaussianBlur(p=1.0)]
    )
    colour = [transforms.ColorJitter(color_jitter, color_jitter, color_jitter)] if color_jitter else []
    final = [transforms.ToTensor(), transforms.Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)]
    return transforms.Compose(geometry + [one_of] + colour + final)
