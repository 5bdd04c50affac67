"""The Triton selective scan (and the fused mixer on the Triton backends) against the reference.

Without a GPU the kernels run in Triton's interpreter on CPU tensors (TRITON_INTERPRET=1, set by the
root conftest) at small sizes, chosen to cross the kernel's 64-step chunks (L = 1, odd, 64, 65, 130)
and its channel blocks; with a GPU the same tests run compiled on CUDA, and the `gpu`-marked tests
add realistic sizes (dim 768, d_state 16, L up to 4097).

Tolerances, as max abs error relative to `scale` = the largest reference value of that tensor:
  float32: 1e-4 in the interpreter, 5e-4 on CUDA (hardware exp/log approximations, L up to 4097),
      for the output, the last state and every gradient; the reference runs in float64.
  float16/bfloat16 (the "2x the low-precision PyTorch error" rule, not upstream's 3e-2/5e-2):
      |kernel - ref64| <= 2 * |ref_lowp - ref64| + atol * scale, elementwise, where ref64 is the
      reference in float64 on the same rounded inputs and ref_lowp the reference run on the 16-bit
      tensors (float32 arithmetic, its outputs and the gradients of 16-bit leaves rounded to 16
      bits, as the kernel's are). atol = the float32 tolerance above, for float32 accumulation noise
      (and for gradients kept in float32: dA, dD, ddelta_bias). In the interpreter only, bfloat16
      results get one more bfloat16 ulp (2^-7 relative): its float32 -> bfloat16 conversion on store
      truncates instead of rounding to nearest (compiled kernels round to nearest).

The interpreter runs `tl.associative_scan` and `tl.reduce` with a custom combine function one
element at a time in Python, which makes these tests minutes long; `_fast_interpreter` replaces those
two interpreter routines with equivalents that apply the same combine function, in the same order,
to whole slices along the scanned axis (`mamba_ssm.testing`; checked against the stock routines below).
"""

import pytest
import torch
from einops import rearrange

from causal_conv1d import dispatcher as conv_dispatcher
from causal_conv1d.kernel_infra import triton_interpreted
from causal_conv1d.kernel_infra.testing.triton_compile import compile_for_sm90
from mamba_ssm import Mamba
from mamba_ssm.ops import ref_kernels
from mamba_ssm.ops import selective_scan_interface as ssi
from mamba_ssm.ops.selective_scan_interface import selective_scan_fn, selective_scan_ref
from mamba_ssm.ops.triton import selective_scan as tk
from mamba_ssm.testing import fast_triton_interpreter, interpreter_ops

HAS_CUDA = torch.cuda.is_available()
DEVICE = "cuda" if HAS_CUDA else "cpu"
TRITON_RUNS = tk.triton is not None and (HAS_CUDA or triton_interpreted())
pytestmark = pytest.mark.skipif(
    not TRITON_RUNS, reason="the Triton kernels need a CUDA GPU, or TRITON_INTERPRET=1 (Triton's interpreter) on CPU"
)
F32_TOL = 5e-4 if HAS_CUDA else 1e-4


# ------------------------------------------------------------------------------------------------
# Interpreter speed-up (tests only; kernels are unchanged)
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def _fast_interpreter():
    with fast_triton_interpreter(triton_interpreted()):
        yield


_STOCK_OPS = interpreter_ops()
_STOCK = None if _STOCK_OPS is None else (_STOCK_OPS[0].generic_scan, _STOCK_OPS[1].generic_reduce)

if tk.triton is not None:
    import triton
    import triton.language as tl

    @triton.jit
    def _first_combine(x, y):
        return x + 0.0 * y  # non-commutative: keeps the first element

    @triton.jit
    def _probe_kernel(A, Bv, H, F, S, X: tl.constexpr, Y: tl.constexpr, Z: tl.constexpr):
        rows = tl.arange(0, X)[:, None, None] * Y + tl.arange(0, Y)[None, :, None]
        offs = rows * Z + tl.arange(0, Z)[None, None, :]
        a, b = tl.load(A + offs), tl.load(Bv + offs)
        _, h = tl.associative_scan((a, b), 2, tk._affine_combine)
        tl.store(H + offs, h)
        tl.store(F + offs, tl.flip(b, 2))
        tl.store(S + tl.arange(0, X)[:, None] * Z + tl.arange(0, Z)[None, :], tl.reduce(b, 1, _first_combine))


