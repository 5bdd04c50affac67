"""The VideoMamba backbone, shared by image_sm, video_sm and video_mm.

One class serves images and videos (VideoMamba, https://arxiv.org/abs/2403.06977):

- image layout (default, ``num_frames=None``): Conv2d patch embedding, tokens ``[cls, patches]``;
- video layout (``num_frames=T, tubelet_size=k``): Conv3d patch embedding over tubelets of k frames,
  a learnable ``temporal_pos_embedding`` of shape (1, T/k, D) added to the patch tokens (never to
  cls), tokens ``[cls, frame 0 patches, frame 1 patches, ...]`` (frame-major, raster order).

The token sequence goes through ``depth`` pre-norm blocks (residual add -> RMSNorm ->
bidirectional Mamba, from `create_block` below), a final norm ``norm_f`` and pooling: the cls
token (``global_pool="token"``, as released) or the mean of the patch tokens (``"avg"``, no new
parameters, so every checkpoint loads either way). Parameter names and shapes match the original
release's checkpoints exactly.

Why ``"avg"`` exists: at initialisation a block mixes tokens almost only through its causal conv
(4 tokens wide); the SSM path between distant tokens starts about 1e-4 times weaker (B and C come
from ``x_proj``, initialised at std 0.02). So a randomly initialised model pooling its front cls
token reads little more than the first 3 patches of the first frame until training has grown the
long-range path. Pretrained weights have it, so fine-tuning is unaffected; mean pooling gives
every token a direct path to the head from the first step, which the small from-scratch recipes use.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from timm.layers import DropPath, to_2tuple, trunc_normal_
from timm.models import register_model
from torch import Tensor, nn

from mamba_ssm import Block, Mamba, RMSNorm, layer_norm_fn, rms_norm_fn
from videomamba.core.cli import MissingFileError
from videomamba.core.pretrained import CHECKPOINT_DIR_ENV

__all__ = [
    "CHECKPOINT_DIR_ENV",
    "PatchEmbed",
    "VisionMamba",
    "VIDEOMAMBA_SIZES",
    "LEGACY_MODEL_KWARGS",
    "add_model_size",
    "create_videomamba",
    "model_size",
    "register_sized_models",
    "released_checkpoint_path",
    "rename_legacy_model_kwargs",
]

# The model sizes: the one place to add a size. Every task's registered models are generated from
# this table (``videomamba_{size}`` here, ``_distill`` in image_sm, ``_pretrain`` in core.pretrain),
# video_mm reads its ``vision_encoder.name`` from it, and the experiment tools read the released-file
# tag (``videomamba_t16_*`` is a tiny checkpoint). At run time, `add_model_size` does the same.
VIDEOMAMBA_SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(embed_dim=192, depth=24, file_tag="t16"),
    "small": dict(embed_dim=384, depth=24, file_tag="s16"),
    "middle": dict(embed_dim=576, depth=32, file_tag="m16"),
    "base": dict(embed_dim=768, depth=24, file_tag="b16"),
}

# The original release's names of backbone arguments, still accepted from configs, flags and the
# model arguments stored in checkpoints; the model itself takes only the names on the right.
LEGACY_MODEL_KWARGS = {
    "kernel_size": "tubelet_size",
    "channels": "in_chans",
    "use_checkpoint": "grad_checkpointing",
    "checkpoint_num": "grad_checkpointing_blocks",
}


def rename_legacy_model_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``kwargs`` with the original's argument names replaced by ours.

    When both names of one argument are given the original's wins: our defaults only ever use the
    new name, so an old name was written by the user (an original config over our base config).
    """
    renamed = dict(kwargs)
    for old, new in LEGACY_MODEL_KWARGS.items():
        if old in renamed:
            renamed[new] = renamed.pop(old)
    return renamed


