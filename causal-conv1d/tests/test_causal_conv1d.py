"""causal_conv1d: every backend available on this machine against the float32 reference.

Tolerances (max abs error, relative to the output/gradient scale):
  float32 inputs: 1e-5 on outputs and input gradients, 1e-4 on weight/bias gradients (sums over
  batch x time); float16/bfloat16 inputs: the kernel computes in float32 from the same rounded
  inputs as the reference, so it may differ only by the final rounding: 1 ulp of the dtype
  (2^-7 bf16, 2^-10 fp16) relative, and 1e-4 on the float32 weight gradients.
"""

import warnings

import pytest
import torch
import torch.nn.functional as F

from causal_conv1d import causal_conv1d_fn, causal_conv1d_ref, causal_conv1d_update, dispatcher
from causal_conv1d.kernel_infra.testing import kernel_backends

LOW_PRECISION_RTOL = {torch.bfloat16: 2**-7, torch.float16: 2**-10}
LOW_PRECISION = pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])


def _close(actual, expected, rtol, name):
    scale = expected.float().abs().max().clamp_min(1.0)
    err = (actual.float() - expected.float()).abs().max()
    assert err <= rtol * scale, f"{name}: max error {err:.3g} > {rtol:.1g} * {scale:.3g}"


def _inputs(batch, dim, seqlen, width, dtype, has_bias, weight_dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, dim, seqlen, generator=g).to(dtype).requires_grad_()
    weight = (torch.randn(dim, width, generator=g) / width**0.5).to(weight_dtype).requires_grad_()
    bias = torch.randn(dim, generator=g).to(weight_dtype).requires_grad_() if has_bias else None
    return x, weight, bias


def _fwd_bwd(x, weight, bias, activation, reverse, backend, seed=1):
    """Output and input gradients for a random output gradient (all ones with seed=None)."""
    with dispatcher.force(backend):
        out = causal_conv1d_fn(x, weight, bias, activation, reverse=reverse)
        assert dispatcher.last_used["causal_conv1d"] == backend
    if seed is None:
        dout = torch.ones_like(out)
    else:
        dout = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed)).to(out.dtype)
    leaves = [t for t in (x, weight, bias) if t is not None]
    return out, torch.autograd.grad(out, leaves, dout)


KERNEL_BACKENDS = [b for b in ("cpu",) if dispatcher.available()[b]]


def test_cpu_kernel_is_built():
    assert dispatcher.available()["cpu"], dispatcher.describe()


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("width", [2, 3, 4])
@pytest.mark.parametrize("seqlen", [1, 2, 3, 8, 129, 2049])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("activation", [None, "silu"])
def test_fp32_matches_reference(backend, width, seqlen, reverse, activation):
    x, weight, bias = _inputs(2, 6, seqlen, width, torch.float32, has_bias=seqlen % 2 == 1)
    out, grads = _fwd_bwd(x, weight, bias, activation, reverse, backend)
    ref_out, ref_grads = _fwd_bwd(x, weight, bias, activation, reverse, "ref")
    _close(out, ref_out, 1e-5, "out")
    for name, grad, ref in zip(("dx", "dweight", "dbias"), grads, ref_grads, strict=False):
        _close(grad, ref, 1e-5 if name == "dx" else 1e-4, name)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@LOW_PRECISION
@pytest.mark.parametrize("weight_dtype", [torch.float32, "same"], ids=["fp32", "same"])
@pytest.mark.parametrize("reverse", [False, True], ids=["causal", "reverse"])
def test_low_precision_matches_reference(backend, dtype, weight_dtype, reverse):
    weight_dtype = dtype if weight_dtype == "same" else weight_dtype
    x, weight, bias = _inputs(2, 8, 77, 4, dtype, True, weight_dtype)
    out, grads = _fwd_bwd(x, weight, bias, "silu", reverse, backend)
    ref_out, ref_grads = _fwd_bwd(x, weight, bias, "silu", reverse, "ref")
    assert out.dtype == dtype and grads[1].dtype == weight_dtype
    _close(out, ref_out, LOW_PRECISION_RTOL[dtype], "out")
    _close(grads[0], ref_grads[0], LOW_PRECISION_RTOL[dtype], "dx")
    for name, grad, ref in zip(("dweight", "dbias"), grads[1:], ref_grads[1:], strict=True):
        rtol = LOW_PRECISION_RTOL[dtype] if weight_dtype != torch.float32 else 1e-4
        _close(grad, ref, rtol, name)


