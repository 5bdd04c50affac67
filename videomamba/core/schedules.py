"""Per-step schedules (learning rate, weight decay) for the video tasks.

A schedule is a plain list with one value per optimisation step, so a run resumed at step s
simply indexes it at s; the training loop multiplies the lr by each group's ``lr_scale`` (layer
decay) and sets the weight decay of the decayed groups.
"""

from __future__ import annotations

import math

__all__ = ["apply_schedules", "cosine_schedule"]


def cosine_schedule(
    base_value: float,
    final_value: float,
    epochs: float,
    steps_per_epoch: int,
    warmup_epochs: float = 0.0,
    warmup_start_value: float = 0.0,
    warmup_steps: int | None = None,
) -> list[float]:
    """Linear warm-up from ``warmup_start_value`` to ``base_value``, then a half-cosine down to
    ``final_value``; ``round(epochs * steps_per_epoch)`` values in all.

    ``warmup_steps`` (if given) overrides ``warmup_epochs``. Fractional epochs are allowed (e.g. a
    0.2-epoch warm-up).
    """
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    total = round(epochs * steps_per_epoch)
    warmup = round(warmup_epochs * steps_per_epoch) if warmup_steps is None else warmup_steps
    warmup = min(max(warmup, 0), total)
    values = [warmup_start_value + (base_value - warmup_start_value) * (i + 1) / warmup for i in range(warmup)]
    decay = total - warmup
    for i in range(decay):
        progress = i / max(decay - 1, 1)
        values.append(final_value + 0.5 * (base_value - final_value) * (1 + math.cos(math.pi * progress)))
    return values


def apply_schedules(optimizer, step: int, lr_schedule: list[float], wd_schedule: list[float] | None = None) -> float:
    """Set every group's lr (times its ``lr_scale``) and, for decayed groups, the weight decay at
    ``step`` (clamped to the last value). Returns the unscaled lr."""
    lr = lr_schedule[min(step, len(lr_schedule) - 1)]
    wd = None if not wd_schedule else wd_schedule[min(step, len(wd_schedule) - 1)]
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
        if wd is not None and group.get("weight_decay", 0.0) > 0:
            group["weight_decay"] = wd
    return lr
