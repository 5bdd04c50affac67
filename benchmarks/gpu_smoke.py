"""First contact of the CUDA kernels with a GPU: a few small forward + backward calls of both
packages against the PyTorch reference, small enough for compute-sanitizer.

    CUDA_LAUNCH_BLOCKING=1 python benchmarks/gpu_smoke.py
    compute-sanitizer --tool racecheck python benchmarks/gpu_smoke.py --tiny

Prints one line per case (max abs error of the output and of every gradient) and exits 1 on a
mismatch or a CUDA error. benchmarks/bench_gpu.sh runs it before the test-suite.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "causal-conv1d"), str(ROOT / "mamba")]

from causal_conv1d import causal_conv1d_fn  # noqa: E402
from causal_conv1d import dispatcher as conv_dispatcher  # noqa: E402
from mamba_ssm.ops.selective_scan_interface import dispatcher as scan_dispatcher  # noqa: E402
from mamba_ssm.ops.selective_scan_interface import selective_scan_fn  # noqa: E402


def _grads(fn, leaves, dout):
    leaves = [t.detach().requires_grad_() for t in leaves]
    out = fn(*leaves)
    return [out.detach(), *torch.autograd.grad(out, leaves, dout)]


def _compare(name, fn, leaves, dout, dispatcher, tol) -> bool:
    with dispatcher.force("cuda"):
        got = _grads(fn, leaves, dout)
        torch.cuda.synchronize()
    with dispatcher.force("ref"):
        want = _grads(fn, [t.float() for t in leaves], dout.float())
    errors = [(g.float() - w).abs().max().item() for g, w in zip(got, want, strict=True)]
    scale = max(w.abs().max().item() for w in want)
    ok = all(e <= tol * max(scale, 1.0) for e in errors)
    print(f"{'ok  ' if ok else 'FAIL'} {name}: max errors (out, grads...) {', '.join(f'{e:.2e}' for e in errors)}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="the smallest shapes (for compute-sanitizer)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no GPU visible")
        return 1
    print(torch.cuda.get_device_name(), "capability", torch.cuda.get_device_capability())
    print(conv_dispatcher.describe())
    print(scan_dispatcher.describe())
    dev = torch.device("cuda")
    g = torch.Generator(device=dev).manual_seed(0)
    lengths = [1, 65, 300] if args.tiny else [1, 63, 257, 449, 3137]
    ok = True
    # The last case has a d_state whose two forward B/C tiles (290 KB) exceed an H100's shared
    # memory: its forward stages one tile per chunk between barriers instead of prefetching.
    small = (8, 4, 1) if args.tiny else (64, 16, 2)
    dtypes = ((torch.float32, 2e-3), (torch.bfloat16, 5e-2))
    cases = [(dtype, tol, seqlen, small) for dtype, tol in dtypes for seqlen in lengths]
    cases.append((torch.float32, 2e-3, 300, (8, 64, 1)))
    for dtype, tol, seqlen, (dim, dstate, batch) in cases:
        for reverse in (False, True):
            x = torch.randn(batch, dim, seqlen, device=dev, generator=g).to(dtype)
            w = torch.randn(dim, 4, device=dev, generator=g)
            dout = torch.randn_like(x)
            ok &= _compare(
                f"conv {dtype} L={seqlen} reverse={reverse}",
                lambda x, w, r=reverse: causal_conv1d_fn(x, w, None, "silu", r),
                [x, w],
                dout,
                conv_dispatcher,
                tol,
            )
            u = torch.randn(batch, dim, seqlen, device=dev, generator=g).to(dtype)
            delta = (0.5 * torch.rand(batch, dim, seqlen, device=dev, generator=g)).to(dtype)
            A = -0.5 * torch.rand(dim, dstate, device=dev, generator=g)
            B = torch.randn(batch, 1, dstate, seqlen, device=dev, generator=g).to(dtype)
            C = torch.randn(batch, 1, dstate, seqlen, device=dev, generator=g).to(dtype)
            D = torch.randn(dim, device=dev, generator=g)
            z = torch.randn_like(u)
            bias = 0.5 * torch.rand(dim, device=dev, generator=g)
            ok &= _compare(
                f"scan {dtype} L={seqlen} N={dstate} reverse={reverse}",
                lambda u, delta, A, B, C, D, z, bias, r=reverse: selective_scan_fn(
                    u, delta, A, B, C, D, z, bias, delta_softplus=True, reverse=r
                ),
                [u, delta, A, B, C, D, z, bias],
                torch.randn_like(u),
                scan_dispatcher,
                tol * 5,
            )
    print("SMOKE OK" if ok else "SMOKE FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
