"""Model-level speed: VideoMamba against ViTs of the same width on the same video tokens (a script, not a test).

    python benchmarks/bench_model.py                       # quick CPU default: Ti, 8-64 frames, a few minutes
    python benchmarks/bench_model.py --sizes tiny small --frames 8 16 32 64 128 --time-limit 120
    python benchmarks/bench_model.py --attention joint divided --modes infer
    python benchmarks/bench_model.py --device cuda         # bf16 autocast, CUDA memory counters
    python benchmarks/bench_model.py --plot-only a.json b.json  # redraw the figure from saved runs (--json)

Models, all on 224x224 frames in 16x16 patches (1 + 196 * T tokens, the cls token first):

- videomamba: `videomamba_<size>` (the backbone every task uses), bidirectional Mamba blocks, 1000 classes.
- vit-joint: a ViT of the same width, timm `Block`s (pre-norm attention + MLP 4x) with joint space-time
  attention over all tokens through `F.scaled_dot_product_attention`; half the depth of the VideoMamba
  size (a Mamba block has about half the parameters of a transformer block).
- with `--compile`, VideoMamba and the joint ViT also under `torch.compile` (inductor; the warm-up call
  compiles, so use --warmup 1 or more).
- vit-divided: the same ViT with TimeSformer-style divided attention: per block, attention over time for
  each patch position, then over space within each frame (cls joins every frame and is averaged back),
  then the MLP.

Sizes are the backbone's (`VIDEOMAMBA_SIZES`: tiny 192 wide, 24 blocks; small 384, 24; middle 576,
32; base 768, 24); the ViT of a size has its width, half its blocks and 64-wide heads (tiny: 12 blocks,
3 heads).

Modes: `infer` = forward at batch 1 under `torch.inference_mode()`; `train` = forward, cross-entropy
backward and an AdamW step at batch `--train-batch` (CPU default 1, CUDA 8). Every measurement (model,
size, mode, frames) runs in a fresh process, so its peak memory is its own: on CPU the process's peak
resident set (`ru_maxrss`, which includes the ~0.4 GB of an idle torch process: printed as "base"), on
CUDA `torch.cuda.max_memory_allocated` (model, optimizer state and activations). Time = the median of
`--runs` timed calls after `--warmup` untimed ones (wall clock; CUDA synchronised). On CUDA the models run
under bf16 autocast, as they train.

For each model and mode the frame counts run in ascending order; once one fails (out of memory) or
its first call takes longer than `--time-limit` seconds, the larger counts are not run and the table says
why. The measurements of one frame count are taken one after the other (VideoMamba, then the ViTs), so
a slow phase of a shared machine hits them alike; the ratio column is ViT time / VideoMamba time.

Output: a machine line and markdown tables on stdout (`--md FILE` writes them too), the raw results as
JSON (`--json FILE`), and the figure `--figure` (default `assets/efficiency_<device>.png`): time and
peak memory against frames, log-log, one line per model and mode.

Runtime of the default (Ti, frames 8 16 32 64, infer and train, 2 threads, time limit 20 s): 16
measurements, about 6 CPU-minutes of work by the single-thread CPU times in benchmarks/RESULTS.md (the
64-frame ViT dominates; training steps past the time limit end their sweep early), so a few
minutes on an idle 2-core machine. On a machine shared with other jobs use `--threads 1 --clock cpu`:
two threads wait for each other at every op when the cores are oversubscribed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def size_config(size: str) -> tuple[int, int, int, int]:
    """Width, VideoMamba depth, ViT depth, ViT heads: the ViT has half the blocks, 64-wide heads."""
    from videomamba.core.backbone import VIDEOMAMBA_SIZES

    width, depth = VIDEOMAMBA_SIZES[size]["embed_dim"], VIDEOMAMBA_SIZES[size]["depth"]
    return width, depth, depth // 2, width // 64


MODELS = {
    "videomamba": "VideoMamba",
    "videomamba-compiled": "VideoMamba (torch.compile)",
    "vit-joint": "ViT (joint, SDPA)",
    "vit-joint-compiled": "ViT (joint, torch.compile)",
    "vit-divided": "ViT (divided)",
}
PATCHES = 14 * 14  # 224 / 16 squared


# ------------------------------------------------------------------------------------------------
# Models (built inside the worker process)
# ------------------------------------------------------------------------------------------------


def build_model(model: str, size: str, frames: int):
    import torch
    from torch import nn

    width, mamba_depth, vit_depth, heads = size_config(size)
    if model.endswith("-compiled"):
        return torch.compile(build_model(model.removesuffix("-compiled"), size, frames))
    if model == "videomamba":
        import timm

        import videomamba.core  # noqa: F401  (registers videomamba_* in timm)

        return timm.create_model(f"videomamba_{size}", num_frames=frames, num_classes=1000, drop_path_rate=0.0)

    from timm.models.vision_transformer import Block

    class DividedBlock(nn.Module):
        """TimeSformer-style block: temporal attention per patch position, spatial attention per frame, MLP."""

        def __init__(self) -> None:
            super().__init__()
            self.time = Block(width, heads, qkv_bias=True)  # its MLP is not used: attention only
            self.space = Block(width, heads, qkv_bias=True)

        def forward(self, x):
            b, n, d = x.shape
            cls, patches = x[:, :1], x[:, 1:].reshape(b, frames, PATCHES, d)
            per_position = patches.transpose(1, 2).reshape(b * PATCHES, frames, d)
            per_position = per_position + self.time.attn(self.time.norm1(per_position))
            patches = per_position.reshape(b, PATCHES, frames, d).transpose(1, 2).reshape(b * frames, PATCHES, d)
            per_frame = torch.cat([cls.repeat_interleave(frames, 0), patches], dim=1)
            per_frame = per_frame + self.space.attn(self.space.norm1(per_frame))
            cls = per_frame[:, :1].reshape(b, frames, d).mean(1, keepdim=True)
            x = torch.cat([cls, per_frame[:, 1:].reshape(b, frames * PATCHES, d)], dim=1)
            return x + self.space.mlp(self.space.norm2(x))

    class VideoViT(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.patch_embed = nn.Conv3d(3, width, kernel_size=(1, 16, 16), stride=(1, 16, 16))
            self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
            self.pos_embed = nn.Parameter(torch.randn(1, PATCHES + 1, width) * 0.02)
            self.time_embed = nn.Parameter(torch.zeros(1, frames, 1, width))
            blocks = [DividedBlock() if model == "vit-divided" else Block(width, heads, qkv_bias=True)
                      for _ in range(vit_depth)]  # fmt: skip
            self.blocks = nn.Sequential(*blocks)
            self.norm = nn.LayerNorm(width)
            self.head = nn.Linear(width, 1000)

        def forward(self, video):  # (B, 3, T, H, W)
            x = self.patch_embed(video).permute(0, 2, 3, 4, 1)  # (B, T, 14, 14, D)
            b = x.shape[0]
            x = x.reshape(b, frames, PATCHES, width) + self.pos_embed[:, 1:].unsqueeze(1) + self.time_embed
            x = torch.cat([self.cls_token + self.pos_embed[:, :1], x.reshape(b, frames * PATCHES, width)], dim=1)
            x = self.norm(self.blocks(x))
            return self.head(x[:, 0])

    return VideoViT()


# ------------------------------------------------------------------------------------------------
# One measurement (the worker process)
# ------------------------------------------------------------------------------------------------


def measure(job: dict) -> dict:
    """Times one configuration in this process and returns its numbers (or the error)."""
    import torch
    import torch.nn.functional as F

    device, mode, frames = job["device"], job["mode"], job["frames"]
    if device == "cpu":
        torch.set_num_threads(job["threads"])
    torch.manual_seed(0)
    cuda = device == "cuda"
    model = build_model(job["model"], job["size"], frames).to(device)
    batch = 1 if mode == "infer" else job["train_batch"]
    video = torch.randn(batch, 3, frames, 224, 224, device=device)
    labels = torch.randint(0, 1000, (batch,), device=device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()
    if mode == "infer":
        model.eval()

        def call():
            with torch.inference_mode(), autocast:
                model(video)

    else:
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def call():
            with autocast:
                loss = F.cross_entropy(model(video).float(), labels)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    def timed() -> tuple[float, float]:
        """(wall seconds, this process's CPU seconds, all threads) of one call."""
        if cuda:
            torch.cuda.synchronize()
        start, cpu_start = time.perf_counter(), time.process_time()
        call()
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - start, time.process_time() - cpu_start

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = [timed()]
    first = times[0][job["clock"] == "cpu"]
    if first <= job["time_limit"]:
        times += [timed() for _ in range(job["warmup"] - 1 + job["runs"])]
    timed_runs = times[job["warmup"] :] or times[-1:]
    peak = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    wall_ms, cpu_ms = (1e3 * statistics.median(t[i] for t in timed_runs) for i in (0, 1))
    return dict(ms=cpu_ms if job["clock"] == "cpu" else wall_ms, wall_ms=wall_ms, cpu_ms=cpu_ms, runs=len(timed_runs),
                peak_gib=peak / 2**30, over_time=first > job["time_limit"], load=os.getloadavg()[0])  # fmt: skip


def worker_main(job_json: str) -> None:
    job = json.loads(job_json)
    try:
        result = measure(job)
    except Exception as exc:  # an out-of-memory or other failure is a result of this configuration
        oom = "out of memory" in str(exc).lower() or type(exc).__name__ == "OutOfMemoryError"
        result = dict(error="OOM" if oom else f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
    print("RESULT " + json.dumps(result), flush=True)


def run_job(job: dict) -> dict:
    """Runs one configuration in a fresh interpreter; a killed process (e.g. the OOM killer) is an OOM."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(job)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    if proc.returncode < 0 or proc.returncode == 137:
        return dict(error="OOM" if proc.returncode in (-9, 137) else f"killed by signal {-proc.returncode}")
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return dict(error=f"exit {proc.returncode}: {tail[:120]}")


def idle_rss_gib() -> float:
    """Peak RSS of a process that imports torch, timm and the kernels and builds nothing (CPU base)."""
    code = (
        "import resource, torch, timm, videomamba.core, mamba_ssm, causal_conv1d; "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30)"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    return float(out.stdout.strip() or "nan")


# ------------------------------------------------------------------------------------------------
# Tables and figure
# ------------------------------------------------------------------------------------------------


def machine_line(device: str, threads: int) -> str:
    import torch

    now = f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC"
    if device == "cuda":
        hw = torch.cuda.get_device_name(0)
    else:
        hw, flags = platform.machine(), set()
        with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    hw = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
        isa = "AVX-512" if "avx512f" in flags else ("AVX2" if "avx2" in flags else "no AVX2")
        hw += f" ({isa}, {os.cpu_count()} CPUs), {threads} threads"
    return f"{hw}; torch {torch.__version__}; {now}"


def fmt_result(r: dict | None, what: str) -> str:
    if r is None:
        return ""
    if "error" in r:
        return r["error"]
    if what == "ms":
        return f"{r['ms']:.0f}" + ("*" if r["over_time"] else "")
    return f"{r['peak_gib']:.2f}"


def tables(results: list[dict], models: list[str], base_gib: float, device: str, clock: str) -> str:
    lines = []
    keyed = {(r["model"], r["size"], r["mode"], r["frames"]): r for r in results}
    for size in dict.fromkeys(r["size"] for r in results):
        for mode in dict.fromkeys(r["mode"] for r in results):
            frames = sorted({r["frames"] for r in results if r["size"] == size and r["mode"] == mode})
            if not frames:
                continue
            batch = next(r["batch"] for r in results if r["size"] == size and r["mode"] == mode)
            mem = "peak RSS GiB" if device == "cpu" else "peak alloc GiB"
            title = "inference, batch 1" if mode == "infer" else f"training step (fwd + bwd + AdamW), batch {batch}"
            lines.append(f"\n#### {size}: {title}\n")
            head = ["frames", "tokens"]
            for m in models:
                head += [f"{MODELS[m]} ms", f"{MODELS[m]} {mem}"]
            head += [f"{MODELS[m]} / VideoMamba time" for m in models if m != "videomamba"]
            lines.append("| " + " | ".join(head) + " |")
            lines.append("|" + "---:|" * len(head))
            for t in frames:
                row = [str(t), str(1 + PATCHES * t)]
                rs = {m: keyed.get((m, size, mode, t)) for m in models}
                for m in models:
                    row += [fmt_result(rs[m], "ms"), fmt_result(rs[m], "mem")]
                for m in models:
                    if m == "videomamba":
                        continue
                    a, b = rs[m], rs.get("videomamba")
                    ok = a and b and "error" not in a and "error" not in b
                    row.append(f"{a['ms'] / b['ms']:.2f}x" if ok else "")
                lines.append("| " + " | ".join(row) + " |")
    if device == "cpu":
        lines.append(f"\n(Peak RSS includes the {base_gib:.2f} GiB of an idle process that has imported torch, "
                     "timm and the kernels.)")  # fmt: skip
    lines.append(f"\n(Times: {clock}, median of the timed calls. * = one call only: the first took longer than "
                 "--time-limit, so larger frame counts were not run.)")  # fmt: skip
    return "\n".join(lines)


def draw(results: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = {"videomamba": "tab:green", "videomamba-compiled": "tab:olive", "vit-joint": "tab:red",
              "vit-joint-compiled": "tab:pink", "vit-divided": "tab:orange"}  # fmt: skip
    styles = {"infer": "-", "train": "--"}
    from videomamba.core.backbone import VIDEOMAMBA_SIZES

    markers = {size: "os^Dv*"[i % 6] for i, size in enumerate(VIDEOMAMBA_SIZES)}
    series = {}
    for r in results:
        if "error" not in r:
            series.setdefault((r["model"], r["size"], r["mode"]), []).append(r)
    for (model, size, mode), rs in series.items():
        rs.sort(key=lambda r: r["frames"])
        x = [r["frames"] for r in rs]
        label = f"{MODELS[model]}-{size[0].upper()}{size[1:2] if size == 'tiny' else ''}, {mode}"
        kw = dict(color=colors[model], linestyle=styles[mode], marker=markers[size], label=label)
        ax_t.plot(x, [r["ms"] / 1e3 for r in rs], **kw)
        ax_m.plot(x, [r["peak_gib"] for r in rs], **kw)
    for ax, ylabel in ((ax_t, "time per call (s)"), (ax_m, "peak memory (GiB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("frames (224x224, 196 tokens each)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    ax_t.legend(fontsize=7)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"\n(figure: {path})")


# ------------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    from videomamba.core.backbone import VIDEOMAMBA_SIZES

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    p.add_argument("--sizes", nargs="+", default=["tiny"], choices=sorted(VIDEOMAMBA_SIZES))
    p.add_argument("--frames", nargs="+", type=int, default=[8, 16, 32, 64])
    p.add_argument("--modes", nargs="+", default=["infer", "train"], choices=("infer", "train"))
    p.add_argument("--attention", nargs="+", default=["joint"], choices=("joint", "divided"),
                   help="ViT baselines: joint space-time attention (SDPA), TimeSformer-style divided")  # fmt: skip
    p.add_argument("--compile", action="store_true",
                   help="also time torch.compile'd (inductor) VideoMamba and joint ViT; warm-up compiles")  # fmt: skip
    p.add_argument("--train-batch", type=int, help="training batch (default: 1 on CPU, 8 on CUDA)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads on CPU")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls first")
    p.add_argument("--runs", type=int, default=1, help="timed calls (median)")
    p.add_argument("--time-limit", type=float, default=20.0,
                   help="seconds: a first call slower than this is the only one and ends the sweep")  # fmt: skip
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="time reported: wall clock, or this process's CPU time (all threads; steadier on a shared "
                   "machine, and with --threads 1 the time an idle core would take)")  # fmt: skip
    p.add_argument("--md", type=Path, help="also write the tables to this file")
    p.add_argument("--json", type=Path, help="also write the raw results to this file")
    p.add_argument("--figure", type=Path, help="default: assets/efficiency_<device>.png ('none': no figure)")
    p.add_argument("--plot-only", type=Path, nargs="+", help="redraw the figure from --json files (merged) and exit")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p.parse_args()


def main() -> None:
    args = parse_args()
    if args.worker:
        return worker_main(args.worker)
    if args.plot_only:
        saved = [json.loads(path.read_text()) for path in args.plot_only]
        figure = args.figure or ROOT / "assets" / f"efficiency_{saved[0]['device']}.png"
        return draw([r for s in saved for r in s["results"]], figure, saved[0]["title"])
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_model.py: --device cuda but torch sees no CUDA device")
    train_batch = args.train_batch or (8 if device == "cuda" else 1)
    models = ["videomamba"] + [f"vit-{a}" for a in args.attention]
    if args.compile:
        models[1:1] = ["videomamba-compiled"]
        models += ["vit-joint-compiled"] if "joint" in args.attention else []
    machine = machine_line(device, args.threads)
    print(f"# {machine}\n")
    title = f"{machine}; time = {'process CPU time' if args.clock == 'cpu' else 'wall clock'}"
    base = idle_rss_gib() if device == "cpu" else 0.0
    start = time.perf_counter()
    results: list[dict] = []
    stopped: dict[tuple, str] = {}  # (model, size, mode) -> why larger frame counts are not run
    for size in args.sizes:
        for mode in args.modes:
            for frames in sorted(args.frames):
                for model in models:
                    key = (model, size, mode)
                    batch = 1 if mode == "infer" else train_batch
                    row = dict(model=model, size=size, mode=mode, frames=frames, batch=batch)
                    if key in stopped:
                        results.append({**row, "error": stopped[key]})
                        continue
                    job = dict(model=model, size=size, mode=mode, frames=frames, device=device, threads=args.threads,
                               train_batch=train_batch, warmup=args.warmup, runs=args.runs,
                               time_limit=args.time_limit, clock=args.clock)  # fmt: skip
                    r = {**row, **run_job(job)}
                    results.append(r)
                    shown = r.get("error") or f"{r['ms']:.0f} ms, {r['peak_gib']:.2f} GiB, load {r['load']:.1f}"
                    print(f"- {model} {size} {mode} {frames} frames: {shown}", flush=True)
                    if "error" in r:
                        stopped[key] = "OOM" if r["error"] == "OOM" else "not run"
                    elif r["over_time"]:
                        stopped[key] = "time limit"
    clock = "process CPU time (all threads)" if args.clock == "cpu" else "wall clock"
    text = tables(results, models, base, device, clock)
    elapsed = time.perf_counter() - start
    text += f"\n\n({len(results)} configurations in {elapsed / 60:.1f} min.)"
    print(text)
    if args.md:
        args.md.write_text(f"# {machine}\n{text}\n")
    if args.json:
        args.json.write_text(json.dumps(dict(device=device, title=title, results=results), indent=1))
    if str(args.figure) != "none":
        figure = args.figure or ROOT / "assets" / f"efficiency_{device}.png"
        draw(results, figure, title)


if __name__ == "__main__":
    main()
