"""The CUDA selective-scan kernel (`mamba_ssm._C_cuda`) against the reference, forward and every gradient.

Each test runs on two backends:
- ``cuda``: the built kernels on a GPU (marker ``gpu``; skipped without one);
- ``emulated``: the same CUDA sources compiled for the CPU emulator of causal_conv1d.kernel_infra.testing
  (every CUDA thread a fiber, real barriers and shuffles), so that the kernels' indexing, chunking,
  masking and reductions are checked in CI without a GPU (marker ``slow``; CUDA_EMU_TESTS=0 skips).
Tests that need GPU memory (2^31 elements, 65,536+ channels, bf16 training) run on ``cuda`` only.
Speed is not tested: `benchmarks/bench_ops.py --device cuda` times the kernels and prints each one's
ratio to its roofline floor (at VideoMamba-S 16x224, b32 x 768 x 3137 x 16, among its presets).

Tolerances. The ground truth is `selective_scan_ref` in float32 on the same (rounded) inputs.
float32 inputs: the tolerances of upstream mamba's selective-scan tests: out rtol 6e-4 / atol 2e-3, du 2x,
ddelta rtol 5x / atol 10x, dA atol 5x, dB/dC as out, dD/ddelta_bias as out (z is present).
float16/bfloat16 inputs: either those upstream tolerances (fp16 3e-3/5e-3, bf16 3e-2/5e-2, same
multipliers) hold, or the error is at most twice the error of the same computation done by
PyTorch in the input dtype plus atol (the rule of upstream's newer Triton tests):
    max|kernel - ref32| <= 2 * max|torch_in_dtype - ref32| + atol.
"""

from __future__ import annotations

import contextlib
import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F

from causal_conv1d import dispatcher as conv_dispatcher
from causal_conv1d.kernel_infra.testing.kernel_backends import backend_fixtures
from mamba_ssm.ops.selective_scan_interface import dispatcher, selective_scan_fn

DISPATCHERS = [dispatcher, conv_dispatcher]


kernel, gpu, _exact_float32 = backend_fixtures(DISPATCHERS)


# Upstream (rtol, atol) for the output, per input dtype; gradient multipliers below.
UPSTREAM = {torch.float32: (6e-4, 2e-3), torch.float16: (3e-3, 5e-3), torch.bfloat16: (3e-2, 5e-2)}
GRAD_SCALE = {"du": (2, 2), "ddelta": (5, 10), "dA": (1, 5)}  # (rtol x, atol x)
RULE_ATOL = {torch.float16: 1e-2, torch.bfloat16: 5e-2}
NAMES = ("du", "ddelta", "dA", "dB", "dC", "dD", "dz", "ddelta_bias")


def _inputs(batch, dim, dstate, seqlen, groups, dtype, device, seed=0, bias_scale=0.5, has_z=True, has_d=True,
            has_bias=True):  # fmt: skip
    g = torch.Generator().manual_seed(seed)
    low = lambda t: t.to(device=device, dtype=dtype)
    f32 = lambda t: t.to(device=device)
    u = low(torch.randn(batch, dim, seqlen, generator=g))
    delta = low(0.5 * torch.rand(batch, dim, seqlen, generator=g))
    A = f32(-0.5 * torch.rand(dim, dstate, generator=g))
    B = low(torch.randn(batch, groups, dstate, seqlen, generator=g))
    C = low(torch.randn(batch, groups, dstate, seqlen, generator=g))
    D = f32(torch.randn(dim, generator=g)) if has_d else None
    z = low(torch.randn(batch, dim, seqlen, generator=g)) if has_z else None
    delta_bias = f32(bias_scale * torch.rand(dim, generator=g)) if has_bias else None
    dout = low(torch.randn(batch, dim, seqlen, generator=g))
    return (u, delta, A, B, C, D, z, delta_bias), dout


def _run(args, dout, softplus, reverse, ctx):
    """Output, last state and gradients (name -> tensor) of selective_scan_fn under `ctx`."""
    # detach() keeps the strides (a clone would make sliced views contiguous).
    leaves = [None if t is None else t.detach().requires_grad_() for t in args]
    u, delta, A, B, C, D, z, delta_bias = leaves
    with ctx:  # the backward too: it looks its kernel up by backend name
        out, last = selective_scan_fn(u, delta, A, B, C, D, z, delta_bias, softplus, return_last_state=True,
                                      reverse=reverse)  # fmt: skip
        grads = _named_grads(out, leaves, dout)
    return out.detach(), last.detach(), grads


