"""The masked-pretraining student: VideoMamba aligned to a frozen CLIP teacher (UMT-style).

Shared by video_sm (masked pretraining) and video_mm (the vision encoder of video-text
pretraining). The student sees only the visible tokens of a masked video and, for each returned
layer, maps them through a small decoder (Linear + LayerNorm, optionally L2-normalised) to the
teacher's width, where they are compared with the teacher's features at the same positions.

Returned layers (``clip_return_layer`` of them, every ``clip_student_return_interval`` blocks
from the last): the feature of block r is the final norm applied to the residual stream after
block r's mixer output has been added. For the last block that is exactly the model's output.
The original collected the un-normed stream *before* the last mixer for the last layer, so the
last mixer got no gradient from the alignment loss; that is fixed here (and so needs no
``find_unused_parameters``). ``clip_student_features_as_released=True`` restores the original's
last-layer feature, to reproduce the released masked-pretraining recipes (with one aligned layer,
their only target); the last mixer and the final norm then get no gradient from the alignment.

Keys: the backbone's (without ``head``), plus ``clip_decoder.{k}.head.*`` and
``clip_decoder.{k}.norm.*``. The original called the final norm ``norm``; the shared checkpoint
loader renames it to ``norm_f`` when loading released weights.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from videomamba.core.backbone import VisionMamba, create_videomamba, register_sized_models

__all__ = ["ClipDecoder", "PretrainOutput", "PretrainVideoMamba", "sinusoid_table"]


def sinusoid_table(length: int, dim: int) -> Tensor:
    """Fixed sinusoidal position table (length, dim): sin on even channels, cos on odd ones."""
    position = torch.arange(length, dtype=torch.float64)[:, None]
    freq = torch.pow(10000.0, -2.0 * (torch.arange(dim, dtype=torch.float64) // 2) / dim)
    angle = position * freq
    table = torch.where(torch.arange(dim) % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.float()


class ClipDecoder(nn.Module):
    """Student tokens -> teacher space: Linear, LayerNorm, then L2 normalisation if ``l2``."""

    def __init__(self, in_dim: int, out_dim: int, l2: bool = True):
        super().__init__()
        self.head = nn.Linear(in_dim, out_dim)
        self.norm = nn.LayerNorm(out_dim)
        self.l2 = l2
        nn.init.xavier_uniform_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm(self.head(x))
        return F.normalize(x, dim=-1) if self.l2 else x


class PretrainOutput(NamedTuple):
    tokens: Tensor  # (B, N_visible, D): final-normed visible tokens, cls first
    clip_features: Tensor | None  # (K, B, N_visible, clip_output_dim), shallowest layer first


class PretrainVideoMamba(VisionMamba):
    """VideoMamba student for masked pretraining with CLIP alignment.

    Args:
        clip_output_dim: teacher feature width (512 for CLIP ViT-B/16, 768 for L/14).
        clip_norm_type: "l2" normalises the decoder outputs (video_sm); "none" leaves them (video_mm).
        clip_return_layer: number of aligned layers K (0 disables the decoders).
        clip_student_return_interval: spacing of the aligned layers, counted back from the last.
        clip_student_features_as_released: align, for the last layer, the original release's feature
            (the un-normed residual stream before the last mixer) instead of the model's output.
        **kwargs: the backbone's arguments (video layout: num_frames, tubelet_size, ...).
    """

    def __init__(
        self,
        clip_output_dim: int = 512,
        clip_norm_type: str = "l2",
        clip_return_layer: int = 1,
        clip_student_return_interval: int = 1,
        clip_student_features_as_released: bool = False,
        **kwargs: Any,
    ):
        if clip_norm_type not in ("l2", "none"):
            raise ValueError(f"clip_norm_type must be 'l2' or 'none', got {clip_norm_type!r}")
        kwargs.setdefault("drop_path_rate", 0.0)
        super().__init__(**{**kwargs, "num_classes": 0})
        depth = len(self.layers)
        self.clip_student_features_as_released = clip_student_features_as_released
        self.return_index = sorted(depth - 1 - i * clip_student_return_interval for i in range(clip_return_layer))
        if self.return_index and self.return_index[0] < 0:
            raise ValueError(f"{clip_return_layer} layers every {clip_student_return_interval} exceed depth {depth}")
        self.clip_decoder = nn.ModuleList(
            ClipDecoder(self.embed_dim, clip_output_dim, l2=clip_norm_type == "l2") for _ in self.return_index
        )
        # Fixed, not a parameter or buffer: recomputed, never saved (as the released checkpoints).
        num_tokens = 1 + self.patch_embed.num_patches * (self.temporal_pos_embedding.shape[1] if self.is_video else 1)
        self.clip_pos_embed = sinusoid_table(num_tokens, self.embed_dim)

    @property
    def is_video(self) -> bool:
        return self.temporal_pos_embedding is not None

    def embed_image_tokens(self, x: Tensor) -> Tensor:
        """Tokens of an image batch (B, C, H, W) for a video-layout model: tubelet 1, no temporal embedding."""
        weight = self.patch_embed.proj.weight
        if weight.dim() == 5:  # a static image: the tubelet kernel summed over time
            weight = weight.sum(2)
        x = F.conv2d(x, weight, self.patch_embed.proj.bias, stride=self.patch_embed.proj.stride[-2:])
        x = x.flatten(2).transpose(1, 2) + self.pos_embed[:, 1:]
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        return self.pos_drop(torch.cat([cls.to(x.dtype), x], dim=1))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> PretrainOutput:
        """x: video (B, C, T, H, W), or an image (B, C, H, W) / (B, C, 1, H, W) even for a video model
        (no temporal embedding then); mask: bool (B, 1 + T'N), True = masked, the cls column False,
        the same number of masked tokens in every sample."""
        if self.is_video and (x.dim() == 4 or (x.shape[2] == 1 and self.num_frames != 1)):
            tokens = self.embed_image_tokens(x if x.dim() == 4 else x[:, :, 0])
        else:
            tokens = self.embed_tokens(x)
        batch, num_tokens, dim = tokens.shape
        position = self.clip_pos_embed.to(tokens.device, tokens.dtype)[:num_tokens].expand(batch, -1, -1)
        if mask is not None:
            if mask.shape != (batch, num_tokens):
                raise ValueError(f"mask must be (B, 1 + T'N) = {(batch, num_tokens)}, got {tuple(mask.shape)}")
            if mask[:, 0].any():
                raise ValueError("the cls token (mask column 0) must stay visible")
            keep = ~mask
            tokens = tokens[keep].reshape(batch, -1, dim)
            position = position[keep].reshape(batch, -1, dim)

        out, features = self.forward_blocks(tokens, self.return_index, self.clip_student_features_as_released)
        if not features:
            return PretrainOutput(out, None)
        clip_features = torch.stack(
            [decoder(f + position.to(f.dtype)) for decoder, f in zip(self.clip_decoder, features, strict=True)]
        )
        return PretrainOutput(out, clip_features)


def _pretrain(size: str, pretrained: bool = False, **kwargs: Any) -> PretrainVideoMamba:
    # Non-strict: an image or classifier checkpoint has no decoders; they keep their initialisation.
    return create_videomamba(
        size, model_cls=PretrainVideoMamba, pretrained=pretrained, pretrained_strict=False, **kwargs
    )


register_sized_models("_pretrain", _pretrain, "masked-pretraining student with CLIP decoder heads.")
