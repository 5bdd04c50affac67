"""Frozen CLIP ViT image encoder used as the teacher of masked video pretraining (UMT-style).

One teacher for video_sm and video_mm (the original had three diverging copies). It follows the
OpenAI CLIP visual tower, so its parameter names are those of the released ``visual.*`` weights
(`conv1.weight`, `class_embedding`, `positional_embedding`, `ln_pre.*`,
`transformer.resblocks.{j}.{attn.in_proj_weight, attn.in_proj_bias, attn.out_proj.*, ln_1.*,
mlp.c_fc.*, mlp.c_proj.*, ln_2.*}`, `ln_post.*`, `proj`) and `load_clip_weights` reads the
original's `vit_b16.pth`/`vit_l14.pth`/`vit_l14_336.pth` files, OpenAI checkpoints with a
``visual.`` prefix, or video_mm checkpoints with a ``clip_teacher.`` prefix.

Frames are encoded independently (folded into the batch). The teacher returns, for the requested
layers, the tokens of each layer projected into CLIP's output space:
- ``return_layers`` counts from the end: 0 is the last block, (0, 1) the last two; the original's
  ``clip_return_layer``/``clip_return_interval`` map to it through `return_layers_from_interval`.
  Features come back ordered from the shallowest to the deepest layer, as the original stacked them.
- With ``return_cls`` the per-frame cls tokens are averaged over time into one leading token
  (B, 1 + T·N, C); otherwise only the T·N patch tokens (B, T·N, C), frame-major like the student.
- ``ln_post`` is applied to every returned token before ``proj``. NOTE: the original applied it only
  without ``--clip_return_cls`` (and never in video_mm), so the released mask-pretraining targets
  skipped it. We apply it always, because CLIP's projection expects ln_post-normalised tokens and
  the two modes should agree; ``ln_post=False`` reproduces the original's return_cls targets.
- ``norm_type='l2'`` L2-normalises the output tokens (video_sm); ``'none'`` leaves them (video_mm).
- ``return_attention`` adds the last block's cls->patch attention averaged over heads, (B, T, N).

The teacher is never trained: parameters have requires_grad False, `train()` keeps it in eval mode
and forward runs under no_grad. A parent module that registers it as a submodule can keep it out of
its checkpoints with `keep_out_of_state_dict`; optimizers built from parameters that require grad
skip it, and DDP ignores parameters that require no grad.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from videomamba.core.pretrained import CheckpointError, load_checkpoint_file


@dataclass(frozen=True)
class CLIPVisionConfig:
    """Architecture of a CLIP visual tower; `image_resolution` is the one its weights were trained at."""

    width: int
    layers: int
    heads: int
    patch_size: int
    output_dim: int
    image_resolution: int


CLIP_CONFIGS: dict[str, CLIPVisionConfig] = {
    "clip_b16": CLIPVisionConfig(width=768, layers=12, heads=12, patch_size=16, output_dim=512, image_resolution=224),
    "clip_l14": CLIPVisionConfig(width=1024, layers=24, heads=16, patch_size=14, output_dim=768, image_resolution=224),
    "clip_l14_336": CLIPVisionConfig(
        width=1024, layers=24, heads=16, patch_size=14, output_dim=768, image_resolution=336
    ),
    # Tests and smoke runs only: a 32 px input gives a 4x4 patch grid.
    "clip_test_tiny": CLIPVisionConfig(width=32, layers=3, heads=2, patch_size=8, output_dim=16, image_resolution=32),
}


class TeacherOutput(NamedTuple):
    """features: (K, B, L, output_dim), shallowest layer first. attention: (B, T, N) or None."""

    features: torch.Tensor
    attention: torch.Tensor | None


def return_layers_from_interval(num_layers: int, interval: int = 1) -> tuple[int, ...]:
    """The original's ``clip_return_layer``/``clip_return_interval``: the last block and every `interval`-th before."""
    if num_layers < 1 or interval < 1:
        raise ValueError(f"need at least one layer and a positive interval, got {num_layers}, {interval}")
    return tuple(i * interval for i in range(num_layers))


class _FP32LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the input dtype, as CLIP does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).to(x.dtype)


