"""The CUDA causal-conv1d kernel (`causal_conv1d._C_cuda`) against the reference, forward and gradients.

Each test runs on two backends:
- ``cuda``: the built kernels on a GPU (marker ``gpu``; skipped without one);
- ``emulated``: the same CUDA sources compiled for the CPU emulator (causal_conv1d.kernel_infra.testing; every CUDA
  thread a fiber, real barriers and shuffles), which checks the kernels' logic in CI without a GPU
  (marker ``slow``; CUDA_EMU_TESTS=0 skips).
Tests that need GPU memory (2^31 elements, 65,536+ channels) run on ``cuda`` only.

Tolerances. Ground truth: `causal_conv1d_ref` (F.conv1d in float32 on the same rounded inputs).
The tolerances of upstream causal-conv1d's tests are the floor: x float32 rtol 3e-4 / atol 1e-3,
float16 3e-3 / 5e-3, bfloat16 1e-2 / 5e-2 on out and dx; 1e-3 / 1e-3 on dweight and dbias (float32
sums). For 16-bit inputs it is also enough that the error is at most twice that of F.conv1d run in
the input dtype, plus atol: max|kernel - ref32| <= 2 * max|torch_in_dtype - ref32| + atol.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from causal_conv1d import causal_conv1d_fn, dispatcher
from causal_conv1d.kernel_infra.testing.kernel_backends import backend_fixtures

DISPATCHERS = [dispatcher]
UPSTREAM = {torch.float32: (3e-4, 1e-3), torch.float16: (3e-3, 5e-3), torch.bfloat16: (1e-2, 5e-2)}
WEIGHT_TOL = (1e-3, 1e-3)
RULE_ATOL = {torch.float16: 1e-2, torch.bfloat16: 5e-2}
DTYPES = pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])


kernel, gpu, _exact_float32 = backend_fixtures(DISPATCHERS)


def _inputs(batch, dim, seqlen, width, dtype, device, has_bias=True, weight_dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, dim, seqlen, generator=g).to(device=device, dtype=dtype)
    weight = (torch.randn(dim, width, generator=g) / width**0.5).to(device=device, dtype=weight_dtype)
    bias = torch.randn(dim, generator=g).to(device=device, dtype=weight_dtype) if has_bias else None
    dout = torch.randn(batch, dim, seqlen, generator=g).to(device=device, dtype=dtype)
    return x, weight, bias, dout


def _run(x, weight, bias, dout, activation, reverse, ctx):
    leaves = [t.detach().requires_grad_() for t in (x, weight, bias) if t is not None]
    with ctx:  # the backward too: it looks its kernel up by backend name
        out = causal_conv1d_fn(leaves[0], leaves[1], leaves[2] if bias is not None else None, activation, reverse)
        grads = torch.autograd.grad(out, leaves, dout)
    return out.detach(), grads


def _conv_in_dtype(x, weight, bias, activation, reverse):
    """The conv computed by PyTorch in x's dtype (for the low-precision rule)."""
    if reverse:
        return _conv_in_dtype(x.flip(-1), weight, bias, activation, False).flip(-1)
    dt, width = x.dtype, weight.shape[-1]
    out = F.conv1d(x, weight.to(dt).unsqueeze(1), None if bias is None else bias.to(dt), padding=width - 1,
                   groups=x.shape[1])[..., : x.shape[-1]]  # fmt: skip
    return F.silu(out) if activation else out


def _lowp(x, weight, bias, dout, activation, reverse):
    leaves = [t.detach().requires_grad_() for t in (x, weight, bias) if t is not None]
    try:
        out = _conv_in_dtype(leaves[0], leaves[1], leaves[2] if bias is not None else None, activation, reverse)
        return out.detach(), torch.autograd.grad(out, leaves, dout)
    except (RuntimeError, NotImplementedError):  # no low-precision conv1d on this device
        return None


def _check(name, actual, expected, tol, lowp=None, rule_atol=None):
    actual, expected = actual.float(), expected.float()
    assert actual.shape == expected.shape and torch.isfinite(actual).all(), name
    rtol, atol = tol
    if torch.allclose(actual, expected, rtol=rtol, atol=atol):
        return
    err = (actual - expected).abs().max().item()
    if lowp is not None:
        bound = 2 * (lowp.float() - expected).abs().max().item() + rule_atol
        assert err <= bound, f"{name}: max error {err:.3g} > 2 x PyTorch low-precision error + atol = {bound:.3g}"
        return
    raise AssertionError(f"{name}: max error {err:.3g} exceeds rtol {rtol:g} / atol {atol:g}")


