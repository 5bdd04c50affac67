"""The Mamba mixer and the residual Block: parameter layout, both scan directions on every path,
backend independence, fused add-norm, initialisation and decoding."""

import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

import mamba_ssm
from causal_conv1d import causal_conv1d_ref
from causal_conv1d import dispatcher as conv_dispatcher
from mamba_ssm import Block, InferenceParams, Mamba
from mamba_ssm.ops import selective_scan_interface as ssi
from mamba_ssm.ops.selective_scan_interface import selective_scan_ref

# Per-block keys of the released VideoMamba checkpoints, in state-dict order, with
# shapes as functions of D (d_model) and r = ceil(D / 16).
RELEASED_BLOCK_KEYS = [
    ("mixer.A_log", lambda D, r: (2 * D, 16)),
    ("mixer.D", lambda D, r: (2 * D,)),
    ("mixer.A_b_log", lambda D, r: (2 * D, 16)),
    ("mixer.D_b", lambda D, r: (2 * D,)),
    ("mixer.in_proj.weight", lambda D, r: (4 * D, D)),
    ("mixer.conv1d.weight", lambda D, r: (2 * D, 1, 4)),
    ("mixer.conv1d.bias", lambda D, r: (2 * D,)),
    ("mixer.x_proj.weight", lambda D, r: (r + 32, 2 * D)),
    ("mixer.dt_proj.weight", lambda D, r: (2 * D, r)),
    ("mixer.dt_proj.bias", lambda D, r: (2 * D,)),
    ("mixer.conv1d_b.weight", lambda D, r: (2 * D, 1, 4)),
    ("mixer.conv1d_b.bias", lambda D, r: (2 * D,)),
    ("mixer.x_proj_b.weight", lambda D, r: (r + 32, 2 * D)),
    ("mixer.dt_proj_b.weight", lambda D, r: (2 * D, r)),
    ("mixer.dt_proj_b.bias", lambda D, r: (2 * D,)),
    ("mixer.out_proj.weight", lambda D, r: (D, 2 * D)),
    ("norm.weight", lambda D, r: (D,)),
]


def _run(module, x, backend, check_backend=True):
    """Output and gradients (input + every parameter) of `module` on backend 'ref' or 'kernel'."""
    x = x.detach().requires_grad_()
    ssi.dispatcher.last_used.clear()
    if backend == "ref":
        with conv_dispatcher.force("ref"), ssi.dispatcher.force("ref"):
            out = module(x)
        assert ssi.dispatcher.last_used.get("selective_scan", "ref") == "ref"
    else:
        out = module(x)
        if check_backend:
            assert ssi.dispatcher.last_used["selective_scan"] == "cpu", mamba_ssm.dispatcher.describe()
            assert conv_dispatcher.last_used["causal_conv1d"] == "cpu"
    out = out[0] + out[1] if isinstance(out, tuple) else out
    dout = torch.randn(out.shape, generator=torch.Generator().manual_seed(7))
    params = [x] + [p for p in module.parameters()]
    grads = torch.autograd.grad(out, params, dout, allow_unused=True)
    names = ["input"] + [n.removeprefix("m.") for n, _ in module.named_parameters()]
    return out, dict(zip(names, grads, strict=True))


def _block(dim: int, layer_idx: int = 0, fused_add_norm: bool = True) -> Block:
    """A block as the VideoMamba backbone builds it: RMSNorm fused with the add, fp32 residual."""
    return Block(
        dim,
        partial(Mamba, layer_idx=layer_idx),
        norm_cls=partial(mamba_ssm.RMSNorm, eps=1e-5),
        fused_add_norm=fused_add_norm,
        residual_in_fp32=True,
    )


def _assert_same(a, b, rtol=1e-4):
    out_a, grads_a = a
    out_b, grads_b = b
    torch.testing.assert_close(out_a, out_b, rtol=rtol, atol=rtol)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        ga, gb = grads_a[name], grads_b[name]
        assert (ga is None) == (gb is None), name
        if ga is not None:
            scale = gb.abs().max().clamp_min(1e-3)
            assert (ga - gb).abs().max() <= rtol * scale, f"{name}: {(ga - gb).abs().max():.3g} vs scale {scale:.3g}"


