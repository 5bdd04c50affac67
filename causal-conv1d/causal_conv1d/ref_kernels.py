"""The reference as a kernel backend: `fwd`/`bwd` with the kernel contract, computed by autograd
through `causal_conv1d_ref`. Lets fused callers (mamba_inner_fn) run with the reference conv and
checks the contract itself in tests."""

import torch

from causal_conv1d.causal_conv1d_interface import causal_conv1d_ref


def fwd(x, weight, bias, out, silu, reverse):
    out.copy_(causal_conv1d_ref(x, weight, bias, "silu" if silu else None, reverse))


def bwd(x, weight, bias, dout, dx, dweight, dbias, silu, reverse):
    with torch.enable_grad():
        leaves = [t.detach().float().requires_grad_() for t in (x, weight) + (() if bias is None else (bias,))]
        out = causal_conv1d_ref(*leaves[:2], leaves[2] if bias is not None else None, "silu" if silu else None, reverse)
        grads = torch.autograd.grad(out, leaves, dout.float())
    dx.copy_(grads[0])
    dweight.copy_(grads[1])
    if dbias is not None:
        dbias.copy_(grads[2])
