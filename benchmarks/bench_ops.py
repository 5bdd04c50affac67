"""Speed of the kernel ops against their PyTorch references, on CPU or GPU (a script, not a test).

    python benchmarks/bench_ops.py                               # CPU default: preset cpu, 2 threads
    python benchmarks/bench_ops.py --batches 1 --runs 10 --ref-runs 3
    python benchmarks/bench_ops.py --device cpu --preset tiny    # the GPU mode's code paths, in seconds
    python benchmarks/bench_ops.py --only-isa --threads 1 --clock cpu   # scan vs exp floor, conv vs F.conv1d
    python benchmarks/bench_ops.py --device cuda                 # GPU default: presets s16 m64, fp32 and bf16
    bash benchmarks/bench_gpu.sh                                 # GPU session: build, GPU tests, this script

For each op, shape and dtype it times the reference and every kernel backend that runs on the device
(forward, and forward + backward through autograd), side by side in one process: warm-up calls,
then the median of several timed calls (and, for kernels, the fastest one: the cores may be
shared). `--device cuda` is the default when CUDA is available. Everything is printed in one go:
a machine line, then markdown tables ready to paste into benchmarks/RESULTS.md.

Presets (`--preset`, several allowed; `--batches` overrides their batch sizes):

| preset | selective scan (d_inner, L, N) | causal conv1d (dim, L, width) | bidirectional mixer |
|---|---|---|---|
| cpu (CPU default) | b1, b8 x 384 x 1569 (8 frames) x 16 | b1, b8 x 768 x 1569 x 4 | - |
| tiny | b2 x 64 x 197 x 16 | b2 x 64 x 197 x 4 | b2, d_model 32, L 197 |
| s16 (GPU default) | VideoMamba-S 16x224: b32 x 768 x 3137 x 16 | b32 x 768 x 3137 x 4 | b32, d_model 384, L 3137 |
| m64 (GPU default) | VideoMamba-M 64 frames: b8 x 1152 x 12545 x 16 | b8 x 1152 x 12545 x 4 | - |

L = frames * 14 * 14 + 1 (224x224 frames in 16x16 patches, plus the cls token). The scan runs with D,
z, delta_bias and softplus (VideoMamba's configuration). `--dtypes` picks the input dtype (A, D,
delta_bias stay float32); with bf16/fp16 the mixer runs under autocast, as in training.

Tables:

1. Ops. "ref ms" is the reference's forward at the full batch, timed once on CUDA (`--ref-runs`);
   its forward + backward only up to `--ref-bwd-max-batch` (default 1, "not run" above: the scan
   reference is a Python loop over L). "max rel err" is max |kernel - ref| / max |ref| over the output and
   every input gradient; when the reference's backward is not run at the full batch, it is computed
   on a fresh problem at batch `--check-batch` (default 1), kernel and reference both ("at b1").
   "peak GiB" is torch.cuda.max_memory_allocated during the timed calls, inputs included (CUDA only).
   A failing measurement prints "OOM" (torch.cuda.OutOfMemoryError) or "error: ..." in its cell
   (the traceback goes to stderr) and the run goes on.
2. Roofline of the forward. bytes = what the op must read once and write once: u, delta, z,
   B, C (input dtype), A, D, delta_bias (float32) and the output (input dtype) for the scan; x,
   weight, bias and the output for the conv. The saved chunk states are not counted: they are the
   kernel's choice. Special-function ops (SFU, the GPU's MUFU unit) = batch * d * L * (N + 4) for the
   scan: N exps of delta * A, then exp and log of the softplus, exp and reciprocal of silu(z); the conv's
   SiLU counts 2 per element. floor = max(bytes / copy bandwidth, SFU ops / SFU rate), where the copy
   bandwidth is measured in the same run (`--copy-mib` tensor, dst.copy_(src), best of 20, bytes read
   + written) and the SFU rate is `--sfu-tflops`, by default an ASSUMPTION for an H100 SXM: 132 SMs x
   16 SFU results per clock per SM x ~1.98 GHz ~= 4.2e12 ops/s (torch.exp2 on a large tensor is
   memory bound, so it cannot measure this). "x floor" = fwd time / fwd floor; the fwd+bwd column
   divides the fwd+bwd time by the same forward floor. On CPU the SFU term is meaningless.
3. Bidirectional mixer, fused vs flips: `mamba_ssm`'s `bimamba_inner_fn` (both directions in one
   autograd function: an anti-causal conv and a reverse scan on the unflipped sequence, separate "_b"
   weights = Vim/VideoMamba v2) against the original VideoMamba way: `mamba_inner_fn_no_out_proj` on
   xz and on xz.flip(-1) with the backward-direction weights, the second output flipped back, the two
   summed, then out_proj. Same backend for both (conv and scan forced together); "max rel diff" compares
   the two paths' outputs and gradients (xz and every weight). Inputs are xz (batch, 2 * d_inner, L)
   and module-like weights (dt_rank = ceil(d_model / 16), bias-free out_proj).
4. Triton / CUDA: the ratio of the Triton backend's median to the CUDA backend's for every op, shape
   and pass that has both (on CPU: Triton, interpreted when TRITON_INTERPRET=1 is set, over the CPU kernel).

5. CPU instruction sets (CPU runs, printed first; `--isa-reps` rounds, 0 turns them off, `--only-isa`
   prints nothing else). For every variant of the scan kernel this CPU can run (MAMBA_CPU_ISA=avx512,
   avx2, default): the exp floor = the kernel's own vectorised exp2 over B * D * L * N values held in
   registers, on the same threads (`mamba_ssm._C_cpu.exp2_floor`: a forward computes that many decays
   exp(delta * A) besides its other work, so it cannot be faster); the forward (under no_grad) and its
   ratio to the floor; forward + backward and its ratio to the forward. For every variant of the conv
   kernel (CAUSAL_CONV1D_CPU_ISA): forward and forward + backward against F.conv1d + F.silu (the
   reference, oneDNN). The calls take turns, round after round, and the medians are printed, so a slow
   phase of a shared machine hits them alike; `--clock cpu` times process CPU time instead of the wall
   clock (with `--threads 1`, the time an idle core would take).

"fwd" everywhere runs under `torch.no_grad()`, which is the inference path: the scan keeps its last state
only (no per-chunk states for a backward).

A backend is a `Dispatcher` backend name (`cpu`, `cuda`, `triton`); it is forced for the timed call
(both packages' dispatchers, so the mixer's conv and scan run on the same one). Adding a backend
needs no change here beyond it being built and importable.

Comparing with upstream (state-spaces/mamba 1.x, causal-conv1d, or VideoMamba's fork). Our packages
use the same import names (`mamba_ssm`, `causal_conv1d`), so one interpreter can hold only one of
them. `--upstream` times whatever `mamba_ssm` / `causal_conv1d` are importable as upstream's: its
`selective_scan_fn` and `causal_conv1d_fn` (one "upstream" backend, errors against upstream's own
references, same inputs: same seeds) and, where it has `mamba_inner_fn_no_out_proj` (VideoMamba's fork),
the flips mixer. Two ways to use it:
  - `--upstream-path DIR`: after our tables this script re-runs itself in a subprocess with
    `--upstream` and DIR first on sys.path, so DIR's `mamba_ssm` (and `causal_conv1d`, if there;
    otherwise ours is used by upstream's mixer) win over ours. DIR holds the packages and their
    compiled modules (`selective_scan_cuda*.so`, `causal_conv1d_cuda*.so`) built against this
    interpreter's torch, e.g. `pip install --no-build-isolation --no-deps --target DIR
    causal-conv1d==1.1.1 mamba-ssm==1.1.1` (or VideoMamba's fork: `... --target DIR path/to/VideoMamba/mamba`).
    The child prints where it imported them from.
  - In a virtual environment where upstream is installed (and ours is not): run
    `python benchmarks/bench_ops.py --upstream` there with the same options, and paste both outputs.
The subprocess keeps the two implementations from ever meeting in one process; nothing else about it
is special. The upstream tables have the same columns, with the backend "upstream".

Runtime: the default GPU run is expected to take a few minutes on an H100 (an estimate, not yet measured:
the references dominate, a Python loop over L for the scan's forward at the full batch and its forward +
backward at the check batch, then Triton's first compilations). `--ref-max-batch` skips the reference's
full-batch forward above a batch size; `--preset s16` or `--dtypes fp32` halve the run.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import importlib
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import partial

import torch
import torch.nn.functional as F

# Backends that run on each device type, in the order of the table's rows; the first compiled one is
# the denominator of the Triton ratio table.
DEVICE_BACKENDS = {"cpu": ("cpu",), "cuda": ("cuda", "triton")}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
SCAN, CONV, MIXER = "selective_scan", "causal_conv1d", "mixer"
# Assumed H100 SXM special-function rate: 132 SMs x 16 MUFU results/clock/SM x 1.98 GHz, in 1e12 ops/s.
H100_SFU_TOPS = 132 * 16 * 1.98e9 / 1e12


def video_len(frames: int) -> int:
    """Tokens of a 224x224 video in 16x16 patches: 14 x 14 per frame, plus the cls token."""
    return frames * 14 * 14 + 1


@dataclass(frozen=True)
class Spec:
    """One op at one shape in a preset. `dim` is d_inner for the scan and conv, d_model for the mixer."""

    op: str
    batches: tuple[int, ...]
    dim: int
    seqlen: int
    d_state: int = 16
    width: int = 4


PRESETS: dict[str, tuple[Spec, ...]] = {
    "cpu": (Spec(SCAN, (1, 8), 384, video_len(8)), Spec(CONV, (1, 8), 768, video_len(8))),
    "tiny": (
        Spec(SCAN, (2,), 64, video_len(1)),
        Spec(CONV, (2,), 64, video_len(1)),
        Spec(MIXER, (2,), 32, video_len(1)),
    ),
    "s16": (
        Spec(SCAN, (32,), 768, video_len(16)),
        Spec(CONV, (32,), 768, video_len(16)),
        Spec(MIXER, (32,), 384, video_len(16)),
    ),
    "m64": (Spec(SCAN, (8,), 1152, video_len(64)), Spec(CONV, (8,), 1152, video_len(64))),
}


# ------------------------------------------------------------------------------------------------
# The implementations under test: ours (dispatched) or upstream's (one backend)
# ------------------------------------------------------------------------------------------------


@dataclass
class Kit:
    """The functions under test, from our packages or upstream's (same import names: see the docstring)."""

    label: str
    scan_fn: Callable[..., torch.Tensor]
    scan_ref: Callable[..., torch.Tensor]
    conv_fn: Callable[..., torch.Tensor]
    conv_ref: Callable[..., torch.Tensor]
    dispatchers: dict[str, object]  # op -> Dispatcher; empty for upstream (nothing to force)
    bimamba_fn: Callable[..., torch.Tensor] | None
    inner_no_out_proj: Callable[..., torch.Tensor] | None
    source: str

    def backends(self, device: str, ops: tuple[str, ...]) -> list[str]:
        """Backends that every one of `ops` has built for `device`."""
        if not self.dispatchers:
            return ["upstream"]
        names = list(DEVICE_BACKENDS[device])
        if device == "cpu" and os.environ.get("TRITON_INTERPRET", "0") == "1":
            names.append("triton")  # Triton's interpreter runs on CPU tensors: slow, but the path is the same
        return [n for n in names if all(self.dispatchers[op].kernels(n) is not None for op in ops)]

    @contextlib.contextmanager
    def force(self, backend: str) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for d in self.dispatchers.values():
                stack.enter_context(d.force(backend))
            yield

    def check_used(self, ops: tuple[str, ...], backend: str) -> None:
        """A forced backend that silently fell back would make the row lie."""
        for op in ops if self.dispatchers else ():
            used = self.dispatchers[op].last_used.get(op)
            if used != backend:
                raise RuntimeError(f"{op} ran on {used}, not the forced {backend}")