@pytest.mark.parametrize("D", [192, 384, 576, 768])
def test_block_state_dict_matches_released_checkpoints(D):
    block = _block(D)
    r = math.ceil(D / 16)
    got = [(k, tuple(v.shape)) for k, v in block.state_dict().items()]
    assert got == [(k, shape(D, r)) for k, shape in RELEASED_BLOCK_KEYS]
    assert block.mixer.A_log.dtype == torch.float32 and block.mixer.A_b_log.dtype == torch.float32


def test_no_weight_decay_and_dt_init_for_both_directions():
    torch.manual_seed(0)
    m = Mamba(64, dt_min=0.001, dt_max=0.1)
    for name in ("A_log", "A_b_log", "D", "D_b"):
        assert getattr(m, name)._no_weight_decay, name
    std = m.dt_rank**-0.5
    for proj in (m.dt_proj, m.dt_proj_b):
        dt = F.softplus(proj.bias)
        assert proj.bias._no_reinit
        assert dt.min() >= 0.001 * 0.999 and dt.max() <= 0.1 * 1.001
        assert proj.weight.abs().max() <= std
        assert proj.weight.std() > std / 3  # not the generic trunc-normal(0.02) init
    torch.testing.assert_close(m.A_log, torch.log(torch.arange(1, 17.0)).repeat(128, 1))


def _by_hand(m, x):
    """Forward direction + the whole mixer on the flipped sequence flipped back, from the references."""
    seqlen = x.shape[1]
    xz = rearrange(m.in_proj(x), "b l d -> b d l")

    def direction(xz, conv, x_proj, dt_proj, A_log, D):
        u, z = xz.chunk(2, dim=1)
        u = causal_conv1d_ref(u, conv.weight.squeeze(1), conv.bias, "silu")
        dt, B, C = torch.split(x_proj(rearrange(u, "b d l -> b l d")), [m.dt_rank, m.d_state, m.d_state], dim=-1)
        delta = rearrange(F.linear(dt, dt_proj.weight), "b l d -> b d l")
        return selective_scan_ref(
            u,
            delta,
            -torch.exp(A_log),
            rearrange(B, "b l n -> b n l"),
            rearrange(C, "b l n -> b n l"),
            D,
            z,
            dt_proj.bias,
            delta_softplus=True,
        )

    y = direction(xz, m.conv1d, m.x_proj, m.dt_proj, m.A_log, m.D)
    if m.bimamba:
        y_b = direction(xz.flip(-1), m.conv1d_b, m.x_proj_b, m.dt_proj_b, m.A_b_log, m.D_b).flip(-1)
        y = (y + y_b) / 2 if m.divide_out else y + y_b
    assert y.shape[-1] == seqlen
    return m.out_proj(rearrange(y, "b d l -> b l d"))


@pytest.mark.parametrize("backend", ["ref", "kernel"])
@pytest.mark.parametrize("use_fast_path", [True, False])
@pytest.mark.parametrize("divide_out", [False, True])
def test_bidirectional_mixer_equals_forward_plus_flipped_backward(backend, use_fast_path, divide_out):
    torch.manual_seed(0)
    m = Mamba(24, d_state=8, use_fast_path=use_fast_path, divide_out=divide_out)
    x = torch.randn(2, 13, 24)
    expected = _run(_ByHand(m), x, "ref")
    _assert_same(_run(m, x, backend), expected)


