"""Selective scan: the CPU kernel (`mamba_ssm._C_cpu`) against the PyTorch reference.

Tolerances (all errors are taken against a float32 reference computed from the *same* inputs,
i.e. from the bf16/fp16-rounded values when the test runs in low precision):
- float32: |kernel - ref| <= 1e-5 * max|ref| + 1e-4 * |ref|, elementwise, for the output, the last
  state and every gradient. (Measured errors are ~1e-7 of max|ref|; the kernel's exp is within
  ~1 ulp, and its sums run in a different order than autograd's.)
- bfloat16 / float16 (the rule of upstream's newer Triton tests): |kernel - ref| <=
  2 * |lowp_ref - ref| + atol * max|ref|, elementwise, where lowp_ref is the reference run on the
  low-precision tensors (float32 math, results rounded to the input dtype, as the kernel does) and
  atol is one unit in the last place at the tensor's scale: 2^-8 for bf16, 2^-11 for fp16. The
  kernel's only extra error is the rounding of a slightly different float32 value, which the
  atol term covers.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import pytest
import torch

from causal_conv1d.kernel_infra.testing import kernel_backends
from mamba_ssm.ops.selective_scan_interface import (
    SelectiveScanFn,
    dispatcher,
    scan_bwd,
    scan_fwd,
    selective_scan_fn,
    selective_scan_ref,
)

K = dispatcher.kernels("cpu")
pytestmark = pytest.mark.skipif(K is None, reason=f"mamba_ssm._C_cpu is not built ({dispatcher.describe()})")

GRAD_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
LOWP_ATOL = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------


@dataclass
class Case:
    L: int
    N: int = 16
    dtype: torch.dtype = torch.float32
    softplus: bool = True
    has_z: bool = True
    has_D_bias: bool = True
    groups: int | None = None  # None: 3-D B/C; else (batch, G, N, L)
    reverse: bool = False
    strided_z: bool = False  # z (and u) as halves of a (batch, 2*dim, L) tensor
    batch: int = 2
    dim: int = 24
    last_state: bool = True  # return_last_state

    def __str__(self):
        t = {torch.float32: "f32", torch.bfloat16: "bf16", torch.float16: "f16"}[self.dtype]
        flags = [f"L{self.L}", f"N{self.N}", t, f"d{self.dim}"]
        flags += [n for n, on in (("sp", self.softplus), ("z", self.has_z), ("Db", self.has_D_bias),
                                  ("rev", self.reverse), ("zstr", self.strided_z), ("nolast", not self.last_state))
                  if on]  # fmt: skip
        flags += [f"G{self.groups}"] if self.groups else []
        return "-".join(flags)


def make_inputs(case: Case, seed: int = 0) -> dict:
    """Inputs as upstream's test draws them; u and z possibly strided views into xz."""
    g = torch.Generator().manual_seed(seed)
    b, d, L, N = case.batch, case.dim, case.L, case.N

    def rnd(*shape, scale=1.0, offset=0.0, uniform=False):
        t = torch.rand(*shape, generator=g) if uniform else torch.randn(*shape, generator=g)
        return (t * scale + offset).to(case.dtype)

    if case.strided_z:
        xz = rnd(b, 2 * d, L)
        u, z = xz[:, :d], xz[:, d:]
    else:
        u, z = rnd(b, d, L), rnd(b, d, L)
    bc_shape = (b, N, L) if case.groups is None else (b, case.groups, N, L)
    return dict(
        u=u,
        delta=rnd(b, d, L, scale=0.5, uniform=True),
        A=-0.5 * torch.rand(d, N, generator=g) - 0.05,
        B=rnd(*bc_shape),
        C=rnd(*bc_shape),
        D=torch.randn(d, generator=g) if case.has_D_bias else None,
        z=z if case.has_z else None,
        delta_bias=0.5 * torch.rand(d, generator=g) - 0.25 if case.has_D_bias else None,
    )


