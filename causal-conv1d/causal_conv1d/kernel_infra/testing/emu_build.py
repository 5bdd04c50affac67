"""Test builds of the kernel packages' sources as torch extensions.

`load`: a CUDA package's sources against the CPU emulator (cuda_emu.h). The resulting module has the
same functions as the real `_C_cuda` module but runs on CPU tensors, one emulated CUDA thread per
fiber. Used by the `*_emulated` tests; slow, so shapes stay small.
`avx512_emulated`: a CPU extension whose AVX-512 copy runs on an AVX2 CPU (see cpu_isa.h).
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
from pathlib import Path

EMU_DIR = Path(__file__).resolve().parent


def available() -> str | None:
    """None if the emulator can be built here, else the reason it cannot."""
    if os.name != "posix":
        return "the CUDA emulator needs POSIX ucontext"
    if shutil.which(os.environ.get("CXX", "c++")) is None and shutil.which("g++") is None:
        return "no C++ compiler"
    return None


def load(name: str, source: Path, include_dirs: list[Path]):
    """Compile `source` (a .cpp that #includes the package's .cu/.cpp files) with -DKERNEL_EMULATE."""
    from torch.utils.cpp_extension import load as load_ext

    build_dir = Path(os.environ.get("CUDA_EMU_BUILD_DIR", EMU_DIR / "build")) / name
    build_dir.mkdir(parents=True, exist_ok=True)
    # torch rebuilds only when the listed sources or flags change: fold the included files in.
    digest = hashlib.sha1()
    for folder in (EMU_DIR, *include_dirs):
        for path in sorted(Path(folder).glob("*")):
            if path.suffix in (".h", ".cuh", ".cu", ".cpp"):
                digest.update(path.name.encode() + path.read_bytes())
    return load_ext(
        name=name,
        sources=[str(source)],
        extra_cflags=[
            "-O2",
            "-DKERNEL_EMULATE",
            "-U_FORTIFY_SOURCE",
            "-fno-strict-aliasing",
            f"-DKERNEL_EMU_SOURCES={digest.hexdigest()[:16]}",
        ],
        extra_include_paths=[str(EMU_DIR), *map(str, include_dirs)],
        build_directory=str(build_dir),
        verbose=False,
    )


# Per kernel package, its CPU extension's source relative to the source checkout.
CPU_SOURCES = {"causal_conv1d": "csrc/cpu/causal_conv1d_cpu.cpp", "mamba_ssm": "csrc/cpu/selective_scan_cpu.cpp"}


@functools.cache
def avx512_emulated(package: str):
    """The package's CPU extension built with -DCPU_SIMD_EMULATE_AVX512 (see cpu_isa.h): its AVX-512
    copy compiled for AVX2 in generic 16-wide vectors, selectable with <PKG>_CPU_ISA=avx512 on any
    AVX2 CPU. Checks the 16-wide loops where no AVX-512 CPU is at hand; needs the source checkout."""
    import importlib.util

    from torch.utils.cpp_extension import load as load_ext

    from causal_conv1d.kernel_infra.build import include_dir

    checkout = Path(importlib.util.find_spec(package).origin).resolve().parents[1]
    source = checkout / CPU_SOURCES[package]
    if not source.exists():
        raise FileNotFoundError(f"{source}: the emulated AVX-512 build needs {package}'s source checkout")
    name = f"{package}_cpu_avx512_emulated"
    build_dir = Path(os.environ.get("CUDA_EMU_BUILD_DIR", EMU_DIR / "build")) / name
    build_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha1()
    for folder in (source.parent, Path(include_dir())):
        for path in sorted(folder.glob("*.h")):
            digest.update(path.name.encode() + path.read_bytes())
    return load_ext(
        name=name,
        sources=[str(source)],
        extra_cflags=["-O2", "-fopenmp", "-DCPU_SIMD_EMULATE_AVX512", f"-DKERNEL_EMU_SOURCES={digest.hexdigest()[:8]}"],
        extra_ldflags=["-fopenmp"],
        extra_include_paths=[include_dir(), str(source.parent)],
        build_directory=str(build_dir),
        verbose=False,
    )
