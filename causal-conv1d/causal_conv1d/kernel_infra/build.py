"""Build rules shared by the `causal_conv1d` and `mamba_ssm` setup scripts (`causal_conv1d.kernel_infra.build`).

The CPU extension is always built. The CUDA extension is built when a CUDA toolkit and a CUDA
build of torch are both present, unless `<PREFIX>_SKIP_CUDA_BUILD=TRUE`; `<PREFIX>_FORCE_CUDA_BUILD=TRUE`
builds it regardless (e.g. in a container without a GPU). One log line says what was built.
Both packages' extensions get `include_dir()` on their include path: the headers the CPU kernels
share (cpu_simd.h, cpu_isa.h), which ship inside the causal_conv1d package.
Imported by the setup scripts and the build tests, never at run time (kernel_extensions needs torch).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path


def include_dir() -> str:
    """causal_conv1d/include: the C++ headers shared with mamba_ssm's kernels (package data, so an
    installed causal_conv1d, editable or not, has them)."""
    return str(Path(__file__).resolve().parents[1] / "include")


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in ("1", "TRUE", "YES", "ON")


def nvcc_flags() -> list[str]:
    """Our nvcc flags (torch's BuildExtension adds its own, the -std and the -gencode ones)."""
    return [
        "-O3",
        "--use_fast_math",
        "--expt-relaxed-constexpr",
        "-lineinfo",
        "-U__CUDA_NO_HALF_OPERATORS__",
        "-U__CUDA_NO_HALF_CONVERSIONS__",
        "-U__CUDA_NO_BFLOAT16_OPERATORS__",
        "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
        f"--threads={os.environ.get('NVCC_THREADS', '4')}",
    ]


def arch_list_with_ptx(arch_list: str) -> str:
    """TORCH_CUDA_ARCH_LIST with PTX for its newest arch, so that newer GPUs can JIT-compile the
    kernels ('8.0;9.0' -> '8.0;9.0+PTX'); 'native' and lists that already carry PTX are kept."""
    archs = [a for a in re.split(r"[;\s]+", arch_list.strip()) if a]
    if not archs or any(a.endswith("+PTX") or not a[0].isdigit() for a in archs):
        return ";".join(archs) or arch_list
    newest = max(range(len(archs)), key=lambda i: tuple(int(x) for x in re.findall(r"\d+", archs[i])[:2]))
    archs[newest] += "+PTX"
    return ";".join(archs)


def arch_define(arch_list: str) -> str:
    """The arch list as one preprocessor token for -DKERNEL_BUILT_ARCHS (no quotes or ';' to escape
    through the build tools): '8.0;9.0+PTX' -> '8_0__9_0p'. dispatch.decode_built_archs reverses it."""
    return "__".join(a.replace("+PTX", "p").replace(".", "_") for a in re.split(r"[;\s]+", arch_list.strip()) if a)


def cuda_toolkit_dirs(cuda_home: str | None) -> tuple[list[str], list[str]]:
    """Extra (include, library) dirs when CUDA_HOME lacks the runtime headers.

    torch derives CUDA_HOME from the `nvcc` on PATH; when that is a wrapper script (e.g.
    /usr/local/bin/nvcc running /usr/local/cuda-X/bin/nvcc), CUDA_HOME/include has no
    cuda_runtime.h and the host compiler cannot build the binding files. nvcc itself knows its
    headers, so only the host-side include and library paths need the real toolkit.
    """
    candidates = [cuda_home, os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    for root in filter(None, candidates):
        if os.path.exists(os.path.join(root, "include", "cuda_runtime_api.h")):
            if root == cuda_home:
                return [], []
            libs = [d for d in (os.path.join(root, "lib64"), os.path.join(root, "lib")) if os.path.isdir(d)]
            return [os.path.join(root, "include")], libs
    return [], []


def kernel_extensions(prefix: str, package: str, cpu_sources: list[str], cuda_sources: list[str]) -> list:
    """Extension modules `<package>._C_cpu` and (maybe) `<package>._C_cuda`."""
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, CppExtension, CUDAExtension

    cxx_flags = ["-O3", "-fopenmp"]  # BuildExtension adds the -std torch needs
    shared_includes = [include_dir()]
    extensions = [
        CppExtension(
            f"{package}._C_cpu",
            cpu_sources,
            include_dirs=shared_includes,
            extra_compile_args=cxx_flags,
            extra_link_args=["-fopenmp"],
        )
    ]
    if not cpu_sources:  # a source checkout missing csrc/: still installable, runs the reference
        extensions = []

    force, skip = _flag(f"{prefix}_FORCE_CUDA_BUILD"), _flag(f"{prefix}_SKIP_CUDA_BUILD")
    toolkit, cuda_torch = CUDA_HOME is not None, torch.version.cuda is not None
    if not cuda_sources:
        why = "this version has no CUDA sources"
    elif skip:
        why = f"{prefix}_SKIP_CUDA_BUILD is set"
    elif not force and not (toolkit and cuda_torch):
        why = "no CUDA toolkit found" if not toolkit else "torch is a CPU-only build"
    else:
        why = None
        # Ampere and Hopper unless the user says otherwise (upstream ignored this variable), plus PTX
        # of the newest arch so that newer GPUs (Blackwell...) JIT the kernels instead of failing.
        os.environ["TORCH_CUDA_ARCH_LIST"] = arch_list_with_ptx(os.environ.get("TORCH_CUDA_ARCH_LIST") or "8.0;9.0")
        archs = f"-DKERNEL_BUILT_ARCHS={arch_define(os.environ['TORCH_CUDA_ARCH_LIST'])}"
        include_dirs, library_dirs = cuda_toolkit_dirs(CUDA_HOME)
        extensions.append(
            CUDAExtension(
                f"{package}._C_cuda",
                cuda_sources,
                include_dirs=shared_includes + include_dirs,
                library_dirs=library_dirs,
                extra_compile_args={"cxx": ["-O3", archs], "nvcc": nvcc_flags() + [archs]},
            )
        )
    cpu = "CPU" if cpu_sources else "no CPU kernels (no sources)"
    built = f"{cpu} + CUDA (archs {os.environ['TORCH_CUDA_ARCH_LIST']})" if why is None else f"{cpu}, no CUDA ({why})"
    print(f"[{package}] building kernels: {built}", file=sys.stderr, flush=True)
    return extensions