def run_scan(inputs: dict, case: Case, dout: torch.Tensor, backend: str | None = None, fn=None):
    """(out, last_state, {name: grad}) through `selective_scan_fn` (or `fn`) and autograd."""
    leaves = {k: None if v is None else v.detach().clone().requires_grad_() for k, v in inputs.items()}
    ctx = dispatcher.force(backend) if backend else contextlib.nullcontext()
    with ctx:
        res = (fn or selective_scan_fn)(
            *(leaves[n] for n in GRAD_NAMES),
            delta_softplus=case.softplus,
            return_last_state=case.last_state,
            reverse=case.reverse,
        )
    if case.last_state:
        out, last = res
    else:
        assert isinstance(res, torch.Tensor)
        out, last = res, torch.zeros(())
    out.backward(dout)
    grads = {k: v.grad for k, v in leaves.items() if v is not None}
    return out.detach(), last.detach(), grads


def reference(inputs: dict, case: Case, dout: torch.Tensor, dtype: torch.dtype):
    """The reference (flip formulation for reverse) with u, delta, B, C, z cast to `dtype` first, so
    that with float32 every gradient is a float32 one, and with bf16/fp16 the gradients are rounded
    as PyTorch's own low-precision run rounds them."""
    cast = {k: v.to(dtype) if k in ("u", "delta", "B", "C", "z") and v is not None else v for k, v in inputs.items()}

    def fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, reverse):
        flip = (lambda t: None if t is None else t.flip(-1)) if reverse else (lambda t: t)
        out, last = selective_scan_ref(
            flip(u), flip(delta), A, flip(B), flip(C), D, flip(z), delta_bias, delta_softplus, True
        )
        return (flip(out), last) if return_last_state else flip(out)

    with one_thread():
        return run_scan(cast, case, dout.to(dtype), fn=fn)