def load_kit(upstream: bool) -> Kit:
    """Imports the ops lazily, so that an `--upstream` child can put upstream first on sys.path."""
    if not upstream:
        from causal_conv1d.causal_conv1d_interface import causal_conv1d_fn, causal_conv1d_ref
        from causal_conv1d.causal_conv1d_interface import dispatcher as conv_dispatcher
        from mamba_ssm.ops import selective_scan_interface as ssi

        dispatchers = {SCAN: ssi.dispatcher, CONV: conv_dispatcher}
        return Kit("ours", ssi.selective_scan_fn, ssi.selective_scan_ref, causal_conv1d_fn, causal_conv1d_ref,
                   dispatchers, ssi.bimamba_inner_fn, ssi.mamba_inner_fn_no_out_proj, ssi.__file__)  # fmt: skip
    ssi = importlib.import_module("mamba_ssm.ops.selective_scan_interface")
    if hasattr(ssi, "dispatcher"):
        raise SystemExit(f"--upstream: {ssi.__file__} is this project's mamba_ssm, not upstream's: see --upstream-path")
    conv = importlib.import_module("causal_conv1d.causal_conv1d_interface")
    # Upstream's VideoMamba fork has a v1 (shared weights) bimamba_inner_fn only: not comparable, not timed.
    no_out_proj = getattr(ssi, "mamba_inner_fn_no_out_proj", None)
    return Kit("upstream", ssi.selective_scan_fn, ssi.selective_scan_ref, conv.causal_conv1d_fn, conv.causal_conv1d_ref,
               {}, None, no_out_proj, f"{ssi.__file__}, {conv.__file__}")  # fmt: skip


