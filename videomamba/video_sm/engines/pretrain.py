"""One epoch of masked video pretraining: a VideoMamba student aligned to a frozen CLIP teacher (UMT-style).

Per batch: the teacher encodes the whole clip (resized to its resolution); the mask is the
dataset's (tube/random/row) or, for ``attention``, drawn from the teacher's cls->patch attention;
the student sees the visible tokens only, and each of its returned layers is compared with the
teacher's matching layer at the visible positions:

- ``l2``: mean(2 - 2 cos(s, t)) (both sides unit-norm when clip_norm_type is l2);
- ``mse`` / ``smooth_l1``: the usual elementwise losses.
The total loss is ``clip_loss_ratio`` times that.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from videomamba.core.lifecycle import stop_if_not_finite
from videomamba.core.logs import RunLog
from videomamba.core.masking import build_mask, gather_visible, prepend_cls_column
from videomamba.core.metrics import MetricLogger, SmoothedValue
from videomamba.core.optim import GradientStep, autocast
from videomamba.core.schedules import apply_schedules

__all__ = ["CLIP_LOSS_TYPES", "PretrainOptions", "alignment_loss", "train_one_epoch"]

CLIP_LOSS_TYPES = ("l2", "mse", "smooth_l1")


@dataclass
class PretrainOptions:
    """Per-run settings of :func:`train_one_epoch` (see the runner's flags of the same names)."""

    device: torch.device
    mask_type: str = "tube"
    mask_ratio: float = 0.75
    clip_loss_type: str = "l2"
    clip_loss_ratio: float = 1.0
    clip_input_resolution: int = 224
    amp: bool = False
    amp_dtype: torch.dtype = torch.float16
    clip_grad: float | None = None
    print_freq: int = 10
    lr_values: list[float] = field(default_factory=lambda: [0.0])
    wd_values: list[float] | None = None


def alignment_loss(student: Tensor, teacher: Tensor, loss_type: str) -> Tensor:
    """Loss between student and teacher features of the same shape (K, B, N, C)."""
    if student.shape != teacher.shape:
        raise ValueError(f"student features {tuple(student.shape)} do not match teacher {tuple(teacher.shape)}")
    student, teacher = student.float(), teacher.float()
    if loss_type == "l2":
        return (2 - 2 * (student * teacher).sum(dim=-1)).mean()
    if loss_type == "mse":
        return F.mse_loss(student, teacher)
    if loss_type == "smooth_l1":
        return F.smooth_l1_loss(student, teacher)
    raise ValueError(f"clip_loss_type must be one of {CLIP_LOSS_TYPES}, got {loss_type!r}")


def _teacher_input(clips: Tensor, resolution: int) -> Tensor:
    """Resize (B, C, T, H, W) frames to the teacher's square resolution (bicubic), if needed."""
    batch, channels, frames, height, width = clips.shape
    if (height, width) == (resolution, resolution):
        return clips
    flat = clips.transpose(1, 2).reshape(batch * frames, channels, height, width)
    flat = F.interpolate(flat, size=(resolution, resolution), mode="bicubic", align_corners=False)
    return flat.reshape(batch, frames, channels, resolution, resolution).transpose(1, 2)


def train_one_epoch(
    model: nn.Module,
    teacher: nn.Module,
    data_loader: Iterable[Sequence[Tensor]],
    optimizer: torch.optim.Optimizer,
    epoch: int,
    gradient_step: GradientStep,
    options: PretrainOptions,
    run_log: RunLog | None = None,
) -> dict[str, float]:
    """Train one epoch of masked alignment; returns the epoch means of the meters (reduced over ranks)."""
    model.train()
    device = options.device
    student = getattr(model, "module", model)
    grid = (
        student.temporal_pos_embedding.shape[1],
        *student.patch_embed.grid_size,
    )
    logger = MetricLogger()
    logger.add_meter("lr", SmoothedValue(window_size=1, fmt="{value:.6f}"))
    steps_per_epoch = len(data_loader)
    last_finite = math.nan
    for step, (clips, mask) in enumerate(logger.log_every(data_loader, options.print_freq, f"Epoch: [{epoch}]")):
        global_step = epoch * steps_per_epoch + step
        apply_schedules(optimizer, global_step, options.lr_values, options.wd_values)
        clips = clips.to(device, non_blocking=True)
        with torch.no_grad(), autocast(device, options.amp, options.amp_dtype):
            targets, attention = teacher(_teacher_input(clips, options.clip_input_resolution))
        if options.mask_type == "attention":
            mask = build_mask("attention", clips.shape[0], grid, options.mask_ratio, attention=attention.float())
        mask = prepend_cls_column(mask.to(device, non_blocking=True).bool())
        # Teacher tokens carry the time-averaged cls first only with --clip_return_cls.
        has_cls = targets.shape[2] == mask.shape[1]
        targets = gather_visible(targets, mask if has_cls else mask[:, 1:])

        with autocast(device, options.amp, options.amp_dtype):
            features = model(clips, mask).clip_features
            if not has_cls:
                features = features[:, :, 1:]  # the student's cls has no teacher counterpart
            loss = options.clip_loss_ratio * alignment_loss(features, targets, options.clip_loss_type)

        loss_value = loss.item()
        stop_if_not_finite(loss_value, epoch, step, global_step, last_finite)
        last_finite = loss_value
        optimizer.zero_grad(set_to_none=True)
        grad_norm = gradient_step(loss, optimizer, parameters=model.parameters(), clip_grad=options.clip_grad)

        lr = max(group["lr"] for group in optimizer.param_groups)
        logger.update(loss=loss_value, loss_clip=loss_value / max(options.clip_loss_ratio, 1e-12), lr=lr)
        if grad_norm is not None:
            logger.update(grad_norm=float(grad_norm))
        if run_log is not None and step % options.print_freq == 0:
            run_log.log_step(global_step, train_loss=loss_value, lr=lr)

    logger.synchronize_between_processes()
    print("Averaged stats:", logger)
    return logger.global_averages()
