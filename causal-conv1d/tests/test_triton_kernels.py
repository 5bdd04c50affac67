"""causal_conv1d's Triton backend against the reference, through the dispatcher.

Without a GPU the kernels run in Triton's interpreter on CPU tensors (TRITON_INTERPRET=1, set by the
root conftest), at small sizes; with one they run compiled on CUDA, and the `gpu`-marked tests add
realistic sizes (dim 768, L up to 4097).

Tolerances (max abs error relative to the largest reference value, `scale`):
  float32: 1e-5 on outputs and dx, 1e-4 on dweight/dbias (sums over batch x time).
  float16/bfloat16: the kernel computes in float32 from the same rounded inputs as the reference and
  rounds once at the end, so outputs and dx may differ by one unit in the last place of the dtype
  (2^-10 fp16, 2^-7 bf16, relative to scale); float32 weight gradients keep 1e-4.
On CUDA the reference runs in float64 (F.conv1d in float32 could use TF32).
"""

import pytest
import torch

from causal_conv1d import causal_conv1d_fn, causal_conv1d_ref, dispatcher
from causal_conv1d import triton_kernels as tk
from causal_conv1d.kernel_infra import triton_interpreted
from causal_conv1d.kernel_infra.testing.triton_compile import compile_for_sm90

HAS_CUDA = torch.cuda.is_available()
DEVICE = "cuda" if HAS_CUDA else "cpu"
TRITON_RUNS = tk.triton is not None and (HAS_CUDA or triton_interpreted())
pytestmark = pytest.mark.skipif(
    not TRITON_RUNS, reason="the Triton kernels need a CUDA GPU, or TRITON_INTERPRET=1 (Triton's interpreter) on CPU"
)

ULP = {torch.float32: 1e-5, torch.bfloat16: 2**-7, torch.float16: 2**-10}


def _close(actual, expected, rtol, name):
    scale = expected.float().abs().max().clamp_min(1.0)
    err = (actual.double() - expected.double()).abs().max()
    assert err <= rtol * scale, f"{name}: max error {err:.3g} > {rtol:.2g} * {scale:.3g}"


def _inputs(batch, dim, seqlen, width, dtype, has_bias, weight_dtype=torch.float32, seed=0, device=DEVICE):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, dim, seqlen, generator=g).to(device, dtype).requires_grad_()
    weight = (torch.randn(dim, width, generator=g) / width**0.5).to(device, weight_dtype).requires_grad_()
    bias = torch.randn(dim, generator=g).to(device, weight_dtype).requires_grad_() if has_bias else None
    return x, weight, bias


def _triton(monkeypatch, x, weight, bias, activation, reverse, dout):
    monkeypatch.setenv("CAUSAL_CONV1D_BACKEND", "triton")
    out = causal_conv1d_fn(x, weight, bias, activation, reverse=reverse)
    assert dispatcher.last_used["causal_conv1d"] == "triton"
    monkeypatch.delenv("CAUSAL_CONV1D_BACKEND")
    leaves = [t for t in (x, weight, bias) if t is not None]
    return out, torch.autograd.grad(out, leaves, dout)


def _reference(x, weight, bias, activation, reverse, dout, hi=torch.float32):
    """The reference on the same (rounded) values in `hi` precision; grads in `hi`."""
    leaves = [t.detach().to(hi).requires_grad_() for t in (x, weight, bias) if t is not None]
    b = leaves[2] if bias is not None else None
    out = causal_conv1d_ref(leaves[0], leaves[1], b, activation, reverse)
    return out, torch.autograd.grad(out, leaves, dout.to(hi))