# ------------------------------------------------------------------------------------------------
# Problems
# ------------------------------------------------------------------------------------------------


@dataclass
class Problem:
    """One op at one shape: `make(batch)` builds fresh inputs (a dict of tensors) and the output gradient."""

    op: str
    batch: int
    shape: str
    make: Callable[[int], tuple[dict, torch.Tensor]]
    ref: Callable[..., torch.Tensor]
    kernel: Callable[..., torch.Tensor]  # dispatched; the backend is forced around the call
    io_bytes: int  # the forward's minimum traffic: inputs read once, output written once
    sfu_ops: int  # the forward's special-function evaluations
    slow_ref_backward: bool = False  # run the reference's fwd+bwd at the full batch only up to --ref-bwd-max-batch


def _generator(device: str) -> torch.Generator:
    # On the target device: M64 inputs are ~0.5 GB each, slow to draw on a CPU and copy.
    return torch.Generator(device=device).manual_seed(0)


def scan_problem(kit: Kit, spec: Spec, batch: int, device: str, dtype: torch.dtype) -> Problem:
    dim, L, N = spec.dim, spec.seqlen, spec.d_state

    def make(b: int) -> tuple[dict, torch.Tensor]:
        g = _generator(device)
        randn = lambda *s: torch.randn(*s, generator=g, device=device)
        rand = lambda *s: torch.rand(*s, generator=g, device=device)
        x = dict(
            u=randn(b, dim, L),
            delta=0.5 * rand(b, dim, L),
            A=-rand(dim, N) - 0.1,
            B=randn(b, N, L),
            C=randn(b, N, L),
            D=randn(dim),
            z=randn(b, dim, L),
            delta_bias=rand(dim) - 4.0,  # softplus^-1 of dt ~ 0.02
        )
        for k in ("u", "delta", "B", "C", "z"):  # A, D, delta_bias stay float32, as in the model
            x[k] = x[k].to(dtype)
        return x, randn(b, dim, L).to(dtype)

    def ref(u, delta, A, B, C, D, z, delta_bias):
        return kit.scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus=True)

    def kernel(u, delta, A, B, C, D, z, delta_bias):
        return kit.scan_fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus=True)

    per, size = batch * dim * L, dtype.itemsize
    io_bytes = (4 * per + 2 * batch * N * L) * size + (dim * N + 2 * dim) * 4  # u delta z out, B C; A D bias
    shape = f"b{batch} d{dim} L{L} N{N} {dtype_name(dtype)}"
    return Problem(SCAN, batch, shape, make, ref, kernel, io_bytes, per * (N + 4), slow_ref_backward=True)


def conv_problem(kit: Kit, spec: Spec, batch: int, device: str, dtype: torch.dtype) -> Problem:
    dim, L, width = spec.dim, spec.seqlen, spec.width

    def make(b: int) -> tuple[dict, torch.Tensor]:
        g = _generator(device)
        randn = lambda *s: torch.randn(*s, generator=g, device=device).to(dtype)
        # weight and bias in x's dtype: upstream's kernel wants them alike.
        x = dict(x=randn(b, dim, L), weight=randn(dim, width), bias=randn(dim))
        return x, randn(b, dim, L)

    def ref(x, weight, bias):
        return kit.conv_ref(x, weight, bias, activation="silu")

    def kernel(x, weight, bias):
        return kit.conv_fn(x, weight, bias, activation="silu")  # keyword: upstream's 4th argument is seq_idx

    per = batch * dim * L
    io_bytes = (2 * per + dim * width + dim) * dtype.itemsize
    shape = f"b{batch} d{dim} L{L} w{width} {dtype_name(dtype)}"
    return Problem(CONV, batch, shape, make, ref, kernel, io_bytes, 2 * per)


MAKERS = {SCAN: scan_problem, CONV: conv_problem}


def dtype_name(dtype: torch.dtype) -> str:
    return next(k for k, v in DTYPES.items() if v == dtype)


# ------------------------------------------------------------------------------------------------
# Timing and guarded measurements
# ------------------------------------------------------------------------------------------------


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def release(device: str) -> None:
    """Drop what a failed or finished measurement left, so the next one starts from the same memory."""
    gc.collect()
    if device == "cuda":
        with contextlib.suppress(Exception):  # after a kernel fault the context is unusable: let the rows say so
            torch.cuda.empty_cache()


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


@dataclass
class Measured:
    """A guarded call's result: a value (timings, an error figure), or why there is none."""

    value: object = None
    error: str | None = None
    peak_gib: float | None = None

    @property
    def ms(self) -> float | None:
        return statistics.median(self.value) if self.error is None and self.value else None

    @property
    def min_ms(self) -> float | None:
        return min(self.value) if self.error is None and self.value else None


NOT_RUN = Measured(error="not run")


