"""Mixup and CutMix for video batches, with label smoothing; the constructor matches timm's `Mixup`.

Clips are (B, C, T, H, W). A CutMix box is cut in the H x W plane and covers every frame, so the
mixed clip shows one video inside a spatial window of another for its whole duration. The partner
of sample i is sample B - 1 - i (the batch reversed), so the batch size must be even.

Modes: ``batch`` (one lambda and one choice of mixup/cutmix for the whole batch, the original's
setting), ``pair`` (one per mirrored pair), ``elem`` (one per sample).
"""

from __future__ import annotations

import numpy as np
import torch


def smoothed_one_hot(target: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """(B,) class indices -> (B, K) targets: 1 - smoothing + smoothing / K on the class, smoothing / K elsewhere."""
    off = smoothing / num_classes
    out = torch.full((target.shape[0], num_classes), off, device=target.device, dtype=torch.float32)
    return out.scatter_(1, target.long().view(-1, 1), 1.0 - smoothing + off)


def cutmix_box(
    height: int,
    width: int,
    lam: float,
    rng: np.random.Generator,
    minmax: tuple[float, float] | None = None,
) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of a CutMix box covering about 1 - lam of the frame (or a side ratio in `minmax`)."""
    if minmax is not None:
        box_height = int(rng.integers(int(height * minmax[0]), int(height * minmax[1]) + 1))
        box_width = int(rng.integers(int(width * minmax[0]), int(width * minmax[1]) + 1))
        centre_y = int(rng.integers(0, height - box_height + 1)) + box_height // 2
        centre_x = int(rng.integers(0, width - box_width + 1)) + box_width // 2
    else:
        side = np.sqrt(1.0 - lam)
        box_height, box_width = int(height * side), int(width * side)
        centre_y, centre_x = int(rng.integers(0, height)), int(rng.integers(0, width))
    y0, y1 = np.clip([centre_y - box_height // 2, centre_y + box_height // 2], 0, height)
    x0, x1 = np.clip([centre_x - box_width // 2, centre_x + box_width // 2], 0, width)
    return int(y0), int(y1), int(x0), int(x1)


class VideoMixup:
    """Mixup/CutMix on video batches (same arguments as `timm.data.Mixup`).

    Args:
        mixup_alpha: Beta(alpha, alpha) for mixup; 0 disables mixup.
        cutmix_alpha: Beta(alpha, alpha) for CutMix; 0 disables it unless `cutmix_minmax` is set.
        cutmix_minmax: box side as a fraction range of the frame side; overrides `cutmix_alpha`'s box.
        prob: chance that a batch (or pair, element) is mixed at all.
        switch_prob: chance of CutMix instead of mixup when both are enabled.
        mode: ``batch``, ``pair`` or ``elem``.
        correct_lam: recompute lambda from the clipped CutMix box area.
        label_smoothing: smoothing of the one-hot targets before mixing.
        num_classes: width of the returned targets.
    """

    def __init__(
        self,
        mixup_alpha: float = 1.0,
        cutmix_alpha: float = 0.0,
        cutmix_minmax: tuple[float, float] | None = None,
        prob: float = 1.0,
        switch_prob: float = 0.5,
        mode: str = "batch",
        correct_lam: bool = True,
        label_smoothing: float = 0.1,
        num_classes: int = 1000,
    ) -> None:
        if mode not in ("batch", "pair", "elem"):
            raise ValueError(f"mixup mode must be 'batch', 'pair' or 'elem', got {mode!r}")
        if cutmix_minmax is not None:
            if len(cutmix_minmax) != 2:
                raise ValueError(f"cutmix_minmax needs two values, got {cutmix_minmax}")
            cutmix_alpha = 1.0  # only enables CutMix; the box comes from minmax
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.cutmix_minmax = None if cutmix_minmax is None else tuple(cutmix_minmax)
        self.prob = prob
        self.switch_prob = switch_prob
        self.mode = mode
        self.correct_lam = correct_lam
        self.label_smoothing = label_smoothing
        self.num_classes = num_classes
        self.enabled = mixup_alpha > 0 or cutmix_alpha > 0

    def _draw(self, rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Per unit: lambda and whether it is CutMix."""
        lam = np.ones(count)
        use_cutmix = np.zeros(count, dtype=bool)
        if not self.enabled:
            return lam, use_cutmix
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            use_cutmix = rng.random(count) < self.switch_prob
        elif self.cutmix_alpha > 0:
            use_cutmix[:] = True
        mixed = rng.random(count) < self.prob
        mix_lam = rng.beta(self.mixup_alpha, self.mixup_alpha, count) if self.mixup_alpha > 0 else np.ones(count)
        cut_lam = rng.beta(self.cutmix_alpha, self.cutmix_alpha, count) if self.cutmix_alpha > 0 else np.ones(count)
        lam = np.where(mixed, np.where(use_cutmix, cut_lam, mix_lam), 1.0)
        return lam, use_cutmix & mixed

    def _plan(
        self, lam: float, cutmix: bool, height: int, width: int, rng: np.random.Generator
    ) -> tuple[float, tuple[int, int, int, int] | None]:
        """Effective lambda and the CutMix box (None for a mixup blend) of one mixing unit."""
        if lam >= 1.0 or not cutmix:
            return float(lam), None
        box = cutmix_box(height, width, lam, rng, self.cutmix_minmax)
        if self.correct_lam or self.cutmix_minmax is not None:
            y0, y1, x0, x1 = box
            lam = 1.0 - (y1 - y0) * (x1 - x0) / float(height * width)
        return float(lam), box

    @staticmethod
    def _apply(target: torch.Tensor, source: torch.Tensor, lam: float, box: tuple[int, int, int, int] | None) -> None:
        """Mix `source` into `target` in place (whole tensors or single clips alike)."""
        if box is not None:
            y0, y1, x0, x1 = box
            target[..., y0:y1, x0:x1] = source[..., y0:y1, x0:x1]
        elif lam < 1.0:
            target.mul_(lam).add_(source, alpha=1.0 - lam)

    def __call__(
        self, clips: torch.Tensor, target: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mix a (B, C, T, H, W) batch in place and return it with (B, num_classes) soft targets."""
        batch = clips.shape[0]
        if batch % 2:
            raise ValueError(f"mixup needs an even batch size, got {batch}")
        height, width = clips.shape[-2:]
        # numpy's Beta sampler seeded from torch: deterministic under a torch generator or torch.manual_seed.
        rng = np.random.default_rng(int(torch.randint(2**62, (1,), generator=generator)))
        lams = torch.ones(batch, dtype=torch.float32)
        originals = clips.flip(0).clone()  # originals[i] is the partner of sample i
        if self.mode == "batch":
            (lam,), (cutmix,) = self._draw(rng, 1)
            lam, box = self._plan(lam, cutmix, height, width, rng)
            self._apply(clips, originals, lam, box)
            lams[:] = lam
        else:
            units = batch // 2 if self.mode == "pair" else batch
            unit_lams, unit_cutmix = self._draw(rng, units)
            for i in range(units):
                lam, box = self._plan(unit_lams[i], unit_cutmix[i], height, width, rng)
                self._apply(clips[i], originals[i], lam, box)
                lams[i] = lam
                if self.mode == "pair":
                    # The mirrored sample gets the complementary mix: same lambda, same box.
                    partner = batch - 1 - i
                    self._apply(clips[partner], originals[partner], lam, box)
                    lams[partner] = lam
        lams = lams.to(clips.device).unsqueeze(1)
        soft = smoothed_one_hot(target, self.num_classes, self.label_smoothing)
        return clips, soft * lams + soft.flip(0) * (1.0 - lams)