@contextlib.contextmanager
def one_thread():
    """The reference's thousands of small ops are much faster single-threaded (no OpenMP handoffs,
    which are slow when the cores are shared); the kernel runs with the suite's thread count."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def check_close(name: str, got: torch.Tensor, ref: torch.Tensor, lowp_ref: torch.Tensor | None, dtype):
    got, ref = got.double(), ref.double()
    scale = ref.abs().max().clamp_min(1e-30)
    err = (got - ref).abs()
    if dtype == torch.float32:
        bound = 1e-5 * scale + 1e-4 * ref.abs()
    else:
        bound = 2 * (lowp_ref.double() - ref).abs() + LOWP_ATOL[dtype] * scale
    bad = err > bound
    assert not bad.any(), (
        f"{name}: {int(bad.sum())} of {err.numel()} elements out of tolerance; max err {err.max().item():.3e} "
        f"(max|ref| {scale.item():.3e}); worst excess {(err - bound).max().item():.3e}"
    )


def compare_with_reference(case: Case, seed: int = 0):
    inputs = make_inputs(case, seed)
    dout_shape = inputs["u"].shape
    dout = torch.randn(dout_shape, generator=torch.Generator().manual_seed(seed + 1)).to(case.dtype)
    out, last, grads = run_scan(inputs, case, dout)
    assert dispatcher.last_used["selective_scan"] == "cpu"
    assert out.dtype == case.dtype and out.shape == dout_shape
    if case.last_state:
        assert last.dtype == torch.float32 and last.shape == (case.batch, case.dim, case.N)
    r_out, r_last, r_grads = reference(inputs, case, dout, torch.float32)
    lowp = reference(inputs, case, dout, case.dtype) if case.dtype != torch.float32 else (None, None, {})
    check_close("out", out, r_out, lowp[0], case.dtype)
    if case.last_state:
        check_close("last_state", last, r_last, lowp[1], case.dtype)
    assert set(grads) == set(r_grads)
    for name in grads:
        assert grads[name].dtype == inputs[name].dtype and grads[name].shape == inputs[name].shape, name
        check_close(f"d{name}", grads[name], r_grads[name], lowp[2].get(name), case.dtype)


# ------------------------------------------------------------------------------------------------
# kernel vs reference over a sampled grid (not the full product: every value of every axis
# appears, with the combinations spread out). The kernel's chunk is K.chunk_size (64) steps, so
# 63/64/65, 129 and 2049 straddle chunk boundaries; dim 24 with G = 2 gives 12 channels per group
# (a partial SIMD block), dim 40 two blocks of which the second is partial.
# ------------------------------------------------------------------------------------------------

F32, BF16, F16 = torch.float32, torch.bfloat16, torch.float16
CASES = [
    Case(L=1, N=4),
    Case(L=1, N=1, softplus=False, has_z=False, has_D_bias=False, reverse=True),
    Case(L=2, N=16, softplus=False, has_z=False, reverse=True, groups=2),
    Case(L=7, N=1, groups=2, strided_z=True, last_state=False),
    Case(L=7, N=4, has_D_bias=False, reverse=True),
    Case(L=63, N=16, dim=40, has_z=False),
    Case(L=64, N=16, reverse=True, strided_z=True, dim=16),
    Case(L=65, N=4, softplus=False, groups=2),
    Case(L=65, N=16, dim=40, reverse=True, has_D_bias=False),
    Case(L=129, N=16, groups=2, reverse=True),
    Case(L=129, N=1, strided_z=True, has_z=True),
    Case(L=129, N=4, batch=1, dim=4),
    Case(L=65, N=17, dim=20, reverse=True),  # N past one 16-state lane sum, odd
    # (The reference's backward costs ~L^2 * batch * dim * N: keep those small at L = 2049.)
    Case(L=2049, N=16, batch=1, dim=16),
    Case(L=2049, N=4, batch=1, dim=16, reverse=True, strided_z=True),
    Case(L=2049, N=1, batch=1, dim=24, groups=2, softplus=False),
    Case(L=7, N=16, dtype=BF16, groups=2),
    Case(L=65, N=4, dtype=BF16, reverse=True, strided_z=True),
    Case(L=129, N=16, dtype=BF16, softplus=False, has_D_bias=False, last_state=False),
    Case(L=2049, N=4, dtype=BF16, batch=1, dim=4, reverse=True),
    Case(L=2, N=1, dtype=F16, groups=2, reverse=True),
    Case(L=129, N=16, dtype=F16, dim=40),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_kernel_matches_reference(case):
    compare_with_reference(case)


def test_mixed_groups_and_dtypes():
    """B and C with different group counts (3-D B, 4-D C with G = 2) and dtypes other than u's."""
    case = Case(L=70, N=4, dim=24, reverse=True)
    inputs = make_inputs(case)
    g = torch.Generator().manual_seed(5)
    inputs["B"] = torch.randn(case.batch, case.N, case.L, generator=g).to(BF16)
    inputs["C"] = torch.randn(case.batch, 2, case.N, case.L, generator=g).to(F16)
    dout = torch.randn(inputs["u"].shape, generator=g)
    out, last, grads = run_scan(inputs, case, dout)
    assert dispatcher.last_used["selective_scan"] == "cpu"
    r_out, r_last, r_grads = reference(inputs, case, dout, F32)
    check_close("out", out, r_out, None, F32)
    check_close("last_state", last, r_last, None, F32)
    for name in grads:
        dtype = inputs[name].dtype
        assert grads[name].dtype == dtype, name
        # dB/dC come back in B's/C's dtype: the float32 gradient rounded once.
        lowp = None if dtype == F32 else r_grads[name].to(dtype)
        check_close(f"d{name}", grads[name], r_grads[name], lowp, dtype)


