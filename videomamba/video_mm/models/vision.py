"""The vision encoder of video-text models: the shared masked-pretraining student plus pooling.

Keys are those of the released video_mm checkpoints (``vision_encoder.*``): the VideoMamba backbone,
``clip_decoder.{k}.*`` and ``pool_norm.*`` (the final norm is ``norm`` in the files; the shared loader
renames it to ``norm_f``).

Pooling (``pool_type``): ``cls`` (the cls token), ``avg`` (the mean of the patch tokens) or
``cls+avg`` (their sum), followed by ``pool_norm``. With ``keep_temporal`` the patch mean is taken per
frame (per tubelet), giving one pooled vector per frame (B, T', D); otherwise one (B, 1, D).

The text encoder's cross-attention (VTM/ITM, MLM, QA, ITM re-ranking) reads ``patch_tokens``: the
final-normed patch tokens without cls, exactly what the released models were trained with. The cls
token enters the pooled feature only.

Per-frame pooling is the same in masked training and in evaluation: every visible patch token
knows its frame, and each frame averages its own visible tokens. With attention or tube masks each
frame keeps the same number of tokens, so this is the plain per-frame mean over fewer tokens; with a
random mask frames keep different numbers of tokens, each still averaged over its own (a frame left
with no visible token contributes a zero average, i.e. only the cls token for ``cls+avg``). The
original turned keep_temporal off whenever a mask was used, so its masked stage trained on one
pooled vector per video while evaluation used per-frame vectors.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from videomamba.core.pretrain import PretrainVideoMamba

__all__ = ["POOL_TYPES", "VideoTextVisionEncoder", "VisionOutput"]

POOL_TYPES = ("cls", "avg", "cls+avg")


class VisionOutput(NamedTuple):
    patch_tokens: Tensor  # (B, N_visible, D) final-normed patch tokens without cls: the cross-attention input
    pooled: Tensor  # (B, T' or 1, D) after pool_norm
    clip_features: Tensor | None  # (K, B, 1 + N_visible, clip_output_dim), for alignment with the teacher


class VideoTextVisionEncoder(PretrainVideoMamba):
    """`PretrainVideoMamba` with video-text pooling.

    Args:
        pool_type: one of `POOL_TYPES`.
        add_pool_norm: LayerNorm(D) after pooling (``pool_norm``, present in the released checkpoints).
        **kwargs: `PretrainVideoMamba` / backbone arguments.
    """

    def __init__(self, pool_type: str = "cls+avg", add_pool_norm: bool = True, **kwargs: Any) -> None:
        if pool_type not in POOL_TYPES:
            raise ValueError(f"pool_type must be one of {POOL_TYPES}, got {pool_type!r}")
        kwargs.setdefault("clip_norm_type", "none")
        super().__init__(**kwargs)
        self.pool_type = pool_type
        self.pool_norm = nn.LayerNorm(self.embed_dim) if add_pool_norm else nn.Identity()

    def token_frames(self, x: Tensor) -> int:
        """Frames (tubelets) the tokens of input `x` span: 1 for images."""
        is_image = x.dim() == 4 or (x.shape[2] == 1 and self.num_frames != 1)
        return 1 if (is_image or not self.is_video) else self.temporal_pos_embedding.shape[1]

    def forward(self, x: Tensor, mask: Tensor | None = None, keep_temporal: bool = False) -> VisionOutput:
        """x: (B, C, T, H, W) video or (B, C, [1,] H, W) image; mask: (B, 1 + T'N) bool, True = hidden."""
        out = super().forward(x, mask)
        pooled = self.pool(out.tokens, mask, self.token_frames(x) if keep_temporal else 1)
        return VisionOutput(out.tokens[:, 1:], pooled, out.clip_features)

    def pool(self, tokens: Tensor, mask: Tensor | None, num_frames: int) -> Tensor:
        """(B, num_frames, D) pooled features of the visible tokens, each frame averaging its own tokens."""
        cls, patches = tokens[:, :1], tokens[:, 1:]
        if num_frames == 1:
            average = patches.mean(dim=1, keepdim=True)
        else:
            batch, num_visible = patches.shape[:2]
            num_tokens = num_visible if mask is None else mask.shape[1] - 1
            frame_of = torch.arange(num_tokens, device=tokens.device) // (num_tokens // num_frames)
            frame_of = frame_of.expand(batch, -1)
            if mask is not None:
                frame_of = frame_of[~mask[:, 1:]].reshape(batch, num_visible)
            membership = F.one_hot(frame_of, num_frames).to(patches.dtype)  # (B, N_visible, T')
            sums = torch.einsum("bnt,bnd->btd", membership, patches)
            average = sums / membership.sum(dim=1).clamp_min(1).unsqueeze(-1)
        if self.pool_type == "cls":
            pooled = cls
        elif self.pool_type == "avg":
            pooled = average
        else:
            pooled = cls + average
        return self.pool_norm(pooled)
