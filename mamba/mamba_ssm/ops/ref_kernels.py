"""The reference as a scan backend: `fwd`/`bwd` with the kernel contract (see
`selective_scan_interface`), computed with `selective_scan_ref` and autograd. One chunk: the
backward re-runs the whole reference. Lets tests exercise the fused functions' plumbing against
the ground truth, independently of any compiled kernel."""

import torch

from mamba_ssm.ops.selective_scan_interface import selective_scan_ref


def num_chunks(seqlen: int) -> int:
    return 1


def _run(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse):
    flip = (lambda t: None if t is None else t.flip(-1)) if reverse else (lambda t: t)
    out, last = selective_scan_ref(
        flip(u), flip(delta), A, flip(B), flip(C), D, flip(z), delta_bias, delta_softplus, True
    )
    return flip(out), last


def fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse, out, states):
    with torch.no_grad():
        y, last = _run(u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse)
    out.copy_(y)
    states[:, :, 0].copy_(last)


def bwd(
    u,
    delta,
    A,
    B,
    C,
    D,
    z,
    delta_bias,
    delta_softplus,
    reverse,
    dout,
    states,
    du,
    ddelta,
    dA,
    dB,
    dC,
    dD,
    dz,
    ddelta_bias,
    out_z,
):
    inputs = (u, delta, A, B, C, D, z, delta_bias)
    grad_targets = (du, ddelta, dA, dB, dC, dD, dz, ddelta_bias)
    with torch.enable_grad():
        leaves = [None if t is None else t.detach().requires_grad_() for t in inputs]
        y, _ = _run(*leaves, delta_softplus, reverse)
        wanted = [(leaf, target) for leaf, target in zip(leaves, grad_targets, strict=True) if target is not None]
        grads = torch.autograd.grad(y, [leaf for leaf, _ in wanted], dout)
    for (_, target), grad in zip(wanted, grads, strict=True):
        target.copy_(grad)
    if out_z is not None:
        out_z.copy_(y.detach())