@pytest.mark.skipif(not triton_interpreted() or _STOCK is None, reason="checks the interpreter speed-up")
def test_fast_interpreter_matches_stock():
    a, b = torch.rand(2, 4, 8), torch.randn(2, 4, 8)
    results = []
    for stock in (False, True):
        out = [torch.empty(2, 4, 8), torch.empty(2, 4, 8), torch.empty(2, 8)]
        saved = _STOCK_OPS[0].generic_scan, _STOCK_OPS[1].generic_reduce
        if stock:
            _STOCK_OPS[0].generic_scan, _STOCK_OPS[1].generic_reduce = _STOCK
        try:
            _probe_kernel[(1,)](a, b, *out, 2, 4, 8)
        finally:
            _STOCK_OPS[0].generic_scan, _STOCK_OPS[1].generic_reduce = saved
        results.append(out)
    for x, y in zip(*results, strict=True):
        assert torch.equal(x, y)
    h, ref = torch.zeros(2, 4), []
    for t in range(8):
        h = a[..., t] * h + b[..., t]
        ref.append(h)
    torch.testing.assert_close(results[0][0], torch.stack(ref, -1))
    assert torch.equal(results[0][1], b.flip(-1))
    assert torch.equal(results[0][2], b[:, 0])


# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------

NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def _inputs(batch, dim, dstate, seqlen, groups=1, dtype=torch.float32, has_D=True, has_z=True, has_bias=True,
            seed=0, device=DEVICE, squeeze_groups=False):  # fmt: skip
    """Upstream's test distribution: A = -0.5 rand, delta = 0.5 rand, delta_bias = 0.5 rand."""
    g = torch.Generator().manual_seed(seed)
    bc_shape = (batch, dstate, seqlen) if squeeze_groups else (batch, groups, dstate, seqlen)
    t = {
        "u": torch.randn(batch, dim, seqlen, generator=g).to(dtype),
        "delta": (0.5 * torch.rand(batch, dim, seqlen, generator=g)).to(dtype),
        "A": -0.5 * torch.rand(dim, dstate, generator=g),
        "B": torch.randn(bc_shape, generator=g).to(dtype),
        "C": torch.randn(bc_shape, generator=g).to(dtype),
        "D": torch.randn(dim, generator=g) if has_D else None,
        "z": torch.randn(batch, dim, seqlen, generator=g).to(dtype) if has_z else None,
        "delta_bias": 0.5 * torch.rand(dim, generator=g) if has_bias else None,
    }
    return {k: None if v is None else v.to(device).requires_grad_() for k, v in t.items()}


def _scan(args, backend, softplus, reverse, dout, cast=None):
    """selective_scan_fn on `backend` (forced): (out, last_state, {name: grad})."""
    if cast is None:
        leaves = args
    else:
        leaves = {k: None if v is None else v.detach().to(cast).requires_grad_() for k, v in args.items()}
    with ssi.dispatcher.force(backend):
        out, last = selective_scan_fn(*(leaves[k] for k in NAMES), delta_softplus=softplus, return_last_state=True,
                                      reverse=reverse)  # fmt: skip
        assert ssi.dispatcher.last_used["selective_scan"] == backend
    names = [k for k in NAMES if leaves[k] is not None]
    grads = torch.autograd.grad(out, [leaves[k] for k in names], dout.to(out.dtype))
    return out, last, dict(zip(names, grads, strict=True))


def _triton_scan(monkeypatch, args, softplus, reverse, dout):
    monkeypatch.setenv("MAMBA_BACKEND", "triton")
    out, last, grads = _scan(args, "triton", softplus, reverse, dout)
    monkeypatch.delenv("MAMBA_BACKEND")
    return out, last, grads


def _err(actual, expected):
    return (actual.double() - expected.double()).abs()


def _scale(expected):
    return expected.double().abs().max().clamp_min(1e-6)


def _check_f32(name, actual, expected, tol=F32_TOL):
    err, scale = _err(actual, expected).max(), _scale(expected)
    assert err <= tol * scale, f"{name}: max error {err:.3g} > {tol:.1g} * {scale:.3g}"


