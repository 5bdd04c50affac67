"""Causal depthwise conv1d: the public functions, their PyTorch reference, and the autograd wiring.

out[b, c, t] = bias[c] + sum_k weight[c, k] * x[b, c, t - (W - 1) + k]   (zeros before t = 0),
optionally followed by SiLU. ``reverse=True`` gives the anti-causal conv used by the backward
direction of a bidirectional Mamba: it equals ``flip(conv(flip(x)))`` without the two copies.

Kernel contract (every backend module: ``_C_cpu``, ``_C_cuda``, ``triton_kernels``):
    fwd(x, weight, bias, out, silu, reverse)                      -> None, writes out
    bwd(x, weight, bias, dout, dx, dweight, dbias, silu, reverse) -> None, writes the gradients
x, dout, out, dx: (batch, dim, seqlen), contiguous, one dtype; weight: (dim, width), contiguous,
any float dtype; bias: (dim,) or None; dweight, dbias: float32 (reduced over batch and time).
All arithmetic is float32 whatever the input dtype.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor

from causal_conv1d.kernel_infra import Dispatcher


def _probe_cuda(module, device: torch.device) -> None:
    """The smallest launch of the CUDA kernels on `device` (does this GPU have code in the build?)."""
    x = torch.zeros(1, 1, 4, device=device)
    module.fwd(x, torch.zeros(1, 2, device=device), None, torch.empty_like(x), False, False)
    torch.cuda.synchronize(device)


dispatcher = Dispatcher(
    "causal_conv1d",
    "CAUSAL_CONV1D_BACKEND",
    {
        "ref": "causal_conv1d.ref_kernels",
        "cpu": "causal_conv1d._C_cpu",
        "cuda": "causal_conv1d._C_cuda",
        "triton": "causal_conv1d.triton_kernels",
    },
    cuda_probe=_probe_cuda,
)


def _silu_flag(activation: str | None) -> bool:
    if activation not in (None, "silu", "swish"):
        raise NotImplementedError(f"activation must be None, 'silu' or 'swish', got {activation!r}")
    return activation is not None


def causal_conv1d_ref(
    x: Tensor, weight: Tensor, bias: Tensor | None = None, activation: str | None = None, reverse: bool = False
) -> Tensor:
    """Ground truth: F.conv1d in float32 (float64 stays float64) on (batch, dim, seqlen); output in x's dtype."""
    silu = _silu_flag(activation)
    if reverse:
        return causal_conv1d_ref(x.flip(-1), weight, bias, activation).flip(-1)
    seqlen, width = x.shape[-1], weight.shape[-1]
    ct = torch.promote_types(x.dtype, torch.float32)
    out = F.conv1d(
        x.to(ct),
        weight.to(ct).unsqueeze(1),
        None if bias is None else bias.to(ct),
        padding=width - 1,
        groups=x.shape[1],
    )[..., :seqlen]
    return (F.silu(out) if silu else out).to(x.dtype)


# Compiled backends run as torch.library custom ops with outputs allocated by the caller, so
# torch.compile needs no fake implementation and does not graph-break. The reference backend is
# plain PyTorch and is called directly (it needs autograd, which custom ops switch off).
@torch.library.custom_op("causal_conv1d::fwd", mutates_args=("out",))
def _fwd_op(
    x: Tensor, weight: Tensor, bias: Tensor | None, out: Tensor, silu: bool, reverse: bool, backend: str
) -> None:
    dispatcher.kernels(backend).fwd(x, weight, bias, out, silu, reverse)


@torch.library.custom_op("causal_conv1d::bwd", mutates_args=("dx", "dweight", "dbias"))
def _bwd_op(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    dout: Tensor,
    dx: Tensor,
    dweight: Tensor,
    dbias: Tensor | None,
    silu: bool,
    reverse: bool,
    backend: str,
) -> None:
    dispatcher.kernels(backend).bwd(x, weight, bias, dout, dx, dweight, dbias, silu, reverse)


