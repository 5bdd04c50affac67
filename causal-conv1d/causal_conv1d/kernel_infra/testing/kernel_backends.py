"""Where the CUDA-kernel tests run: on a GPU, or on the CPU through the CUDA emulator.

`KernelBackend` bundles a device and a context manager that routes the dispatchers to the kernel
under test. On a GPU that is the real `_C_cuda` module. Under emulation the same CUDA sources are
compiled against cuda_emu.h (see emu_build.py) and the resulting module stands in for the `cpu`
backend while the context is active, so the public Python functions run it on CPU tensors.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from causal_conv1d.kernel_infra.testing import emu_build

# Set to 1 to let the CUDA-kernel tests skip on a machine where a GPU is visible but a package's
# CUDA extension is not built (by default they fail, so a green suite means the kernels ran).
ALLOW_UNBUILT_CUDA_ENV = "KERNEL_TESTS_ALLOW_UNBUILT_CUDA"

# Per kernel package, relative to its source checkout (the folder holding its setup.py): the folder
# of its CUDA sources, the emulator's entry file (a .cpp that #includes those sources), and its CPU
# extension's source.
EMULATED_SOURCES = {
    "causal_conv1d": ("csrc/cuda", "tests/emu_causal_conv1d.cpp", "csrc/cpu/causal_conv1d_cpu.cpp"),
    "mamba_ssm": ("csrc/cuda", "tests/ops/emu_selective_scan.cpp", "csrc/cpu/selective_scan_cpu.cpp"),
}


def _source(package: str, part: int) -> Path:
    """Part `part` of a package's EMULATED_SOURCES as a path; needs its source checkout (an editable
    install), since the kernel sources are not installed."""
    checkout = Path(importlib.util.find_spec(package).origin).resolve().parents[1]
    return checkout / EMULATED_SOURCES[package][part]


def _existing(path: Path, package: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{path}: the emulated builds need {package}'s source checkout (pip install -e)")
    return path


def emulated_sources(package: str) -> tuple[Path, Path]:
    """(CUDA source folder, emulator entry file) of a kernel package."""
    return _source(package, 0), _existing(_source(package, 1), package)


@dataclass
class KernelBackend:
    name: str  # "cuda" or "emulated"
    device: torch.device
    use: Callable[[], contextlib.AbstractContextManager]
    modules: dict  # package name -> the kernel module under test

    @property
    def emulated(self) -> bool:
        return self.name == "emulated"


@contextlib.contextmanager
def route(dispatchers_and_modules, backend: str) -> Iterator[None]:
    """Force `backend` on every dispatcher; with modules given, substitute them for it."""
    saved = []
    with contextlib.ExitStack() as stack:
        for dispatcher, module in dispatchers_and_modules:
            if module is not None:
                saved.append((dispatcher, dispatcher._modules.get(backend, "missing")))
                dispatcher._modules[backend] = module
            stack.enter_context(dispatcher.force(backend))
        try:
            yield
        finally:
            for dispatcher, old in saved:
                if old == "missing":
                    dispatcher._modules.pop(backend, None)
                else:
                    dispatcher._modules[backend] = old


def unbuilt_cuda_message(dispatcher) -> str:
    """What to do when a GPU is visible but `dispatcher`'s package has no CUDA extension."""
    return (
        f"a GPU is visible but the {dispatcher.package} CUDA kernels are not built ({dispatcher.describe()}). "
        f"Build them with the CUDA toolkit installed: `rm -f .venv/.kernels && make install CUDA_BUILD=TRUE` "
        f"(or `pip install --no-build-isolation -e causal-conv1d` then `-e mamba`), or set "
        f"{ALLOW_UNBUILT_CUDA_ENV}=1 to skip the CUDA kernel tests"
    )


def cuda_backend(dispatchers) -> KernelBackend | str:
    """The real CUDA kernels, or the reason they cannot run. A visible GPU without the CUDA
    extension fails the test (unless KERNEL_TESTS_ALLOW_UNBUILT_CUDA=1): skipping would leave a green
    suite that never ran the kernels."""
    if not torch.cuda.is_available():
        return "no CUDA device"
    for dispatcher in dispatchers:
        if dispatcher.kernels("cuda") is None:
            if os.environ.get(ALLOW_UNBUILT_CUDA_ENV, "0") == "1":
                return f"{ALLOW_UNBUILT_CUDA_ENV}=1 and the {dispatcher.package} CUDA kernels are not built"
            pytest.fail(unbuilt_cuda_message(dispatcher), pytrace=False)
    modules = {d.package: d.kernels("cuda") for d in dispatchers}
    return KernelBackend("cuda", torch.device("cuda"), lambda: route([(d, None) for d in dispatchers], "cuda"), modules)


_EMULATED: dict[str, object] = {}


def emulated_module(package: str):
    """The emulator build of a package's CUDA sources (compiled once per process)."""
    if package not in _EMULATED:
        cuda_dir, entry = emulated_sources(package)
        _EMULATED[package] = emu_build.load(f"{package}_cuda_emu", entry, [cuda_dir])
    return _EMULATED[package]


def avx512_emulated_module(package: str):
    """A package's CPU extension whose AVX-512 copy runs on an AVX2 CPU (compiled once per process):
    checks the 16-wide loops where no AVX-512 CPU is at hand."""
    name = f"{package}_cpu_avx512_emulated"
    if name not in _EMULATED:
        _EMULATED[name] = emu_build.load_avx512_emulated(name, _existing(_source(package, 2), package))
    return _EMULATED[name]


