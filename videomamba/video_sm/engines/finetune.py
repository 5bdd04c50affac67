"""Fine-tuning epoch, validation and multi-view test forward for video classification and regression.

Batches are ``(clips, labels, video_index, view)`` from `videomamba.video_sm.datasets`. One
optimizer update happens every ``update_freq`` batches (gradient accumulation); its lr and weight
decay come from per-update schedules. Regression (``--regression``) uses the model's single output
with an MSE loss and float labels; everything else is shared with classification.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from videomamba.core.lifecycle import stop_if_not_finite
from videomamba.core.logs import RunLog
from videomamba.core.metrics import MetricLogger, SmoothedValue, accuracy
from videomamba.core.optim import GradientStep, autocast
from videomamba.core.schedules import apply_schedules

from .multiview import ViewOutput

__all__ = ["TrainOptions", "collect_view_outputs", "regression_output", "train_one_epoch", "validate"]


@dataclass
class TrainOptions:
    """Per-run settings of :func:`train_one_epoch`.

    lr_values / wd_values: one value per optimizer update over the whole run (`core.schedules`).
    """

    device: torch.device
    amp: bool = False
    amp_dtype: torch.dtype = torch.float16
    clip_grad: float | None = None
    update_freq: int = 1
    regression: bool = False
    print_freq: int = 10
    lr_values: list[float] = field(default_factory=lambda: [0.0])
    wd_values: list[float] | None = None


def regression_output(output: Tensor) -> Tensor:
    """(B, 1) model output -> (B,) float predictions."""
    return output.float().reshape(output.shape[0], -1)[:, 0]


def _loss(criterion: nn.Module, output: Tensor, targets: Tensor, regression: bool) -> Tensor:
    if regression:
        return criterion(regression_output(output), targets.float())
    return criterion(output, targets)


def train_one_epoch(
    model: nn.Module,
    criterion: nn.Module,
    data_loader: Iterable[Sequence[Any]],
    optimizer: torch.optim.Optimizer,
    epoch: int,
    gradient_step: GradientStep,
    options: TrainOptions,
    model_ema: Any = None,
    mixup_fn: Any = None,
    run_log: RunLog | None = None,
) -> dict[str, float]:
    """Train one epoch; returns the epoch means of the logged meters (reduced over ranks).

    Raises NonFiniteLossError on every rank as soon as any rank's loss is not finite.
    """
    model.train()
    device = options.device
    logger = MetricLogger()
    logger.add_meter("lr", SmoothedValue(window_size=1, fmt="{value:.6f}"))
    batches_per_epoch = len(data_loader)
    updates_per_epoch = batches_per_epoch // options.update_freq
    last_finite = math.nan
    header = f"Epoch: [{epoch}]"
    optimizer.zero_grad(set_to_none=True)
    batches = logger.log_every(data_loader, options.print_freq, header, getattr(data_loader, "batch_size", None))
    for step, (clips, targets, _, _) in enumerate(batches):
        update_index = step // options.update_freq
        if update_index >= updates_per_epoch:
            break  # a trailing partial accumulation would leak into the next epoch's first update
        if step % options.update_freq == 0:
            apply_schedules(optimizer, epoch * updates_per_epoch + update_index, options.lr_values, options.wd_values)
        clips = clips.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        hard_targets = targets
        if mixup_fn is not None:
            clips, targets = mixup_fn(clips, targets)
        with autocast(device, options.amp, options.amp_dtype):
            output = model(clips)
            loss = _loss(criterion, output, targets, options.regression)

        loss_value = loss.item()
        stop_if_not_finite(loss_value, epoch, step, epoch * batches_per_epoch + step, last_finite)
        last_finite = loss_value

        is_update = (step + 1) % options.update_freq == 0
        grad_norm = gradient_step(
            loss / options.update_freq,
            optimizer,
            parameters=model.parameters(),
            clip_grad=options.clip_grad,
            update=is_update,
        )
        if is_update:
            optimizer.zero_grad(set_to_none=True)
            if model_ema is not None:
                model_ema.update(getattr(model, "module", model))  # the unwrapped model under DDP

        lr = max(group["lr"] for group in optimizer.param_groups)
        decayed = [g["weight_decay"] for g in optimizer.param_groups if g["weight_decay"] > 0]
        logger.update(loss=loss_value, lr=lr, weight_decay=max(decayed) if decayed else 0.0)
        if grad_norm is not None:
            logger.update(grad_norm=float(grad_norm))
        if mixup_fn is None and not options.regression:
            logger.update(class_acc=(output.argmax(-1) == hard_targets).float().mean().item())
        if run_log is not None and step % options.print_freq == 0:
            run_log.log_step(epoch * batches_per_epoch + step, train_loss=loss_value, lr=lr)

    logger.synchronize_between_processes()
    print("Averaged stats:", logger)
    return logger.global_averages()


@torch.no_grad()
def validate(
    data_loader: Iterable[Sequence[Any]],
    model: nn.Module,
    device: torch.device,
    regression: bool = False,
    amp: bool = False,
    amp_dtype: torch.dtype = torch.float16,
    print_freq: int = 10,
    header: str = "Val:",
) -> dict[str, float]:
    """Loss and (classification) top-1 / top-5 over single-view clips, sample-weighted across ranks.

    Top-5 is reported only when the model has at least 5 classes.
    """
    model.eval()
    logger = MetricLogger()
    for clips, targets, _, _ in logger.log_every(data_loader, print_freq, header):
        clips = clips.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        with autocast(device, amp, amp_dtype):
            output = model(clips)
        output = output.float()
        batch = clips.shape[0]
        if regression:
            logger.update(n=batch, loss=F.mse_loss(regression_output(output), targets.float()).item())
            continue
        logger.update(n=batch, loss=F.cross_entropy(output, targets).item())
        acc1, acc5 = accuracy(output, targets, topk=(1, 5))
        logger.update(n=batch, acc1=acc1)
        if output.shape[-1] > 5:  # with 5 classes or fewer top-5 is always 100 %
            logger.update(n=batch, acc5=acc5)
    logger.synchronize_between_processes()
    stats = logger.global_averages()
    print(header, " ".join(f"{k} {v:.4f}" for k, v in stats.items()))
    return stats


@torch.no_grad()
def collect_view_outputs(
    data_loader: Iterable[Sequence[Any]],
    model: nn.Module,
    device: torch.device,
    amp: bool = False,
    amp_dtype: torch.dtype = torch.float16,
    print_freq: int = 10,
    header: str = "Test:",
) -> list[ViewOutput]:
    """Run the model over test items; one `ViewOutput` per item this process saw."""
    model.eval()
    logger = MetricLogger()
    records = []
    for clips, targets, video_index, view in logger.log_every(data_loader, print_freq, header):
        with autocast(device, amp, amp_dtype):
            output = model(clips.to(device, non_blocking=True))
        output = output.float().cpu().numpy()
        for i in range(output.shape[0]):
            label = targets[i].item()
            records.append(ViewOutput(int(video_index[i]), tuple(view[i].tolist()), output[i], label))
    return records