def _named_grads(out, leaves, dout):
    """Gradients of `out` wrt the given (non-None) leaves, keyed by NAMES."""
    present = [(name, t) for name, t in zip(NAMES, leaves, strict=True) if t is not None]
    grads = torch.autograd.grad(out, [t for _, t in present], dout)
    return {name: grad for (name, _), grad in zip(present, grads, strict=True)}


def _scan_in_dtype(args, softplus, reverse):
    """The scan computed by PyTorch entirely in the input dtype (for the low-precision rule)."""
    u, delta, A, B, C, D, z, delta_bias = args
    dt = u.dtype
    flip = (lambda t: None if t is None else t.flip(-1)) if reverse else (lambda t: t)
    u, delta, B, C, z = flip(u), flip(delta), flip(B), flip(C), flip(z)
    if delta_bias is not None:
        delta = delta + delta_bias.to(dt)[:, None]
    if softplus:
        delta = F.softplus(delta)
    rep = u.shape[1] // B.shape[1]
    B, C = B.repeat_interleave(rep, dim=1), C.repeat_interleave(rep, dim=1)
    decay = torch.exp(delta.unsqueeze(2) * A.to(dt)[None, :, :, None])
    drive = (delta * u).unsqueeze(2) * B
    h = torch.zeros_like(decay[..., 0])
    ys = []
    for t in range(u.shape[-1]):
        h = decay[..., t] * h + drive[..., t]
        ys.append((h * C[..., t]).sum(-1))
    y = torch.stack(ys, dim=-1)
    if D is not None:
        y = y + D.to(dt)[:, None] * u
    if z is not None:
        y = y * F.silu(z)
    return flip(y), h


def _run_in_dtype(args, dout, softplus, reverse):
    leaves = [None if t is None else t.detach().requires_grad_() for t in args]
    out, last = _scan_in_dtype(leaves, softplus, reverse)
    return out.detach(), last.detach(), _named_grads(out, leaves, dout)


def _tolerance(name, dtype):
    rtol, atol = UPSTREAM[dtype]
    rs, as_ = GRAD_SCALE.get(name, (1, 1))
    return rtol * rs, atol * as_


def _check(name, actual, expected, dtype, lowp=None):
    actual, expected = actual.float(), expected.float()
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert torch.isfinite(actual).all(), f"{name}: non-finite values"
    rtol, atol = _tolerance(name, dtype)
    if torch.allclose(actual, expected, rtol=rtol, atol=atol):
        return
    err = (actual - expected).abs().max().item()
    if lowp is not None:
        bound = 2 * (lowp.float() - expected).abs().max().item() + RULE_ATOL[dtype]
        assert err <= bound, f"{name}: max error {err:.3g} > 2 x PyTorch-{dtype} error + atol = {bound:.3g}"
        return
    worst = ((actual - expected).abs() - atol - rtol * expected.abs()).max().item()
    raise AssertionError(f"{name}: max error {err:.3g} exceeds rtol {rtol:g} / atol {atol:g} (by {worst:.3g})")


def _compare(kernel, args, dout, softplus=True, reverse=False, check_lowp=True):
    dtype = args[0].dtype
    out, last, grads = _run(args, dout, softplus, reverse, kernel.use())
    f32 = [None if t is None else t.float() for t in args]
    ref_out, ref_last, ref_grads = _run(f32, dout.float(), softplus, reverse, dispatcher.force("ref"))
    lowp = None
    if dtype != torch.float32 and check_lowp:
        lowp = _run_in_dtype(args, dout, softplus, reverse)
    assert out.dtype == dtype
    _check("out", out, ref_out, dtype, None if lowp is None else lowp[0])
    _check("last_state", last, ref_last, dtype, None if lowp is None else lowp[1])
    for name, ref in ref_grads.items():
        assert grads[name].dtype == args[NAMES.index(name)].dtype, name
        _check(name, grads[name], ref, dtype, None if lowp is None else lowp[2][name])
    return out, grads


