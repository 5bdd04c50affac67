"""Fused residual-add + LayerNorm / RMSNorm, as the Mamba blocks use them.

Semantics (all backends): s = x + residual, computed in float32; y = norm(s) * weight (+ bias) in
x's dtype. With ``prenorm=True`` the function also returns s as the new residual, stored in the
residual's dtype if one was given, else float32 when ``residual_in_fp32``, else x's dtype. This is
how the first block switches the residual stream to float32 and keeps it there.

Backends: a Triton kernel (forward + backward) for CUDA tensors, and an exact PyTorch path
everywhere else (CPU included, which the original lacked). The Triton kernel also runs on CPU
tensors under ``TRITON_INTERPRET=1`` when ``MAMBA_BACKEND=triton`` is forced (tests do this).
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from causal_conv1d.kernel_infra import triton_interpreted
from mamba_ssm.ops.selective_scan_interface import dispatcher

try:
    import triton
    import triton.language as tl
except ImportError:  # Triton is optional: the PyTorch path covers every device
    triton = None


def layer_norm_ref(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    residual: Tensor | None = None,
    eps: float = 1e-6,
    prenorm: bool = False,
    residual_in_fp32: bool = False,
    is_rms_norm: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """The PyTorch path: exact float32 arithmetic, differentiable, any device."""
    s = x.float() if residual is None else x.float() + residual.float()
    residual_dtype = residual.dtype if residual is not None else (torch.float32 if residual_in_fp32 else x.dtype)
    if is_rms_norm:
        y = s * torch.rsqrt(s.square().mean(-1, keepdim=True) + eps) * weight.float()
        if bias is not None:
            y = y + bias.float()
    else:
        y = F.layer_norm(s, s.shape[-1:], weight.float(), None if bias is None else bias.float(), eps)
    y = y.to(x.dtype)
    return (y, s.to(residual_dtype)) if prenorm else y


def rms_norm_ref(x, weight, bias, residual=None, eps=1e-6, prenorm=False, residual_in_fp32=False):
    return layer_norm_ref(x, weight, bias, residual, eps, prenorm, residual_in_fp32, is_rms_norm=True)


if triton is not None:

    @triton.jit
    def _norm_fwd_kernel(
        X,
        RES,
        W,
        B,
        Y,
        RES_OUT,
        MEAN,
        RSTD,
        stride_x,
        stride_res,
        stride_y,
        stride_res_out,
        N,
        eps,
        IS_RMS: tl.constexpr,
        HAS_RES: tl.constexpr,
        STORE_RES_OUT: tl.constexpr,
        HAS_BIAS: tl.constexpr,
        BLOCK_N: tl.constexpr,
    ):
        row = tl.program_id(0).to(tl.int64)
        cols = tl.arange(0, BLOCK_N)
        mask = cols < N
        s = tl.load(X + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
        if HAS_RES:
            s += tl.load(RES + row * stride_res + cols, mask=mask, other=0.0).to(tl.float32)
        if STORE_RES_OUT:
            tl.store(RES_OUT + row * stride_res_out + cols, s, mask=mask)
        if IS_RMS:
            centred = s
        else:
            mean = tl.sum(s, axis=0) / N
            tl.store(MEAN + row, mean)
            centred = tl.where(mask, s - mean, 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(centred * centred, axis=0) / N + eps)
        tl.store(RSTD + row, rstd)
        y = centred * rstd * tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
        if HAS_BIAS:
            y += tl.load(B + cols, mask=mask, other=0.0).to(tl.float32)
        tl.store(Y + row * stride_y + cols, y, mask=mask)

    @triton.jit
    def _norm_bwd_kernel(
        S,
        W,
        DY,
        DX,
        DRES_OUT,
        DW_PART,
        DB_PART,
        MEAN,
        RSTD,
        stride_s,
        stride_dy,
        stride_dx,
        stride_dres_out,
        M,
        N,
        rows_per_program,
        IS_RMS: tl.constexpr,
        HAS_DRES_OUT: tl.constexpr,
        HAS_BIAS: tl.constexpr,
        BLOCK_N: tl.constexpr,
    ):
        # Each program walks a contiguous range of rows and keeps its own dw/db partial sums,
        # which PyTorch adds up afterwards: deterministic, no atomics.
        pid = tl.program_id(0)
        cols = tl.arange(0, BLOCK_N)
        mask = cols < N
        w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
        dw = tl.zeros((BLOCK_N,), dtype=tl.float32)
        db = tl.zeros((BLOCK_N,), dtype=tl.float32)
        first_row = pid.to(tl.int64) * rows_per_program
        for i in range(0, rows_per_program):
            row = first_row + i
            if row < M:
                s = tl.load(S + row * stride_s + cols, mask=mask, other=0.0).to(tl.float32)
                dy = tl.load(DY + row * stride_dy + cols, mask=mask, other=0.0).to(tl.float32)
                rstd = tl.load(RSTD + row)
                if IS_RMS:
                    xhat = s * rstd
                else:
                    xhat = tl.where(mask, (s - tl.load(MEAN + row)) * rstd, 0.0)
                wdy = w * dy
                dw += dy * xhat
                if HAS_BIAS:
                    db += dy
                c1 = tl.sum(xhat * wdy, axis=0) / N
                if IS_RMS:
                    dx = (wdy - xhat * c1) * rstd
                else:
                    c2 = tl.sum(wdy, axis=0) / N
                    dx = (wdy - (xhat * c1 + c2)) * rstd
                if HAS_DRES_OUT:
                    dx += tl.load(DRES_OUT + row * stride_dres_out + cols, mask=mask, other=0.0).to(tl.float32)
                tl.store(DX + row * stride_dx + cols, dx, mask=mask)
        tl.store(DW_PART + pid * N + cols, dw, mask=mask)
        if HAS_BIAS:
            tl.store(DB_PART + pid * N + cols, db, mask=mask)


def _rows(t: Tensor) -> Tensor:
    t = t.reshape(-1, t.shape[-1])
    return t if t.stride(-1) == 1 else t.contiguous()


def _block_n(n: int, element_size: int) -> int:
    block = triton.next_power_of_2(n)
    if block * element_size > 65536:
        raise RuntimeError(f"fused layer norm supports rows up to 64 KB, got {n} features")
    return block


class LayerNormFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, residual, eps, prenorm, residual_in_fp32, is_rms_norm):
        shape = x.shape
        x2 = _rows(x)
        res2 = None if residual is None else _rows(residual)
        residual_dtype = residual.dtype if residual is not None else (torch.float32 if residual_in_fp32 else x.dtype)
        m, n = x2.shape
        y = torch.empty_like(x2, memory_format=torch.contiguous_format)
        # s needs its own buffer unless it is x itself (no residual and no dtype change).
        res_out = (
            torch.empty(m, n, dtype=residual_dtype, device=x.device)
            if (res2 is not None or residual_dtype != x.dtype)
            else None
        )
        mean = torch.empty(m, dtype=torch.float32, device=x.device) if not is_rms_norm else None
        rstd = torch.empty(m, dtype=torch.float32, device=x.device)
        block = _block_n(n, x2.element_size())
        with torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext():
            _norm_fwd_kernel[(m,)](
                x2,
                res2,
                weight,
                bias,
                y,
                res_out,
                mean,
                rstd,
                x2.stride(0),
                0 if res2 is None else res2.stride(0),
                y.stride(0),
                0 if res_out is None else res_out.stride(0),
                n,
                eps,
                IS_RMS=is_rms_norm,
                HAS_RES=res2 is not None,
                STORE_RES_OUT=res_out is not None,
                HAS_BIAS=bias is not None,
                BLOCK_N=block,
                num_warps=min(max(block // 256, 1), 16),
            )
        s = x2 if res_out is None else res_out
        ctx.save_for_backward(s, weight, bias, mean, rstd)
        ctx.meta = (shape, x.dtype, None if residual is None else residual.dtype, prenorm, is_rms_norm)
        y = y.reshape(shape)
        if not prenorm:
            return y
        return y, (x if res_out is None else res_out.reshape(shape))

    @staticmethod
    def backward(ctx, dy, *rest):
        s, weight, bias, mean, rstd = ctx.saved_tensors
        shape, x_dtype, residual_dtype, prenorm, is_rms_norm = ctx.meta
        dres_out = _rows(rest[0]) if prenorm and rest[0] is not None else None
        dy = _rows(dy)
        m, n = s.shape
        dx = torch.empty(m, n, dtype=x_dtype, device=s.device)
        programs = min(m, torch.cuda.get_device_properties(s.device).multi_processor_count if s.is_cuda else 8)
        programs = max(programs, 1)
        rows_per_program = math.ceil(m / programs)
        dw_part = torch.empty(programs, n, dtype=torch.float32, device=s.device)
        db_part = torch.empty(programs, n, dtype=torch.float32, device=s.device) if bias is not None else None
        block = _block_n(n, s.element_size())
        with torch.cuda.device(s.device) if s.is_cuda else contextlib.nullcontext():
            _norm_bwd_kernel[(programs,)](
                s,
                weight,
                dy,
                dx,
                dres_out,
                dw_part,
                db_part,
                mean,
                rstd,
                s.stride(0),
                dy.stride(0),
                dx.stride(0),
                0 if dres_out is None else dres_out.stride(0),
                m,
                n,
                rows_per_program,
                IS_RMS=is_rms_norm,
                HAS_DRES_OUT=dres_out is not None,
                HAS_BIAS=bias is not None,
                BLOCK_N=block,
                num_warps=min(max(block // 256, 1), 16),
            )
        dw = dw_part.sum(0).to(weight.dtype)
        db = None if bias is None else db_part.sum(0).to(bias.dtype)
        dresidual = None if residual_dtype is None else dx.to(residual_dtype).reshape(shape)
        return dx.reshape(shape), dw, db, dresidual, None, None, None, None


def _use_triton(x: Tensor) -> bool:
    """Triton for CUDA tensors (and for CPU tensors in Triton's interpreter when forced), unless
    MAMBA_BACKEND forces the PyTorch path. Records the choice in the dispatcher."""
    forced = dispatcher.forced()
    use = (
        triton is not None
        and forced not in ("ref", "cpu")
        and (x.is_cuda or (forced == "triton" and triton_interpreted()))
    )
    dispatcher.last_used["layer_norm"] = "triton" if use else "ref"
    return use


def layer_norm_fn(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    residual: Tensor | None = None,
    eps: float = 1e-6,
    prenorm: bool = False,
    residual_in_fp32: bool = False,
    is_rms_norm: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Fused (residual add +) LayerNorm or RMSNorm; see the module docstring for the semantics."""
    if _use_triton(x):
        return LayerNormFn.apply(x, weight, bias, residual, eps, prenorm, residual_in_fp32, is_rms_norm)
    return layer_norm_ref(x, weight, bias, residual, eps, prenorm, residual_in_fp32, is_rms_norm)


def rms_norm_fn(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    residual: Tensor | None = None,
    prenorm: bool = False,
    residual_in_fp32: bool = False,
    eps: float = 1e-6,
) -> Tensor | tuple[Tensor, Tensor]:
    """Fused (residual add +) RMSNorm; see the module docstring for the semantics."""
    return layer_norm_fn(x, weight, bias, residual, eps, prenorm, residual_in_fp32, is_rms_norm=True)


class RMSNorm(nn.Module):
    """RMSNorm with a weight and no bias (ones at init), usable as a fused add + norm."""

    def __init__(self, hidden_size: int, eps: float = 1e-5, device=None, dtype=None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden_size, device=device, dtype=dtype))
        self.register_parameter("bias", None)

    def forward(self, x: Tensor, residual: Tensor | None = None, prenorm: bool = False, residual_in_fp32: bool = False):
        return rms_norm_fn(x, self.weight, self.bias, residual, prenorm, residual_in_fp32, self.eps)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"