def _compare(kernel, x, weight, bias, dout, activation, reverse):
    out, grads = _run(x, weight, bias, dout, activation, reverse, kernel.use())
    f32 = [None if t is None else t.float() for t in (x, weight, bias)]
    ref_out, ref_grads = _run(*f32, dout.float(), activation, reverse, dispatcher.force("ref"))
    low = _lowp(x, weight, bias, dout, activation, reverse) if x.dtype != torch.float32 else None
    assert out.dtype == x.dtype and grads[0].dtype == x.dtype and grads[1].dtype == weight.dtype
    rule_atol = RULE_ATOL.get(x.dtype)
    _check("out", out, ref_out, UPSTREAM[x.dtype], None if low is None else low[0], rule_atol)
    _check("dx", grads[0], ref_grads[0], UPSTREAM[x.dtype], None if low is None else low[1][0], rule_atol)
    for i, name in enumerate(("dweight", "dbias")[: len(grads) - 1], start=1):
        tol = WEIGHT_TOL if weight.dtype == torch.float32 else UPSTREAM[weight.dtype]
        _check(name, grads[i], ref_grads[i], tol)
    return out, grads


LENGTHS = [1, 2, 3, 8, 127, 128, 129, 1023, 1024, 1025, 2049, 3137, 4097]


@DTYPES
@pytest.mark.parametrize("width", [2, 3, 4])
@pytest.mark.parametrize("seqlen", LENGTHS)
@pytest.mark.parametrize("reverse", [False, True])
def test_matches_reference(kernel, dtype, width, seqlen, reverse):
    x, weight, bias, dout = _inputs(2, 5, seqlen, width, dtype, kernel.device, has_bias=seqlen % 2 == 1, seed=seqlen)
    _compare(kernel, x, weight, bias, dout, "silu" if (seqlen + width) % 2 else None, reverse)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("weight_dtype", ["same", torch.float32], ids=["w_same", "w_fp32"])
@pytest.mark.parametrize("reverse", [False, True])
def test_weight_dtypes(kernel, dtype, weight_dtype, reverse):
    weight_dtype = dtype if weight_dtype == "same" else weight_dtype
    x, weight, bias, dout = _inputs(2, 8, 777, 4, dtype, kernel.device, weight_dtype=weight_dtype, seed=1)
    _compare(kernel, x, weight, bias, dout, "silu", reverse)


@pytest.mark.parametrize("reverse", [False, True])
def test_backward_is_deterministic(kernel, reverse):
    """dweight/dbias come from per-block partials reduced in a fixed order: bit-identical runs."""
    x, weight, bias, dout = _inputs(4, 16, 3000, 4, torch.bfloat16, kernel.device, seed=2)
    first = _run(x, weight, bias, dout, "silu", reverse, kernel.use())
    second = _run(x, weight, bias, dout, "silu", reverse, kernel.use())
    for a, b in zip(first[1], second[1], strict=True):
        assert torch.equal(a, b)


def test_mixer_layout(kernel):
    """x as the fused mixer passes it: the contiguous copy of a half of xz (batch, 2d, L)."""
    x, weight, bias, dout = _inputs(2, 16, 197, 4, torch.float32, kernel.device, seed=3)
    xz = torch.cat([x, torch.randn_like(x)], dim=1)
    _compare(kernel, xz[:, :16].contiguous(), weight, bias, dout, "silu", True)


@pytest.mark.gpu
def test_many_channels(gpu):
    """dim > 65,535: channels are not a grid dimension."""
    x, weight, bias, dout = _inputs(1, 65536 + 96, 40, 4, torch.float32, gpu.device, seed=4)
    _compare(gpu, x, weight, bias, dout, "silu", False)


@pytest.mark.gpu
def test_offsets_beyond_int32(gpu):
    """A (1, 65,544, 32,769) bf16 input (more than 2^31 elements): the last channels, whose offsets
    overflow int32, must equal the same channels convolved on their own."""
    dim, seqlen = 65536 + 8, 32768 + 1
    need = 5 * dim * seqlen * 2 + (1 << 30)
    free, _ = torch.cuda.mem_get_info()
    if free < need:
        pytest.skip(f"needs ~{need / 2**30:.0f} GiB of free GPU memory")
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(1, dim, seqlen, generator=g, device="cuda", dtype=torch.bfloat16)
    dout = torch.randn(1, dim, seqlen, generator=g, device="cuda", dtype=torch.bfloat16)
    weight = torch.randn(dim, 4, generator=g, device="cuda")
    bias = torch.randn(dim, generator=g, device="cuda")
    for reverse in (False, True):
        big = _run(x, weight, bias, dout, "silu", reverse, gpu.use())
        tail = slice(dim - 8, dim)
        small = _run(x[:, tail].contiguous(), weight[tail], bias[tail], dout[:, tail].contiguous(), "silu", reverse,
                     gpu.use())  # fmt: skip
        assert torch.equal(big[0][:, tail], small[0])
        assert torch.equal(big[1][0][:, tail], small[1][0])
        assert torch.equal(big[1][1][tail], small[1][1]) and torch.equal(big[1][2][tail], small[1][2])
