"""Image-task VideoMamba models: self-distillation students (and teachers) for every size.

The plain classifiers ``videomamba_{size}`` (every size of ``VIDEOMAMBA_SIZES``) are the shared
backbone's registry entries (videomamba.core.backbone); this module adds ``videomamba_{size}_distill``:

- ``model_type="student"`` (default): a distillation head, RMSNorm + Linear(D -> teacher width),
  maps every final token (cls and patches) to the teacher's width;
- ``model_type="teacher"``: no extra head; its features are its own final tokens.

``model(x)`` returns logits, so evaluation, EMA and timm tools see a classifier;
``model(x, return_features=True)`` returns ``(logits, features)`` with the features
L2-normalised per token, which is what the self-distillation loss compares.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from mamba_ssm import RMSNorm
from videomamba.core.backbone import VisionMamba, create_videomamba, init_linear_, register_sized_models

__all__ = ["VideoMambaDistill", "distill_features"]


class VideoMambaDistill(VisionMamba):
    """VisionMamba with a feature output for token-level self-distillation (see module docstring)."""

    def __init__(self, teacher_embed_dim: int = 384, model_type: str = "student", **kwargs: Any):
        super().__init__(**kwargs)
        if model_type not in ("student", "teacher"):
            raise ValueError(f"model_type must be 'student' or 'teacher', got {model_type!r}")
        self.model_type = model_type
        self.teacher_embed_dim = teacher_embed_dim
        if model_type == "student":
            eps = kwargs.get("norm_epsilon", 1e-5)
            self.distill_head = nn.Sequential(
                RMSNorm(self.embed_dim, eps=eps), nn.Linear(self.embed_dim, teacher_embed_dim)
            )
            init_linear_(self.distill_head[1])
        else:
            self.distill_head = None

    def forward(self, x: Tensor, return_features: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        tokens = self.forward_features(x)
        logits = self.forward_head(tokens)
        if not return_features:
            return logits
        features = self.distill_head(tokens) if self.distill_head is not None else tokens
        return logits, F.normalize(features.float(), dim=-1)


def distill_features(model: nn.Module, x: Tensor) -> Tensor:
    """L2-normalised final tokens (B, tokens, D) of any teacher with a timm forward_features."""
    return F.normalize(model.forward_features(x).float(), dim=-1)


def _distill(size: str, pretrained: bool = False, **kwargs: Any) -> VideoMambaDistill:
    # Students released by the original carry no distill head in their image checkpoints; a
    # fresh head is then kept at init (the loader allows a missing distill_head).
    return create_videomamba(size, model_cls=VideoMambaDistill, pretrained=pretrained, **kwargs)


register_sized_models(
    "_distill", _distill, "self-distillation head (student, default) or feature output (model_type='teacher')."
)
