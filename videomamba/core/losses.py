"""Training losses shared by the classification runners (image_sm and video_sm)."""

from __future__ import annotations

from torch import nn

__all__ = ["classification_loss"]


def classification_loss(mixup_active: bool, smoothing: float = 0.0) -> nn.Module:
    """Soft-target CE under mixup (the targets are already smoothed), else label-smoothing CE or plain CE."""
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    if mixup_active:
        return SoftTargetCrossEntropy()
    if smoothing > 0:
        return LabelSmoothingCrossEntropy(smoothing=smoothing)
    return nn.CrossEntropyLoss()
