"""Registers, spills and shared-memory instruction counts of the CUDA kernels, without a GPU.

Compiles each given .cu file for one architecture (default sm_90) with the build's flags and
`-Xptxas -v`, disassembles the cubin with cuobjdump (the toolkit's, or the copy Triton ships) and
prints one line per kernel: registers, spill bytes, and how many shared-memory loads/stores of each
width its SASS holds (scalar LDS/STS against LDS.64/LDS.128 show whether the compiler vectorised
the per-lane accesses).

    python tools/cuda_sass_report.py mamba/csrc/cuda/selective_scan_bwd_fp32.cu
    python tools/cuda_sass_report.py --arch 80 mamba/csrc/cuda/*.cu
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "causal-conv1d"))


def _cuobjdump() -> str | None:
    found = shutil.which("cuobjdump")
    if found:
        return found
    try:
        import triton

        candidate = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
        return str(candidate) if candidate.exists() else None
    except ImportError:
        return None


def _compile_cmd(source: Path, cubin: Path, arch: str) -> list[str]:
    from torch.utils import cpp_extension

    from causal_conv1d.kernel_infra.build import cuda_toolkit_dirs, nvcc_flags

    dirs = cpp_extension.include_paths("cuda") if cpp_extension.CUDA_HOME else cpp_extension.include_paths()
    dirs += cuda_toolkit_dirs(cpp_extension.CUDA_HOME)[0] + [sysconfig.get_paths()["include"]]
    flags = cpp_extension.COMMON_NVCC_FLAGS + nvcc_flags()
    flags += ["-DTORCH_API_INCLUDE_EXTENSION_H", "-DTORCH_EXTENSION_NAME=_C_cuda", "-std=c++17"]
    gencode = f"-gencode=arch=compute_{arch},code=sm_{arch}"
    return [
        "nvcc",
        "-cubin",
        "-o",
        str(cubin),
        str(source),
        *[f"-I{d}" for d in dirs],
        *flags,
        gencode,
        "-Xptxas",
        "-v",
    ]


def _ptxas_summary(log: str) -> dict[str, str]:
    """Kernel (mangled) -> 'R regs, S B spills, smem' from ptxas -v output."""
    out: dict[str, str] = {}
    current = None
    for line in log.splitlines():
        m = re.search(r"Function properties for (\S+)", line)
        if m:
            current = m.group(1)
            out[current] = ""
            continue
        if current is None:
            continue
        m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m:
            out[current] += f"spills st/ld {m.group(1)}/{m.group(2)} B"
        m = re.search(r"Used (\d+) registers", line)
        if m:
            out[current] = f"{m.group(1)} regs, " + out[current]
            current = None
    return out


def _sass_counts(sass: str) -> dict[str, collections.Counter]:
    counts: dict[str, collections.Counter] = {}
    current = None
    for line in sass.splitlines():
        m = re.search(r"Function : (\S+)", line)
        if m:
            current = counts.setdefault(m.group(1), collections.Counter())
            continue
        if current is not None:
            for op in re.findall(r"\b((?:LDS|STS|LDSM|LDGSTS)(?:\.[A-Z0-9_]+)*)\b", line):
                width = next((p for p in op.split(".")[1:] if p in ("64", "128")), "32")
                current[f"{op.split('.')[0]}.{width}"] += 1
    return counts


def report(source: Path, arch: str) -> str:
    cuobjdump = _cuobjdump()
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / "k.cubin"
        proc = subprocess.run(_compile_cmd(source, cubin, arch), capture_output=True, text=True)
        if proc.returncode != 0:
            return f"{source.name}: compile failed\n{proc.stdout}{proc.stderr}"
        ptxas = _ptxas_summary(proc.stdout + proc.stderr)
        sass = (
            subprocess.run([cuobjdump, "-sass", str(cubin)], capture_output=True, text=True).stdout if cuobjdump else ""
        )
    counts = _sass_counts(sass)
    lines = [f"{source.name} (sm_{arch})" + ("" if cuobjdump else ": no cuobjdump, SASS counts skipped")]
    for kernel, summary in ptxas.items():
        shared = " ".join(f"{k}={v}" for k, v in sorted(counts.get(kernel, {}).items()))
        lines.append(f"  {kernel}: {summary}; {shared}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sources", nargs="+", type=Path)
    parser.add_argument("--arch", default="90", help="compute capability without the dot (default 90)")
    args = parser.parse_args()
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", f"{args.arch[0]}.{args.arch[1:]}")
    for source in args.sources:
        print(report(source, args.arch), flush=True)


if __name__ == "__main__":
    main()
