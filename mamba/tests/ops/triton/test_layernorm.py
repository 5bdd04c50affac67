"""Fused add + LayerNorm/RMSNorm: the semantics of the PyTorch path, and the Triton kernel against it.

The Triton kernel runs on CUDA, or on CPU tensors in Triton's interpreter (TRITON_INTERPRET=1, set
by the root conftest when there is no GPU). Tolerances: float32 1e-5 relative to the scale; for
16-bit inputs the kernel's output may differ from the reference by the final rounding (2 ulp); when
the residual is stored in 16 bits its backward recomputes from the rounded sum (as upstream), so
gradients get 2^-5 relative to their scale.
"""

import pytest
import torch

from causal_conv1d.kernel_infra import triton_interpreted
from mamba_ssm.ops.triton import layernorm as ln
from mamba_ssm.ops.triton.layernorm import RMSNorm, layer_norm_fn, layer_norm_ref, rms_norm_fn

TRITON_RUNS = ln.triton is not None and (torch.cuda.is_available() or triton_interpreted())
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _err(a, b):
    return (a.float() - b.float()).abs().max().item()


def test_prenorm_residual_dtypes():
    x = torch.randn(2, 3, 8, dtype=torch.bfloat16)
    w = torch.ones(8)
    y, res = rms_norm_fn(x, w, None, prenorm=True, residual_in_fp32=True)
    assert y.dtype == torch.bfloat16 and res.dtype == torch.float32
    torch.testing.assert_close(res, x.float())
    y, res = rms_norm_fn(x, w, None, prenorm=True)
    assert res.dtype == torch.bfloat16
    r = torch.randn(2, 3, 8, dtype=torch.float32)
    _, res = rms_norm_fn(x, w, None, residual=r, prenorm=True)
    assert res.dtype == torch.float32  # the residual's own dtype wins
    torch.testing.assert_close(res, x.float() + r)


def test_reference_formulas():
    x, r = torch.randn(4, 16), torch.randn(4, 16)
    w, b = torch.randn(16), torch.randn(16)
    s = x + r
    rms = s * torch.rsqrt(s.pow(2).mean(-1, keepdim=True) + 1e-5) * w
    torch.testing.assert_close(layer_norm_ref(x, w, None, r, 1e-5, is_rms_norm=True), rms)
    torch.testing.assert_close(layer_norm_ref(x, w, b, r, 1e-5), torch.nn.functional.layer_norm(s, (16,), w, b, 1e-5))


def test_rmsnorm_module():
    norm = RMSNorm(8, eps=1e-5)
    assert norm.bias is None and torch.equal(norm.weight, torch.ones(8))
    x = torch.randn(3, 8)
    torch.testing.assert_close(norm(x), x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5))
    assert [name for name, _ in norm.named_parameters()] == ["weight"]


@pytest.mark.skipif(not TRITON_RUNS, reason="needs a GPU or TRITON_INTERPRET=1")
@pytest.mark.parametrize("is_rms_norm", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("has_residual", [False, True])
@pytest.mark.parametrize("prenorm,residual_in_fp32", [(False, False), (True, False), (True, True)])
def test_triton_matches_reference(monkeypatch, is_rms_norm, dtype, has_residual, prenorm, residual_in_fp32):
    monkeypatch.setenv("MAMBA_BACKEND", "triton")
    g = torch.Generator().manual_seed(0)
    shape, n = (3, 5, 48), 48
    x = torch.randn(shape, generator=g).to(DEVICE, dtype).requires_grad_()
    w = (1 + 0.1 * torch.randn(n, generator=g)).to(DEVICE).requires_grad_()
    b = None if is_rms_norm else torch.randn(n, generator=g).to(DEVICE).requires_grad_()
    r = torch.randn(shape, generator=g).to(DEVICE, dtype).requires_grad_() if has_residual else None
    args = (x, w, b, r, 1e-5, prenorm, residual_in_fp32, is_rms_norm)
    out = layer_norm_fn(*args)
    assert ln.dispatcher.last_used["layer_norm"] == "triton"
    ref = layer_norm_ref(*args)
    outs, refs = (out, ref) if prenorm else ((out,), (ref,))
    assert [o.dtype for o in outs] == [o.dtype for o in refs]
    douts = [torch.randn(o.shape, generator=g).to(DEVICE, o.dtype) for o in outs]
    leaves = [t for t in (x, w, b, r) if t is not None]
    grads = torch.autograd.grad(outs, leaves, douts)
    ref_grads = torch.autograd.grad(refs, leaves, douts)
    if dtype == torch.float32:
        for a, e in zip(outs + grads, refs + ref_grads, strict=True):
            assert _err(a, e) <= 1e-5 * max(1.0, e.abs().max().item())
        return
    for a, e in zip(outs, refs, strict=True):
        assert _err(a, e) <= 2 * 2**-7 * max(1.0, e.abs().max().item())
    for a, e in zip(grads, ref_grads, strict=True):
        assert _err(a, e) <= 2**-5 * max(1.0, e.abs().max().item())


def test_forcing_the_pytorch_path(monkeypatch):
    monkeypatch.setenv("MAMBA_BACKEND", "ref")
    rms_norm_fn(torch.randn(2, 8), torch.ones(8), None)
    assert ln.dispatcher.last_used["layer_norm"] == "ref"
