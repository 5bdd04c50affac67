"""Where the CUDA-kernel tests run: on a GPU, or on the CPU through the CUDA emulator.

`KernelBackend` bundles a device and a context manager that routes the dispatchers to the kernel
under test. On a GPU that is the real `_C_cuda` module. Under emulation the same CUDA sources are
compiled against cuda_emu.h (see emu_build.py) and the resulting module stands in for the `cpu`
backend while the context is active, so the public Python functions run it on CPU tensors.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from . import emu_build

REPO = Path(__file__).resolve().parents[3]


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
def _route(dispatchers_and_modules, backend: str) -> Iterator[None]:
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


def cuda_backend(dispatchers) -> KernelBackend | str:
    """The real CUDA kernels, or the reason they cannot run."""
    if not torch.cuda.is_available():
        return "no CUDA device"
    for dispatcher in dispatchers:
        if dispatcher.kernels("cuda") is None:
            return f"{dispatcher.package} CUDA kernels not built: {dispatcher.describe()}"
    modules = {d.package: d.kernels("cuda") for d in dispatchers}
    return KernelBackend(
        "cuda", torch.device("cuda"), lambda: _route([(d, None) for d in dispatchers], "cuda"), modules
    )


_EMULATED: dict[str, object] = {}


def emulated_module(package: str):
    """The emulator build of a package's CUDA sources (compiled once per process)."""
    if package not in _EMULATED:
        if package == "causal_conv1d":
            source = REPO / "causal-conv1d" / "tests" / "emu_causal_conv1d.cpp"
            include = REPO / "causal-conv1d" / "csrc" / "cuda"
        else:
            source = REPO / "mamba" / "tests" / "ops" / "emu_selective_scan.cpp"
            include = REPO / "mamba" / "csrc" / "cuda"
        _EMULATED[package] = emu_build.load(f"{package}_cuda_emu", source, [include])
    return _EMULATED[package]


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
        "emulated", torch.device("cpu"), lambda: _route(routed, "cpu"), {d.package: m for d, m in routed}
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
