"""Builds a CUDA kernel package's sources against the CPU emulator (cuda_emu.h) as a torch extension.

The resulting module has the same functions as the real `_C_cuda` module but runs on CPU tensors,
one emulated CUDA thread per fiber. Used by the `*_emulated` tests; slow, so shapes stay small.
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