# Lengths across the chunk boundaries: full chunks are 256 steps, a tail of at most 192 steps is
# cut into 64-step chunks; plus upstream's 2048-step chunk and VideoMamba's 1 + 16 * 196.
CHUNK_LENGTHS = [1, 2, 63, 64, 65, 127, 128, 129, 192, 193, 255, 256, 257, 449, 2047, 2048, 2049, 3137, 4097]


def test_chunk_geometry(kernel):
    module = kernel.modules["mamba_ssm"]
    for seqlen, chunks in [(0, 1), (1, 1), (64, 1), (65, 2), (192, 3), (193, 1), (256, 1), (257, 2), (3137, 14)]:
        assert module.num_chunks(seqlen) == chunks, seqlen
    plan = module.launch_plan(768, 1, 16, 3137)
    assert plan["fwd_warps"] == 8 and plan["bwd_warps"] == 8 and plan["num_chunks"] == 14
    assert plan["fwd_tiles"] == 2  # the next chunk's B/C tile is staged while one computes


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("seqlen", CHUNK_LENGTHS)
@pytest.mark.parametrize("reverse", [False, True])
def test_matches_reference(kernel, dtype, seqlen, reverse):
    args, dout = _inputs(2, 4, 8, seqlen, 1, dtype, kernel.device, seed=seqlen)
    _compare(kernel, args, dout, reverse=reverse)


@pytest.mark.parametrize("groups", [1, 2, 4])
@pytest.mark.parametrize("reverse", [False, True])
def test_grouped_B_C(kernel, groups, reverse):
    args, dout = _inputs(2, 8, 8, 300, groups, torch.float32, kernel.device, seed=groups)
    _compare(kernel, args, dout, reverse=reverse)


@pytest.mark.parametrize(
    "options",
    [dict(has_z=False), dict(has_d=False), dict(has_bias=False), dict(has_z=False, has_d=False, has_bias=False)],
)
@pytest.mark.parametrize("softplus", [True, False])
def test_optional_inputs(kernel, options, softplus):
    args, dout = _inputs(2, 4, 8, 333, 1, torch.float32, kernel.device, seed=7, **options)
    _compare(kernel, args, dout, softplus=softplus, reverse=bool(options.get("has_z", True)))


@pytest.mark.parametrize("seqlen", [65, 129, 301, 1023])
@pytest.mark.parametrize("reverse", [False, True])
def test_odd_lengths_bias_softplus_padding(kernel, seqlen, reverse):
    """Padding steps must stay masked even when softplus(0 + bias) is large (mamba#368)."""
    args, dout = _inputs(2, 4, 8, seqlen, 1, torch.float32, kernel.device, seed=3, bias_scale=3.0)
    _compare(kernel, args, dout, reverse=reverse)


@pytest.mark.parametrize("seqlen", [300, 512])  # odd rows (element loads) and 16-byte-aligned rows (vector loads)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_strided_inputs(kernel, seqlen, dtype):
    """The layouts of the fused mixer: z a half of xz, delta a (d, b*l) product viewed as (b, d, l),
    B/C slices of wider tensors; every tensor with unit stride along L only."""
    batch, dim, dstate = 2, 8, 4
    args, dout = _inputs(batch, dim, dstate, seqlen, 1, dtype, kernel.device, seed=11)
    u, delta, A, B, C, D, z, delta_bias = args
    xz = torch.cat([torch.randn_like(z), z], dim=1)
    z_view = xz[:, dim:]
    delta_view = delta.permute(1, 0, 2).reshape(dim, batch * seqlen).view(dim, batch, seqlen).permute(1, 0, 2)
    wide_B = torch.cat([B, torch.randn_like(B)], dim=2)[:, :, :dstate]
    wide_C = torch.cat([torch.randn_like(C), C], dim=1)[:, 1:]
    assert not z_view.is_contiguous() and not delta_view.is_contiguous() and not wide_B.is_contiguous()
    assert delta_view.stride() == (seqlen, batch * seqlen, 1)
    _compare(kernel, (u, delta_view, A, wide_B, wide_C, D, z_view, delta_bias), dout, reverse=True)


