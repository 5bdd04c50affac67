"""Causal depthwise conv1d in Triton: the ``triton`` backend of `causal_conv1d_interface`.

Kernel contract (see the interface module): ``fwd(x, weight, bias, out, silu, reverse)`` and
``bwd(x, weight, bias, dout, dx, dweight, dbias, silu, reverse)``. Widths 2..4, x in
float32/float16/bfloat16 with any float weight dtype, optional bias and SiLU, float32 arithmetic.

Layout. A row is one (batch, channel) pair; rows are tiled in blocks of ``*_BLOCK_R`` and time in
tiles of ``*_BLOCK_T`` (time is the contiguous axis, so every load is a coalesced [rows, time]
tile). All grids are one-dimensional (grid axis 0 allows 2**31 - 1 programs), so the number of
channels is not limited by the 65,535 cap of grid axes 1 and 2. Offsets are 64-bit.

Tap k of the width-W filter reads x at ``t - (W - 1 - k)`` (causal) or ``t + (W - 1 - k)``
(``reverse``: the anti-causal conv, equal to flip(conv(flip(x)))), zeros outside [0, seqlen).

Backward. With y = pre-activation and dout' = dout * silu'(y) (dout itself without SiLU):
    dx[s]        = sum_k w[k] * dout'[s + sgn * (W - 1 - k)]      (sgn = +1 causal, -1 reverse)
    dweight[c,k] = sum_{b,t} x[t - sgn * (W - 1 - k)] * dout'[t]
    dbias[c]     = sum_{b,t} dout'[t]
dout' at a shifted tile is recomputed from x (no buffer of the pre-activation). Each program of
the backward owns a block of rows and a fixed segment of ``SEGMENT_TILES`` time tiles, keeps its
dweight/dbias partial sums in registers and writes them to a (segments, rows) workspace, which a
fixed-order ``sum`` then reduces over segments and batch: deterministic, no atomics, and the
partition depends only on the shapes (not on the GPU).
"""

from __future__ import annotations

import torch
from torch import Tensor

try:
    import triton
    import triton.language as tl
except ImportError:  # the dispatcher reports the backend as unavailable
    triton = None

# Tiles of few rows and long time spans keep per-thread registers low (compiled for sm_90: about 64
# registers forward, 117 backward, no spills) so that many programs fit on an SM: both kernels are
# memory-bound.
FWD_BLOCK_R, FWD_BLOCK_T = 4, 256  # rows (batch x channel) x time steps per forward program
BWD_BLOCK_R, BWD_BLOCK_T = 2, 256  # rows x time steps per backward tile
SEGMENT_TILES = 4  # time tiles per backward program (a segment of 1024 steps)
NUM_WARPS = 4
MAX_WIDTH = 4


