"""One training epoch and evaluation for image classification; distillation is a loss option.

With a teacher, the loss is ``criterion(logits, targets) + distill_weight * mean(2 - 2 <s, t>)``
over every token of every image, where s are the student's projected, L2-normalised tokens
and t the frozen teacher's L2-normalised final tokens on the same (mixed) images: the
self-distillation of VideoMamba (an MSE between unit vectors).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from videomamba.core.lifecycle import stop_if_not_finite
from videomamba.core.logs import RunLog
from videomamba.core.metrics import MetricLogger, SmoothedValue, accuracy
from videomamba.core.optim import GradientStep, autocast
from videomamba.image_sm.models import distill_features

__all__ = ["TrainOptions", "evaluate", "feature_distill_loss", "train_one_epoch"]


@dataclass
class TrainOptions:
    """Per-run settings of :func:`train_one_epoch`."""

    device: torch.device
    amp: bool = False
    amp_dtype: torch.dtype = torch.float16
    clip_grad: float | None = None
    set_training_mode: bool = True
    bce_loss: bool = False
    distill_weight: float = 1.0
    print_freq: int = 10


def feature_distill_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """mean over tokens of 2 - 2 cos(s, t) for L2-normalised (B, tokens, D) features."""
    if student.shape != teacher.shape:
        raise ValueError(
            f"student features {tuple(student.shape)} and teacher features {tuple(teacher.shape)} differ: use the "
            "same input size and patch size, and set --teacher_embed_dim to the teacher's width"
        )
    return (2 - 2 * (student.float() * teacher.float()).sum(dim=-1)).mean()


def train_one_epoch(
    model: nn.Module,
    criterion: nn.Module,
    data_loader: Iterable[tuple[Tensor, Tensor]],
    optimizer: torch.optim.Optimizer,
    epoch: int,
    gradient_step: GradientStep,
    options: TrainOptions,
    model_ema: Any = None,
    mixup_fn: Any = None,
    teacher: nn.Module | None = None,
    run_log: RunLog | None = None,
) -> dict[str, float]:
    """Train one epoch; returns the epoch means of the logged meters (reduced over ranks).

    Raises NonFiniteLossError on every rank, naming the epoch and step, as soon as any rank's
    loss is not finite (checked before the backward pass, so the weights stay finite).
    """
    model.train(options.set_training_mode)
    device = options.device
    logger = MetricLogger()
    logger.add_meter("lr", SmoothedValue(window_size=1, fmt="{value:.6f}"))
    header = f"Epoch: [{epoch}]"
    steps_per_epoch = len(data_loader) if hasattr(data_loader, "__len__") else 0
    last_finite = math.nan
    batches = logger.log_every(data_loader, options.print_freq, header, getattr(data_loader, "batch_size", None))
    for step, (samples, targets) in enumerate(batches):
        samples = samples.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        if mixup_fn is not None:
            samples, targets = mixup_fn(samples, targets)
        if options.bce_loss:
            # Binary targets: every class present in the (mixed) label counts as positive.
            dense = targets if targets.dim() == 2 else F.one_hot(targets, _num_classes(model)).float()
            targets = dense.gt(0.0).to(dense.dtype)

        with autocast(device, options.amp, options.amp_dtype):
            if teacher is not None:
                with torch.no_grad():
                    teacher_feats = distill_features(teacher, samples)
                logits, student_feats = model(samples, return_features=True)
                loss_cls = criterion(logits, targets)
                loss_distill = feature_distill_loss(student_feats, teacher_feats)
                loss = loss_cls + options.distill_weight * loss_distill
            else:
                loss = criterion(model(samples), targets)

        loss_value = loss.item()
        stop_if_not_finite(loss_value, epoch, step, epoch * steps_per_epoch + step, last_finite)
        last_finite = loss_value

        optimizer.zero_grad(set_to_none=True)
        gradient_step(loss, optimizer, parameters=model.parameters(), clip_grad=options.clip_grad)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if model_ema is not None:
            model_ema.update(getattr(model, "module", model))  # the unwrapped model under DDP

        lr = optimizer.param_groups[0]["lr"]
        logger.update(loss=loss_value, lr=lr)
        if teacher is not None:
            logger.update(loss_cls=loss_cls.item(), loss_distill=loss_distill.item())
        if run_log is not None and step % options.print_freq == 0:
            run_log.log_step(epoch * steps_per_epoch + step, train_loss=loss_value, lr=lr)

    logger.synchronize_between_processes()
    print("Averaged stats:", logger)
    return logger.global_averages()


def _num_classes(model: nn.Module) -> int:
    inner = getattr(model, "module", model)
    return int(inner.num_classes)


@torch.no_grad()
def evaluate(
    data_loader: Iterable[tuple[Tensor, Tensor]],
    model: nn.Module,
    device: torch.device,
    amp: bool = False,
    amp_dtype: torch.dtype = torch.float16,
    header: str = "Test:",
    print_freq: int = 10,
) -> dict[str, float]:
    """Cross-entropy and top-1/top-5 accuracy (sample-weighted, reduced over ranks)."""
    criterion = nn.CrossEntropyLoss()
    logger = MetricLogger()
    model.eval()
    for images, targets in logger.log_every(data_loader, print_freq, header, getattr(data_loader, "batch_size", None)):
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        with autocast(device, amp, amp_dtype):
            output = model(images)
            loss = criterion(output, targets)
        acc1, acc5 = accuracy(output.float(), targets, topk=(1, 5))
        batch = images.shape[0]
        logger.update(n=batch, loss=loss.item(), acc1=acc1)
        if output.shape[-1] > 5:  # with 5 classes or fewer top-5 is always 100 %
            logger.update(n=batch, acc5=acc5)
    logger.synchronize_between_processes()
    top5 = f" Acc@5 {logger.acc5.global_avg:.3f}" if "acc5" in logger.meters else ""
    print(f"* Acc@1 {logger.acc1.global_avg:.3f}{top5} loss {logger.loss.global_avg:.3f}")
    return logger.global_averages()
