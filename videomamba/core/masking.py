"""Token masks for masked video pretraining (UMT-style), shared by video_sm and video_mm.

Convention: a mask is a bool tensor (B, L) with True = masked (hidden from the student). It covers
the T'·N patch tokens in the backbone's frame-major order (frame 0's N = H'·W' patches in raster
order, then frame 1, ...) and has no cls slot; `prepend_cls_column` adds the always-visible cls
position VideoMamba's student expects. Every sample of a batch masks the same number of tokens, so
visible tokens gather into a dense (B, L_vis, C) tensor (`gather_visible`).

Mask types (``--mask_type``):
- ``tube``: one random spatial mask repeated over all frames;
- ``random``: tokens masked independently of their frame;
- ``tube_row``: whole patch rows masked, the same rows in every frame (the original re-drew the rows
  for every frame despite the name; no released experiment used row masks);
- ``random_row``: whole patch rows masked, drawn jointly over all frames' rows;
- ``attention``: the teacher's last-layer cls->patch attention picks the visible tokens of each
  frame (`attention_mask`).
All functions are batched, run on the device of their inputs and are deterministic for a seeded
`torch.Generator`. Random scores are drawn on the generator's device (CPU when the generator is a
CPU one) and moved, so a CPU generator gives the same masks whatever device the mask ends up on.
"""

from __future__ import annotations

import torch

MASK_TYPES = ("tube", "random", "tube_row", "random_row", "attention")
ATTENTION_SAMPLING = ("multinomial", "topk")


def num_masked_tokens(num_tokens: int, mask_ratio: float) -> int:
    """Tokens masked out of `num_tokens` (rounded down, as the original)."""
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    return int(num_tokens * mask_ratio)