@pytest.mark.parametrize("isa", ["avx512", "avx2", "default"])
def test_every_instruction_set(isa, monkeypatch):
    """Each compiled variant (AVX-512, AVX2, baseline) the CPU supports matches the reference."""
    levels = ["default", "avx2", "avx512"]
    monkeypatch.delenv("MAMBA_CPU_ISA", raising=False)
    best = K.isa()
    if levels.index(isa) > levels.index(best):
        pytest.skip(f"this CPU runs at most {best}")
    monkeypatch.setenv("MAMBA_CPU_ISA", isa)
    assert K.isa() == isa
    compare_with_reference(Case(L=130, N=16, dim=40, groups=2, reverse=True, strided_z=True))
    compare_with_reference(Case(L=67, N=4, dtype=BF16, dim=32))
    compare_with_reference(Case(L=67, N=16, dtype=F16, dim=16, reverse=True))


@pytest.mark.slow
def test_avx512_copy_emulated(monkeypatch):
    """Where the CPU has no AVX-512, the AVX-512 copy's loops (16 lanes in one vector: its own
    transposes and lane sums) still run, built with -DCPU_SIMD_EMULATE_AVX512 (generic 16-wide
    vectors compiled for AVX2; cpu_simd.h's AVX-512 intrinsics are not exercised)."""
    monkeypatch.delenv("MAMBA_CPU_ISA", raising=False)
    if K.isa() != "avx2":
        pytest.skip("AVX-512 runs natively here (test_every_instruction_set)" if K.isa() == "avx512" else "needs AVX2")
    emulated = kernel_backends.avx512_emulated_module("mamba_ssm")
    monkeypatch.setenv("MAMBA_CPU_ISA", "avx512")
    assert emulated.isa() == "avx512"
    with kernel_backends.route([(dispatcher, emulated)], "cpu"):
        for case in (
            Case(L=130, N=16, dim=40, groups=2, reverse=True, strided_z=True),
            Case(L=65, N=17, dim=20),
            Case(L=67, N=4, dtype=BF16, dim=32),
            Case(L=67, N=16, dtype=F16, dim=16, reverse=True),
        ):
            compare_with_reference(case)


@pytest.mark.parametrize("isa", ["avx512", "avx2", "default"])
@pytest.mark.parametrize("reverse", [False, True])
def test_last_state_only_forward(isa, reverse, monkeypatch):
    """The inference forward (states with one chunk slot) writes the output of the full forward, bit
    for bit, and the final state into that slot, on every instruction set."""
    levels = ["default", "avx2", "avx512"]
    monkeypatch.delenv("MAMBA_CPU_ISA", raising=False)
    if levels.index(isa) > levels.index(K.isa()):
        pytest.skip(f"this CPU runs at most {K.isa()}")
    monkeypatch.setenv("MAMBA_CPU_ISA", isa)
    case = Case(L=150, N=16, dim=40, reverse=reverse)
    x = make_inputs(case)
    args = (x["u"], x["delta"], x["A"], x["B"].unsqueeze(1), x["C"].unsqueeze(1), x["D"], x["z"], x["delta_bias"])
    out_all, states_all = scan_fwd(*args, True, reverse, "cpu")
    out_last, states_last = scan_fwd(*args, True, reverse, "cpu", all_states=False)
    assert states_all.shape[2] == K.num_chunks(case.L) > 1 and states_last.shape[2] == 1
    assert torch.equal(out_last, out_all) and torch.equal(states_last[:, :, 0], states_all[:, :, -1])


@pytest.mark.parametrize("isa", ["avx512", "avx2", "default"])
def test_decay_overflow_where_A_is_positive(isa, monkeypatch):
    """The forward's cheaper decay (no upper clamp) serves only blocks whose A are all <= 0: with one
    A > 0, exp(delta * A) beyond the float range is still inf (inf * 0 = NaN), as in the reference."""
    levels = ["default", "avx2", "avx512"]
    monkeypatch.delenv("MAMBA_CPU_ISA", raising=False)
    if levels.index(isa) > levels.index(K.isa()):
        pytest.skip(f"this CPU runs at most {K.isa()}")
    monkeypatch.setenv("MAMBA_CPU_ISA", isa)
    b, d, N, L = 1, 16, 2, 3
    u, delta = torch.ones(b, d, L), torch.full((b, d, L), 100.0)  # exp(100) overflows float32
    A = -torch.ones(d, N)
    A[3, 1] = 1.0
    B, C = torch.ones(b, N, L), torch.ones(b, N, L)
    out, _ = scan_fwd(u, delta, A, B.unsqueeze(1), C.unsqueeze(1), None, None, None, True, False, "cpu")
    ref = selective_scan_ref(u, delta, A, B, C, delta_softplus=True)
    assert out[0, 3].isnan().all() and ref[0, 3].isnan().all()
    torch.testing.assert_close(out, ref, equal_nan=True)