class _QuickGELU(nn.Module):
    """The sigmoid approximation of GELU that OpenAI CLIP was trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class _ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_1 = _FP32LayerNorm(width)
        self.mlp = nn.Sequential(
            OrderedDict(c_fc=nn.Linear(width, 4 * width), gelu=_QuickGELU(), c_proj=nn.Linear(4 * width, width))
        )
        self.ln_2 = _FP32LayerNorm(width)

    def forward(self, x: torch.Tensor, need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        normed = self.ln_1(x)
        attended, weights = self.attn(normed, normed, normed, need_weights=need_weights, average_attn_weights=True)
        x = x + attended
        x = x + self.mlp(self.ln_2(x))
        return x, weights


class _Transformer(nn.Module):
    """Holds the blocks under `resblocks`, the name CLIP's state dict uses."""

    def __init__(self, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(_ResidualAttentionBlock(width, heads) for _ in range(layers))


class CLIPTeacher(nn.Module):
    """Frozen CLIP ViT that encodes each frame and returns aligned per-layer token features.

    Args:
        config: architecture (see `CLIP_CONFIGS`).
        input_resolution: square input size in pixels; the positional embedding is built for it (and
            resampled from the weights' resolution on load). Defaults to `config.image_resolution`.
        return_layers: layers counted from the end (0 = last block).
        return_cls: prepend the time-averaged cls token to the patch tokens.
        return_attention: also return the last block's cls->patch attention.
        ln_post: apply ln_post to the returned tokens (see the module notes).
        norm_type: ``'l2'`` or ``'none'``.
    """

    def __init__(
        self,
        config: CLIPVisionConfig,
        *,
        input_resolution: int | None = None,
        return_layers: Sequence[int] = (0,),
        return_cls: bool = True,
        return_attention: bool = False,
        ln_post: bool = True,
        norm_type: str = "l2",
    ) -> None:
        super().__init__()
        input_resolution = input_resolution or config.image_resolution
        if input_resolution % config.patch_size:
            raise ValueError(f"input_resolution {input_resolution} is not a multiple of patch {config.patch_size}")
        if norm_type not in ("l2", "none"):
            raise ValueError(f"norm_type must be 'l2' or 'none', got {norm_type!r}")
        bad = [r for r in return_layers if not 0 <= r < config.layers]
        if not return_layers or bad:
            raise ValueError(f"return_layers {tuple(return_layers)} must be non-empty and in [0, {config.layers})")
        self.config = config
        self.input_resolution = input_resolution
        self.grid_size = input_resolution // config.patch_size
        # Block indices in ascending depth: the order features are returned in.
        self.return_blocks = sorted({config.layers - 1 - r for r in return_layers})
        self.return_cls = return_cls
        self.return_attention = return_attention
        self.apply_ln_post = ln_post
        self.norm_type = norm_type

        width, scale = config.width, config.width**-0.5
        self.conv1 = nn.Conv2d(3, width, config.patch_size, stride=config.patch_size, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(self.grid_size**2 + 1, width))
        self.ln_pre = _FP32LayerNorm(width)
        self.transformer = _Transformer(width, config.layers, config.heads)
        self.ln_post = _FP32LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, config.output_dim))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> CLIPTeacher:
        """Always stays in eval mode: a parent's `.train()` must not switch the teacher to training."""
        return super().train(False)

    @property
    def num_patches(self) -> int:
        """Patch tokens per frame."""
        return self.grid_size**2

    @torch.no_grad()
    def forward(self, video: torch.Tensor) -> TeacherOutput:
        """Encode (B, C, T, H, W) video or (B, C, H, W) images (T = 1), normalised with CLIP's statistics."""
        if video.dim() == 4:
            video = video.unsqueeze(2)
        if video.dim() != 5:
            raise ValueError(f"expected (B, C, T, H, W) or (B, C, H, W), got shape {tuple(video.shape)}")
        batch, channels, frames, height, width = video.shape
        if (height, width) != (self.input_resolution, self.input_resolution):
            raise ValueError(
                f"teacher expects {self.input_resolution}x{self.input_resolution} input, got {height}x{width}; "
                "resize the clip (clip_input_resolution) or build the teacher for this resolution"
            )
        images = video.transpose(1, 2).reshape(batch * frames, channels, height, width)
        images = images.to(self.conv1.weight.dtype)
        tokens = self.conv1(images).flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(tokens.dtype).expand(tokens.shape[0], 1, -1)
        tokens = torch.cat([cls, tokens], dim=1) + self.positional_embedding.to(tokens.dtype)
        tokens = self.ln_pre(tokens)

        last_needed = max(self.return_blocks[-1], self.config.layers - 1 if self.return_attention else -1)
        collected, attention = [], None
        for index, block in enumerate(self.transformer.resblocks[: last_needed + 1]):
            want_attention = self.return_attention and index == self.config.layers - 1
            tokens, weights = block(tokens, need_weights=want_attention)
            if want_attention:
                attention = weights[:, 0, 1:].reshape(batch, frames, self.num_patches)
            if index in self.return_blocks:
                collected.append(self._output_tokens(tokens, batch, frames))
        return TeacherOutput(torch.stack(collected), attention)

    def _output_tokens(self, tokens: torch.Tensor, batch: int, frames: int) -> torch.Tensor:
        if self.apply_ln_post:
            tokens = self.ln_post(tokens)
        patches = tokens[:, 1:].reshape(batch, frames * self.num_patches, -1)
        if self.return_cls:
            cls = tokens[:, 0].reshape(batch, frames, -1).mean(dim=1, keepdim=True)
            patches = torch.cat([cls, patches], dim=1)
        out = patches @ self.proj.to(patches.dtype)
        return F.normalize(out, dim=-1) if self.norm_type == "l2" else out


