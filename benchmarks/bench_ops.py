"""Speed of the kernel ops against their PyTorch references (a script, not a test).

    python benchmarks/bench_ops.py                    # CPU (the default without a GPU), 2 threads
    python benchmarks/bench_ops.py --device cuda      # every backend built for the GPU (cuda, triton)
    python benchmarks/bench_ops.py --batches 1 --runs 10 --ref-runs 3

For each op and shape it times the reference and every kernel backend that runs on the device
(forward, and forward + backward through autograd), side by side in one process: warm-up calls,
then the median of several timed calls (and, for kernels, the fastest one: the cores may be
shared). It prints a markdown table with milliseconds, the speedup (median over median) over the
reference, and the largest error relative to the reference's magnitude (max |kernel - ref|
/ max |ref| over the output and every input gradient). Ops:

- selective scan: batch x dim 384 x L 1569 (8 frames of 14x14 patches + cls), N 16, float32, with D,
  z, delta_bias and softplus (VideoMamba's configuration);
- causal conv1d: batch x dim 768 x L 1569, width 4, bias, SiLU.

The scan reference's forward + backward takes minutes (a Python loop over L whose autograd
backward materialises a full-size gradient per step): it is timed once, and only up to
--ref-bwd-max-batch (default 1); above, the table says "not run" and the error covers the output.

A backend is a `Dispatcher` backend name (`cpu`, `cuda`, `triton`); it is forced for the timed
call. Adding a GPU backend needs no change here beyond it being built and importable.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from causal_conv1d.causal_conv1d_interface import causal_conv1d_fn, causal_conv1d_ref
from causal_conv1d.causal_conv1d_interface import dispatcher as conv_dispatcher
from mamba_ssm.ops.selective_scan_interface import dispatcher as scan_dispatcher
from mamba_ssm.ops.selective_scan_interface import selective_scan_fn, selective_scan_ref

# Backends that run on each device type, in the order of the table's columns.
DEVICE_BACKENDS = {"cpu": ("cpu",), "cuda": ("cuda", "triton")}


@dataclass
class Problem:
    """One op at one shape: `make()` builds fresh inputs (a dict of tensors) and the output gradient."""

    op: str
    shape: str
    make: Callable[[], tuple[dict, torch.Tensor]]
    ref: Callable[..., torch.Tensor]
    kernel: Callable[..., torch.Tensor]  # dispatched; the backend is forced around the call
    dispatcher: object
    slow_ref_backward: bool = False  # time the reference's fwd+bwd only up to --ref-bwd-max-batch


def scan_problem(batch: int, device: str) -> Problem:
    dim, L, N = 384, 1569, 16

    def make():
        g = torch.Generator(device="cpu").manual_seed(0)
        to = dict(device=device)
        x = dict(
            u=torch.randn(batch, dim, L, generator=g).to(**to),
            delta=(0.5 * torch.rand(batch, dim, L, generator=g)).to(**to),
            A=(-torch.rand(dim, N, generator=g) - 0.1).to(**to),
            B=torch.randn(batch, N, L, generator=g).to(**to),
            C=torch.randn(batch, N, L, generator=g).to(**to),
            D=torch.randn(dim, generator=g).to(**to),
            z=torch.randn(batch, dim, L, generator=g).to(**to),
            delta_bias=(torch.rand(dim, generator=g) - 4.0).to(**to),  # softplus^-1 of dt ~ 0.02
        )
        return x, torch.randn(batch, dim, L, generator=g).to(**to)

    def ref(u, delta, A, B, C, D, z, delta_bias):
        return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus=True)

    def kernel(u, delta, A, B, C, D, z, delta_bias):
        return selective_scan_fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus=True)

    shape = f"b{batch} d{dim} L{L} N{N} fp32"
    return Problem("selective_scan", shape, make, ref, kernel, scan_dispatcher, slow_ref_backward=True)


def conv_problem(batch: int, device: str) -> Problem:
    dim, L, width = 768, 1569, 4

    def make():
        g = torch.Generator(device="cpu").manual_seed(0)
        x = dict(
            x=torch.randn(batch, dim, L, generator=g).to(device),
            weight=torch.randn(dim, width, generator=g).to(device),
            bias=torch.randn(dim, generator=g).to(device),
        )
        return x, torch.randn(batch, dim, L, generator=g).to(device)

    def ref(x, weight, bias):
        return causal_conv1d_ref(x, weight, bias, "silu")

    def kernel(x, weight, bias):
        return causal_conv1d_fn(x, weight, bias, "silu")

    return Problem("causal_conv1d", f"b{batch} d{dim} L{L} w{width} fp32", make, ref, kernel, conv_dispatcher)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timings_ms(fn: Callable[[], object], warmup: int, runs: int, device: str) -> list[float]:
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(1e3 * (time.perf_counter() - t0))
    return times


def forward_backward(fn, leaves: dict, dout: torch.Tensor):
    """Output and input gradients of fn(**leaves) for the output gradient dout (leaves: tensors
    that require grad, made once outside the timed calls)."""
    for v in leaves.values():
        v.grad = None
    out = fn(**leaves)
    out.backward(dout)
    return out.detach(), {k: v.grad for k, v in leaves.items()}


def max_rel_error(result, expect) -> float:
    """max |got - want| / max |want| over the output and every gradient the reference has."""
    (out, grads), (r_out, r_grads) = result, expect
    pairs = [(out, r_out)] + [(grads[k], r_grads[k]) for k in r_grads]
    return max(((a.double() - b.double()).abs().max() / b.double().abs().max()).item() for a, b in pairs)


def bench_problem(p: Problem, device: str, backends: list[str], args, ref_bwd: bool) -> list[dict]:
    inputs, dout = p.make()

    def fwd(fn):
        def call():
            with torch.no_grad():
                return fn(**inputs)

        return call

    leaves = {k: v.detach().clone().requires_grad_() for k, v in inputs.items()}

    def fwd_bwd(fn):
        return lambda: forward_backward(fn, leaves, dout)

    ref_ms = {"fwd": statistics.median(timings_ms(fwd(p.ref), 1, args.ref_runs, device)), "fwd+bwd": float("nan")}
    if ref_bwd:
        # The reference's forward + backward is slow (a Python loop over L, and autograd through it):
        # its first call, which also gives the expected gradients, is one of the timed calls.
        times, results = [], []
        for _ in range(max(1, args.ref_bwd_runs)):
            t0 = time.perf_counter()
            results.append(forward_backward(p.ref, leaves, dout))
            sync(device)
            times.append(1e3 * (time.perf_counter() - t0))
        expect = results[0]
        ref_ms["fwd+bwd"] = statistics.median(times)
    else:
        expect = (fwd(p.ref)(), {})  # the error then covers the output only
    rows = []
    for backend in backends:
        with p.dispatcher.force(backend):
            got = forward_backward(p.kernel, leaves, dout) if ref_bwd else (fwd(p.kernel)(), {})
            err = max_rel_error(got, expect)
            times = {
                "fwd": timings_ms(fwd(p.kernel), 3, args.runs, device),
                "fwd+bwd": timings_ms(fwd_bwd(p.kernel), 3, args.runs, device),
            }
            assert p.dispatcher.last_used[p.op] == backend, p.dispatcher.last_used
        for what, t in times.items():
            rows.append(dict(op=p.op, shape=p.shape, what=what, backend=backend, ref_ms=ref_ms[what],
                             ms=statistics.median(t), min_ms=min(t), err=err,
                             err_scope="out+grads" if ref_bwd else "out"))  # fmt: skip
    return rows


def machine_line(device: str) -> str:
    if device == "cuda":
        hw = torch.cuda.get_device_name()
    else:
        hw = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as f:
                hw = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
        except (OSError, StopIteration):
            pass
    extra = ""
    if device == "cpu":
        import causal_conv1d._C_cpu as conv_cpu
        import mamba_ssm._C_cpu as scan_cpu

        threads = torch.get_num_threads()
        extra = f", {threads} threads, scan kernel ISA {scan_cpu.isa()}, conv kernel ISA {conv_cpu.isa()}"
    return f"{hw}{extra}; torch {torch.__version__}; {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=DEVICE_BACKENDS)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads for CPU runs")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--runs", type=int, default=20, help="timed calls per kernel measurement, after 3 warm-ups")
    parser.add_argument("--ref-runs", type=int, default=3, help="timed calls of the reference forward, after 1 warm-up")
    parser.add_argument("--ref-bwd-runs", type=int, default=1, help="timed calls of the reference forward + backward")
    parser.add_argument("--ref-bwd-max-batch", type=int, default=1,
                        help="time the reference's forward + backward only up to this batch (it is very slow: the "
                        "scan reference takes minutes per call on 2 CPU cores at batch 1)")  # fmt: skip
    parser.add_argument("--ops", nargs="+", default=["selective_scan", "causal_conv1d"])
    args = parser.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(args.threads)

    makers = {"selective_scan": scan_problem, "causal_conv1d": conv_problem}
    print(f"# {machine_line(args.device)}\n")
    print("| op | shape | pass | backend | ref ms | kernel ms | kernel min ms | speedup | max rel err |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|")
    for op in args.ops:
        for batch in args.batches:
            p = makers[op](batch, args.device)
            available = [b for b in DEVICE_BACKENDS[args.device] if p.dispatcher.kernels(b) is not None]
            if not available:
                print(f"| {op} | {p.shape} | - | none built | | | | | |")
                continue
            ref_bwd = not p.slow_ref_backward or batch <= args.ref_bwd_max_batch
            for r in bench_problem(p, args.device, available, args, ref_bwd):
                ref = "not run" if r["ref_ms"] != r["ref_ms"] else f"{r['ref_ms']:.1f}"
                speedup = "" if r["ref_ms"] != r["ref_ms"] else f"{r['ref_ms'] / r['ms']:.0f}x"
                err = f"{r['err']:.1e}" + ("" if r["err_scope"] == "out+grads" else " (out)")
                print(f"| {r['op']} | {r['shape']} | {r['what']} | {r['backend']} | {ref} | {r['ms']:.2f} "
                      f"| {r['min_ms']:.2f} | {speedup} | {err} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