def _check_lowp(name, actual, lowp, hi, tol=F32_TOL):
    bound = 2 * _err(lowp, hi) + tol * _scale(hi)
    if actual.dtype == torch.bfloat16 and triton_interpreted():
        bound = bound + 2**-7 * hi.double().abs()  # the interpreter's float32 -> bfloat16 store truncates
    excess = (_err(actual, hi) - bound).max()
    assert excess <= 0, f"{name}: error exceeds 2 x the low-precision reference's error + atol by {excess:.3g}"


def _compare(monkeypatch, args, softplus, reverse, seed=1):
    dtype = args["u"].dtype
    dout = torch.randn(args["u"].shape, generator=torch.Generator().manual_seed(seed)).to(DEVICE, dtype)
    out, last, grads = _triton_scan(monkeypatch, args, softplus, reverse, dout)
    hi = _scan(args, "ref", softplus, reverse, dout, cast=torch.float64)
    assert out.dtype == dtype and last.dtype == torch.float32
    assert {k: g.dtype for k, g in grads.items()} == {k: args[k].dtype for k in grads}
    if dtype == torch.float32:
        for name, a, e in (("out", out, hi[0]), ("last_state", last, hi[1])):
            _check_f32(name, a, e)
        for name in grads:
            _check_f32("d" + name, grads[name], hi[2][name])
    else:
        lowp = _scan(args, "ref", softplus, reverse, dout)
        for name, a, lo, e in (("out", out, lowp[0], hi[0]), ("last_state", last, lowp[1], hi[1])):
            _check_lowp(name, a, lo, e)
        for name in grads:
            _check_lowp("d" + name, grads[name], lowp[2][name], hi[2][name])


# ------------------------------------------------------------------------------------------------
# Interpreter / CUDA at small sizes
# ------------------------------------------------------------------------------------------------


def test_num_chunks_matches_kernel_chunk():
    assert tk.CHUNK == 64
    assert [tk.num_chunks(n) for n in (1, 63, 64, 65, 128, 129, 3137)] == [1, 1, 1, 2, 2, 3, 50]


@pytest.mark.parametrize("seqlen", [1, 37, 64, 65, 130])
@pytest.mark.parametrize("reverse", [False, True])
def test_fp32_all_options(monkeypatch, seqlen, reverse):
    # VideoMamba's configuration: d_state 16, z, D, delta_bias, softplus.
    _compare(monkeypatch, _inputs(2, 8, 16, seqlen), True, reverse)


@pytest.mark.parametrize(
    "dstate,groups,softplus,has_D,has_z,has_bias,reverse",
    [
        (1, 1, False, False, False, False, False),
        (1, 2, True, True, False, True, True),
        (4, 1, False, True, True, False, True),
        (4, 2, True, False, True, True, False),
        (4, 1, True, False, False, True, True),  # bias + softplus on an odd length: padding must stay masked
        (16, 2, False, True, True, True, True),
    ],
)
def test_fp32_options(monkeypatch, dstate, groups, softplus, has_D, has_z, has_bias, reverse):
    args = _inputs(2, 8, dstate, 71, groups, has_D=has_D, has_z=has_z, has_bias=has_bias, seed=dstate + groups)
    _compare(monkeypatch, args, softplus, reverse)


def test_ungrouped_three_dim_B_C(monkeypatch):
    _compare(monkeypatch, _inputs(2, 6, 4, 40, squeeze_groups=True), True, False)


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("reverse", [False, True])
def test_bf16(monkeypatch, groups, reverse):
    _compare(monkeypatch, _inputs(2, 8, 16, 65, groups, dtype=torch.bfloat16, seed=5), True, reverse)


@pytest.mark.parametrize("groups", [1, 2])
def test_channel_super_blocks(monkeypatch, groups):
    """48 channels: the backward splits them into several super-blocks per group, whose dB/dC partial
    sums are reduced afterwards (with groups=1 the last super-block is partly past the last channel)."""
    _compare(monkeypatch, _inputs(2, 48, 16, 70, groups, seed=7), True, groups == 2)


