"""RandAugment for video clips: every frame of a clip gets exactly the same operations and parameters.

Operations run once on the whole (T, C, H, W) uint8 clip with torchvision's tensor kernels, which
treat leading dimensions as a batch, so identical parameters across frames hold by construction
(applying timm's per-image transform frame by frame would need a shared random state to get there).
The op set, magnitudes and policy strings follow timm's ``rand-m{M}-n{N}-mstd{S}-inc{0|1}``
convention used by ``--aa``: N ops drawn with replacement, each applied with probability 0.5, and a
magnitude M out of 10 (jittered by a Gaussian of std S when S > 0, drawn uniformly in [0, M] when S
is ``inf``). Statistic-based ops (AutoContrast, Equalize, Contrast) use each frame's own
statistics, as PIL does per image. Geometric ops use bilinear interpolation (torch's affine kernel
has no bicubic) around the frame centre and fill with the ImageNet mean colour.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
import torchvision.transforms.v2.functional as TF

# Geometric ops fill uncovered pixels with the dataset mean colour (ImageNet mean x 255, rounded).
DEFAULT_FILL = (124, 116, 104)

# Op names as in timm's policies; "increasing" variants grow stronger with magnitude.
INCREASING_OPS = (
    "AutoContrast",
    "Equalize",
    "Invert",
    "Rotate",
    "PosterizeIncreasing",
    "SolarizeIncreasing",
    "SolarizeAdd",
    "ColorIncreasing",
    "ContrastIncreasing",
    "BrightnessIncreasing",
    "SharpnessIncreasing",
    "ShearX",
    "ShearY",
    "TranslateXRel",
    "TranslateYRel",
)
ORIGINAL_OPS = (
    "AutoContrast",
    "Equalize",
    "Invert",
    "Rotate",
    "Posterize",
    "Solarize",
    "SolarizeAdd",
    "Color",
    "Contrast",
    "Brightness",
    "Sharpness",
    "ShearX",
    "ShearY",
    "TranslateXRel",
    "TranslateYRel",
)


@dataclass(frozen=True)
class RandAugmentConfig:
    """Parsed policy; `magnitude` and `magnitude_max` are on timm's 0..10 scale."""

    num_ops: int = 2
    magnitude: float = 9.0
    magnitude_std: float = 0.0
    magnitude_max: float = 10.0
    increasing: bool = False
    prob: float = 0.5


def parse_rand_augment(policy: str) -> RandAugmentConfig:
    """Parse ``rand-m7-n4-mstd0.5-inc1`` (keys: m, n, mstd, mmax, inc, p); raises on anything else."""
    parts = policy.split("-")
    if parts[0] != "rand":
        raise ValueError(f"RandAugment policy must start with 'rand', got {policy!r}")
    fields: dict[str, float] = {}
    for part in parts[1:]:
        match = re.fullmatch(r"(mstd|mmax|inc|m|n|p)(inf|\d+(?:\.\d*)?|\.\d+)", part)
        if match is None:
            raise ValueError(f"cannot parse {part!r} in RandAugment policy {policy!r}")
        fields[match.group(1)] = float(match.group(2))
    return RandAugmentConfig(
        num_ops=int(fields.get("n", 2)),
        magnitude=fields.get("m", 9.0),
        magnitude_std=fields.get("mstd", 0.0),
        magnitude_max=fields.get("mmax", 10.0),
        increasing=bool(fields.get("inc", 0)),
        prob=fields.get("p", 0.5),
    )


def _signed(value: float, negate: bool) -> float:
    return -value if negate else value


def op_argument(name: str, level: float, negate: bool) -> float | None:
    """Parameter of op `name` at magnitude fraction `level` in [0, 1]; `negate` picks the sign of signed ops."""
    if name in ("AutoContrast", "Equalize", "Invert"):
        return None
    if name == "Rotate":
        return _signed(30.0 * level, negate)
    if name in ("ShearX", "ShearY"):
        return _signed(0.3 * level, negate)
    if name in ("TranslateXRel", "TranslateYRel"):
        return _signed(0.45 * level, negate)
    if name == "Posterize":
        return float(int(4 * level))
    if name == "PosterizeIncreasing":
        return float(4 - int(4 * level))
    if name == "Solarize":
        return 256.0 * level
    if name == "SolarizeIncreasing":
        return 256.0 - 256.0 * level
    if name == "SolarizeAdd":
        return float(int(110 * level))
    if name in ("Color", "Contrast", "Brightness", "Sharpness"):
        return 1.8 * level + 0.1
    if name in ("ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing"):
        return 1.0 + _signed(0.9 * level, negate)
    raise ValueError(f"unknown RandAugment op {name!r}")