ISA_LEVELS = ["default", "avx2", "avx512"]


def _force_isa(isa: str, monkeypatch) -> None:
    """Run the CPU kernel's `isa` variant (CAUSAL_CONV1D_CPU_ISA); skip where this CPU lacks it."""
    kernels = dispatcher.kernels("cpu")
    monkeypatch.delenv("CAUSAL_CONV1D_CPU_ISA", raising=False)
    best = kernels.isa()
    if ISA_LEVELS.index(isa) > ISA_LEVELS.index(best):
        pytest.skip(f"this CPU runs at most {best}")
    monkeypatch.setenv("CAUSAL_CONV1D_CPU_ISA", isa)
    assert kernels.isa() == isa


@pytest.mark.slow
@pytest.mark.skipif(not dispatcher.available()["cpu"], reason="the CPU kernel is not built")
def test_avx512_copy_emulated(monkeypatch):
    """Where the CPU has no AVX-512, the AVX-512 copy's loops still run, built with
    -DCPU_SIMD_EMULATE_AVX512 (generic 16-wide vectors compiled for AVX2; cpu_simd.h's AVX-512
    intrinsics are not exercised)."""
    monkeypatch.delenv("CAUSAL_CONV1D_CPU_ISA", raising=False)
    best = dispatcher.kernels("cpu").isa()
    if best != "avx2":
        pytest.skip("AVX-512 runs natively here (test_every_instruction_set_*)" if best == "avx512" else "needs AVX2")
    emulated = kernel_backends.avx512_emulated_module("causal_conv1d")
    monkeypatch.setenv("CAUSAL_CONV1D_CPU_ISA", "avx512")
    assert emulated.isa() == "avx512"
    with kernel_backends.route([(dispatcher, emulated)], "cpu"):
        for seqlen, width, reverse, dtype in [
            (131, 4, False, torch.float32),
            (17, 3, True, torch.float32),
            (77, 4, True, torch.bfloat16),
            (40, 2, False, torch.float16),
        ]:
            x, weight, bias = _inputs(3, 20, seqlen, width, dtype, seqlen % 2 == 1, seed=seqlen)
            out, grads = _fwd_bwd(x, weight, bias, "silu", reverse, "cpu")
            ref_out, ref_grads = _fwd_bwd(x, weight, bias, "silu", reverse, "ref")
            rtol = 1e-5 if dtype == torch.float32 else LOW_PRECISION_RTOL[dtype]
            _close(out, ref_out, rtol, "out")
            for name, grad, ref in zip(("dx", "dweight", "dbias"), grads, ref_grads, strict=False):  # no bias: 2
                _close(grad, ref, rtol if name == "dx" else max(rtol, 1e-4), name)


# Each compiled variant of the CPU kernel (AVX-512, AVX2, baseline) against the reference: every
# width, both directions, with and without SiLU, each dtype, sequences shorter than a vector and
# with ragged tails.
@pytest.mark.skipif(not dispatcher.available()["cpu"], reason="the CPU kernel is not built")
@pytest.mark.parametrize("isa", ISA_LEVELS[::-1])
@pytest.mark.parametrize("seqlen", [1, 3, 9, 16, 17, 40, 131])
@pytest.mark.parametrize("width", [2, 3, 4])
@pytest.mark.parametrize("reverse", [False, True], ids=["causal", "reverse"])
@pytest.mark.parametrize("activation", [None, "silu"], ids=["linear", "silu"])
def test_every_instruction_set_fp32(isa, seqlen, width, reverse, activation, monkeypatch):
    _force_isa(isa, monkeypatch)
    x, weight, bias = _inputs(3, 5, seqlen, width, torch.float32, seqlen % 2 == 1, seed=seqlen)
    out, grads = _fwd_bwd(x, weight, bias, activation, reverse, "cpu")
    ref_out, ref_grads = _fwd_bwd(x, weight, bias, activation, reverse, "ref")
    _close(out, ref_out, 1e-5, "out")
    for name, grad, ref in zip(("dx", "dweight", "dbias"), grads, ref_grads, strict=False):
        _close(grad, ref, 1e-5 if name == "dx" else 1e-4, name)


