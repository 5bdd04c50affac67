"""Parameter groups (weight decay, layer-wise lr decay), mixed precision and the gradient step.

Parameter groups come from the model's timm API: ``no_weight_decay()`` names, 1-D tensors and
biases skip weight decay, and ``group_matcher()`` assigns layer ids for layer-wise lr decay
(stem 0, block i -> i + 1, head and final norm last). Each group carries ``lr_scale``, which timm
schedulers and per-step schedules multiply into the lr.

Per-step schedules (`cosine_schedule`, applied with `apply_step_schedule`) drive the video tasks:
one lr and one weight-decay value per optimizer update, as the original video runners did.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from timm.models import group_parameters
from torch import nn

__all__ = [
    "GradientStep",
    "amp_dtype",
    "apply_step_schedule",
    "autocast",
    "cosine_schedule",
    "param_groups",
    "released_layer_ids",
]

# The released layer-decay assigner put only these names at layer 0. It knew `blocks.N` (ViT) but
# not `layers.N`, nor `temporal_pos_embedding`, so every other VideoMamba parameter landed in the
# top layer with scale 1.0.
_RELEASED_STEM = re.compile(r"^(cls_token|mask_token|pos_embed|patch_embed)")


def released_layer_ids(model: nn.Module) -> tuple[dict[str, int], int]:
    """Layer ids of the original release for a VideoMamba model: (name -> id, number of ids = depth + 2).

    Reproduces its published fine-tuning (inventory 7.1.1): the patch embedding, cls token and
    spatial position embedding get layer_decay^(depth + 1), everything else 1.0.
    """
    num_layers = int(model.get_num_layers()) + 2
    ids = {name: 0 if _RELEASED_STEM.match(name) else num_layers - 1 for name, _ in model.named_parameters()}
    return ids, num_layers


def param_groups(
    model: nn.Module,
    weight_decay: float,
    layer_decay: float = 1.0,
    skip_names: Iterable[str] = (),
    decay_flagged: bool = False,
    released_layer_decay: bool = False,
) -> list[dict[str, Any]]:
    """Optimizer parameter groups with weight-decay exclusions and optional layer-wise lr decay.

    Args:
        weight_decay: decay for the decayed groups.
        layer_decay: lr multiplier per layer below the top (1.0 disables it).
        skip_names: extra parameter names without weight decay (model.no_weight_decay() is added).
        decay_flagged: also decay parameters flagged ``_no_weight_decay`` (Mamba's A_log, A_b_log),
            as the original release effectively did.
        released_layer_decay: assign layers as the original release did (`released_layer_ids`)
            instead of from ``group_matcher`` (stem 0, block i -> i + 1, head and final norm last).
    """
    skip = set(skip_names)
    if hasattr(model, "no_weight_decay"):
        skip |= set(model.no_weight_decay())
    layer_of: dict[str, int] = {}
    num_layers = 1
    if layer_decay != 1.0 and released_layer_decay:
        layer_of, num_layers = released_layer_ids(model)
    elif layer_decay != 1.0:
        if not hasattr(model, "group_matcher"):
            raise ValueError(f"layer decay needs a model with group_matcher(); {type(model).__name__} has none")
        layer_of = group_parameters(model, model.group_matcher(coarse=False), reverse=True)
        num_layers = max(layer_of.values()) + 1
    groups: dict[str, dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        flagged = getattr(param, "_no_weight_decay", False) and not decay_flagged
        no_decay = param.ndim <= 1 or name.endswith(".bias") or name in skip or flagged
        layer = layer_of.get(name, num_layers - 1)
        key = f"layer_{layer}_{'no_decay' if no_decay else 'decay'}"
        if key not in groups:
            groups[key] = dict(
                params=[],
                param_names=[],
                weight_decay=0.0 if no_decay else weight_decay,
                lr_scale=layer_decay ** (num_layers - 1 - layer),
            )
        groups[key]["params"].append(param)
        groups[key]["param_names"].append(name)
    return list(groups.values())


def cosine_schedule(
    base_value: float,
    final_value: float,
    epochs: int,
    steps_per_epoch: int,
    warmup_epochs: float = 0,
    warmup_start_value: float = 0.0,
    warmup_steps: int = -1,
) -> np.ndarray:
    """One value per optimizer step: linear warmup from `warmup_start_value`, then a half cosine to `final_value`.

    warmup_steps > 0 overrides warmup_epochs. The result has epochs * steps_per_epoch entries.
    """
    total = epochs * steps_per_epoch
    warmup = warmup_steps if warmup_steps > 0 else int(round(warmup_epochs * steps_per_epoch))
    warmup = min(warmup, total)
    ramp = np.linspace(warmup_start_value, base_value, warmup, endpoint=False) if warmup else np.zeros(0)
    decay_steps = total - warmup
    progress = np.arange(decay_steps) / max(decay_steps, 1)
    cosine = final_value + 0.5 * (base_value - final_value) * (1 + np.cos(math.pi * progress))
    return np.concatenate([ramp, cosine]).astype(np.float64)


def apply_step_schedule(
    optimizer: torch.optim.Optimizer,
    step: int,
    lr_values: Sequence[float] | None,
    wd_values: Sequence[float] | None = None,
) -> None:
    """Set every group's lr (times its ``lr_scale``) and, for decayed groups, weight decay for `step`.

    Steps past the end of a schedule keep its last value (a resumed run with more epochs).
    """
    for group in optimizer.param_groups:
        if lr_values is not None and len(lr_values):
            group["lr"] = float(lr_values[min(step, len(lr_values) - 1)]) * group.get("lr_scale", 1.0)
        # Remembered on first use, so a decay schedule that reaches 0 keeps the group scheduled.
        decayed = group.setdefault("decayed", group["weight_decay"] > 0)
        if wd_values is not None and len(wd_values) and decayed:
            group["weight_decay"] = float(wd_values[min(step, len(wd_values) - 1)])


def amp_dtype(bf16: bool) -> torch.dtype:
    return torch.bfloat16 if bf16 else torch.float16


def autocast(device: torch.device | str, enabled: bool, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """torch.autocast for the device's type, or a null context when AMP is off."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


class GradientStep:
    """Backward, optional fp16 loss scaling, unscale, clipping and optimizer step in one call.

    The GradScaler exists only for float16 AMP (bf16 and fp32 need none); its state is saved in
    checkpoints under 'scaler'.
    """

    def __init__(self, device: torch.device | str, fp16_scaling: bool):
        device_type = torch.device(device).type
        self.scaler = torch.amp.GradScaler(device_type) if fp16_scaling else None

    def __call__(
        self,
        loss: torch.Tensor,
        optimizer: torch.optim.Optimizer,
        parameters: Iterable[torch.nn.Parameter] | None = None,
        clip_grad: float | None = None,
        update: bool = True,
    ) -> torch.Tensor | None:
        """Returns the gradient norm before clipping when clip_grad is set (else None).

        update=False only accumulates gradients (for gradient accumulation over several calls).
        """
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()
        if not update:
            return None
        norm = None
        if clip_grad is not None and clip_grad > 0:
            if parameters is None:
                raise ValueError("clip_grad needs the parameters to clip")
            if self.scaler is not None:
                self.scaler.unscale_(optimizer)
            norm = torch.nn.utils.clip_grad_norm_(list(parameters), clip_grad)
        if self.scaler is not None:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()
        return norm

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