def conv_fwd(x: Tensor, weight: Tensor, bias: Tensor | None, silu: bool, reverse: bool, backend: str) -> Tensor:
    """Forward through a kernel backend (no autograd); used by the fused Mamba functions too."""
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    run = dispatcher.kernels(backend).fwd if backend == "ref" else partial(_fwd_op, backend=backend)
    run(x, weight, bias, out, silu, reverse)
    return out


def conv_bwd(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    dout: Tensor,
    silu: bool,
    reverse: bool,
    backend: str,
    dx: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Gradients (dx, dweight, dbias) through a kernel backend; dweight/dbias in float32.

    `dx` may be given to write the input gradient into a preallocated view (e.g. half of dxz).
    """
    if dx is None:
        dx = torch.empty_like(x, memory_format=torch.contiguous_format)
    dweight = torch.empty(weight.shape, dtype=torch.float32, device=x.device)
    dbias = None if bias is None else torch.empty(bias.shape, dtype=torch.float32, device=x.device)
    run = dispatcher.kernels(backend).bwd if backend == "ref" else partial(_bwd_op, backend=backend)
    run(x, weight, bias, dout.contiguous(), dx, dweight, dbias, silu, reverse)
    return dx, dweight, dbias


class CausalConv1dFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, silu, reverse, backend):
        x, weight = x.contiguous(), weight.contiguous()
        bias = None if bias is None else bias.contiguous()
        ctx.save_for_backward(x, weight, bias)
        ctx.flags = (silu, reverse, backend)
        return conv_fwd(x, weight, bias, silu, reverse, backend)

    @staticmethod
    def backward(ctx, dout):
        x, weight, bias = ctx.saved_tensors
        dx, dweight, dbias = conv_bwd(x, weight, bias, dout, *ctx.flags)
        return dx, dweight.to(weight.dtype), None if bias is None else dbias.to(bias.dtype), None, None, None


def causal_conv1d_fn(
    x: Tensor, weight: Tensor, bias: Tensor | None = None, activation: str | None = None, reverse: bool = False
) -> Tensor:
    """Causal (or, with `reverse`, anti-causal) depthwise conv1d with optional SiLU, differentiable.

    Args:
        x: (batch, dim, seqlen), float32/float16/bfloat16.
        weight: (dim, width), width 2..4.
        bias: (dim,) or None.
        activation: None, "silu" or "swish".
    Returns:
        (batch, dim, seqlen) in x's dtype.
    """
    silu = _silu_flag(activation)
    if x.dim() != 3 or weight.dim() != 2 or weight.shape[0] != x.shape[1]:
        raise ValueError(
            f"expected x (batch, dim, seqlen) and weight (dim, width), got {tuple(x.shape)}, {tuple(weight.shape)}"
        )
    if not 2 <= weight.shape[1] <= 4:
        raise ValueError(f"conv width must be 2, 3 or 4, got {weight.shape[1]}")
    backend = dispatcher.pick("causal_conv1d", x.device, x.dtype)
    if backend == "ref":
        return causal_conv1d_ref(x, weight, bias, activation, reverse)
    return CausalConv1dFn.apply(x, weight, bias, silu, reverse, backend)


def causal_conv1d_update(
    x: Tensor, conv_state: Tensor, weight: Tensor, bias: Tensor | None = None, activation: str | None = None
) -> Tensor:
    """One streaming step: push x (batch, dim) into conv_state (batch, dim, width) in place and
    return the conv output for that step, (batch, dim) in x's dtype."""
    silu = _silu_flag(activation)
    if conv_state.shape != (*x.shape, weight.shape[-1]):
        raise ValueError(
            f"conv_state must be (batch, dim, width) = {(*x.shape, weight.shape[-1])}, got {tuple(conv_state.shape)}"
        )
    conv_state.copy_(torch.roll(conv_state, shifts=-1, dims=-1))
    conv_state[..., -1] = x
    out = (conv_state.float() * weight.float()).sum(-1)
    if bias is not None:
        out = out + bias.float()
    return (F.silu(out) if silu else out).to(x.dtype)