@pytest.mark.skipif(not dispatcher.available()["cpu"], reason="the CPU kernel is not built")
@pytest.mark.parametrize("isa", ISA_LEVELS[::-1])
@LOW_PRECISION
@pytest.mark.parametrize("weight_dtype", ["fp32", "same"])
@pytest.mark.parametrize("reverse", [False, True], ids=["causal", "reverse"])
def test_every_instruction_set_low_precision(isa, dtype, weight_dtype, reverse, monkeypatch):
    _force_isa(isa, monkeypatch)
    weight_dtype = torch.float32 if weight_dtype == "fp32" else dtype
    x, weight, bias = _inputs(2, 8, 77, 4, dtype, True, weight_dtype)
    out, grads = _fwd_bwd(x, weight, bias, "silu", reverse, "cpu")
    ref_out, ref_grads = _fwd_bwd(x, weight, bias, "silu", reverse, "ref")
    _close(out, ref_out, LOW_PRECISION_RTOL[dtype], "out")
    _close(grads[0], ref_grads[0], LOW_PRECISION_RTOL[dtype], "dx")
    rtol = LOW_PRECISION_RTOL[dtype] if weight_dtype != torch.float32 else 1e-4
    for name, grad, ref in zip(("dweight", "dbias"), grads[1:], ref_grads[1:], strict=True):
        _close(grad, ref, rtol, name)


@pytest.mark.skipif(not dispatcher.available()["cpu"], reason="the CPU kernel is not built")
@pytest.mark.parametrize("isa", ISA_LEVELS[::-1])
@pytest.mark.parametrize("reverse", [False, True], ids=["causal", "reverse"])
def test_silu_saturates_like_the_reference(isa, reverse, monkeypatch):
    """Pre-activations far into both tails of SiLU (where exp under/overflows), and NaN."""
    _force_isa(isa, monkeypatch)
    values = torch.tensor([-1e30, -1e4, -200.0, -90.0, -87.0, -20.0, -1.0, 0.0, 1.0, 20.0, 90.0, 200.0, 1e4, 1e30])
    x = values.repeat(2, 3, 3).requires_grad_()  # (2, 3, 42)
    weight = torch.zeros(3, 4)
    weight[:, -1] = 1.0  # the identity conv, causal or not: out = silu(x)
    weight.requires_grad_()
    s = torch.sigmoid(x.detach())
    out, (dx, _) = _fwd_bwd(x, weight, None, "silu", reverse, "cpu", seed=None)
    # (atol: e^90 overflows float32, so silu(-90) comes out as -0 here; it is -7.4e-38)
    torch.testing.assert_close(out, F.silu(x.detach()), rtol=1e-6, atol=1e-30)
    torch.testing.assert_close(dx, s * (1 + x.detach() * (1 - s)), rtol=1e-6, atol=1e-30)
    nan = torch.full((1, 1, 20), float("nan"))
    with dispatcher.force("cpu"):
        assert torch.isnan(causal_conv1d_fn(nan, torch.ones(1, 4), None, "silu")).all()


@pytest.mark.skipif(not dispatcher.available()["cpu"], reason="the CPU kernel is not built")
def test_isa_override_is_checked(monkeypatch):
    monkeypatch.setenv("CAUSAL_CONV1D_CPU_ISA", "sse9")
    with pytest.raises(RuntimeError, match="CAUSAL_CONV1D_CPU_ISA"):
        dispatcher.kernels("cpu").isa()


def test_reference_matches_conv1d_definition():
    x, weight, bias = _inputs(2, 3, 10, 3, torch.float32, True)
    x, weight, bias = x.detach(), weight.detach(), bias.detach()
    out = causal_conv1d_ref(x, weight, bias)
    # out[t] = bias + sum_k w[k] x[t - (W-1) + k]
    for t in range(10):
        expect = bias.expand(2, 3).clone()
        for k in range(3):
            s = t - 2 + k
            if s >= 0:
                expect += weight[:, k] * x[:, :, s]
        torch.testing.assert_close(out[:, :, t], expect)
    # reverse = flip(conv(flip(x))): out[t] depends on x[t .. t+W-1]
    rev = causal_conv1d_ref(x, weight, bias, reverse=True)
    torch.testing.assert_close(rev, causal_conv1d_ref(x.flip(-1), weight, bias).flip(-1))
    assert not torch.allclose(rev, out)