def guarded(fn: Callable[[], object], device: str) -> Measured:
    """fn() with CUDA OOM and any other error turned into a cell text, and its peak memory on CUDA.

    One broken backend (a Triton compile error, an unsupported shape) must not end a run that the GPU
    session gets once: the row says why and the traceback goes to stderr.
    """
    m = Measured()
    try:  # the synchronisation too: it raises a fault left by an earlier kernel
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        m.value = fn()
    except torch.cuda.OutOfMemoryError:
        m.error = "OOM"
    except Exception as exc:
        text = " ".join(str(exc).split())[:80].replace("|", "/")
        m.error = f"error: {type(exc).__name__}: {text}"
        print(f"[bench_ops] {traceback.format_exc()}", file=sys.stderr, flush=True)
    if device == "cuda":
        with contextlib.suppress(Exception):  # the context may be unusable after a kernel fault
            m.peak_gib = torch.cuda.max_memory_allocated() / 2**30
    release(device)
    return m


def forward_backward(fn: Callable[..., torch.Tensor], leaves: dict, dout: torch.Tensor):
    """Output and input gradients of fn(**leaves) for the output gradient dout (leaves: tensors
    that require grad, made once outside the timed calls)."""
    for v in leaves.values():
        v.grad = None
    out = fn(**leaves)
    out.backward(dout)
    return out.detach(), {k: v.grad for k, v in leaves.items()}


def max_rel_error(result, expect) -> float:
    """max |got - want| / max |want| over the output and every gradient the expectation has."""
    (out, grads), (r_out, r_grads) = result, expect
    pairs = [("out", out, r_out)] + [(k, grads.get(k), r_grads[k]) for k in r_grads if r_grads[k] is not None]
    worst = 0.0
    for name, a, b in pairs:
        if a is None:
            raise ValueError(f"no gradient for {name}")
        err = (a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)
        worst = max(worst, err.item())
    return worst


def _no_grad_call(fn: Callable[..., torch.Tensor], inputs: dict) -> Callable[[], torch.Tensor]:
    def call():
        with torch.no_grad():
            return fn(**inputs)

    return call


# ------------------------------------------------------------------------------------------------
# Ops table
# ------------------------------------------------------------------------------------------------


def bench_problem(p: Problem, kit: Kit, device: str, backends: list[str], args) -> list[dict]:
    inputs, dout = p.make(p.batch)
    leaves = {k: v.detach().clone().requires_grad_() for k, v in inputs.items()}
    ref_warmup = 1 if device == "cpu" else 0  # on CUDA the reference's single call is seconds long already

    ref_fwd = NOT_RUN
    if args.ref_max_batch is None or p.batch <= args.ref_max_batch:
        ref_fwd = guarded(lambda: timings_ms(_no_grad_call(p.ref, inputs), ref_warmup, args.ref_runs, device), device)

    full_ref_bwd = not p.slow_ref_backward or p.batch <= args.ref_bwd_max_batch
    check_batch = p.batch if full_ref_bwd else min(p.batch, args.check_batch)
    if check_batch == p.batch:
        check_leaves, check_dout = leaves, dout
    else:
        small, check_dout = p.make(check_batch)
        check_leaves = {k: v.requires_grad_() for k, v in small.items()}
    expect = {}

    def ref_fwd_bwd() -> list[float]:
        # The reference's forward + backward is slow (a Python loop over L, and autograd through it):
        # its first call, which also gives the expected gradients, is one of the timed calls.
        times = []
        for _ in range(max(1, args.ref_bwd_runs) if full_ref_bwd else 1):
            t0 = time.perf_counter()
            result = forward_backward(p.ref, check_leaves, check_dout)
            sync(device)
            times.append(1e3 * (time.perf_counter() - t0))
            expect.setdefault("result", result)
        return times

    ref_fb = guarded(ref_fwd_bwd, device)
    if not full_ref_bwd and ref_fb.error is None:
        ref_fb = NOT_RUN  # it ran at the check batch only: no timing for the full batch
    scope = "" if check_batch == p.batch else f" at b{check_batch}"

    rows = []
    for backend in backends:
        with kit.force(backend):
            if "result" in expect:
                err = guarded(lambda: max_rel_error(forward_backward(p.kernel, check_leaves, check_dout),
                                                    expect["result"]), device)  # fmt: skip
            else:
                err = Measured(error=f"ref {ref_fb.error}")
            fwd = guarded(lambda: timings_ms(_no_grad_call(p.kernel, inputs), 3, args.runs, device), device)
            fb_call = partial(forward_backward, p.kernel, leaves, dout)
            fwd_bwd = guarded(partial(timings_ms, fb_call, 3, args.runs, device), device)
            used = guarded(partial(kit.check_used, (p.op,), backend), device)
        if used.error and not (fwd.error or fwd_bwd.error):
            fwd = fwd_bwd = used
        for what, ref, m in (("fwd", ref_fwd, fwd), ("fwd+bwd", ref_fb, fwd_bwd)):
            rows.append(dict(op=p.op, shape=p.shape, what=what, backend=backend, ref=ref, kernel=m, err=err,
                             scope=scope, io_bytes=p.io_bytes, sfu_ops=p.sfu_ops))  # fmt: skip
    return rows  # the inputs go with this frame; the caller releases the memory


def _cell(m: Measured, digits: int = 2) -> str:
    return m.error if m.error else f"{m.ms:.{digits}f}"


def _speedup(ref: Measured, kernel: Measured) -> str:
    if ref.ms is None or kernel.ms is None:
        return ""
    s = ref.ms / kernel.ms
    return f"{s:.0f}x" if s >= 10 else f"{s:.2g}x"


def _gib(m: Measured) -> str:
    return "-" if m.peak_gib is None else f"{m.peak_gib:.2f}"


OPS_HEADER = (
    "| op | shape | pass | backend | ref ms | kernel ms | kernel min ms | speedup | max rel err "
    "| peak GiB ref / kernel |\n|---|---|---|---|---:|---:|---:|---:|---:|---:|"
)


def print_op_row(r: dict) -> None:
    k, err = r["kernel"], r["err"]
    err_cell = err.error if err.error else f"{err.value:.1e}{r['scope']}"
    kmin = "" if k.min_ms is None else f"{k.min_ms:.2f}"
    print(f"| {r['op']} | {r['shape']} | {r['what']} | {r['backend']} | {_cell(r['ref'], 1)} | {_cell(k)} | {kmin} "
          f"| {_speedup(r['ref'], k)} | {err_cell} | {_gib(r['ref'])} / {_gib(k)} |", flush=True)  # fmt: skip


