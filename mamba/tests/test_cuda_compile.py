"""Every CUDA source of both kernel packages compiles, on machines with nvcc but no GPU (CI).

- each ``csrc/cuda/*.cu`` file of causal-conv1d and mamba: ``nvcc -c`` for one architecture
  (sm_90, to keep it quick) with the flags the build uses (torch's BuildExtension nvcc flags, the
  packages' `causal_conv1d.kernel_infra.build.nvcc_flags()`, the extension defines), once as C++20 (what
  torch >= 2.10 builds with) and once as C++17 (older torch);
- each ``csrc/cuda/*.cpp`` binding file: the host compiler with ``-fsyntax-only`` against torch's
  and the toolkit's headers, as C++20.
Two compilations run at a time. Skipped when nvcc is not installed; a failure shows the compiler
output. (The kernels' behaviour is tested in test_selective_scan_cuda.py / test_cuda_kernels.py.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from torch.utils import cpp_extension

from causal_conv1d.kernel_infra.build import cuda_toolkit_dirs, nvcc_flags

REPO = Path(__file__).resolve().parents[2]
SOURCE_DIRS = [REPO / "causal-conv1d" / "csrc" / "cuda", REPO / "mamba" / "csrc" / "cuda"]
ARCH = "-gencode=arch=compute_90,code=sm_90"
EXTENSION_DEFINES = ["-DTORCH_API_INCLUDE_EXTENSION_H", "-DTORCH_EXTENSION_NAME=_C_cuda"]


def _nvcc() -> str | None:
    home = cpp_extension.CUDA_HOME
    for candidate in ([os.path.join(home, "bin", "nvcc")] if home else []) + [shutil.which("nvcc")]:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def _include_dirs() -> list[str]:
    dirs = cpp_extension.include_paths("cuda") if cpp_extension.CUDA_HOME else cpp_extension.include_paths()
    extra, _ = cuda_toolkit_dirs(cpp_extension.CUDA_HOME)
    return dirs + extra + [sysconfig.get_paths()["include"]]


def _run(job: tuple[str, list[str]]) -> tuple[str, list[str], int, str, float]:
    label, cmd = job
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    return label, cmd, proc.returncode, proc.stdout + proc.stderr, time.perf_counter() - start


def test_cuda_sources_exist():
    for folder in SOURCE_DIRS:
        assert sorted(folder.glob("*.cu")) and sorted(folder.glob("*.cpp")), folder


@pytest.mark.timeout(1800)  # 3.6 min on a loaded 2-core machine, 14.6 min at load 11 (default: 300 s)
def test_every_cuda_source_compiles():
    nvcc = _nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found (install the CUDA toolkit or set CUDA_HOME)")
    includes = [f"-I{d}" for d in _include_dirs()]
    torch_nvcc = cpp_extension.COMMON_NVCC_FLAGS + ["--compiler-options", "-fPIC"]
    jobs = []
    with tempfile.TemporaryDirectory() as tmp:
        for folder in SOURCE_DIRS:
            for source in sorted(folder.glob("*.cu")):
                for std in ("c++20", "c++17"):
                    obj = Path(tmp) / f"{folder.parent.parent.name}-{source.stem}-{std}.o"
                    flags = torch_nvcc + nvcc_flags() + EXTENSION_DEFINES + [ARCH, f"-std={std}"]
                    jobs.append(
                        (f"{source.name} ({std})", [nvcc, "-c", str(source), "-o", str(obj), *includes, *flags])
                    )
            for source in sorted(folder.glob("*.cpp")):
                cxx = os.environ.get("CXX", "c++")
                cmd = [cxx, "-fsyntax-only", "-std=c++20", "-fPIC", *EXTENSION_DEFINES, *includes, str(source)]
                jobs.append((source.name, cmd))
        with ThreadPoolExecutor(max_workers=2) as pool:
            results = list(pool.map(_run, jobs))
    failures = [f"{label}: $ {' '.join(cmd)}\n{output}" for label, cmd, code, output, _ in results if code != 0]
    assert not failures, "compilation failed:\n\n" + "\n\n".join(failures)
    print("\n" + ", ".join(f"{label} {seconds:.0f}s" for label, _, _, _, seconds in results))