def apply_op(
    clip: torch.Tensor, name: str, argument: float | None, fill: tuple[int, ...] = DEFAULT_FILL
) -> torch.Tensor:
    """Apply one op with a fixed parameter to a uint8 (..., C, H, W) clip (every frame alike)."""
    fill_list = [float(f) for f in fill]
    bilinear = TF.InterpolationMode.BILINEAR
    if name == "AutoContrast":
        return TF.autocontrast(clip)
    if name == "Equalize":
        return TF.equalize(clip)
    if name == "Invert":
        return TF.invert(clip)
    if name == "Rotate":
        return TF.rotate(clip, argument, interpolation=bilinear, fill=fill_list)
    if name in ("ShearX", "ShearY"):
        degrees = math.degrees(math.atan(argument))
        shear = [degrees, 0.0] if name == "ShearX" else [0.0, degrees]
        return TF.affine(
            clip, angle=0.0, translate=[0, 0], scale=1.0, shear=shear, interpolation=bilinear, fill=fill_list
        )
    if name in ("TranslateXRel", "TranslateYRel"):
        height, width = clip.shape[-2:]
        shift = [round(argument * width), 0] if name == "TranslateXRel" else [0, round(argument * height)]
        return TF.affine(
            clip, angle=0.0, translate=shift, scale=1.0, shear=[0.0, 0.0], interpolation=bilinear, fill=fill_list
        )
    if name in ("Posterize", "PosterizeIncreasing"):
        bits = int(argument)
        return clip if bits >= 8 else TF.posterize(clip, bits)
    if name in ("Solarize", "SolarizeIncreasing"):
        return torch.where(clip >= argument, 255 - clip, clip)
    if name == "SolarizeAdd":
        added = (clip.to(torch.int16) + int(argument)).clamp(0, 255).to(torch.uint8)
        return torch.where(clip < 128, added, clip)
    if name in ("Color", "ColorIncreasing"):
        return TF.adjust_saturation(clip, argument)
    if name in ("Contrast", "ContrastIncreasing"):
        return TF.adjust_contrast(clip, argument)
    if name in ("Brightness", "BrightnessIncreasing"):
        return TF.adjust_brightness(clip, argument)
    if name in ("Sharpness", "SharpnessIncreasing"):
        return TF.adjust_sharpness(clip, argument)
    raise ValueError(f"unknown RandAugment op {name!r}")


class VideoRandAugment:
    """RandAugment with one draw of ops and parameters per clip.

    Args:
        config: a `RandAugmentConfig` or a policy string such as ``rand-m7-n4-mstd0.5-inc1``.
        fill: colour for pixels that geometric ops uncover.
    """

    def __init__(self, config: RandAugmentConfig | str, fill: tuple[int, ...] = DEFAULT_FILL) -> None:
        self.config = parse_rand_augment(config) if isinstance(config, str) else config
        self.ops = INCREASING_OPS if self.config.increasing else ORIGINAL_OPS
        self.fill = fill

    def sample_ops(self, generator: torch.Generator | None = None) -> list[tuple[str, float | None]]:
        """Draw the (op, parameter) list for one clip; ops that lose their probability draw are left out."""
        config = self.config
        choices = torch.randint(len(self.ops), (config.num_ops,), generator=generator).tolist()
        uniforms = torch.rand(config.num_ops, 3, generator=generator, dtype=torch.float64).tolist()
        noise = torch.randn(config.num_ops, generator=generator, dtype=torch.float64).tolist()
        sampled = []
        for choice, (apply_draw, sign_draw, magnitude_draw), gauss in zip(choices, uniforms, noise, strict=True):
            if apply_draw >= config.prob:
                continue
            magnitude = config.magnitude
            if math.isinf(config.magnitude_std):
                magnitude = magnitude_draw * magnitude
            elif config.magnitude_std > 0:
                magnitude = magnitude + gauss * config.magnitude_std
            magnitude = min(max(magnitude, 0.0), config.magnitude_max)
            name = self.ops[choice]
            sampled.append((name, op_argument(name, magnitude / 10.0, negate=sign_draw < 0.5)))
        return sampled

    def __call__(self, clip: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment a uint8 (T, C, H, W) clip; all frames receive the same ops with the same parameters."""
        if clip.dtype != torch.uint8:
            raise TypeError(f"VideoRandAugment expects a uint8 clip, got {clip.dtype}")
        for name, argument in self.sample_ops(generator):
            clip = apply_op(clip, name, argument, self.fill)
        return clip