class _ByHand(nn.Module):
    """Wraps `_by_hand` as a module whose parameters are m's (named "m.<name>")."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return _by_hand(self.m, x)


def test_backward_direction_matters():
    """Guard against a path that silently drops the backward scan (the original's CPU path did)."""
    torch.manual_seed(0)
    m = Mamba(16, d_state=4)
    x = torch.randn(1, 9, 16)
    out = m(x)
    with torch.no_grad():
        m.D_b.mul_(3.0)
    assert not torch.allclose(out, m(x))
    # The last token sees the future only through the backward direction.
    x2 = x.clone()
    x2[:, -1] += 1.0
    assert not torch.allclose(m(x)[:, 0], m(x2)[:, 0])


@pytest.mark.parametrize("bimamba", [True, False])
def test_fast_and_slow_paths_agree(bimamba):
    torch.manual_seed(0)
    fast = Mamba(32, bimamba=bimamba)
    slow = Mamba(32, bimamba=bimamba, use_fast_path=False)
    slow.load_state_dict(fast.state_dict())
    x = torch.randn(2, 21, 32)
    _assert_same(_run(fast, x, "kernel"), _run(slow, x, "kernel"))


class _Stack(nn.Module):
    def __init__(self, depth, dim, fused_add_norm=True):
        super().__init__()
        self.layers = nn.ModuleList(_block(dim, i, fused_add_norm) for i in range(depth))
        self.norm_f = mamba_ssm.RMSNorm(dim)

    def forward(self, x):
        residual = None
        for layer in self.layers:
            x, residual = layer(x, residual)
        return mamba_ssm.rms_norm_fn(
            x, self.norm_f.weight, None, residual=residual, prenorm=False, residual_in_fp32=True, eps=self.norm_f.eps
        )


def test_block_stack_is_backend_independent():
    """A bidirectional Block stack gives the same output and gradients with the reference and the C++ kernels."""
    torch.manual_seed(0)
    stack = _Stack(3, 32)
    x = torch.randn(2, 1 + 2 * 9, 32)  # a tiny "video": cls + 2 frames of 3x3 patches
    _assert_same(_run(stack, x, "kernel"), _run(stack, x, "ref"))


def test_fused_add_norm_equals_unfused_block():
    torch.manual_seed(0)
    fused = _Stack(2, 16, fused_add_norm=True)
    plain = _Stack(2, 16, fused_add_norm=False)
    plain.load_state_dict(fused.state_dict())
    x = torch.randn(2, 10, 16)
    h, r = fused.layers[0](x)
    h2, r2 = plain.layers[0](x)
    assert r.dtype == r2.dtype == torch.float32
    torch.testing.assert_close((h, r), (h2, r2))
    h, r = fused.layers[1](h, r)
    h2, r2 = plain.layers[1](h2, r2)
    torch.testing.assert_close((h, r), (h2, r2))


def test_unidirectional_decoding_matches_forward():
    torch.manual_seed(0)
    m = Mamba(16, d_state=4, bimamba=False, layer_idx=0)
    x = torch.randn(2, 11, 16)
    full = m(x)
    params = InferenceParams(max_seqlen=11, max_batch_size=2)
    prefix = m(x[:, :5], inference_params=params)
    torch.testing.assert_close(prefix, full[:, :5], rtol=1e-4, atol=1e-5)
    steps = []
    for t in range(5, 11):
        params.seqlen_offset = t
        steps.append(m(x[:, t : t + 1], inference_params=params))
    torch.testing.assert_close(torch.cat(steps, dim=1), full[:, 5:], rtol=1e-4, atol=1e-5)


def test_bidirectional_decoding_is_a_clear_error():
    m = Mamba(16, layer_idx=0)
    conv_state, ssm_state = m.allocate_inference_cache(1, 4)
    with pytest.raises(RuntimeError, match="whole sequence"):
        m.step(torch.randn(1, 1, 16), conv_state, ssm_state)
    with pytest.raises(RuntimeError, match="whole"):
        m(torch.randn(1, 4, 16), inference_params=InferenceParams(4, 1))


@pytest.mark.parametrize("conv_backend", ["ref", "cpu"])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_fused_function_plumbing_with_reference_kernels(conv_backend, bidirectional):
    """MambaInnerFn with the reference scan kernels equals the reference mixer: checks the fused
    forward/backward (recomputation, x_proj/dt_proj/out_proj gradients, the reverse direction)
    independently of any C++ scan kernel."""
    torch.manual_seed(0)
    m = Mamba(16, d_state=4, bias=True)
    xz = torch.randn(2, 2 * m.d_inner, 9, requires_grad=True)
    A, A_b = -torch.exp(m.A_log), -torch.exp(m.A_b_log)
    B_bias, C_bias = torch.randn(4, requires_grad=True), torch.randn(4, requires_grad=True)
    fwd = (
        m.conv1d.weight.squeeze(1),
        m.conv1d.bias,
        m.x_proj.weight,
        m.dt_proj.weight,
        A,
        m.D,
        m.dt_proj.bias,
        B_bias,
        C_bias,
    )
    bwd = (
        m.conv1d_b.weight.squeeze(1),
        m.conv1d_b.bias,
        m.x_proj_b.weight,
        m.dt_proj_b.weight,
        A_b,
        m.D_b,
        m.dt_proj_b.bias,
        B_bias,
        C_bias,
    )
    params = fwd + (bwd if bidirectional else ())
    fused = ssi.MambaInnerFn.apply(xz, m.out_proj.weight, m.out_proj.bias, True, False, conv_backend, "ref", *params)
    if bidirectional:
        ref = ssi.bimamba_inner_ref(
            xz,
            m.conv1d.weight,
            m.conv1d.bias,
            m.x_proj.weight,
            m.dt_proj.weight,
            m.out_proj.weight,
            m.out_proj.bias,
            A,
            A_b,
            None,
            None,
            m.D,
            m.dt_proj.bias,
            B_bias,
            C_bias,
            True,
            m.conv1d_b.weight,
            m.conv1d_b.bias,
            m.x_proj_b.weight,
            m.dt_proj_b.weight,
            m.D_b,
            m.dt_proj_b.bias,
        )
    else:
        ref = ssi.mamba_inner_ref(
            xz,
            m.conv1d.weight,
            m.conv1d.bias,
            m.x_proj.weight,
            m.dt_proj.weight,
            m.out_proj.weight,
            m.out_proj.bias,
            A,
            None,
            None,
            m.D,
            m.dt_proj.bias,
            B_bias,
            C_bias,
        )
    torch.testing.assert_close(fused, ref)
    leaves = [xz, B_bias, C_bias] + list(m.parameters())
    dout = torch.randn_like(ref)
    got = torch.autograd.grad(fused, leaves, dout, retain_graph=True, allow_unused=True)
    want = torch.autograd.grad(ref, leaves, dout, allow_unused=True)
    for g, w in zip(got, want, strict=True):
        assert (g is None) == (w is None)
        if g is not None:
            torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)