class PatchEmbed(nn.Module):
    """Patch embedding: Conv2d for images, Conv3d over tubelets of ``tubelet_size`` frames for video.

    Output is always (B, T', N, D): T' = 1 for images, T' = T / tubelet_size for video, and N the
    number of spatial patches, so the backbone treats both layouts the same way.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        stride: int | None = None,
        in_chans: int = 3,
        embed_dim: int = 768,
        num_frames: int | None = None,
        tubelet_size: int = 1,
        device=None,
        dtype=None,
    ):
        super().__init__()
        factory_kwargs = {"device": device, "dtype": dtype}
        self.img_size = to_2tuple(img_size)
        self.patch_size = to_2tuple(patch_size)
        self.stride = to_2tuple(stride or patch_size)
        # Overlapping patches are allowed (stride < patch), as in the original image model.
        self.grid_size = tuple(
            (s - p) // st + 1 for s, p, st in zip(self.img_size, self.patch_size, self.stride, strict=True)
        )
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.num_frames = num_frames
        self.tubelet_size = tubelet_size
        if num_frames is None:
            self.proj = nn.Conv2d(
                in_chans, embed_dim, kernel_size=self.patch_size, stride=self.stride, **factory_kwargs
            )
        else:
            if tubelet_size < 1 or num_frames % tubelet_size:
                raise ValueError(f"num_frames={num_frames} must be a positive multiple of tubelet_size={tubelet_size}")
            self.proj = nn.Conv3d(
                in_chans,
                embed_dim,
                kernel_size=(tubelet_size, *self.patch_size),
                stride=(tubelet_size, *self.stride),
                **factory_kwargs,
            )

    @property
    def is_video(self) -> bool:
        return self.num_frames is not None

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        x = self.proj(x)
        if not self.is_video:
            x = x.unsqueeze(2)  # (B, D, 1, H', W'): an image is a one-tubelet video
        return x.flatten(3).permute(0, 2, 3, 1)  # (B, T', N, D)

    def _check_input(self, x: Tensor) -> None:
        h, w = self.img_size
        if self.is_video:
            expected = f"(B, C, {self.num_frames}, {h}, {w})"
            ok = x.dim() == 5 and x.shape[2] == self.num_frames and tuple(x.shape[3:]) == self.img_size
            hint = "build the model with num_frames=/img_size= matching the input"
        else:
            expected = f"(B, C, {h}, {w})"
            ok = x.dim() == 4 and tuple(x.shape[2:]) == self.img_size
            hint = "build the model with img_size= matching the input (checkpoints are resized when loaded)"
        if not ok:
            raise ValueError(f"input of shape {tuple(x.shape)} does not fit this model: expected {expected}; {hint}")


class VisionMamba(nn.Module):
    """VideoMamba classifier/backbone; see the module docstring for the two token layouts.

    Args:
        img_size: input resolution (square int or (H, W)).
        patch_size: spatial patch size.
        stride: spatial stride of the patch embedding (defaults to patch_size).
        depth: number of Mamba blocks.
        embed_dim: token width D.
        in_chans: input channels.
        num_classes: classifier outputs; 0 gives an Identity head (pooled features).
        drop_rate: dropout after the position embeddings.
        drop_path_rate: stochastic depth; mixer i is dropped with linspace(0, rate, depth)[i].
        fc_drop_rate: dropout before the head.
        ssm_cfg: extra keyword arguments of the Mamba mixer (d_state, expand, ...).
        norm_epsilon: epsilon of the RMSNorm/LayerNorm layers.
        fused_add_norm: run residual add + norm as one op.
        rms_norm: RMSNorm (True) or LayerNorm.
        residual_in_fp32: keep the residual stream in float32.
        bimamba: bidirectional mixer (VideoMamba) or forward-only (plain Mamba).
        num_frames: None for the image layout, else the number of input frames T (video layout).
        tubelet_size: frames per video patch k (T must be a multiple of k).
        grad_checkpointing: gradient-checkpoint the mixers of the first ``grad_checkpointing_blocks`` blocks.
        grad_checkpointing_blocks: how many blocks to checkpoint when grad_checkpointing is set.
        overwrite_dt_init: reproduce the original release's init, whose generic Linear init
            overwrote Mamba's dt_proj initialisation (weights trunc-normal, biases zero).
        global_pool: ``"token"`` (the cls token, as released) or ``"avg"`` (the mean of the patch
            tokens; see the module docstring for when it matters).
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        stride: int | None = None,
        depth: int = 24,
        embed_dim: int = 192,
        in_chans: int = 3,
        num_classes: int = 1000,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        fc_drop_rate: float = 0.0,
        ssm_cfg: dict | None = None,
        norm_epsilon: float = 1e-5,
        fused_add_norm: bool = True,
        rms_norm: bool = True,
        residual_in_fp32: bool = True,
        bimamba: bool = True,
        num_frames: int | None = None,
        tubelet_size: int = 1,
        grad_checkpointing: bool = False,
        grad_checkpointing_blocks: int = 0,
        overwrite_dt_init: bool = False,
        global_pool: str = "token",
        device=None,
        dtype=None,
    ):
        super().__init__()
        factory_kwargs = {"device": device, "dtype": dtype}
        self.num_classes = num_classes
        self.embed_dim = self.num_features = self.head_hidden_size = embed_dim
        self.depth = depth
        self.num_prefix_tokens = 1
        self.num_frames = num_frames
        self.fused_add_norm = fused_add_norm
        self.residual_in_fp32 = residual_in_fp32
        self.grad_checkpointing = grad_checkpointing
        self.grad_checkpointing_blocks = grad_checkpointing_blocks
        self.global_pool = _checked_pool(global_pool)

        self.patch_embed = PatchEmbed(
            img_size, patch_size, stride, in_chans, embed_dim, num_frames, tubelet_size, **factory_kwargs
        )
        num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim, **factory_kwargs))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim, **factory_kwargs))
        if num_frames is not None:
            self.temporal_pos_embedding = nn.Parameter(
                torch.zeros(1, num_frames // tubelet_size, embed_dim, **factory_kwargs)
            )
        else:
            self.temporal_pos_embedding = None
        self.pos_drop = nn.Dropout(drop_rate)
        self.head_drop = nn.Dropout(fc_drop_rate) if fc_drop_rate > 0 else nn.Identity()
        self.head = nn.Linear(embed_dim, num_classes, **factory_kwargs) if num_classes > 0 else nn.Identity()

        # Block i adds drop_path(mixer i-1's output) to the residual stream, so it carries the rate of
        # mixer i-1; the last mixer's output is dropped by self.drop_path (the full rate, as released).
        # Net effect, identical to the original: mixer i is dropped with dpr[i].
        dpr = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist() if depth > 0 else []
        block_rates = [0.0] + dpr[:-1]
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()
        self.layers = nn.ModuleList(
            create_block(
                embed_dim,
                ssm_cfg=ssm_cfg,
                norm_epsilon=norm_epsilon,
                drop_path=block_rates[i],
                rms_norm=rms_norm,
                residual_in_fp32=residual_in_fp32,
                fused_add_norm=fused_add_norm,
                layer_idx=i,
                bimamba=bimamba,
                **factory_kwargs,
            )
            for i in range(depth)
        )
        self.norm_f = (RMSNorm if rms_norm else nn.LayerNorm)(embed_dim, eps=norm_epsilon, **factory_kwargs)

        self.init_weights(overwrite_dt_init=overwrite_dt_init)

    # ----------------------------------------------------------------------------------- init

    def init_weights(self, overwrite_dt_init: bool = False) -> None:
        """Trunc-normal(0.02) Linear weights with zero biases, trunc-normal pos_embed, and Mamba's
        out_proj rescaling by 1/sqrt(depth). Mamba's dt_proj init is kept unless overwrite_dt_init."""
        trunc_normal_(self.pos_embed, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                # dt_proj biases are flagged _no_reinit by mamba_ssm: they set the initial step sizes.
                is_dt_proj = module.bias is not None and getattr(module.bias, "_no_reinit", False)
                if not is_dt_proj or overwrite_dt_init:
                    init_linear_(module)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        # GPT-2 / Mamba prenorm-residual rescaling: one residual branch (the mixer) per block.
        for name, param in self.named_parameters():
            if name.endswith("out_proj.weight"):
                nn.init.kaiming_uniform_(param, a=math.sqrt(5))
                with torch.no_grad():
                    param.div_(math.sqrt(self.depth))

    # ------------------------------------------------------------------------------- forward

    def embed_tokens(self, x: Tensor) -> Tensor:
        """Patch embedding + position embeddings: (B, 1 + T'N, D) with cls first."""
        x = self.patch_embed(x)  # (B, T', N, D)
        x = x + self.pos_embed[:, 1:].unsqueeze(1)  # the spatial embedding is shared by all frames
        if self.temporal_pos_embedding is not None:
            x = x + self.temporal_pos_embedding.unsqueeze(2)  # one vector per tubelet, patches only
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls.to(x.dtype), x.flatten(1, 2)], dim=1)
        return self.pos_drop(x)

    def forward_features(self, x: Tensor) -> Tensor:
        """Final-normed tokens (B, 1 + T'N, D); token 0 is cls."""
        return self.forward_blocks(self.embed_tokens(x))[0]

    def forward_blocks(
        self, tokens: Tensor, return_layers: Sequence[int] = (), last_feature_as_released: bool = False
    ) -> tuple[Tensor, list[Tensor]]:
        """Run the blocks and the final norm on (B, L, D) tokens.

        Also returns, for each block index r in ``return_layers`` (ascending), the final norm of the
        residual stream after block r's mixer output was added; for the last block that is the
        output itself. Masked pretraining aligns these features with a teacher.

        ``last_feature_as_released``: the last block's feature is instead the one the original
        release aligned: the un-normed residual stream *before* the last mixer's output is added.
        """
        features = []
        hidden, residual = tokens, None
        checkpointed = self.grad_checkpointing_blocks if self.grad_checkpointing and torch.is_grad_enabled() else 0
        for i, layer in enumerate(self.layers):
            hidden, residual = layer(hidden, residual, grad_checkpointing=i < checkpointed)
            if i - 1 in return_layers:  # residual now holds the stream after mixer i - 1
                features.append(self.norm_f(residual))
        if residual is None:  # depth 0: nothing to add
            return self.norm_f(hidden), features
        out = self.final_norm(self.drop_path(hidden), residual)
        if len(self.layers) - 1 in return_layers:
            features.append(residual if last_feature_as_released else out)
        return out, features

    def final_norm(self, hidden: Tensor, residual: Tensor) -> Tensor:
        """norm_f(residual + hidden), fused when fused_add_norm."""
        if not self.fused_add_norm:
            return self.norm_f((residual + hidden).to(dtype=self.norm_f.weight.dtype))
        norm_fn = rms_norm_fn if isinstance(self.norm_f, RMSNorm) else layer_norm_fn
        return norm_fn(
            hidden,
            self.norm_f.weight,
            self.norm_f.bias,
            residual=residual,
            eps=self.norm_f.eps,
            prenorm=False,
            residual_in_fp32=self.residual_in_fp32,
        )

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        pooled = x[:, 0] if self.global_pool == "token" else x[:, self.num_prefix_tokens :].mean(dim=1)
        x = self.head_drop(pooled)
        return x if pre_logits else self.head(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    # ------------------------------------------------------------------------ timm model API

    def no_weight_decay(self) -> set[str]:
        names = {"pos_embed", "cls_token"}
        if self.temporal_pos_embedding is not None:
            names.add("temporal_pos_embedding")
        return names

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Layer groups for layer-wise lr decay: stem = 0, block i = i + 1; norm_f and head are
        unmatched and so share the last group (as the original's layer-decay assigner intended)."""
        return dict(
            stem=r"^cls_token|^pos_embed|^temporal_pos_embedding|^patch_embed",
            blocks=r"^layers\.(\d+)" if coarse else [(r"^layers\.(\d+)", None)],
        )

    def get_num_layers(self) -> int:
        return self.depth

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool is not None:
            self.global_pool = _checked_pool(global_pool)
        self.num_classes = num_classes
        device = self.cls_token.device
        self.head = nn.Linear(self.embed_dim, num_classes, device=device) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            init_linear_(self.head)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True, num_blocks: int | None = None) -> None:
        """Checkpoint the mixers of the first ``num_blocks`` blocks (all blocks by default)."""
        self.grad_checkpointing = enable
        if enable:
            self.grad_checkpointing_blocks = len(self.layers) if num_blocks is None else num_blocks


GLOBAL_POOLS = ("token", "avg")


def _checked_pool(global_pool: str) -> str:
    if global_pool not in GLOBAL_POOLS:
        raise ValueError(f"global_pool must be one of {GLOBAL_POOLS}, got {global_pool!r}")
    return global_pool


def init_linear_(module: nn.Linear) -> None:
    trunc_normal_(module.weight, std=0.02)
    if module.bias is not None:
        nn.init.zeros_(module.bias)


def create_block(
    d_model: int,
    ssm_cfg: dict | None = None,
    norm_epsilon: float = 1e-5,
    drop_path: float = 0.0,
    rms_norm: bool = True,
    residual_in_fp32: bool = True,
    fused_add_norm: bool = True,
    layer_idx: int | None = None,
    bimamba: bool = True,
    device=None,
    dtype=None,
) -> Block:
    """A VideoMamba block: RMSNorm (fused with the residual add) + bidirectional Mamba mixer, with
    stochastic depth `drop_path` on the residual branch it adds."""
    factory_kwargs = {"device": device, "dtype": dtype}
    block = Block(
        d_model,
        partial(Mamba, layer_idx=layer_idx, bimamba=bimamba, **(ssm_cfg or {}), **factory_kwargs),
        norm_cls=partial(RMSNorm if rms_norm else nn.LayerNorm, eps=norm_epsilon, **factory_kwargs),
        fused_add_norm=fused_add_norm,
        residual_in_fp32=residual_in_fp32,
        drop_path=DropPath(drop_path) if drop_path > 0.0 else None,
    )
    block.layer_idx = layer_idx
    return block


# ----------------------------------------------------------------------------- registry


def released_checkpoint_path(size: str, img_size: int | tuple[int, int] = 224) -> Path:
    """The released IN-1K checkpoint for a size, looked up in $VIDEOMAMBA_CHECKPOINTS.

    448 and 576 have their own fine-tuned releases; any other resolution (and every video model)
    starts from the 224 one, whose position embedding the loader resizes.
    """
    folder = os.environ.get(CHECKPOINT_DIR_ENV)
    if not folder:
        raise MissingFileError(
            f"pretrained=True needs a local checkpoint: pass pretrained_path=... or set {CHECKPOINT_DIR_ENV} "
            "to a folder holding the released files (e.g. videomamba_t16_in1k_res224.pth); nothing is downloaded"
        )
    tag = VIDEOMAMBA_SIZES[size]["file_tag"]
    res = to_2tuple(img_size)[0]
    suffix = {448: "res224to448", 576: "res224to448to576"}.get(res, "res224")
    names = [f"videomamba_{tag}_in1k_{suffix}.pth"] + (
        [f"videomamba_{tag}_in1k_res224.pth"] if suffix != "res224" else []
    )
    for name in names:
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    looked = ", ".join(str(Path(folder) / name) for name in names)
    raise MissingFileError(f"released {size} checkpoint not found; looked for {looked} (${CHECKPOINT_DIR_ENV})")


def create_videomamba(
    size: str,
    model_cls: type[VisionMamba] = VisionMamba,
    pretrained: bool = False,
    pretrained_path: str | os.PathLike | None = None,
    pretrained_strict: bool = True,
    **kwargs: Any,
) -> VisionMamba:
    """Build a registered size; with pretrained=True load a local checkpoint through the shared loader.

    The weights file is ``pretrained_path`` if given, else timm's ``pretrained_cfg_overlay=dict(file=...)``,
    else the released file for this size/resolution in $VIDEOMAMBA_CHECKPOINTS.
    """
    # timm's create_model passes these; the weights location is resolved here instead.
    kwargs.pop("pretrained_cfg", None)
    overlay = kwargs.pop("pretrained_cfg_overlay", None) or {}
    kwargs.pop("cache_dir", None)
    kwargs = rename_legacy_model_kwargs(kwargs)  # model arguments stored by older checkpoints
    arch = {k: v for k, v in VIDEOMAMBA_SIZES[size].items() if k != "file_tag"}
    model = model_cls(**{**arch, **kwargs})
    model.pretrained_cfg = model.default_cfg = _default_cfg(model)
    if pretrained:
        from videomamba.core.pretrained import load_pretrained

        path = pretrained_path or overlay.get("file") or released_checkpoint_path(size, model.patch_embed.img_size)
        load_pretrained(model, path, strict=pretrained_strict)
    return model


def _default_cfg(model: VisionMamba) -> dict[str, Any]:
    img = model.patch_embed.img_size
    return dict(
        input_size=(3, *img),
        num_frames=model.num_frames,
        num_classes=model.num_classes,
        interpolation="bicubic",
        crop_pct=0.875,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        first_conv="patch_embed.proj",
        classifier="head",
        license="apache-2.0",
    )


# Model families, registered for every size: name suffix -> (builder(size, pretrained, **kwargs), doc).
_SIZED_FAMILIES: dict[str, tuple[Callable[..., nn.Module], str]] = {}


def _register_sized(size: str, suffix: str) -> None:
    build, doc = _SIZED_FAMILIES[suffix]

    def entrypoint(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        return build(size, pretrained=pretrained, **kwargs)

    arch = VIDEOMAMBA_SIZES[size]
    entrypoint.__name__ = entrypoint.__qualname__ = f"videomamba_{size}{suffix}"
    entrypoint.__module__ = build.__module__  # timm files the name under the family's module
    entrypoint.__doc__ = f"VideoMamba-{size} (D={arch['embed_dim']}, {arch['depth']} blocks): {doc}"
    register_model(entrypoint)


def register_sized_models(suffix: str, build: Callable[..., nn.Module], doc: str) -> None:
    """Register ``videomamba_{size}{suffix}`` in timm for every size, and for sizes added later.

    ``build(size, pretrained=False, **kwargs)`` makes the model (usually through `create_videomamba`).
    """
    _SIZED_FAMILIES[suffix] = (build, doc)
    for size in VIDEOMAMBA_SIZES:
        _register_sized(size, suffix)


def add_model_size(size: str, embed_dim: int, depth: int, file_tag: str) -> None:
    """Add a size at run time (as a new row of `VIDEOMAMBA_SIZES` does): every family gets its model.

    ``file_tag`` names its released files (``videomamba_{file_tag}_in1k_res224.pth``).
    """
    if not re.fullmatch(r"[a-z0-9]+", size):
        raise ValueError(f"a size name is lower-case letters and digits (it becomes videomamba_{{size}}), got {size!r}")
    VIDEOMAMBA_SIZES[size] = dict(embed_dim=embed_dim, depth=depth, file_tag=file_tag)
    for suffix in _SIZED_FAMILIES:
        _register_sized(size, suffix)


def model_size(name: str) -> str | None:
    """The size in a model name (``videomamba_small_distill`` -> ``small``), None for other models."""
    for size in sorted(VIDEOMAMBA_SIZES, key=len, reverse=True):
        if name == f"videomamba_{size}" or name.startswith(f"videomamba_{size}_"):
            return size
    return None


register_sized_models("", create_videomamba, "the classifier; video with num_frames=T.")