def _compare(monkeypatch, x, weight, bias, activation, reverse, hi=torch.float32, seed=1):
    dout = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed)).to(x.device, x.dtype)
    out, grads = _triton(monkeypatch, x, weight, bias, activation, reverse, dout)
    ref, ref_grads = _reference(x, weight, bias, activation, reverse, dout, hi)
    assert out.dtype == x.dtype and out.shape == x.shape
    assert [g.dtype for g in grads] == [t.dtype for t in (x, weight, bias) if t is not None]
    _close(out, ref, ULP[x.dtype], "out")
    _close(grads[0], ref_grads[0], ULP[x.dtype], "dx")
    for name, grad, r in zip(("dweight", "dbias"), grads[1:], ref_grads[1:], strict=False):
        _close(grad, r, max(1e-4, ULP[weight.dtype]), name)


@pytest.mark.parametrize("width", [2, 3, 4])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("activation", [None, "silu"])
def test_fp32_matches_reference(monkeypatch, width, reverse, activation):
    # Odd, and crosses the time tiles of both kernels.
    seqlen = max(tk.FWD_BLOCK_T, tk.BWD_BLOCK_T) + 3
    x, weight, bias = _inputs(2, 5, seqlen, width, torch.float32, has_bias=True)
    _compare(monkeypatch, x, weight, bias, activation, reverse)


@pytest.mark.parametrize("seqlen", [1, 2, 3, 5])
@pytest.mark.parametrize("reverse", [False, True])
def test_short_sequences_without_bias(monkeypatch, seqlen, reverse):
    # Shorter than the filter: every tap but the last reads the zero padding.
    x, weight, bias = _inputs(2, 3, seqlen, 4, torch.float32, has_bias=False)
    _compare(monkeypatch, x, weight, bias, "silu", reverse)


@pytest.mark.parametrize("reverse", [False, True])
def test_crosses_backward_segment(monkeypatch, reverse):
    # The backward splits time into segments of SEGMENT_TILES * BLOCK_T steps with their own partial sums.
    seqlen = tk.SEGMENT_TILES * tk.BWD_BLOCK_T + 77
    x, weight, bias = _inputs(1, 3, seqlen, 4, torch.float32, has_bias=True)
    _compare(monkeypatch, x, weight, bias, "silu", reverse)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("weight_dtype", [torch.float32, torch.bfloat16])
def test_bf16_matches_reference(monkeypatch, reverse, weight_dtype):
    x, weight, bias = _inputs(2, 4, tk.FWD_BLOCK_T + 5, 4, torch.bfloat16, True, weight_dtype)
    _compare(monkeypatch, x, weight, bias, "silu", reverse)


def test_many_rows_cross_row_blocks(monkeypatch):
    # batch * dim = 3 * 13 rows: several row blocks, the last one partial, rows crossing batch elements.
    x, weight, bias = _inputs(3, 13, 40, 3, torch.float32, has_bias=True)
    _compare(monkeypatch, x, weight, bias, "silu", True)


@pytest.mark.parametrize("reverse", [False, True])
def test_non_contiguous_input(monkeypatch, reverse):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 50, 6, generator=g).to(DEVICE).transpose(1, 2).requires_grad_()  # time stride 6
    assert not x.is_contiguous()
    weight = torch.randn(6, 4, generator=g).to(DEVICE).requires_grad_()
    bias = torch.randn(6, generator=g).to(DEVICE).requires_grad_()
    _compare(monkeypatch, x, weight, bias, "silu", reverse)


def test_kernel_writes_strided_views():
    """The kernel functions themselves accept channel-sliced views (unit time stride) for x, out and dx."""
    g = torch.Generator().manual_seed(4)
    xz = torch.randn(2, 8, 70, generator=g).to(DEVICE)
    x = xz[:, :4]  # batch stride 8*70, like the x half of xz
    weight = torch.randn(4, 4, generator=g).to(DEVICE)
    bias = torch.randn(4, generator=g).to(DEVICE)
    dout = torch.randn(2, 4, 70, generator=g).to(DEVICE)
    for reverse in (False, True):
        buf = torch.full((2, 8, 70), float("nan"), device=DEVICE)
        tk.fwd(x, weight, bias, buf[:, 4:], True, reverse)
        ref, ref_grads = _reference(x, weight, bias, "silu", reverse, dout)
        _close(buf[:, 4:], ref, 1e-5, "out")
        assert buf[:, :4].isnan().all()
        dx = torch.full((2, 8, 70), float("nan"), device=DEVICE)
        dweight, dbias = torch.empty(4, 4, device=DEVICE), torch.empty(4, device=DEVICE)
        tk.bwd(x, weight, bias, dout, dx[:, :4], dweight, dbias, True, reverse)
        _close(dx[:, :4], ref_grads[0], 1e-5, "dx")
        _close(dweight, ref_grads[1], 1e-4, "dweight")
        _close(dbias, ref_grads[2], 1e-4, "dbias")
        assert dx[:, 4:].isnan().all()