def test_states_are_chunk_end_states():
    """states[:, :, c] is the state after c + 1 chunks of processing order, for both directions."""
    args = {k: None if v is None else v.detach() for k, v in _inputs(1, 4, 4, 130).items()}
    n = tk.num_chunks(130)
    for reverse in (False, True):
        out = torch.empty_like(args["u"])
        states = torch.empty(1, 4, n, 4, device=DEVICE)
        tk.fwd(*(args[k] for k in NAMES), True, reverse, out, states)
        for c in range(n):
            length = min((c + 1) * tk.CHUNK, 130)
            along_time = {k: args[k].flip(-1) if reverse else args[k] for k in ("u", "delta", "B", "C", "z")}
            seq = {k: along_time[k][..., :length] if k in along_time else args[k] for k in NAMES}
            _, last = selective_scan_ref(*(seq[k] for k in NAMES), True, return_last_state=True)
            _check_f32(f"states[{c}]", states[:, :, c], last)


def test_kernel_strided_views_and_out_z():
    """The kernel functions take MambaInnerFn's layouts: delta as a (d, b*l) product viewed as
    (b, d, l), z and dz as halves of xz/dxz; out_z receives the recomputed gated output."""
    batch, dim, dstate, seqlen = 2, 8, 4, 67
    a = {k: None if v is None else v.detach() for k, v in _inputs(batch, dim, dstate, seqlen).items()}
    delta = rearrange(rearrange(a["delta"], "b d l -> d (b l)").contiguous(), "d (b l) -> b d l", l=seqlen)
    xz = torch.cat([torch.randn_like(a["u"]), a["z"]], dim=1)
    z = xz[:, dim:]
    assert delta.stride() == (seqlen, batch * seqlen, 1) and z.stride(0) == 2 * dim * seqlen
    dout = torch.randn_like(a["u"])
    for reverse in (False, True):
        inputs = (a["u"], delta, a["A"], a["B"], a["C"], a["D"], z, a["delta_bias"], True, reverse)
        ref_inputs = (a["u"], a["delta"], a["A"], a["B"], a["C"], a["D"], a["z"], a["delta_bias"], True, reverse)
        out, states = torch.empty_like(a["u"]), torch.empty(batch, dim, tk.num_chunks(seqlen), dstate, device=DEVICE)
        tk.fwd(*inputs, out, states)
        ref_out, ref_states = torch.empty_like(out), torch.empty(batch, dim, 1, dstate, device=DEVICE)
        ref_kernels.fwd(*ref_inputs, ref_out, ref_states)
        _check_f32("out", out, ref_out)
        _check_f32("last_state", states[:, :, -1], ref_states[:, :, -1])

        def grads(mod, args, st, dz):
            g = [torch.empty_like(x) for x in (a["u"], a["u"], a["A"], a["B"], a["C"], a["D"])]
            g += [dz, torch.empty_like(a["D"]), torch.empty_like(a["u"])]
            mod.bwd(*args, dout, st, *g)
            return g

        dxz = torch.full_like(xz, float("nan"))
        got = grads(tk, inputs, states, dxz[:, dim:])
        want = grads(ref_kernels, ref_inputs, ref_states, torch.empty_like(a["z"]))
        assert dxz[:, :dim].isnan().all()
        names = ["du", "ddelta", "dA", "dB", "dC", "dD", "dz", "ddelta_bias", "out_z"]
        for name, x, y in zip(names, got, want, strict=True):
            _check_f32(name, x, y)


def test_backward_is_deterministic():
    a = {k: None if v is None else v.detach() for k, v in _inputs(1, 40, 16, 70, seed=11).items()}
    inputs = tuple(a[k] for k in NAMES) + (True, True)
    out, states = torch.empty_like(a["u"]), torch.empty(1, 40, tk.num_chunks(70), 16, device=DEVICE)
    tk.fwd(*inputs, out, states)
    dout = torch.randn_like(out)
    runs = []
    for _ in range(2):
        g = [torch.empty_like(a[k]) for k in NAMES] + [torch.empty_like(out)]
        tk.bwd(*inputs, dout, states, *g)
        runs.append(g)
    for x, y in zip(*runs, strict=True):
        assert torch.equal(x, y)