def test_isa_override_is_checked(monkeypatch):
    monkeypatch.setenv("MAMBA_CPU_ISA", "sse9")
    with pytest.raises(RuntimeError, match="MAMBA_CPU_ISA"):
        K.isa()


# ------------------------------------------------------------------------------------------------
# semantics
# ------------------------------------------------------------------------------------------------


def test_gradcheck_reference_float64():
    g = torch.Generator().manual_seed(0)
    b, d, L, N = 1, 4, 6, 3
    args = [
        torch.randn(b, d, L, generator=g, dtype=torch.float64),
        0.5 * torch.rand(b, d, L, generator=g, dtype=torch.float64),
        -0.5 * torch.rand(d, N, generator=g, dtype=torch.float64),
        torch.randn(b, 2, N, L, generator=g, dtype=torch.float64),
        torch.randn(b, 2, N, L, generator=g, dtype=torch.float64),
        torch.randn(d, generator=g, dtype=torch.float64),
        torch.randn(b, d, L, generator=g, dtype=torch.float64),
        torch.rand(d, generator=g, dtype=torch.float64) - 0.5,
    ]
    args = [a.requires_grad_() for a in args]
    out = selective_scan_ref(*args, delta_softplus=True)
    assert out.dtype == torch.float64
    assert torch.autograd.gradcheck(lambda *a: selective_scan_ref(*a, delta_softplus=True), args)


@pytest.mark.parametrize("dtype", [F32, BF16])
def test_reverse_is_flip_scan_flip(dtype):
    """reverse=True equals flipping every time axis, scanning forward and flipping back (bit for bit:
    the kernel reads the same values in the same processing order)."""
    case = Case(L=150, N=16, dtype=dtype, dim=40, groups=2)
    inputs = make_inputs(case)
    dout = torch.randn(inputs["u"].shape).to(dtype)
    rev = run_scan(inputs, Case(**{**case.__dict__, "reverse": True}), dout)
    flipped = {k: v.flip(-1) if k in ("u", "delta", "B", "C", "z") else v for k, v in inputs.items()}
    fwd = run_scan(flipped, case, dout.flip(-1))
    assert torch.equal(rev[0], fwd[0].flip(-1))
    assert torch.equal(rev[1], fwd[1])
    for name in rev[2]:
        expect = fwd[2][name].flip(-1) if name in ("u", "delta", "B", "C", "z") else fwd[2][name]
        assert torch.equal(rev[2][name], expect), name