def test_backward_is_deterministic():
    x, weight, bias = _inputs(2, 5, 300, 4, torch.float32, True)
    x, weight, bias = x.detach(), weight.detach(), bias.detach()
    dout = torch.randn_like(x)
    runs = []
    for _ in range(2):
        grads = (torch.empty_like(x), torch.empty(5, 4, device=DEVICE), torch.empty(5, device=DEVICE))
        tk.bwd(x, weight, bias, dout, *grads, True, True)
        runs.append(grads)
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)


@pytest.mark.skipif(HAS_CUDA or tk.triton is None, reason="on a GPU the other tests compile the kernels")
def test_kernels_compile_for_sm90():
    """The interpreter does not compile anything: check that the kernels build for an H100."""
    io = {"X": "*bf16", "OUT": "*bf16", "DOUT": "*bf16", "DX": "*bf16", "W": "*fp32", "BIAS": "*fp32",
          "DW_PART": "*fp32", "DB_PART": "*fp32"}  # fmt: skip
    common = dict(WIDTH=4, HAS_BIAS=True, SILU=True, REVERSE=True)
    specs = [
        ("_conv_fwd_kernel", io, dict(common, BLOCK_R=tk.FWD_BLOCK_R, BLOCK_T=tk.FWD_BLOCK_T), tk.NUM_WARPS),
        ("_conv_bwd_kernel", io, dict(common, BLOCK_R=tk.BWD_BLOCK_R, BLOCK_T=tk.BWD_BLOCK_T, BLOCK_W=4), tk.NUM_WARPS),
    ]
    usage = compile_for_sm90("causal_conv1d.triton_kernels", specs)
    print(usage)
    assert set(usage) == {"_conv_fwd_kernel", "_conv_bwd_kernel"}


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
    x, weight, bias = _inputs(2, 768, seqlen, 4, dtype, True, device="cuda")
    _compare(monkeypatch, x, weight, bias, "silu", reverse, hi=torch.float64)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("width", [2, 3])
def test_gpu_other_widths_without_bias(monkeypatch, width):
    x, weight, bias = _inputs(3, 768, 3137, width, torch.bfloat16, False, device="cuda")
    _compare(monkeypatch, x, weight, bias, None, False, hi=torch.float64)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_gpu_backward_is_deterministic():
    x, weight, bias = (t.detach() for t in _inputs(8, 768, 3137, 4, torch.bfloat16, True, device="cuda"))
    dout = torch.randn_like(x)
    runs = []
    for _ in range(2):
        grads = (torch.empty_like(x), torch.empty(768, 4, device="cuda"), torch.empty(768, device="cuda"))
        tk.bwd(x, weight, bias, dout, *grads, True, False)
        runs.append(grads)
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_gpu_many_channels():
    # More channels than grid axis 1/2 allow (65,535): the grid is one-dimensional.
    x = torch.randn(1, 70000, 9, device="cuda")
    weight, bias = torch.randn(70000, 4, device="cuda"), torch.randn(70000, device="cuda")
    out = torch.empty_like(x)
    tk.fwd(x, weight, bias, out, True, False)
    _close(out, causal_conv1d_ref(x.double(), weight.double(), bias.double(), "silu"), 1e-5, "out")
