"""Optimisation: parameter groups (weight decay, layer-wise lr decay), the optimizer, mixed precision
and the gradient step.

Parameter groups come from the model's timm API: ``no_weight_decay()`` names, 1-D tensors and
biases skip weight decay, and ``group_matcher()`` assigns layer ids for layer-wise lr decay
(stem 0, block i -> i + 1, head and final norm last). Each group carries ``lr_scale``, which timm
schedulers and per-step schedules multiply into the lr.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from timm.models import group_parameters
from torch import nn

__all__ = [
    "GradientStep",
    "amp_dtype",
    "autocast",
    "build_optimizer",
    "param_groups",
    "released_layer_ids",
]

# The released layer-decay assigner put only these names at layer 0. It knew `blocks.N` (ViT) but
# not `layers.N`, nor `temporal_pos_embedding`, so every other VideoMamba parameter landed in the
# top layer with scale 1.0.
_RELEASED_STEM = re.compile(r"^(cls_token|mask_token|pos_embed|patch_embed)")


def released_layer_ids(model: nn.Module) -> tuple[dict[str, int], int]:
    """Layer ids of the original release for a VideoMamba model: (name -> id, number of ids = depth + 2).

    Reproduces the original's released fine-tuning runs: the patch embedding, cls token and
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


def build_optimizer(
    groups: list[dict[str, Any]],
    name: str,
    lr: float,
    weight_decay: float,
    momentum: float = 0.9,
    eps: float | None = None,
    betas: Sequence[float] | None = None,
) -> torch.optim.Optimizer:
    """timm's optimizer `name` over prepared parameter groups (eps/betas only when given)."""
    from timm.optim import create_optimizer_v2

    extra = {k: v for k, v in dict(eps=eps, betas=betas).items() if v is not None}
    return create_optimizer_v2(groups, opt=name, lr=lr, weight_decay=weight_decay, momentum=momentum, **extra)


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