if triton is not None:

    @triton.jit
    def _tap_source(t, k, WIDTH: tl.constexpr, REVERSE: tl.constexpr):
        # Position of x read by tap k for output t.
        if REVERSE:
            return t + (WIDTH - 1 - k)
        else:
            return t - (WIDTH - 1 - k)

    @triton.jit
    def _pre_activation(x_row, w_row, bias, rmask, t, seqlen, s_w_k, WIDTH: tl.constexpr, REVERSE: tl.constexpr,
                        BLOCK_R: tl.constexpr, BLOCK_T: tl.constexpr):  # fmt: skip
        # Conv output (before SiLU) at positions t of every row of the block: [BLOCK_R, BLOCK_T] float32.
        acc = tl.zeros([BLOCK_R, BLOCK_T], dtype=tl.float32) + bias[:, None]
        for k in tl.static_range(WIDTH):
            w = tl.load(w_row + k * s_w_k, mask=rmask, other=0.0).to(tl.float32)
            src = _tap_source(t, k, WIDTH, REVERSE)
            m = rmask[:, None] & ((src >= 0) & (src < seqlen))[None, :]
            acc += w[:, None] * tl.load(x_row[:, None] + src[None, :], mask=m, other=0.0).to(tl.float32)
        return acc

    @triton.jit
    def _dout_prime(x_row, w_row, bias, dout_row, rmask, t, seqlen, s_w_k,
                    WIDTH: tl.constexpr, SILU: tl.constexpr, REVERSE: tl.constexpr,
                    BLOCK_R: tl.constexpr, BLOCK_T: tl.constexpr):  # fmt: skip
        # Gradient reaching the pre-activation at positions t (zero outside [0, seqlen)).
        m = rmask[:, None] & ((t >= 0) & (t < seqlen))[None, :]
        g = tl.load(dout_row[:, None] + t[None, :], mask=m, other=0.0).to(tl.float32)
        if SILU:
            y = _pre_activation(x_row, w_row, bias, rmask, t, seqlen, s_w_k, WIDTH, REVERSE, BLOCK_R, BLOCK_T)
            sig = tl.sigmoid(y)
            g = g * sig * (1.0 + y * (1.0 - sig))
        return g

    @triton.jit
    def _conv_fwd_kernel(
        X, W, BIAS, OUT,
        s_x_b, s_x_d, s_o_b, s_o_d, s_w_d, s_w_k,
        dim, rows, seqlen, n_tiles,
        WIDTH: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr, REVERSE: tl.constexpr,
        BLOCK_R: tl.constexpr, BLOCK_T: tl.constexpr,
    ):  # fmt: skip
        pid = tl.program_id(0)
        row_block = pid // n_tiles
        tile = pid % n_tiles
        r = (row_block * BLOCK_R + tl.arange(0, BLOCK_R)).to(tl.int64)
        rmask = r < rows
        b = r // dim
        d = r % dim
        t = tile * BLOCK_T + tl.arange(0, BLOCK_T)
        if HAS_BIAS:
            bias = tl.load(BIAS + d, mask=rmask, other=0.0).to(tl.float32)
        else:
            bias = tl.zeros([BLOCK_R], dtype=tl.float32)
        y = _pre_activation(X + b * s_x_b + d * s_x_d, W + d * s_w_d, bias, rmask, t, seqlen, s_w_k,
                            WIDTH, REVERSE, BLOCK_R, BLOCK_T)  # fmt: skip
        if SILU:
            y = y * tl.sigmoid(y)
        m = rmask[:, None] & (t < seqlen)[None, :]
        tl.store(OUT + (b * s_o_b + d * s_o_d)[:, None] + t[None, :], y, mask=m)

    @triton.jit
    def _conv_bwd_kernel(
        X, W, BIAS, DOUT, DX, DW_PART, DB_PART,
        s_x_b, s_x_d, s_g_b, s_g_d, s_dx_b, s_dx_d, s_w_d, s_w_k,
        dim, rows, seqlen, n_segments, segment_tiles,
        WIDTH: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr, REVERSE: tl.constexpr,
        BLOCK_R: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_W: tl.constexpr,
    ):  # fmt: skip
        pid = tl.program_id(0)
        row_block = pid // n_segments
        segment = pid % n_segments
        r = (row_block * BLOCK_R + tl.arange(0, BLOCK_R)).to(tl.int64)
        rmask = r < rows
        b = r // dim
        d = r % dim
        x_row = X + b * s_x_b + d * s_x_d
        g_row = DOUT + b * s_g_b + d * s_g_d
        dx_row = DX + b * s_dx_b + d * s_dx_d
        w_row = W + d * s_w_d
        if HAS_BIAS:
            bias = tl.load(BIAS + d, mask=rmask, other=0.0).to(tl.float32)
        else:
            bias = tl.zeros([BLOCK_R], dtype=tl.float32)
        kcol = tl.arange(0, BLOCK_W)
        dw_acc = tl.zeros([BLOCK_R, BLOCK_W], dtype=tl.float32)
        db_acc = tl.zeros([BLOCK_R], dtype=tl.float32)
        for i in range(0, segment_tiles):
            s = (segment * segment_tiles + i) * BLOCK_T + tl.arange(0, BLOCK_T)
            smask = rmask[:, None] & (s < seqlen)[None, :]
            g = _dout_prime(x_row, w_row, bias, g_row, rmask, s, seqlen, s_w_k, WIDTH, SILU, REVERSE, BLOCK_R, BLOCK_T)
            # dx[s] = sum_k w[k] dout'[s + sgn (W - 1 - k)]: the output positions that read x[s] via tap k
            # (tap W - 1 reads x[s] for output s itself: that dout' is g).
            w_last = tl.load(w_row + (WIDTH - 1) * s_w_k, mask=rmask, other=0.0).to(tl.float32)
            dx = w_last[:, None] * g
            for k in tl.static_range(WIDTH - 1):
                w = tl.load(w_row + k * s_w_k, mask=rmask, other=0.0).to(tl.float32)
                if REVERSE:
                    t_out = s - (WIDTH - 1 - k)
                else:
                    t_out = s + (WIDTH - 1 - k)
                dx += w[:, None] * _dout_prime(x_row, w_row, bias, g_row, rmask, t_out, seqlen, s_w_k,
                                               WIDTH, SILU, REVERSE, BLOCK_R, BLOCK_T)  # fmt: skip
            tl.store(dx_row[:, None] + s[None, :], dx, mask=smask)
            # dweight[k] += sum_t x[t - sgn (W - 1 - k)] dout'[t], with t the positions of this tile.
            db_acc += tl.sum(g, axis=1)
            for k in tl.static_range(WIDTH):
                src = _tap_source(s, k, WIDTH, REVERSE)
                m = rmask[:, None] & ((src >= 0) & (src < seqlen))[None, :]
                xk = tl.load(x_row[:, None] + src[None, :], mask=m, other=0.0).to(tl.float32)
                dw_acc += tl.where(kcol[None, :] == k, tl.sum(xk * g, axis=1)[:, None], 0.0)
        part = segment.to(tl.int64) * rows + r
        tl.store(DW_PART + part[:, None] * WIDTH + kcol[None, :], dw_acc, mask=rmask[:, None] & (kcol < WIDTH)[None, :])
        if HAS_BIAS:
            tl.store(DB_PART + part, db_acc, mask=rmask)