def test_reference_gradcheck_float64():
    x, weight, bias = (t.detach().double().requires_grad_() for t in _inputs(1, 2, 7, 3, torch.float32, True))
    for reverse in (False, True):
        assert torch.autograd.gradcheck(
            lambda a, w, b, rev=reverse: causal_conv1d_ref(a, w, b, "silu", rev), (x, weight, bias)
        )


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_backward_is_deterministic_across_thread_counts(backend):
    x, weight, bias = _inputs(4, 16, 300, 4, torch.float32, True)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        _, one = _fwd_bwd(x, weight, bias, "silu", False, backend)
        torch.set_num_threads(2)
        _, two = _fwd_bwd(x, weight, bias, "silu", False, backend)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(one, two, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_non_contiguous_input(backend):
    wide = torch.randn(2, 12, 50)
    x = wide[:, 2:8].requires_grad_()  # a channel slice: not contiguous
    _, weight, bias = _inputs(2, 6, 50, 4, torch.float32, True)
    out, _ = _fwd_bwd(x, weight, bias, None, False, backend)
    _close(out, causal_conv1d_ref(x, weight, bias), 1e-5, "out")


@pytest.mark.parametrize("width", [2, 4])
def test_update_streams_the_full_convolution(width):
    x, weight, bias = (t.detach() for t in _inputs(2, 5, 9, width, torch.float32, True))
    full = causal_conv1d_ref(x, weight, bias, "silu")
    state = torch.zeros(2, 5, width)
    steps = [causal_conv1d_update(x[:, :, t], state, weight, bias, "silu") for t in range(9)]
    torch.testing.assert_close(torch.stack(steps, dim=-1), full)
    torch.testing.assert_close(state, x[:, :, -width:])


def test_bad_arguments_are_rejected():
    x = torch.randn(1, 4, 8)
    with pytest.raises(ValueError, match="width"):
        causal_conv1d_fn(x, torch.randn(4, 5))
    with pytest.raises(ValueError, match="weight"):
        causal_conv1d_fn(x, torch.randn(3, 4))
    with pytest.raises(NotImplementedError, match="activation"):
        causal_conv1d_fn(x, torch.randn(4, 4), activation="relu")


def test_dispatcher_forcing_and_reporting(monkeypatch):
    x, weight = torch.randn(1, 4, 8), torch.randn(4, 4)
    monkeypatch.setenv("CAUSAL_CONV1D_BACKEND", "ref")
    causal_conv1d_fn(x, weight)
    assert dispatcher.last_used["causal_conv1d"] == "ref"
    monkeypatch.setenv("CAUSAL_CONV1D_BACKEND", "cuda")
    with pytest.raises(RuntimeError, match="cuda"):
        causal_conv1d_fn(x, weight)
    monkeypatch.setenv("CAUSAL_CONV1D_BACKEND", "bogus")
    with pytest.raises(ValueError, match="expected one of"):
        causal_conv1d_fn(x, weight)
    monkeypatch.delenv("CAUSAL_CONV1D_BACKEND")
    causal_conv1d_fn(x, weight)
    assert dispatcher.last_used["causal_conv1d"] == "cpu"
    assert "cpu: yes" in dispatcher.describe()


def _fake_dispatcher(probe, triton=True):
    """A Dispatcher whose cuda (built for 8.0;9.0+PTX) and triton modules are stand-ins."""
    from types import SimpleNamespace

    from causal_conv1d.kernel_infra import Dispatcher

    d = Dispatcher("fakepkg", "FAKEPKG_BACKEND", {"cuda": "x", "triton": "y"}, cuda_probe=probe)
    d._modules = {
        "cuda": SimpleNamespace(built_archs_code="8_0__9_0p"),
        "triton": SimpleNamespace() if triton else None,
    }
    d._errors["triton"] = "not installed"
    return d


def test_cuda_without_code_for_the_gpu_falls_back_once(monkeypatch):
    """A "no kernel image" error at the first launch on a GPU: one warning naming the GPU and the
    built archs, then triton (or ref) on that GPU from then on; forcing cuda there is an error."""
    from causal_conv1d.kernel_infra import dispatch

    calls = []

    def probe(module, device):
        calls.append(device)
        raise RuntimeError(
            "selective_scan CUDA forward failed: no kernel image is available for execution on the device"
        )

    monkeypatch.setattr(dispatch, "gpu_capability", lambda device: "sm_120 (Fake Blackwell)")
    monkeypatch.delenv("FAKEPKG_BACKEND", raising=False)
    cuda0 = torch.device("cuda", 0)
    d = _fake_dispatcher(probe)
    with pytest.warns(RuntimeWarning, match=r"sm_120 \(Fake Blackwell\).*8\.0;9\.0\+PTX.*triton") as record:
        assert d.pick("op", cuda0) == "triton"
    assert len(record) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert d.pick("op", cuda0) == "triton" and d.pick("other_op", cuda0) == "triton"
    assert calls == [cuda0]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert "cuda: built, but unusable on cuda:0 sm_120 (Fake Blackwell): built for archs 8.0;9.0+PTX" in d.describe()
    monkeypatch.setenv("FAKEPKG_BACKEND", "cuda")
    with pytest.raises(RuntimeError, match="cannot run on this GPU"):
        d.pick("op", cuda0)
    monkeypatch.delenv("FAKEPKG_BACKEND")
    no_triton = _fake_dispatcher(probe, triton=False)
    with pytest.warns(RuntimeWarning, match="using the ref backend"):
        assert no_triton.pick("op", cuda0) == "ref"


def test_cuda_probe_other_errors_propagate(monkeypatch):
    def probe(module, device):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.delenv("FAKEPKG_BACKEND", raising=False)
    d = _fake_dispatcher(probe)
    with pytest.raises(RuntimeError, match="out of memory"):
        d.pick("op", torch.device("cuda", 0))
    ok = _fake_dispatcher(lambda module, device: None)
    assert ok.pick("op", torch.device("cuda", 0)) == "cuda"


def test_describe_says_whether_a_gpu_is_visible(monkeypatch):
    d = _fake_dispatcher(lambda module, device: None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    text = d.describe()
    assert "cuda: built (archs 8.0;9.0+PTX), but no GPU visible" in text
    assert "triton: importable, but no GPU visible" in text
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert "cuda: yes (archs 8.0;9.0+PTX)" in d.describe()


def test_cuda_builds_carry_ptx_of_the_newest_arch():
    from causal_conv1d.kernel_infra.build import arch_define, arch_list_with_ptx
    from causal_conv1d.kernel_infra.dispatch import decode_built_archs

    assert arch_list_with_ptx("8.0;9.0") == "8.0;9.0+PTX"
    assert arch_list_with_ptx("9.0 8.6") == "9.0+PTX;8.6"
    assert arch_list_with_ptx("8.0;9.0a") == "8.0;9.0a+PTX"
    assert arch_list_with_ptx("8.0+PTX;9.0") == "8.0+PTX;9.0"  # the user chose where the PTX goes
    for archs in ("8.0;9.0+PTX", "7.5;8.6;9.0a+PTX", "9.0"):
        assert decode_built_archs(arch_define(archs)) == archs
        assert arch_define(archs).replace("_", "").isalnum()  # one preprocessor token, nothing to quote


def test_reference_kernel_module_follows_the_contract():
    """The `ref` backend module (used by fused callers) writes the same as autograd on the reference."""
    from causal_conv1d import ref_kernels

    x, weight, bias = _inputs(2, 3, 11, 4, torch.float32, True)
    out = torch.empty_like(x)
    ref_kernels.fwd(x.detach(), weight.detach(), bias.detach(), out, True, True)
    expected = causal_conv1d_ref(x, weight, bias, "silu", reverse=True)
    torch.testing.assert_close(out, expected.detach())
    dout = torch.randn_like(out)
    dx, dw, db = torch.empty_like(x), torch.empty_like(weight), torch.empty_like(bias)
    ref_kernels.bwd(x.detach(), weight.detach(), bias.detach(), dout, dx, dw, db, True, True)
    for got, want in zip((dx, dw, db), torch.autograd.grad(expected, (x, weight, bias), dout), strict=True):
        torch.testing.assert_close(got, want)


def test_matches_torch_conv1d_module():
    """The Mamba mixer passes nn.Conv1d weights: (dim, 1, width) reshaped to (dim, width)."""
    conv = torch.nn.Conv1d(6, 6, 4, groups=6, padding=3)
    x = torch.randn(2, 6, 20)
    expected = F.silu(conv(x)[..., :20])
    torch.testing.assert_close(causal_conv1d_fn(x, conv.weight.squeeze(1), conv.bias, "silu"), expected)