def test_B_C_float32_with_low_precision_input(kernel):
    args, dout = _inputs(2, 4, 8, 200, 2, torch.bfloat16, kernel.device, seed=5)
    u, delta, A, B, C, D, z, delta_bias = args
    out, grads = _compare(kernel, (u, delta, A, B.float(), C.float(), D, z, delta_bias), dout, check_lowp=False)
    assert grads["dB"].dtype == torch.float32


@pytest.mark.parametrize("reverse", [False, True])
def test_deterministic_backward(kernel, reverse, monkeypatch):
    """dB/dC sums over several blocks per group: bit-identical runs in deterministic mode, and the
    same values (to rounding) as the default atomic mode."""
    dim = 64  # 8 warps per block -> 8 blocks share each (batch, group)
    args, dout = _inputs(3, dim, 8, 700 if kernel.emulated else 3137, 1, torch.float32, kernel.device, seed=9)
    assert kernel.modules["mamba_ssm"].launch_plan(dim, 1, 8, 700)["bwd_blocks_per_group"] > 1
    monkeypatch.setenv("MAMBA_DETERMINISTIC", "1")
    first = _run(args, dout, True, reverse, kernel.use())
    second = _run(args, dout, True, reverse, kernel.use())
    for name in first[2]:
        assert torch.equal(first[2][name], second[2][name]), f"{name} differs between deterministic runs"
    monkeypatch.delenv("MAMBA_DETERMINISTIC")
    atomic = _run(args, dout, True, reverse, kernel.use())
    for name in first[2]:
        torch.testing.assert_close(atomic[2][name], first[2][name], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("warps", ["1", "2", "16"])
def test_backward_block_sizes(kernel, warps, monkeypatch):
    """MAMBA_CUDA_BWD_WARPS (channels per backward block) changes only how dB/dC are summed."""
    monkeypatch.setenv("MAMBA_CUDA_BWD_WARPS", warps)
    assert kernel.modules["mamba_ssm"].launch_plan(64, 2, 8, 300)["bwd_warps"] == int(warps)
    args, dout = _inputs(2, 64, 8, 300, 2, torch.float32, kernel.device, seed=12)
    _compare(kernel, args, dout, reverse=warps == "2")


def test_torch_deterministic_flag_selects_workspace(kernel):
    dim = 32
    args, dout = _inputs(2, dim, 4, 257, 1, torch.float32, kernel.device, seed=2)
    old = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        assert kernel.modules["mamba_ssm"].launch_plan(dim, 1, 4, 257)["deterministic"]
        first = _run(args, dout, True, False, kernel.use())
        second = _run(args, dout, True, False, kernel.use())
    finally:
        torch.use_deterministic_algorithms(old)
    for name in first[2]:
        assert torch.equal(first[2][name], second[2][name]), name


@pytest.mark.gpu
def test_many_channels(gpu):
    """dim > 65,535: channels are not a grid dimension."""
    dim = 65536 + 64
    args, dout = _inputs(1, dim, 4, 96, 1, torch.float32, gpu.device, seed=4)
    _compare(gpu, args, dout, reverse=True)


@pytest.mark.gpu
def test_offsets_beyond_int32(gpu):
    """A (1, 65,544, 32,769) bf16 scan: 2^31 + 2^16 + ... elements, so row offsets of the last
    channels overflow int32. Those channels must equal the same channels scanned on their own."""
    dim, seqlen, dstate = 65536 + 8, 32768 + 1, 4
    need = 9 * dim * seqlen * 2 + (2 << 30)
    free, _ = torch.cuda.mem_get_info()
    if free < need:
        pytest.skip(f"needs ~{need / 2**30:.0f} GiB of free GPU memory")
    assert dim * seqlen > 2**31
    g = torch.Generator(device="cuda").manual_seed(0)
    bf = dict(device="cuda", dtype=torch.bfloat16)
    u = torch.randn(1, dim, seqlen, generator=g, **bf)
    delta = torch.rand(1, dim, seqlen, generator=g, **bf).mul_(0.5)
    z = torch.randn(1, dim, seqlen, generator=g, **bf)
    A = -0.5 * torch.rand(dim, dstate, device="cuda", generator=g)
    B = torch.randn(1, 1, dstate, seqlen, generator=g, **bf)
    C = torch.randn(1, 1, dstate, seqlen, generator=g, **bf)
    D = torch.randn(dim, device="cuda", generator=g)
    delta_bias = 0.5 * torch.rand(dim, device="cuda", generator=g)
    dout = torch.randn(1, dim, seqlen, generator=g, **bf)
    big = _run((u, delta, A, B, C, D, z, delta_bias), dout, True, True, gpu.use())
    tail = slice(dim - 8, dim)
    part = [u[:, tail], delta[:, tail], A[tail], B, C, D[tail], z[:, tail], delta_bias[tail]]
    small = _run([t.contiguous() for t in part], dout[:, tail].contiguous(), True, True, gpu.use())
    assert torch.equal(big[0][:, tail], small[0]) and torch.equal(big[1][:, tail], small[1])
    for name in ("du", "ddelta", "dz"):
        assert torch.equal(big[2][name][:, tail], small[2][name]), name
    for name in ("dA", "dD", "ddelta_bias"):
        assert torch.equal(big[2][name][tail], small[2][name]), name


# ---- the whole block ------------------------------------------------------------------------------


def _module_grads(module, x, ctx):
    x = x.detach().requires_grad_()
    with ctx:
        out = module(x)
        dout = torch.randn(out.shape, generator=torch.Generator().manual_seed(7)).to(out)
        grads = torch.autograd.grad(out, [x, *module.parameters()], dout)
    names = ["input"] + [n for n, _ in module.named_parameters()]
    return out.detach(), dict(zip(names, grads, strict=True))


@contextlib.contextmanager
def _reference_backends():
    with dispatcher.force("ref"), conv_dispatcher.force("ref"):
        yield


@pytest.mark.parametrize("seqlen", [64, 197])
def test_bidirectional_mamba_fast_path(kernel, seqlen):
    """mamba_ssm.Mamba (bimamba, fused fast path: reverse conv + reverse scan) with the CUDA kernels
    against the same module on the reference backends."""
    from mamba_ssm import Mamba

    torch.manual_seed(0)
    module = Mamba(d_model=32, d_state=8, bimamba=True, device=kernel.device)
    x = torch.randn(2, seqlen, 32, device=kernel.device)
    out, grads = _module_grads(module, x, kernel.use())
    assert dispatcher.last_used["selective_scan"] == ("cpu" if kernel.emulated else "cuda")
    ref_out, ref_grads = _module_grads(module, x, _reference_backends())
    scale = ref_out.abs().max().clamp_min(1)
    assert (out - ref_out).abs().max() <= 1e-4 * scale
    for name, ref in ref_grads.items():
        tol = 1e-4 * ref.abs().max().clamp_min(1e-3) + 1e-6
        assert (grads[name] - ref).abs().max() <= tol, name


@pytest.mark.gpu
def test_bf16_autocast_training_step(gpu):
    """A few optimiser steps of a small stack of VideoMamba blocks under bf16 autocast, all on the
    CUDA kernels: finite loss and gradients, and the loss goes down."""
    from mamba_ssm import Block, Mamba, RMSNorm

    torch.manual_seed(0)
    blocks = torch.nn.ModuleList(
        Block(
            64,
            partial(Mamba, layer_idx=i, device="cuda"),
            norm_cls=partial(RMSNorm, device="cuda"),
            fused_add_norm=True,
            residual_in_fp32=True,
        )
        for i in range(4)
    )
    head = torch.nn.Linear(64, 64, device="cuda")
    opt = torch.optim.AdamW([*blocks.parameters(), *head.parameters()], lr=1e-3)
    x = torch.randn(4, 197, 64, device="cuda")
    target = torch.randn(4, 197, 64, device="cuda")
    losses = []
    with gpu.use():
        for _ in range(5):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                hidden, residual = x, None
                for block in blocks:
                    hidden, residual = block(hidden, residual)
                loss = F.mse_loss(head(hidden + residual).float(), target)
            opt.zero_grad()
            loss.backward()  # inside gpu.use(): the backward dispatches by backend name too
            for p in [*blocks.parameters(), *head.parameters()]:
                assert p.grad is None or torch.isfinite(p.grad).all()
            opt.step()
            losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert dispatcher.last_used["selective_scan"] == "cuda"
    assert losses[-1] < losses[0]