@pytest.mark.parametrize("reverse", [False, True])
def test_chunk_states(reverse):
    """states[:, :, c] is the state after chunk c in processing order; the last one is the final state."""
    case = Case(L=150, N=4, dim=20, reverse=reverse)
    x = make_inputs(case)
    n_chunks, chunk = K.num_chunks(case.L), K.chunk_size
    assert n_chunks == -(-case.L // chunk)
    _, states = scan_fwd(x["u"], x["delta"], x["A"], x["B"].unsqueeze(1), x["C"].unsqueeze(1), x["D"], x["z"],
                         x["delta_bias"], True, reverse, "cpu")  # fmt: skip
    assert states.shape == (case.batch, case.dim, n_chunks, case.N)
    flip = (lambda t: t.flip(-1)) if reverse else (lambda t: t)
    for c in range(n_chunks):
        steps = min((c + 1) * chunk, case.L)  # processing steps done after chunk c
        take = lambda t, steps=steps: flip(flip(t)[..., :steps])
        _, h = selective_scan_ref(
            flip(take(x["u"])), flip(take(x["delta"])), x["A"], flip(take(x["B"])), flip(take(x["C"])), None, None,
            x["delta_bias"], True, True,
        )  # fmt: skip
        torch.testing.assert_close(states[:, :, c], h, rtol=1e-5, atol=1e-5)


def test_num_chunks():
    assert K.num_chunks(0) == 1
    assert K.num_chunks(1) == 1
    assert K.num_chunks(K.chunk_size) == 1
    assert K.num_chunks(K.chunk_size + 1) == 2
    assert K.num_chunks(1569) == -(-1569 // K.chunk_size)


def test_deterministic_and_thread_count_independent():
    """No atomics: dB/dC (sums over channels) and dA/dD/ddelta_bias (sums over the batch) are reduced
    in a fixed order, so two runs agree bit for bit, whatever the number of threads."""
    case = Case(L=300, N=16, batch=3, dim=200, groups=2, reverse=True, strided_z=True)
    inputs = make_inputs(case)
    dout = torch.randn(inputs["u"].shape)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        a = run_scan(inputs, case, dout)
        b = run_scan(inputs, case, dout)
        torch.set_num_threads(1)
        c = run_scan(inputs, case, dout)
    finally:
        torch.set_num_threads(old)
    for other in (b, c):
        assert torch.equal(a[0], other[0]) and torch.equal(a[1], other[1])
        for name in a[2]:
            assert torch.equal(a[2][name], other[2][name]), name


# ------------------------------------------------------------------------------------------------
# the reference backend module and the kernel contract
# ------------------------------------------------------------------------------------------------


def test_ref_backend_agrees_through_selective_scan_fn(monkeypatch):
    case = Case(L=100, N=8, dim=20, groups=2, reverse=True, strided_z=True)
    inputs = make_inputs(case)
    dout = torch.randn(inputs["u"].shape)
    cpu = run_scan(inputs, case, dout)
    assert dispatcher.last_used["selective_scan"] == "cpu"
    monkeypatch.setenv("MAMBA_BACKEND", "ref")
    with one_thread():
        ref = run_scan(inputs, case, dout)
    assert dispatcher.last_used["selective_scan"] == "ref"
    monkeypatch.delenv("MAMBA_BACKEND")
    # The same autograd Function with the ref_kernels module as its backend (fwd/bwd contract).
    with one_thread():
        via_module = run_scan(inputs, case, dout, fn=lambda *a, **kw: SelectiveScanFn.apply(
            *a, kw["delta_softplus"], kw["return_last_state"], kw["reverse"], "ref"))  # fmt: skip
    for other in (ref, via_module):
        check_close("out", cpu[0], other[0], None, F32)
        check_close("last_state", cpu[1], other[1], None, F32)
        for name in cpu[2]:
            check_close(f"d{name}", cpu[2][name], other[2][name], None, F32)


@pytest.mark.parametrize("dtype", [F32, BF16])
def test_backward_contract_against_ref_module(dtype):
    """scan_bwd writes every output: gradients into a strided dz view, out_z, float32 weight grads,
    identically (within tolerance) for the cpu kernel and the ref_kernels module."""
    case = Case(L=90, N=16, dtype=dtype, dim=40, groups=2, reverse=True, strided_z=True)
    x = make_inputs(case)
    args = (x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], True, True)
    dout = torch.randn(x["u"].shape).to(dtype)
    results = {}
    for backend in ("cpu", "ref"):
        with one_thread() if backend == "ref" else contextlib.nullcontext():
            _, states = scan_fwd(*args, backend)
            dxz = torch.full((case.batch, 2 * case.dim, case.L), float("nan"), dtype=dtype)
            dz_view = dxz[:, case.dim :]
            res = scan_bwd(*args, dout, states, backend, dz=dz_view, recompute_out_z=True)
        assert res[6] is dz_view and not torch.isnan(dz_view).any() and torch.isnan(dxz[:, : case.dim]).all()
        results[backend] = res
    names = ("du", "ddelta", "dA", "dB", "dC", "dD", "dz", "ddelta_bias", "out_z")
    for name, got, want in zip(names, results["cpu"], results["ref"], strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape, name
        if dtype == F32:
            check_close(name, got, want, None, F32)
        else:  # both round float32 values to bf16: one bf16 ulp at the tensor's scale
            torch.testing.assert_close(got.float(), want.float(), rtol=2**-7, atol=2**-7 * want.abs().max().item())
    out, _ = scan_fwd(*args, "cpu")
    assert torch.equal(results["cpu"][8], out)  # out_z is the forward's gated output, recomputed


def test_kernel_accepts_strided_rows():
    """u/delta/z/out with arbitrary batch and channel strides (unit stride along L) and B/C views."""
    b, d, L, N = 2, 24, 77, 16
    g = torch.Generator().manual_seed(3)
    u = torch.randn(b, d, L, generator=g)
    delta_t = 0.5 * torch.rand(d, b * L, generator=g)  # like mamba_inner_fn's "d (b l) -> b d l" view
    delta = delta_t.view(d, b, L).permute(1, 0, 2)
    A = -0.5 * torch.rand(d, N, generator=g)
    BC = torch.randn(b, 3, N, L, generator=g)
    B, C = BC[:, :1], BC[:, 2:]
    D, bias = torch.randn(d, generator=g), torch.rand(d, generator=g)
    zbig = torch.randn(b, 2 * d, L, generator=g)
    z = zbig[:, d:]
    outbig = torch.zeros(b, 3 * d, L)
    out = outbig[:, d : 2 * d]
    states = torch.empty(b, d, K.num_chunks(L), N)
    K.fwd(u, delta, A, B, C, D, z, bias, True, False, out, states)
    expect = selective_scan_ref(u, delta, A, B, C, D, z, bias, True)
    torch.testing.assert_close(out, expect, rtol=1e-4, atol=1e-5)
    assert (outbig[:, :d] == 0).all() and (outbig[:, 2 * d :] == 0).all()


def test_kernel_rejects_bad_arguments():
    b, d, L, N = 1, 4, 10, 2
    u, delta = torch.randn(b, d, L), torch.rand(b, d, L)
    A, B, C = -torch.rand(d, N), torch.randn(b, 1, N, L), torch.randn(b, 1, N, L)
    out, states = torch.empty(b, d, L), torch.empty(b, d, K.num_chunks(L), N)
    K.fwd(u, delta, A, B, C, None, None, None, False, False, out, states)
    with pytest.raises(RuntimeError, match="states"):
        K.fwd(u, delta, A, B, C, None, None, None, False, False, out, torch.empty(b, d, 2, N))
    with pytest.raises(RuntimeError, match="delta"):
        K.fwd(u, delta.double(), A, B, C, None, None, None, False, False, out, states)
    with pytest.raises(RuntimeError, match="unit stride"):
        K.fwd(u.transpose(1, 2).contiguous().transpose(1, 2), delta, A, B, C, None, None, None, False, False, out,
              states)  # fmt: skip
    with pytest.raises(RuntimeError, match="groups"):
        K.fwd(u, delta, A, torch.randn(b, 3, N, L), C, None, None, None, False, False, out, states)


def test_empty_sequence():
    b, d, N = 2, 5, 3
    u = torch.randn(b, d, 0)
    A, B = -torch.rand(d, N), torch.randn(b, 1, N, 0)
    out, states = scan_fwd(u, u, A, B, B, torch.ones(d), None, torch.ones(d), True, False, "cpu")
    assert out.shape == (b, d, 0) and (states == 0).all()
    grads = scan_bwd(u, u, A, B, B, torch.ones(d), None, torch.ones(d), True, False, u, states, "cpu")
    assert (grads[2] == 0).all() and (grads[5] == 0).all() and (grads[7] == 0).all()
