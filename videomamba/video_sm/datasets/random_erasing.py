"""Random erasing for normalised video clips, with a "cube" mode that erases the same box in every frame.

Follows the random-erasing recipe (Zhong et al., 2017) as configured by ``--reprob``, ``--remode``
and ``--recount``: with probability `probability` the clip gets between `min_count` and `max_count`
boxes, each covering a random fraction of the frame area in [min_area, max_area] / count with a
log-uniform aspect ratio. Boxes are filled with per-pixel standard normal noise (``pixel``, fresh for
every frame), one normal value per channel (``rand``), or zeros (``const``, the mean colour after
normalisation).
"""

from __future__ import annotations

import math

import torch

ERASE_MODES = ("pixel", "rand", "const")


class RandomErasing:
    """Erase boxes from a normalised (C, T, H, W) float clip.

    Args:
        probability: chance that a clip is erased at all (``--reprob``).
        mode: ``pixel``, ``rand`` or ``const`` (``--remode``).
        min_area, max_area: fraction of the frame area covered by all boxes together.
        min_aspect, max_aspect: box aspect ratio (height / width) range; `max_aspect` defaults to 1 / min_aspect.
        min_count, max_count: number of boxes (``--recount`` is `max_count`).
        cube: one box position for all frames (the original's video setting); otherwise every frame draws its own.
    """

    def __init__(
        self,
        probability: float = 0.25,
        mode: str = "pixel",
        *,
        min_area: float = 0.02,
        max_area: float = 1 / 3,
        min_aspect: float = 0.3,
        max_aspect: float | None = None,
        min_count: int = 1,
        max_count: int | None = None,
        cube: bool = True,
    ) -> None:
        if mode not in ERASE_MODES:
            raise ValueError(f"random erasing mode must be one of {ERASE_MODES}, got {mode!r}")
        max_count = max_count or min_count
        if not 1 <= min_count <= max_count:
            raise ValueError(f"need 1 <= min_count <= max_count, got {min_count}, {max_count}")
        self.probability = probability
        self.mode = mode
        self.min_area, self.max_area = min_area, max_area
        max_aspect = max_aspect or 1 / min_aspect
        self.log_aspect = (math.log(min_aspect), math.log(max_aspect))
        self.min_count, self.max_count = min_count, max_count
        self.cube = cube

    def sample_box(
        self, height: int, width: int, count: int, generator: torch.Generator | None = None
    ) -> tuple[int, int, int, int] | None:
        """(top, left, box_height, box_width) of one box, or None when 10 tries all fall outside the frame."""
        for _ in range(10):
            area_u, aspect_u, top_u, left_u = torch.rand(4, generator=generator, dtype=torch.float64).tolist()
            area = (self.min_area + area_u * (self.max_area - self.min_area)) * height * width / count
            aspect = math.exp(self.log_aspect[0] + aspect_u * (self.log_aspect[1] - self.log_aspect[0]))
            box_height = round(math.sqrt(area * aspect))
            box_width = round(math.sqrt(area / aspect))
            if 0 < box_height < height and 0 < box_width < width:
                top = int(top_u * (height - box_height + 1))
                left = int(left_u * (width - box_width + 1))
                return top, left, box_height, box_width
        return None

    def _fill(self, shape: tuple[int, ...], clip: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        channels, frames, box_height, box_width = shape
        if self.mode == "pixel":
            values = torch.randn(shape, generator=generator)
        elif self.mode == "rand":
            values = torch.randn(channels, frames, 1, 1, generator=generator).expand(shape)
        else:
            values = torch.zeros(shape)
        return values.to(dtype=clip.dtype, device=clip.device)

    def __call__(self, clip: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Return an erased copy of `clip` (C, T, H, W), or `clip` itself when not erased."""
        if clip.dim() != 4:
            raise ValueError(f"RandomErasing expects a (C, T, H, W) clip, got shape {tuple(clip.shape)}")
        if float(torch.rand(1, generator=generator)) >= self.probability:
            return clip
        clip = clip.clone()
        channels, frames, height, width = clip.shape
        count = int(torch.randint(self.min_count, self.max_count + 1, (1,), generator=generator))
        for _ in range(count):
            for frame_slice in [slice(None)] if self.cube else [slice(t, t + 1) for t in range(frames)]:
                box = self.sample_box(height, width, count, generator)
                if box is None:
                    continue
                top, left, box_height, box_width = box
                region = clip[:, frame_slice, top : top + box_height, left : left + box_width]
                region.copy_(self._fill(tuple(region.shape), clip, generator))
        return clip