def _check(x: Tensor, weight: Tensor, bias: Tensor | None) -> tuple[int, int, int, int]:
    if triton is None:
        raise RuntimeError("the causal_conv1d triton backend needs the triton package")
    if x.dim() != 3 or weight.dim() != 2 or weight.shape[0] != x.shape[1]:
        shapes = f"{tuple(x.shape)}, {tuple(weight.shape)}"
        raise ValueError(f"expected x (batch, dim, seqlen) and weight (dim, width), got {shapes}")
    width = weight.shape[1]
    if not 2 <= width <= MAX_WIDTH:
        raise ValueError(f"conv width must be 2, 3 or 4, got {width}")
    if bias is not None and bias.shape != (x.shape[1],):
        raise ValueError(f"bias must be ({x.shape[1]},), got {tuple(bias.shape)}")
    batch, dim, seqlen = x.shape
    return batch, dim, seqlen, width


def _unit_time_stride(t: Tensor) -> Tensor:
    return t if t.stride(-1) == 1 or t.shape[-1] <= 1 else t.contiguous()


def fwd(x: Tensor, weight: Tensor, bias: Tensor | None, out: Tensor, silu: bool, reverse: bool) -> None:
    """out = conv(x) (+ bias) [then SiLU]; out may have any batch/channel strides (unit time stride)."""
    batch, dim, seqlen, width = _check(x, weight, bias)
    if out.shape != x.shape:
        raise ValueError(f"out must be {tuple(x.shape)}, got {tuple(out.shape)}")
    if x.numel() == 0:
        return
    x = _unit_time_stride(x)
    target = out if out.stride(-1) == 1 or seqlen <= 1 else torch.empty_like(out, memory_format=torch.contiguous_format)
    rows, n_tiles = batch * dim, triton.cdiv(seqlen, FWD_BLOCK_T)
    grid = (triton.cdiv(rows, FWD_BLOCK_R) * n_tiles,)
    _conv_fwd_kernel[grid](
        x, weight, x if bias is None else bias, target,
        x.stride(0), x.stride(1), target.stride(0), target.stride(1), weight.stride(0), weight.stride(1),
        dim, rows, seqlen, n_tiles,
        WIDTH=width, HAS_BIAS=bias is not None, SILU=bool(silu), REVERSE=bool(reverse),
        BLOCK_R=FWD_BLOCK_R, BLOCK_T=FWD_BLOCK_T, num_warps=NUM_WARPS,
    )  # fmt: skip
    if target is not out:
        out.copy_(target)


def bwd(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    dout: Tensor,
    dx: Tensor,
    dweight: Tensor,
    dbias: Tensor | None,
    silu: bool,
    reverse: bool,
) -> None:
    """Writes dx (x's dtype), dweight and dbias (float32, summed over batch and time in a fixed order)."""
    batch, dim, seqlen, width = _check(x, weight, bias)
    if dout.shape != x.shape or dx.shape != x.shape:
        raise ValueError(f"dout and dx must be {tuple(x.shape)}")
    if (bias is None) != (dbias is None):
        raise ValueError("dbias must be given exactly when bias is")
    if x.numel() == 0:
        dweight.zero_()
        if dbias is not None:
            dbias.zero_()
        return
    x, dout = _unit_time_stride(x), _unit_time_stride(dout)
    target = dx if dx.stride(-1) == 1 or seqlen <= 1 else torch.empty_like(dx, memory_format=torch.contiguous_format)
    rows = batch * dim
    segment_tiles = min(SEGMENT_TILES, triton.cdiv(seqlen, BWD_BLOCK_T))
    n_segments = triton.cdiv(seqlen, segment_tiles * BWD_BLOCK_T)
    f32 = dict(dtype=torch.float32, device=x.device)
    dw_part = torch.empty(n_segments, batch, dim, width, **f32)
    db_part = torch.empty(n_segments, batch, dim, **f32) if bias is not None else dw_part
    grid = (triton.cdiv(rows, BWD_BLOCK_R) * n_segments,)
    _conv_bwd_kernel[grid](
        x, weight, x if bias is None else bias, dout, target, dw_part, db_part,
        x.stride(0), x.stride(1), dout.stride(0), dout.stride(1), target.stride(0), target.stride(1),
        weight.stride(0), weight.stride(1),
        dim, rows, seqlen, n_segments, segment_tiles,
        WIDTH=width, HAS_BIAS=bias is not None, SILU=bool(silu), REVERSE=bool(reverse),
        BLOCK_R=BWD_BLOCK_R, BLOCK_T=BWD_BLOCK_T, BLOCK_W=MAX_WIDTH, num_warps=NUM_WARPS,
    )  # fmt: skip
    if target is not dx:
        dx.copy_(target)
    # Fixed-order reductions over (segment, batch): deterministic.
    dweight.copy_(dw_part.reshape(n_segments * batch, dim, width).sum(0))
    if dbias is not None:
        dbias.copy_(db_part.reshape(n_segments * batch, dim).sum(0))