def emulated_backend(dispatchers) -> KernelBackend | str:
    """The CUDA sources on the CPU emulator, or the reason they cannot run.

    Set CUDA_EMU_TESTS=0 to skip these (they compile the kernels with the host compiler first).
    """
    if os.environ.get("CUDA_EMU_TESTS", "1") == "0":
        return "CUDA_EMU_TESTS=0"
    reason = emu_build.available()
    if reason is not None:
        return reason
    routed = [(d, emulated_module(d.package)) for d in dispatchers]
    return KernelBackend(
        "emulated", torch.device("cpu"), lambda: route(routed, "cpu"), {d.package: m for d, m in routed}
    )


def backend_fixtures(dispatchers) -> tuple:
    """The fixtures of a CUDA-kernel test module, routing `dispatchers`: ``kernel`` (the GPU, marked
    `gpu`, and the CPU emulator, marked `slow`), ``gpu`` (the GPU only) and an autouse one that turns
    TF32 off so float32 references are exact. Assign them to module names to use them."""

    @pytest.fixture(
        scope="module",
        params=[pytest.param("cuda", marks=pytest.mark.gpu), pytest.param("emulated", marks=pytest.mark.slow)],
    )
    def kernel(request) -> KernelBackend:
        backend = cuda_backend(dispatchers) if request.param == "cuda" else emulated_backend(dispatchers)
        if isinstance(backend, str):
            pytest.skip(backend)
        return backend

    @pytest.fixture(scope="module")
    def gpu() -> KernelBackend:
        backend = cuda_backend(dispatchers)
        if isinstance(backend, str):
            pytest.skip(backend)
        return backend

    @pytest.fixture(autouse=True)
    def _exact_float32():
        """No TF32 in the float32 references (cuDNN convolutions allow it by default)."""
        saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        yield
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved

    return kernel, gpu, _exact_float32


# ---- bounds checks of global memory and mutated builds -------------------------------------------

# A NaN with a recognisable payload per dtype, written around guarded tensors.
_POISON = {
    torch.float32: (torch.int32, 0x7FA5A5A5),
    torch.float16: (torch.int16, 0x7E5A),
    torch.bfloat16: (torch.int16, 0x7FA5),
}


class Guard:
    """Tensors placed inside larger buffers whose other elements are a poison NaN: a kernel that
    reads outside a tensor gets NaNs into its results, one that writes outside changes the poison,
    which `check` reports. Row tensors (unit stride along the last dim) get `pad` poisoned elements
    on both sides of every row (their rows are then strided); flat ones only at both ends (they
    stay contiguous)."""

    def __init__(self, pad: int = 16):
        self.pad = pad
        self._buffers: list[tuple[str, torch.Tensor, torch.Tensor]] = []  # name, buffer, mask of guard elements

    def __call__(self, name: str, t: torch.Tensor | None, rows: bool = True) -> torch.Tensor | None:
        if t is None:
            return None
        int_dtype, bits = _POISON[t.dtype]
        pad = self.pad
        if rows:
            lead = t.shape[:-1]
            buf = torch.empty(*lead, t.shape[-1] + 2 * pad, dtype=t.dtype)
            buf.view(int_dtype).fill_(bits)
            view = buf[..., pad : pad + t.shape[-1]]
        else:
            buf = torch.empty(t.numel() + 2 * pad, dtype=t.dtype)
            buf.view(int_dtype).fill_(bits)
            view = buf[pad : pad + t.numel()].view(t.shape)
        view.copy_(t)
        mask = torch.ones(buf.shape, dtype=torch.bool)
        (mask[..., pad : pad + t.shape[-1]] if rows else mask[pad : pad + t.numel()]).fill_(False)
        self._buffers.append((name, buf, mask))
        return view

    def check(self) -> list[str]:
        """Names of the tensors whose surroundings were written."""
        bad = []
        for name, buf, mask in self._buffers:
            int_dtype, bits = _POISON[buf.dtype]
            if not (buf.view(int_dtype)[mask] == bits).all():
                bad.append(name)
        return bad


def mutated_module(package: str, mutations: dict[str, list[tuple[str, str]]]):
    """An emulator build of a copy of `package`'s CUDA sources with text substitutions applied:
    `mutations` maps a file name to (original, replacement) pairs, each original occurring exactly
    once. Replacements switch on `emu::mutation()` (the CUDA_EMU_MUTATION environment variable at
    launch), so one build holds every mutation and, with CUDA_EMU_MUTATION=0, the original code."""
    cuda_dir, entry = emulated_sources(package)
    build_root = Path(os.environ.get("CUDA_EMU_BUILD_DIR", emu_build.EMU_DIR / "build"))
    copy = build_root / f"{package}_mutated_sources"
    copy.mkdir(parents=True, exist_ok=True)
    unknown = set(mutations) - {f.name for f in cuda_dir.iterdir()}
    if unknown:
        raise AssertionError(f"no such source file to mutate: {sorted(unknown)}")
    for original_file in sorted(cuda_dir.iterdir()):
        text = original_file.read_text()
        for original, replacement in mutations.get(original_file.name, []):
            if text.count(original) != 1:
                raise AssertionError(
                    f"{original_file.name}: the mutated text occurs {text.count(original)} times: {original!r}"
                )
            text = text.replace(original, replacement)
        target = copy / original_file.name
        # Unchanged files keep their time stamps, so the build is not redone.
        if not target.exists() or target.read_text() != text:
            target.write_text(text)
    return emu_build.load(f"{package}_cuda_emu_mutants", entry, [copy])
