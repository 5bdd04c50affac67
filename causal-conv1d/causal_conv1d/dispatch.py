"""Backend selection for the kernel packages (`causal_conv1d`, and reused by `mamba_ssm`).

Every op exists as a pure-PyTorch reference (``ref``) and, where built or importable, as a CPU C++
kernel (``cpu``), a CUDA C++ kernel (``cuda``) and a Triton kernel (``triton``). A `Dispatcher`
picks one per call from the tensor's device and what is available, can be forced with an
environment variable, and remembers what ran, so a user can ask ``which backend did my model use?``.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Iterator
from types import ModuleType

import torch

BACKENDS = ("ref", "cpu", "cuda", "triton")
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def triton_interpreted() -> bool:
    """True when Triton runs its interpreter (CPU tensors), as in CI without a GPU."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


class Dispatcher:
    """Chooses the backend that runs an op.

    Args:
        package: name used in messages (``"causal_conv1d"``).
        env_var: environment variable that forces a backend (``ref``/``cpu``/``cuda``/``triton``;
            empty or ``auto`` lets the dispatcher choose).
        modules: backend name -> import path of the module that implements it. ``ref`` needs no
            module: the reference lives beside each op.
    """

    def __init__(self, package: str, env_var: str, modules: dict[str, str]):
        self.package = package
        self.env_var = env_var
        self._module_paths = modules
        self._modules: dict[str, ModuleType | None] = {}
        self._errors: dict[str, str] = {}
        self.last_used: dict[str, str] = {}

    def kernels(self, name: str) -> ModuleType | None:
        """The module implementing backend `name`, or None if it is not built/importable."""
        if name not in self._modules:
            path = self._module_paths.get(name)
            module = None
            if path is None:
                self._errors[name] = "no such backend"
            else:
                try:
                    module = importlib.import_module(path)
                except Exception as exc:  # a missing or broken build must not break the import
                    self._errors[name] = f"{type(exc).__name__}: {exc}"
            self._modules[name] = module
        return self._modules[name]

    def available(self) -> dict[str, bool]:
        return {name: name == "ref" or self.kernels(name) is not None for name in BACKENDS}

    def forced(self) -> str | None:
        value = os.environ.get(self.env_var, "").strip().lower()
        if value in ("", "auto"):
            return None
        if value not in BACKENDS:
            raise ValueError(f"{self.env_var}={value!r}: expected one of auto, {', '.join(BACKENDS)}")
        return value

    def _runs_on(self, name: str, device: torch.device) -> bool:
        if name == "ref":
            return True
        if name == "cpu":
            return device.type == "cpu"
        if name == "cuda":
            return device.type == "cuda"
        return device.type == "cuda" or (device.type == "cpu" and triton_interpreted())

    # A compiled model fixes its backends when it is traced: the choice is a constant of the graph
    # (no guard on the environment variable, no graph break at the kernels' lazy imports).
    @torch.compiler.assume_constant_result
    def pick(self, op: str, device: torch.device, dtype: torch.dtype | None = None) -> str:
        """Backend for `op` on `device`; records the choice in `last_used`.

        Kernels take float32/float16/bfloat16; any other dtype (float64 for gradcheck) runs on the
        reference, forced backend or not.
        """
        name = self.forced()
        if dtype is not None and dtype not in KERNEL_DTYPES:
            name = "ref"
        elif name is not None:
            if name != "ref" and self.kernels(name) is None:
                raise RuntimeError(
                    f"{self.env_var}={name} but the {self.package} {name} backend is unavailable: "
                    f"{self._errors.get(name)}. Reinstall the package (see README) or unset {self.env_var}."
                )
            if not self._runs_on(name, device):
                raise RuntimeError(f"{self.env_var}={name} cannot run {op} on a {device.type} tensor")
        else:
            preference = {"cpu": ("cpu",), "cuda": ("cuda", "triton")}.get(device.type, ())
            name = next((n for n in preference if self.kernels(n) is not None), "ref")
        self.last_used[op] = name
        return name

    @contextlib.contextmanager
    def force(self, name: str) -> Iterator[None]:
        """Temporarily force a backend (``with dispatcher.force("ref"): ...``)."""
        old = os.environ.get(self.env_var)
        os.environ[self.env_var] = name
        try:
            yield
        finally:
            if old is None:
                os.environ.pop(self.env_var, None)
            else:
                os.environ[self.env_var] = old

    def describe(self) -> str:
        """One line: which backends exist, why the others don't, and what is forced."""
        parts = []
        for name, ok in self.available().items():
            parts.append(f"{name}: yes" if ok else f"{name}: no ({self._errors.get(name, 'not built')})")
        forced = os.environ.get(self.env_var) or "auto"
        return f"{self.package} backends -> {'; '.join(parts)}; {self.env_var}={forced}"