# ------------------------------------------------------------------------------------------------
# Roofline: copy bandwidth, bytes and special-function floors
# ------------------------------------------------------------------------------------------------


def copy_bandwidth_gbs(device: str, mib: int) -> float:
    """Device copy bandwidth in GB/s, counting bytes read + written (best of 20 dst.copy_(src))."""
    src = torch.ones(mib * 2**20 // 4, device=device)
    dst = torch.zeros_like(src)  # touched: no first-use page faults inside the timed copies
    times = timings_ms(lambda: dst.copy_(src), 3, 20, device)
    return 2 * src.nbytes / (min(times) * 1e-3) / 1e9


def print_roofline(rows: list[dict], copy_gbs: float, sfu_tops: float) -> None:
    fwd_bwd = {(r["op"], r["shape"], r["backend"]): r["kernel"].ms for r in rows if r["what"] == "fwd+bwd"}
    print("\n### Forward roofline\n")
    print(
        f"Copy bandwidth {copy_gbs:.0f} GB/s (read + write, measured); SFU rate {sfu_tops:.2f}e12 ops/s "
        "(--sfu-tflops; the default is assumed for an H100 SXM)."
    )
    print("floor = max(bytes / copy bandwidth, SFU ops / SFU rate); x floor = time / forward floor.\n")
    print("| op | shape | backend | fwd ms | MB moved | GB/s | SFU Gops | mem floor ms | SFU floor ms | fwd x floor "
          "| fwd+bwd x fwd floor |")  # fmt: skip
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if r["what"] != "fwd":
            continue
        mem_ms = r["io_bytes"] / (copy_gbs * 1e9) * 1e3
        sfu_ms = r["sfu_ops"] / (sfu_tops * 1e12) * 1e3
        floor = max(mem_ms, sfu_ms)
        ms, fb = r["kernel"].ms, fwd_bwd.get((r["op"], r["shape"], r["backend"]))
        gbs = "" if ms is None else f"{r['io_bytes'] / ms / 1e6:.3g}"
        x_fwd = "" if ms is None else f"{ms / floor:.1f}x"
        x_fb = "" if fb is None else f"{fb / floor:.1f}x"
        sizes = [f"{r['io_bytes'] / 1e6:.4g}", gbs, f"{r['sfu_ops'] / 1e9:.3g}", f"{mem_ms:.3g}", f"{sfu_ms:.3g}"]
        cells = [_cell(r["kernel"]), *sizes, x_fwd, x_fb]
        print(f"| {r['op']} | {r['shape']} | {r['backend']} | " + " | ".join(cells) + " |")


def print_ratios(rows: list[dict], device: str) -> None:
    den = DEVICE_BACKENDS[device][0]
    by_key: dict[tuple, dict[str, float | None]] = {}
    for r in rows:
        by_key.setdefault((r["op"], r["shape"], r["what"]), {})[r["backend"]] = r["kernel"].ms
    pairs = [(k, v["triton"], v[den]) for k, v in by_key.items() if "triton" in v and den in v]
    print(f"\n### Triton / {den.upper()}\n")
    if not pairs:
        why = "no CUDA device" if device == "cpu" else "the triton or the cuda backend is not built"
        hint = " (TRITON_INTERPRET=1 times Triton's interpreter against the CPU kernel)" if device == "cpu" else ""
        print(f"Skipped: {why}: no op has both a triton and a {den} row{hint}.")
        return
    print(f"| op | shape | pass | {den} ms | triton ms | triton / {den} |")
    print("|---|---|---|---:|---:|---:|")
    for (op, shape, what), tr, base in pairs:
        ratio = "" if tr is None or base is None else f"{tr / base:.2f}"
        fmt = lambda v: "n/a" if v is None else f"{v:.2f}"
        print(f"| {op} | {shape} | {what} | {fmt(base)} | {fmt(tr)} | {ratio} |")


# ------------------------------------------------------------------------------------------------
# Bidirectional mixer: fused vs two unidirectional calls with flips
# ------------------------------------------------------------------------------------------------


def mixer_inputs(spec: Spec, batch: int, device: str, dtype: torch.dtype) -> tuple[dict, torch.Tensor]:
    """xz, both directions' weights (module-like initialisation) and out_proj; the output gradient."""
    d_model, L, N, width = spec.dim, spec.seqlen, spec.d_state, spec.width
    d_inner, rank = 2 * d_model, math.ceil(d_model / 16)
    g = _generator(device)
    uniform = lambda bound, *s: (2 * torch.rand(*s, generator=g, device=device) - 1) * bound

    def direction(sfx: str) -> dict:
        # dt log-uniform in [1e-3, 0.1] as the module's init; the bias is its softplus inverse.
        dt = torch.exp(torch.rand(d_inner, generator=g, device=device) * math.log(100) + math.log(1e-3))
        return {
            f"conv_w{sfx}": uniform(width**-0.5, d_inner, 1, width),
            f"conv_b{sfx}": uniform(width**-0.5, d_inner),
            f"x_proj_w{sfx}": uniform(d_inner**-0.5, rank + 2 * N, d_inner),
            f"dt_proj_w{sfx}": uniform(rank**-0.5, d_inner, rank),
            f"dt_bias{sfx}": dt + torch.log(-torch.expm1(-dt)),
            f"A{sfx}": -torch.arange(1, N + 1, device=device, dtype=torch.float32).repeat(d_inner, 1),
            f"D{sfx}": torch.ones(d_inner, device=device),
        }

    x = dict(xz=torch.randn(batch, 2 * d_inner, L, generator=g, device=device).to(dtype))
    x.update(**direction(""), **direction("_b"), out_proj_w=uniform(d_inner**-0.5, d_model, d_inner))
    return x, torch.randn(batch, L, d_model, generator=g, device=device).to(dtype)


def mixer_fns(kit: Kit, device: str, dtype: torch.dtype) -> dict[str, Callable[..., torch.Tensor] | None]:
    """{"fused": ..., "flips": ...}, each taking the dict of mixer_inputs; None where the kit lacks it."""
    # fp32 runs without autocast; lower precision under it, as the model trains.
    autocast = lambda: contextlib.nullcontext() if dtype == torch.float32 else torch.autocast(device, dtype=dtype)

    def fused(xz, conv_w, conv_b, x_proj_w, dt_proj_w, dt_bias, A, D, conv_w_b, conv_b_b, x_proj_w_b, dt_proj_w_b,
              dt_bias_b, A_b, D_b, out_proj_w):  # fmt: skip
        with autocast():
            return kit.bimamba_fn(xz, conv_w, conv_b, x_proj_w, dt_proj_w, out_proj_w, None, A, A_b, None, None, D,
                                  dt_bias, None, None, True, conv1d_weight_b=conv_w_b, conv1d_bias_b=conv_b_b,
                                  x_proj_weight_b=x_proj_w_b, delta_proj_weight_b=dt_proj_w_b, D_b=D_b,
                                  delta_bias_b=dt_bias_b)  # fmt: skip

    def flips(xz, conv_w, conv_b, x_proj_w, dt_proj_w, dt_bias, A, D, conv_w_b, conv_b_b, x_proj_w_b, dt_proj_w_b,
              dt_bias_b, A_b, D_b, out_proj_w):  # fmt: skip
        # The original VideoMamba (Vim "v2") forward: the backward direction on a flipped copy of xz.
        with autocast():
            y = kit.inner_no_out_proj(xz, conv_w, conv_b, x_proj_w, dt_proj_w, A, None, None, D, delta_bias=dt_bias,
                                      delta_softplus=True)  # fmt: skip
            y_b = kit.inner_no_out_proj(xz.flip([-1]), conv_w_b, conv_b_b, x_proj_w_b, dt_proj_w_b, A_b, None, None,
                                        D_b, delta_bias=dt_bias_b, delta_softplus=True)  # fmt: skip
            return F.linear((y + y_b.flip([-1])).transpose(1, 2), out_proj_w)

    return {"fused": fused if kit.bimamba_fn else None, "flips": flips if kit.inner_no_out_proj else None}


MIXER_HEADER = (
    "| shape | pass | backend | fused ms | flips ms | flips / fused | fused peak GiB | flips peak GiB "
    "| max rel diff |\n|---|---|---|---:|---:|---:|---:|---:|---:|"
)


def mixer_diff(fns: dict, leaves: dict, dout: torch.Tensor) -> float:
    """Fused vs flips on the same inputs: the outputs and every gradient must agree to rounding."""
    return max_rel_error(*(forward_backward(fns[k], leaves, dout) for k in ("fused", "flips")))


def bench_mixer(kit: Kit, spec: Spec, batch: int, device: str, dtype: torch.dtype, backends: list[str], args):
    inputs, dout = mixer_inputs(spec, batch, device, dtype)
    leaves = {k: v.detach().clone().requires_grad_() for k, v in inputs.items()}
    fns = mixer_fns(kit, device, dtype)
    shape = f"b{batch} d_model{spec.dim} d_inner{2 * spec.dim} L{spec.seqlen} {dtype_name(dtype)}"
    rows = []
    for backend in backends:
        res = {}
        with kit.force(backend):
            if all(fns.values()):
                diff = guarded(partial(mixer_diff, fns, leaves, dout), device)
            else:
                diff = Measured(error="-")
            for name, fn in fns.items():
                if fn is None:
                    res[name] = {"fwd": Measured(error="n/a"), "fwd+bwd": Measured(error="n/a")}
                    continue
                fwd_call, fb_call = _no_grad_call(fn, inputs), partial(forward_backward, fn, leaves, dout)
                res[name] = {
                    "fwd": guarded(partial(timings_ms, fwd_call, 3, args.runs, device), device),
                    "fwd+bwd": guarded(partial(timings_ms, fb_call, 3, args.runs, device), device),
                }
            used = guarded(partial(kit.check_used, (SCAN, CONV), backend), device)
        for what in ("fwd", "fwd+bwd"):
            fu, fl = res["fused"][what], res["flips"][what]
            if used.error:
                fu = fl = used
            ratio = "" if fu.ms is None or fl.ms is None else f"{fl.ms / fu.ms:.2f}"
            d = diff.error if diff.error else f"{diff.value:.1e}"
            print(f"| {shape} | {what} | {backend} | {_cell(fu)} | {_cell(fl)} | {ratio} | {_gib(fu)} | {_gib(fl)} "
                  f"| {d} |", flush=True)  # fmt: skip
            rows.append(dict(op="mixer (fused)", shape=shape, what=what, backend=backend, kernel=fu))
    return rows


# ------------------------------------------------------------------------------------------------
# CPU instruction sets: the scan against its exp floor, the conv against F.conv1d + F.silu
# ------------------------------------------------------------------------------------------------

ISA_LEVELS = ("avx512", "avx2", "default")


def _cpu_isas(module_name: str, env_var: str) -> list[str]:
    """The instruction-set variants this CPU can run, best first (the module's auto choice and below)."""
    saved = os.environ.pop(env_var, None)
    try:
        best = importlib.import_module(module_name).isa()
    finally:
        if saved is not None:
            os.environ[env_var] = saved
    return list(ISA_LEVELS[ISA_LEVELS.index(best) :])


def _clock(args) -> Callable[[], float]:
    return time.process_time if args.clock == "cpu" else time.perf_counter


def _interleaved_ms(calls: dict[str, Callable[[], object]], env: dict[str, tuple[str, str]], reps: int, args):
    """Median ms of each call, the calls taking turns rep after rep (a slow phase of a shared machine
    hits them alike). env[name] = (variable, value) set around that call (the ISA override)."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    clock = _clock(args)
    for rep in range(reps + 1):  # the first round warms up
        for name, call in calls.items():
            var, value = env.get(name, (None, None))
            old = os.environ.get(var) if var else None
            if var:
                os.environ[var] = value
            try:
                t0 = clock()
                call()
                elapsed = clock() - t0
            finally:
                if var:
                    os.environ.pop(var, None) if old is None else os.environ.__setitem__(var, old)
            if rep:
                times[name].append(1e3 * elapsed)
    return {name: statistics.median(t) for name, t in times.items()}


def print_cpu_isa_tables(kit: Kit, specs: list[Spec], args) -> None:
    """Per instruction-set variant of the scan kernel: forward vs the exp floor (the kernel's own exp2
    over B*D*L*N values in registers, on the same threads: `_C_cpu.exp2_floor`), and forward + backward
    vs forward. Per variant of the conv kernel: forward and forward + backward vs F.conv1d + F.silu."""
    scan_mod = importlib.import_module("mamba_ssm._C_cpu")
    clock = "process CPU time (all threads)" if args.clock == "cpu" else "wall clock"
    print(f"\n### CPU instruction sets ({args.isa_reps} interleaved rounds after one warm-up, medians, {clock})\n")
    for spec in (s for s in specs if s.op == SCAN):
        isas = _cpu_isas("mamba_ssm._C_cpu", "MAMBA_CPU_ISA")
        print("| shape | MAMBA_CPU_ISA | exp floor ms | fwd ms | fwd / floor | fwd+bwd ms | fwd+bwd / fwd |")
        print("|---|---|---:|---:|---:|---:|---:|")
        for batch in spec.batches:
            p = scan_problem(kit, spec, batch, "cpu", torch.float32)
            inputs, dout = p.make(batch)
            leaves = {k: v.detach().clone().requires_grad_() for k, v in inputs.items()}
            count = batch * spec.dim * spec.seqlen * spec.d_state
            calls, env = {}, {}
            for isa in isas:
                calls[f"floor {isa}"] = partial(scan_mod.exp2_floor, count)
                calls[f"fwd {isa}"] = _no_grad_call(p.kernel, inputs)
                calls[f"fb {isa}"] = partial(forward_backward, p.kernel, leaves, dout)
                env.update({f"{w} {isa}": ("MAMBA_CPU_ISA", isa) for w in ("floor", "fwd", "fb")})
            with kit.force("cpu"):
                ms = _interleaved_ms(calls, env, args.isa_reps, args)
            for isa in isas:
                fl, fw, fb = ms[f"floor {isa}"], ms[f"fwd {isa}"], ms[f"fb {isa}"]
                print(f"| {p.shape} | {isa} | {fl:.2f} | {fw:.2f} | {fw / fl:.2f}x | {fb:.2f} | {fb / fw:.2f}x |",
                      flush=True)  # fmt: skip
    for spec in (s for s in specs if s.op == CONV):
        isas = _cpu_isas("causal_conv1d._C_cpu", "CAUSAL_CONV1D_CPU_ISA")
        print("\n| shape | CAUSAL_CONV1D_CPU_ISA | F.conv1d+F.silu fwd ms | kernel fwd ms | speedup "
              "| F.conv1d+F.silu fwd+bwd ms | kernel fwd+bwd ms | speedup |")  # fmt: skip
        print("|---|---|---:|---:|---:|---:|---:|---:|")
        for batch in spec.batches:
            p = conv_problem(kit, spec, batch, "cpu", torch.float32)
            inputs, dout = p.make(batch)
            leaves = {k: v.detach().clone().requires_grad_() for k, v in inputs.items()}
            calls = {"ref fwd": _no_grad_call(p.ref, inputs), "ref fb": partial(forward_backward, p.ref, leaves, dout)}
            env = {}
            for isa in isas:
                calls[f"fwd {isa}"] = _no_grad_call(p.kernel, inputs)
                calls[f"fb {isa}"] = partial(forward_backward, p.kernel, leaves, dout)
                env.update({f"{w} {isa}": ("CAUSAL_CONV1D_CPU_ISA", isa) for w in ("fwd", "fb")})
            with kit.force("cpu"):
                ms = _interleaved_ms(calls, env, args.isa_reps, args)
            rf, rb = ms["ref fwd"], ms["ref fb"]
            for isa in isas:
                kf, kb = ms[f"fwd {isa}"], ms[f"fb {isa}"]
                print(f"| {p.shape} | {isa} | {rf:.2f} | {kf:.2f} | {rf / kf:.2f}x | {rb:.2f} | {kb:.2f} "
                      f"| {rb / kb:.2f}x |", flush=True)  # fmt: skip


# ------------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------------


def machine_line(device: str, kit: Kit) -> str:
    now = f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC"
    versions = f"torch {torch.__version__}"
    if device == "cuda":
        prop = torch.cuda.get_device_properties(0)
        hw = f"{prop.name} ({prop.multi_processor_count} SMs, {prop.total_memory / 2**30:.0f} GiB)"
        versions += f", CUDA {torch.version.cuda}"
        with contextlib.suppress(ImportError):
            import triton

            versions += f", triton {triton.__version__}"
    else:
        hw = platform.processor() or platform.machine()
        with contextlib.suppress(OSError, StopIteration), open("/proc/cpuinfo") as f:
            hw = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
        hw += f", {torch.get_num_threads()} threads"
        if kit.label == "ours":
            with contextlib.suppress(Exception):  # an ISA probe is a nicety, not a reason to stop
                isa = {n: importlib.import_module(f"{n}._C_cpu").isa() for n in ("mamba_ssm", "causal_conv1d")}
                hw += f", scan kernel ISA {isa['mamba_ssm']}, conv kernel ISA {isa['causal_conv1d']}"
    commit = ""
    with contextlib.suppress(Exception):
        here = os.path.dirname(os.path.abspath(__file__))
        rev = subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        commit = f"; commit {rev.stdout.strip()}" if rev.returncode == 0 else ""
    return f"{hw}; {versions}{commit}; {now}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=DEVICE_BACKENDS)
    parser.add_argument("--preset", nargs="+", choices=PRESETS, help="shape presets (default: cpu; CUDA: s16 m64)")
    parser.add_argument("--dtypes", nargs="+", choices=DTYPES, help="input dtypes (default: fp32; CUDA: fp32 bf16)")
    parser.add_argument("--ops", nargs="+", default=[SCAN, CONV, MIXER], choices=[SCAN, CONV, MIXER])
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads for CPU runs")
    parser.add_argument("--batches", type=int, nargs="+", help="override every preset's batch sizes")
    parser.add_argument("--runs", type=int, default=20, help="timed calls per kernel measurement, after 3 warm-ups")
    parser.add_argument(
        "--ref-runs",
        type=int,
        help="timed calls of the reference forward, after 1 warm-up on CPU, "
        "none on CUDA (default: 3 on CPU, 1 on CUDA)",
    )
    parser.add_argument("--ref-bwd-runs", type=int, default=1, help="timed calls of the reference forward + backward")
    parser.add_argument(
        "--ref-bwd-max-batch",
        type=int,
        default=1,
        help="time the scan reference's forward + backward only up to this batch (it is slow: a "
        "Python loop over L); above, errors are computed at --check-batch",
    )
    parser.add_argument(
        "--check-batch",
        type=int,
        default=1,
        help="batch of the error check when the reference's backward is not run at the full batch",
    )
    parser.add_argument("--ref-max-batch", type=int, help="time the reference forward only up to this batch")
    parser.add_argument("--copy-mib", type=int, help="size of the copy-bandwidth tensor (default: 1024 CUDA, 256 CPU)")
    parser.add_argument(
        "--sfu-tflops",
        type=float,
        default=H100_SFU_TOPS,
        help="special-function ops/s in 1e12 (default: H100 SXM, 132 SMs x 16/clk x 1.98 GHz)",
    )
    parser.add_argument("--upstream-path", help="also time upstream's packages found in this folder, in a subprocess")
    parser.add_argument(
        "--upstream",
        action="store_true",
        help="time the importable mamba_ssm / causal_conv1d as upstream's (see the docstring)",
    )
    parser.add_argument("--isa-reps", type=int, default=10,
                        help="rounds of the CPU instruction-set tables (0: no such tables)")  # fmt: skip
    parser.add_argument("--only-isa", action="store_true", help="CPU: only the instruction-set tables")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="instruction-set tables: wall clock, or process CPU time (steadier on a shared "
                        "machine; use it with --threads 1)")  # fmt: skip
    parser.add_argument("--copy-gbs", type=float, help=argparse.SUPPRESS)  # the parent's measurement, for the child
    args = parser.parse_args(argv)  # fmt: skip
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    args.preset = args.preset or (["s16", "m64"] if cuda else ["cpu"])
    args.dtypes = [DTYPES[d] for d in (args.dtypes or (["fp32", "bf16"] if cuda else ["fp32"]))]
    args.ref_runs = args.ref_runs or (1 if cuda else 3)
    args.copy_mib = args.copy_mib or (1024 if cuda else 256)
    return args


def run_upstream_child(args: argparse.Namespace, copy_gbs: float) -> None:
    """Re-runs this script with --upstream and DIR first on sys.path: one process never holds both."""
    cmd = [sys.executable, os.path.abspath(__file__), *sys.argv[1:], "--upstream", "--copy-gbs", str(copy_gbs)]
    sys.stdout.flush()
    rc = subprocess.run(cmd).returncode
    if rc:
        print(f"\nThe upstream run failed (exit code {rc}); its error is above.")


def main() -> None:
    args = parse_args()
    t_start = time.perf_counter()
    if args.upstream and args.upstream_path:
        sys.path.insert(0, os.path.abspath(args.upstream_path))
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    kit = load_kit(args.upstream)
    device = args.device
    specs = [s for name in args.preset for s in PRESETS[name] if s.op in args.ops]
    if args.batches:
        specs = [replace(s, batches=tuple(args.batches)) for s in specs]

    if kit.label == "ours":
        print(f"# {machine_line(device, kit)}\n")
        for d in kit.dispatchers.values():
            print(f"- {d.describe()}")
    else:
        print(f"\n## Upstream: {kit.source}\n")
    copy_gbs = args.copy_gbs or copy_bandwidth_gbs(device, args.copy_mib)
    release(device)
    copy_how = "from the parent run" if args.copy_gbs else f"{args.copy_mib} MiB tensor, best of 20"
    print(f"- presets {' '.join(args.preset)}; dtypes {' '.join(dtype_name(d) for d in args.dtypes)}; "
          f"{args.runs} timed kernel calls after 3 warm-ups; reference forward: {args.ref_runs} call(s)")  # fmt: skip
    print(f"- device copy bandwidth: {copy_gbs:.0f} GB/s (read + write, {copy_how})")
    print(
        f"- max rel err 'at bN': kernel and reference re-run on a fresh problem at batch N (--check-batch), as "
        f"the scan reference's fwd+bwd (a Python loop over L) runs at the full batch only up to batch "
        f"{args.ref_bwd_max_batch} (--ref-bwd-max-batch)"
    )
    if device != "cuda":
        print("- peak memory: CUDA only ('-'); the SFU floor below assumes an H100 and means nothing on CPU")

    if device == "cpu" and kit.label == "ours" and args.isa_reps > 0:
        print_cpu_isa_tables(kit, specs, args)
    if args.only_isa:
        return
    rows = []
    op_specs = [s for s in specs if s.op in MAKERS]
    if op_specs:
        print("\n### Ops\n\n" + OPS_HEADER)
    for spec in op_specs:
        for batch in spec.batches:
            for dtype in args.dtypes:
                p = MAKERS[spec.op](kit, spec, batch, device, dtype)
                backends = kit.backends(device, (spec.op,))
                if not backends:
                    print(f"| {p.op} | {p.shape} | - | none built | | | | | | |", flush=True)
                    continue
                for r in bench_problem(p, kit, device, backends, args):
                    print_op_row(r)
                    rows.append(r)
                release(device)

    mixer_rows = []
    mixer_specs = [s for s in specs if s.op == MIXER]
    if mixer_specs:
        print("\n### Bidirectional mixer: fused bimamba_inner_fn vs two mamba_inner_fn_no_out_proj calls with flips\n")
        print(MIXER_HEADER)
    elif MIXER in args.ops:
        print(f"\n(No mixer shape in preset(s) {' '.join(args.preset)}: the mixer runs with tiny and s16.)")
    for spec in mixer_specs:
        for batch in spec.batches:
            for dtype in args.dtypes:
                backends = kit.backends(device, (SCAN, CONV))
                if not backends:
                    print(f"| b{batch} d_model{spec.dim} L{spec.seqlen} | - | none built | | | | | | |")
                    continue
                mixer_rows += bench_mixer(kit, spec, batch, device, dtype, backends, args)
                release(device)

    if rows:
        print_roofline(rows, copy_gbs, args.sfu_tflops)
    if kit.label == "ours":
        print_ratios(rows + mixer_rows, device)
    print(f"\n({kit.label}: {time.perf_counter() - t_start:.0f} s)", flush=True)
    if args.upstream_path and not args.upstream:
        run_upstream_child(args, copy_gbs)


if __name__ == "__main__":
    main()