def _unwrap_clip_state_dict(checkpoint: Mapping[str, object], source: str) -> dict[str, torch.Tensor]:
    for container in ("state_dict", "model", "module"):
        inner = checkpoint.get(container)
        if isinstance(inner, Mapping):
            checkpoint = inner
            break
    state = {k: v for k, v in checkpoint.items() if isinstance(v, torch.Tensor)}
    for prefix in ("module.", "visual.", "clip_teacher."):
        # A full CLIP (or video_mm) checkpoint holds other towers too: keep only the prefixed visual keys.
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if not state:
        raise CheckpointError(f"{source}: no tensors found in the CLIP checkpoint")
    return state


def adapt_clip_state_dict(
    checkpoint: Mapping[str, object], teacher: CLIPTeacher, source: str = "<state dict>"
) -> dict[str, torch.Tensor]:
    """Make a CLIP visual state dict fit `teacher`: unwrap, strip prefixes, squeeze a 3D conv1, resample pos-embed."""
    state = _unwrap_clip_state_dict(checkpoint, source)
    conv = state.get("conv1.weight")
    if conv is not None and conv.dim() == 5:
        if conv.shape[2] != 1:
            raise CheckpointError(
                f"{source}: conv1.weight {tuple(conv.shape)} has temporal kernel {conv.shape[2]}; need 1"
            )
        state["conv1.weight"] = conv.squeeze(2)
    pos = state.get("positional_embedding")
    target = teacher.positional_embedding
    if pos is not None and pos.shape != target.shape:
        old_grid = int(round((pos.shape[0] - 1) ** 0.5))
        if old_grid**2 + 1 != pos.shape[0] or pos.shape[1] != target.shape[1]:
            raise CheckpointError(f"{source}: positional_embedding {tuple(pos.shape)} is not a square grid plus cls")
        from timm.layers import resample_abs_pos_embed

        # Bicubic without antialiasing, as the original resampled it.
        resized = resample_abs_pos_embed(
            pos.unsqueeze(0).float(), [teacher.grid_size] * 2, [old_grid] * 2, num_prefix_tokens=1, antialias=False
        )
        state["positional_embedding"] = resized.squeeze(0).to(pos.dtype)
    return state


def load_clip_weights(teacher: CLIPTeacher, checkpoint: str | os.PathLike | Mapping[str, object]) -> CLIPTeacher:
    """Load CLIP visual weights (a file path or a state dict) into `teacher` strictly; errors name the file."""
    source = str(checkpoint) if isinstance(checkpoint, str | os.PathLike) else "<state dict>"
    if isinstance(checkpoint, str | os.PathLike):
        checkpoint = load_checkpoint_file(checkpoint, what="CLIP teacher weights")
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f"{source}: holds a {type(checkpoint).__name__}, not a CLIP state dict")
    state = adapt_clip_state_dict(checkpoint, teacher, source)
    expected = teacher.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or wrong_shape:
        raise CheckpointError(
            f"{source} does not fit {teacher.config}: missing {missing[:8]}{'...' if len(missing) > 8 else ''}, "
            f"unexpected {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}, shape mismatches {wrong_shape[:8]}"
        )
    teacher.load_state_dict(state, strict=True)
    return teacher


def build_clip_teacher(
    name: str,
    checkpoint: str | os.PathLike | Mapping[str, object] | None = None,
    **options: object,
) -> CLIPTeacher:
    """Build a teacher by the original's name (``clip_b16``, ``clip_l14``, ``clip_l14_336``) and load weights.

    `options` are `CLIPTeacher` keyword arguments. Without `checkpoint` the weights stay random
    (tests only).
    """
    if name not in CLIP_CONFIGS:
        raise ValueError(f"unknown CLIP teacher {name!r}; choose one of {sorted(CLIP_CONFIGS)}")
    teacher = CLIPTeacher(CLIP_CONFIGS[name], **options)
    if checkpoint is not None:
        load_clip_weights(teacher, checkpoint)
    return teacher


def keep_out_of_state_dict(parent: nn.Module, child_name: str) -> None:
    """Keep the submodule `parent.<child_name>` (a frozen teacher) out of `parent`'s checkpoints.

    After this, `parent.state_dict()` has no ``<child_name>.*`` keys, and `parent.load_state_dict`
    (strict or not) ignores such keys in the incoming dict (the original's video_mm checkpoints
    carry them) and does not report them missing: the child keeps the weights it has.
    """
    child = getattr(parent, child_name)
    if not isinstance(child, nn.Module):
        raise TypeError(f"{child_name} is not a submodule of {type(parent).__name__}")

    def drop_child_keys(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
        for key in [k for k in state_dict if k.startswith(f"{prefix}{child_name}.")]:
            del state_dict[key]

    def fill_child_keys(module: nn.Module, state_dict: dict, prefix: str, *args: object) -> None:
        # Loading the child's own current tensors makes the load a no-op for it, so nothing is missing.
        for key, value in child.state_dict(keep_vars=False).items():
            state_dict[f"{prefix}{child_name}.{key}"] = value

    parent.register_state_dict_post_hook(drop_child_keys)
    parent.register_load_state_dict_pre_hook(fill_child_keys)