def _device_of(device: torch.device | str | None, generator: torch.Generator | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return generator.device if generator is not None else torch.device("cpu")


def _random_scores(shape: tuple[int, ...], device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
    draw_device = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=draw_device).to(device)


def _mask_lowest(scores: torch.Tensor, num_masked: int) -> torch.Tensor:
    """Mask the `num_masked` lowest-scoring positions of the last dimension."""
    mask = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
    if num_masked > 0:
        mask.scatter_(-1, scores.argsort(dim=-1)[..., :num_masked], True)
    return mask


def random_mask(
    batch_size: int,
    num_tokens: int,
    mask_ratio: float,
    *,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """(B, num_tokens) mask with exactly int(num_tokens · mask_ratio) tokens masked per sample."""
    device = _device_of(device, generator)
    scores = _random_scores((batch_size, num_tokens), device, generator)
    return _mask_lowest(scores, num_masked_tokens(num_tokens, mask_ratio))


def tube_mask(
    batch_size: int,
    num_frames: int,
    num_patches: int,
    mask_ratio: float,
    *,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """(B, T'·N) mask: one random spatial mask of int(N · mask_ratio) patches repeated over the T' frames."""
    spatial = random_mask(batch_size, num_patches, mask_ratio, device=device, generator=generator)
    return spatial.unsqueeze(1).expand(batch_size, num_frames, num_patches).reshape(batch_size, -1)


def row_mask(
    batch_size: int,
    num_frames: int,
    height: int,
    width: int,
    mask_ratio: float,
    *,
    same_rows_every_frame: bool,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """(B, T'·H'·W') mask of whole patch rows.

    With `same_rows_every_frame` int(H' · ratio) rows are masked in every frame (``tube_row``);
    otherwise int(T'·H' · ratio) rows are drawn among all frames' rows (``random_row``).
    """
    if same_rows_every_frame:
        rows = random_mask(batch_size, height, mask_ratio, device=device, generator=generator)
        rows = rows.unsqueeze(1).expand(batch_size, num_frames, height)
    else:
        rows = random_mask(batch_size, num_frames * height, mask_ratio, device=device, generator=generator)
        rows = rows.view(batch_size, num_frames, height)
    return rows.unsqueeze(-1).expand(batch_size, num_frames, height, width).reshape(batch_size, -1)


def attention_mask(
    attention: torch.Tensor,
    mask_ratio: float,
    *,
    sampling: str = "multinomial",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Mask chosen from the teacher's cls->patch attention, keeping the same visible count per frame.

    Args:
        attention: (B, T, N) per-frame attention over the N patches (what `CLIPTeacher` returns), or
            (B, N) to choose over all tokens at once. Non-negative; need not sum to one.
        mask_ratio: N − int(N · mask_ratio) tokens of each frame stay visible.
        sampling: ``multinomial`` (the original): visible tokens are drawn without replacement with
            probability proportional to attention, so attended tokens are likely but not certain to
            stay visible. ``topk``: exactly the most-attended tokens stay visible.
        generator: for ``multinomial``; must live on the attention's device.

    Returns:
        (B, T·N) or (B, N) bool mask, True = masked, frame-major.
    """
    if sampling not in ATTENTION_SAMPLING:
        raise ValueError(f"attention sampling must be one of {ATTENTION_SAMPLING}, got {sampling!r}")
    if attention.dim() not in (2, 3):
        raise ValueError(f"attention must be (B, N) or (B, T, N), got shape {tuple(attention.shape)}")
    batch_size, num_patches = attention.shape[0], attention.shape[-1]
    weights = attention.detach().float().reshape(-1, num_patches)
    if not torch.isfinite(weights).all() or (weights < 0).any():
        raise ValueError("attention for masking must be finite and non-negative")
    num_visible = num_patches - num_masked_tokens(num_patches, mask_ratio)
    if sampling == "topk":
        visible = weights.topk(num_visible, dim=-1).indices
    else:
        # Without replacement, every row needs num_visible non-zero weights; bf16 softmax can underflow.
        weights = weights.clamp_min(torch.finfo(torch.float32).tiny)
        visible = torch.multinomial(weights, num_visible, replacement=False, generator=generator)
    mask = torch.ones(weights.shape, dtype=torch.bool, device=weights.device)
    mask.scatter_(-1, visible, False)
    return mask.reshape(batch_size, -1)


def build_mask(
    mask_type: str,
    batch_size: int,
    grid: tuple[int, int, int],
    mask_ratio: float,
    *,
    attention: torch.Tensor | None = None,
    attention_sampling: str = "multinomial",
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """(B, T'·H'·W') mask of `mask_type` for a token grid (T', H', W'); ``attention`` needs `attention`."""
    num_frames, height, width = grid
    if mask_type == "tube":
        return tube_mask(batch_size, num_frames, height * width, mask_ratio, device=device, generator=generator)
    if mask_type == "random":
        return random_mask(batch_size, num_frames * height * width, mask_ratio, device=device, generator=generator)
    if mask_type in ("tube_row", "random_row"):
        return row_mask(
            batch_size,
            num_frames,
            height,
            width,
            mask_ratio,
            same_rows_every_frame=mask_type == "tube_row",
            device=device,
            generator=generator,
        )
    if mask_type == "attention":
        if attention is None:
            raise ValueError("mask_type 'attention' needs the teacher's attention (enable return_attention)")
        expected = (batch_size, num_frames, height * width)
        if tuple(attention.shape) != expected:
            raise ValueError(f"attention has shape {tuple(attention.shape)}, expected {expected} for grid {grid}")
        return attention_mask(attention, mask_ratio, sampling=attention_sampling, generator=generator)
    raise ValueError(f"unknown mask_type {mask_type!r}; choose one of {MASK_TYPES}")


def prepend_cls_column(mask: torch.Tensor) -> torch.Tensor:
    """(B, L) -> (B, 1 + L) with the cls position (first) always visible."""
    return torch.cat([mask.new_zeros(mask.shape[0], 1), mask], dim=1)


def gather_visible(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Keep the visible (mask False) tokens of each sample, in order.

    Args:
        tokens: (B, L, C), or (K, B, L, C) for K stacked layers (the teacher's output).
        mask: (B, L) bool, True = masked; every row must hide the same number of tokens.

    Returns:
        (B, L_vis, C) or (K, B, L_vis, C).
    """
    if mask.dim() != 2 or tuple(tokens.shape[-3:-1]) != tuple(mask.shape):
        raise ValueError(f"mask {tuple(mask.shape)} does not match tokens {tuple(tokens.shape)}")
    visible = ~mask.bool()
    counts = visible.sum(dim=1)
    if (counts != counts[0]).any():
        raise ValueError(f"every sample must keep the same number of visible tokens, got {counts.tolist()}")
    batch_size, num_visible = mask.shape[0], int(counts[0])
    if tokens.dim() == 3:
        return tokens[visible].reshape(batch_size, num_visible, tokens.shape[-1])
    return tokens[:, visible].reshape(tokens.shape[0], batch_size, num_visible, tokens.shape[-1])