def test_bf16_autocast_step_is_finite_and_close():
    torch.manual_seed(0)
    stack = _Stack(2, 32)
    x = torch.randn(2, 19, 32)
    ref = stack(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = stack(x)
    out.float().sum().backward()
    assert torch.isfinite(out.float()).all()
    assert all(torch.isfinite(p.grad).all() for p in stack.parameters() if p.grad is not None)
    assert (out.float() - ref).abs().max() < 0.1 * ref.abs().max()


def test_float64_and_empty_sequences_run_on_the_reference():
    """Kernels take 32/16-bit inputs; float64 (e.g. for gradcheck) is routed to the reference."""
    from causal_conv1d import causal_conv1d_fn
    from mamba_ssm import selective_scan_fn

    u = torch.randn(1, 4, 6, dtype=torch.float64)
    B = torch.randn(1, 2, 6, dtype=torch.float64)
    out = selective_scan_fn(u, u.abs(), -torch.rand(4, 2, dtype=torch.float64), B, B)
    assert out.dtype == torch.float64 and ssi.dispatcher.last_used["selective_scan"] == "ref"
    causal_conv1d_fn(u, torch.randn(4, 3, dtype=torch.float64))
    assert conv_dispatcher.last_used["causal_conv1d"] == "ref"
    empty = torch.randn(1, 4, 0)
    y, last = selective_scan_ref(empty, empty, -torch.rand(4, 2), empty[:, :2], empty[:, :2], return_last_state=True)
    assert y.shape == (1, 4, 0) and torch.equal(last, torch.zeros(1, 4, 2))


def test_torch_compile_traces_the_mixer_without_graph_breaks():
    """The kernels are torch.library custom ops: a bidirectional stack compiles as one graph
    (fullgraph=True fails on any break), forward and backward, and matches eager."""
    torch.manual_seed(0)
    stack = _Stack(2, 32)
    x = torch.randn(2, 17, 32)
    eager, eager_grads = _run(stack, x, "kernel")
    torch._dynamo.reset()
    compiled = torch.compile(stack, backend="aot_eager", fullgraph=True)
    out, grads = _run(compiled, x, "kernel", check_backend=False)  # a compiled graph records nothing
    torch.testing.assert_close(out, eager)
    grads = {name.removeprefix("_orig_mod."): grad for name, grad in grads.items()}
    assert grads.keys() == eager_grads.keys()
    for name, grad in eager_grads.items():
        torch.testing.assert_close(grads[name], grad, msg=name)


@pytest.mark.parametrize("no_grad", [torch.no_grad, torch.inference_mode])
def test_inference_keeps_nothing_for_a_backward(no_grad, monkeypatch):
    """Without autograd the fused mixer runs its forward alone: no autograd.Function (so nothing is
    saved) and the scans keep their last state only, not the per-chunk states the backward reads.
    The output is the training-mode output."""
    torch.manual_seed(0)
    stack = _Stack(2, 32)
    x = torch.randn(2, 150, 32)  # 3 chunks of the CPU kernel
    kernels = ssi.dispatcher.kernels("cpu")
    chunk_counts = []
    real_fwd = kernels.fwd

    def recording_fwd(*args):
        chunk_counts.append(args[-1].shape[2])  # states: (batch, dim, chunks, N)
        return real_fwd(*args)

    monkeypatch.setattr(kernels, "fwd", recording_fwd)
    train_out = stack(x)
    assert set(chunk_counts) == {kernels.num_chunks(150)} and len(chunk_counts) == 4  # 2 blocks x 2 directions
    chunk_counts.clear()

    def no_autograd_function(*args):
        raise AssertionError("MambaInnerFn.apply ran without autograd")

    monkeypatch.setattr(ssi.MambaInnerFn, "apply", no_autograd_function)
    with no_grad():
        out = stack(x)
    assert set(chunk_counts) == {1} and len(chunk_counts) == 4
    torch.testing.assert_close(out, train_out.detach(), rtol=0, atol=0)


def test_selective_scan_fn_inference_returns_the_last_state():
    """selective_scan_fn under no_grad: the kernel keeps only the last state, which it returns."""
    g = torch.Generator().manual_seed(0)
    u, delta = torch.randn(2, 8, 150, generator=g), torch.rand(2, 8, 150, generator=g)
    A, B, C = -torch.rand(8, 4, generator=g), torch.randn(2, 4, 150, generator=g), torch.randn(2, 4, 150, generator=g)
    ref_out, ref_last = ssi.selective_scan_ref(u, delta, A, B, C, return_last_state=True)
    for reverse in (False, True):
        with torch.no_grad():
            out, last = ssi.selective_scan_fn(u, delta, A, B, C, return_last_state=True, reverse=reverse)
        assert ssi.dispatcher.last_used["selective_scan"] == "cpu"
        if not reverse:
            torch.testing.assert_close(out, ref_out)
            torch.testing.assert_close(last, ref_last)
        with torch.enable_grad():
            out_g, last_g = ssi.selective_scan_fn(u, delta, A, B, C, return_last_state=True, reverse=reverse)
        assert torch.equal(out, out_g) and torch.equal(last, last_g)
