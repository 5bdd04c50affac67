"""Test builds of the kernel packages' sources as torch extensions.

`load`: a CUDA package's sources against the CPU emulator (cuda_emu.h). The resulting module has the
same functions as the real `_C_cuda` module but runs on CPU tensors, one emulated CUDA thread per
fiber. Used by the `*_emulated` tests; slow, so shapes stay small.
`load_avx512_emulated`: a CPU extension whose AVX-512 copy runs on an AVX2 CPU (see cpu_isa.h).
"""

from __future__ import annotations

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


def _build(name: str, source: Path, include_dirs: list[Path], cflags: list[str], ldflags: list[str]):
    """A torch extension `name` from `source`, in its own build folder under CUDA_EMU_BUILD_DIR."""
    from torch.utils.cpp_extension import load as load_ext

    build_dir = Path(os.environ.get("CUDA_EMU_BUILD_DIR", EMU_DIR / "build")) / name
    build_dir.mkdir(parents=True, exist_ok=True)
    # torch rebuilds only when the listed sources or flags change: fold the included files in.
    digest = hashlib.sha1()
    for folder in include_dirs:
        for path in sorted(Path(folder).glob("*")):
            if path.suffix in (".h", ".cuh", ".cu", ".cpp"):
                digest.update(path.name.encode() + path.read_bytes())
    return load_ext(
        name=name,
        sources=[str(source)],
        extra_cflags=[*cflags, f"-DKERNEL_EMU_SOURCES={digest.hexdigest()[:16]}"],
        extra_ldflags=ldflags,
        extra_include_paths=[str(d) for d in include_dirs],
        build_directory=str(build_dir),
        verbose=False,
    )


def load(name: str, source: Path, include_dirs: list[Path]):
    """Compile `source` (a .cpp that #includes the package's .cu/.cpp files) with -DKERNEL_EMULATE."""
    cflags = ["-O2", "-DKERNEL_EMULATE", "-U_FORTIFY_SOURCE", "-fno-strict-aliasing"]
    return _build(name, source, [EMU_DIR, *include_dirs], cflags, [])


def load_avx512_emulated(name: str, source: Path):
    """Compile a CPU extension's `source` with -DCPU_SIMD_EMULATE_AVX512 (see cpu_isa.h): its AVX-512
    copy built for AVX2 in generic 16-wide vectors, selectable with <PKG>_CPU_ISA=avx512 on any AVX2
    CPU."""
    from causal_conv1d.kernel_infra.build import include_dir

    cflags = ["-O2", "-fopenmp", "-DCPU_SIMD_EMULATE_AVX512"]
    return _build(name, source, [Path(include_dir()), source.parent], cflags, ["-fopenmp"])