def test_mamba_mixer_through_triton(monkeypatch):
    """Bidirectional Mamba(16, d_state=4), fused path: conv and scan on the Triton backends equal the reference."""
    torch.manual_seed(0)
    m = Mamba(16, d_state=4).to(DEVICE)
    x = torch.randn(2, 70, 16, device=DEVICE)
    dout = torch.randn(2, 70, 16, device=DEVICE)
    params = dict(m.named_parameters())

    def run(backend):
        monkeypatch.setenv("MAMBA_BACKEND", backend)
        monkeypatch.setenv("CAUSAL_CONV1D_BACKEND", backend)
        xx = x.clone().requires_grad_()
        out = m(xx)
        if backend == "triton":
            assert ssi.dispatcher.last_used["selective_scan"] == "triton"
            assert conv_dispatcher.last_used["causal_conv1d"] == "triton"
        grads = torch.autograd.grad(out, [xx, *params.values()], dout)
        return out, dict(zip(["input", *params], grads, strict=True))

    out, grads = run("triton")
    ref, ref_grads = run("ref")
    _check_f32("out", out, ref)
    assert grads.keys() == ref_grads.keys()
    for name in grads:
        assert grads[name] is not None, name
        _check_f32(f"d{name}", grads[name], ref_grads[name])


@pytest.mark.skipif(HAS_CUDA or tk.triton is None, reason="on a GPU the other tests compile the kernels")
def test_kernels_compile_for_sm90():
    """The interpreter does not compile anything: check that the kernels build for an H100 at VideoMamba's
    configuration (bf16, d_state 16, z, D, delta_bias, softplus, reverse, recomputed out_z)."""
    block_d, block_n = tk._blocks(768, 16, (1, 1))
    io = {p: "*bf16" for p in ("U", "DELTA", "B", "C", "Z", "OUT", "DOUT", "DU", "DDELTA", "DZ", "OUT_Z")}
    io.update({p: "*fp32" for p in ("A", "D", "DELTA_BIAS", "STATES", "DB_PART", "DC_PART", "DA_PART", "DD_PART",
                                    "DDB_PART", "G_CARRY")})  # fmt: skip
    flags = dict(HAS_D=True, HAS_Z=True, HAS_DELTA_BIAS=True, SOFTPLUS=True, REVERSE=True,
                 BLOCK_D=block_d, BLOCK_N=block_n, BLOCK_L=tk.CHUNK)  # fmt: skip
    specs = [
        ("_scan_fwd_kernel", io, flags, tk._num_warps(block_d, block_n, tk.FWD_NUM_WARPS)),
        ("_scan_bwd_kernel", io, dict(flags, STORE_OUT_Z=True), tk._num_warps(block_d, block_n, tk.BWD_NUM_WARPS)),
    ]
    usage = compile_for_sm90("mamba_ssm.ops.triton.selective_scan", specs)
    print(usage)
    assert set(usage) == {"_scan_fwd_kernel", "_scan_bwd_kernel"}


# ------------------------------------------------------------------------------------------------
# CUDA, realistic sizes (compiled kernels). Not run without a GPU.
# ------------------------------------------------------------------------------------------------

GPU_LENGTHS = [1, 127, 128, 129, 2047, 2048, 2049, 3137, 4097]


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("seqlen", GPU_LENGTHS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("reverse", [False, True])
def test_gpu_realistic_sizes(monkeypatch, seqlen, dtype, reverse):
    _compare(monkeypatch, _inputs(2, 768, 16, seqlen, dtype=dtype, device="cuda"), True, reverse)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("dstate,groups,seqlen", [(1, 1, 2049), (4, 2, 2049), (64, 1, 513), (256, 4, 129)])
def test_gpu_other_state_sizes(monkeypatch, dstate, groups, seqlen):
    _compare(monkeypatch, _inputs(2, 768, dstate, seqlen, groups, dtype=torch.bfloat16, device="cuda"), True, True)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_gpu_backward_is_deterministic():
    """VideoMamba-like size: two backward passes give bitwise-equal gradients (no atomics)."""
    a = {k: None if v is None else v.detach() for k, v in _inputs(4, 768, 16, 3137, dtype=torch.bfloat16,
                                                                  device="cuda").items()}  # fmt: skip
    inputs = tuple(a[k] for k in NAMES) + (True, False)
    out = torch.empty_like(a["u"])
    states = torch.empty(4, 768, tk.num_chunks(3137), 16, device="cuda")
    tk.fwd(*inputs, out, states)
    dout = torch.randn_like(out)
    runs = []
    for _ in range(2):
        g = [torch.empty_like(a[k], dtype=torch.float32 if k in ("A", "B", "C", "D", "delta_bias") else None)
             for k in NAMES] + [torch.empty_like(out)]  # fmt: skip
        tk.bwd(*inputs, dout, states, *g)
        runs.append(g)
    for x, y in zip(*runs, strict=True):
        assert torch.equal(x, y)
