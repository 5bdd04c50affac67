"""Backend selection for the kernel packages (`causal_conv1d` and `mamba_ssm` each own one `Dispatcher`).

Every op exists as a pure-PyTorch reference (``ref``) and, where built or importable, as a CPU C++
kernel (``cpu``), a CUDA C++ kernel (``cuda``) and a Triton kernel (``triton``). A `Dispatcher`
picks one per call from the tensor's device and what is available, can be forced with an
environment variable, and remembers what ran, so a user can ask ``which backend did my model use?``.
Which backends exist and which device types they serve is the table `PREFERENCE` below.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import warnings
from collections.abc import Callable, Iterator
from types import ModuleType

import torch

# Device type -> the backends that run there, best first. ``ref`` runs everywhere and comes last;
# ``triton`` also runs on CPU tensors in Triton's interpreter (TRITON_INTERPRET=1), when forced.
# A new backend is one entry here plus its module in each package's Dispatcher(modules=...).
PREFERENCE: dict[str, tuple[str, ...]] = {"cpu": ("cpu",), "cuda": ("cuda", "triton")}
BACKENDS = ("ref", *dict.fromkeys(name for names in PREFERENCE.values() for name in names))
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


# What the CUDA runtime says when a binary has no code for the GPU it runs on (built for other
# archs without PTX, or PTX newer than the driver can JIT).
ARCH_ERRORS = re.compile(
    r"no kernel image|invalid device function|unsupported PTX|PTX JIT|not compatible with the device|"
    r"device kernel image is invalid|NoKernelImageForDevice|InvalidDeviceFunction",
    re.IGNORECASE,
)


def decode_built_archs(code: str) -> str:
    """'8_0__9_0p' (the -DKERNEL_BUILT_ARCHS token, see build.arch_define) -> '8.0;9.0+PTX'."""
    return ";".join(a.replace("_", ".").replace("p", "+PTX") for a in code.split("__"))


def gpu_capability(device: torch.device) -> str:
    """'sm_90 (NVIDIA H100 ...)' for a CUDA device, or what is known."""
    try:
        major, minor = torch.cuda.get_device_capability(device)
        return f"sm_{major}{minor} ({torch.cuda.get_device_name(device)})"
    except Exception as exc:  # no driver / no such device: say so instead of failing the warning
        return f"unknown capability ({type(exc).__name__})"


def triton_interpreted() -> bool:
    """True when Triton runs its interpreter (CPU tensors), as in CI without a GPU."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


class Dispatcher:
    """Chooses the backend that runs an op.

    Args:
        package: name used in messages (``"causal_conv1d"``).
        env_var: environment variable that forces a backend (``ref``/``cpu``/``cuda``/``triton``;
            empty or ``auto`` lets the dispatcher choose).
        modules: backend name -> import path of the module that implements it. Every module has
            the same functions (the package's kernel contract: ``fwd``, ``bwd``, ...); the ``ref``
            one computes them with the PyTorch reference and is always available, the others are
            used when they import (a missing build is recorded and reported by `describe`).
        cuda_probe: runs the smallest launch of the ``cuda`` module on a device (and synchronises).
            The first time the dispatcher would choose ``cuda`` for a device it runs the probe; if
            the binary has no code for that GPU ("no kernel image": built for other archs) the
            dispatcher warns once, naming the GPU and the built archs, and uses ``triton`` (else
            ``ref``) on that device from then on. Other errors propagate.
    """

    def __init__(
        self,
        package: str,
        env_var: str,
        modules: dict[str, str],
        cuda_probe: Callable[[ModuleType, torch.device], None] | None = None,
    ):
        self.package = package
        self.env_var = env_var
        self._module_paths = modules
        self._modules: dict[str, ModuleType | None] = {}
        self._errors: dict[str, str] = {}
        self._cuda_probe = cuda_probe
        self._cuda_unusable: dict[int, str] = {}  # device index -> why the CUDA kernels cannot run there
        self._cuda_checked: set[int] = set()
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

    def built_archs(self) -> str:
        """The TORCH_CUDA_ARCH_LIST the CUDA module was built with ('unknown' if it does not say)."""
        code = getattr(self.kernels("cuda"), "built_archs_code", None)
        return "unknown" if code is None else decode_built_archs(str(code))

    def cuda_usable(self, device: torch.device) -> bool:
        """Whether the CUDA kernels run on `device` (probed once per device, see the class doc)."""
        index = device.index if device.index is not None else torch.cuda.current_device()
        if index not in self._cuda_checked:
            self._cuda_checked.add(index)
            module = self.kernels("cuda")
            if module is not None and self._cuda_probe is not None:
                try:
                    self._cuda_probe(module, torch.device("cuda", index))
                except Exception as exc:
                    if not ARCH_ERRORS.search(str(exc)):
                        self._cuda_checked.discard(index)
                        raise
                    self._cuda_unusable[index] = (
                        f"{gpu_capability(torch.device('cuda', index))}: built for archs {self.built_archs()}, "
                        f"no code for this GPU ({str(exc).splitlines()[0]})"
                    )
                    fallback = "triton" if self.kernels("triton") is not None else "ref"
                    warnings.warn(
                        f"{self.package}: the CUDA kernels cannot run on cuda:{index}, "
                        f"{self._cuda_unusable[index]}; using the {fallback} backend there instead. "
                        f"Rebuild with TORCH_CUDA_ARCH_LIST naming this GPU's capability to use them.",
                        RuntimeWarning,
                        stacklevel=3,
                    )
        return index not in self._cuda_unusable

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
        if name == "ref" or name in PREFERENCE.get(device.type, ()):
            return True
        return name == "triton" and device.type == "cpu" and triton_interpreted()

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
            if name == "cuda" and not self.cuda_usable(device):
                raise RuntimeError(
                    f"{self.env_var}=cuda but the {self.package} CUDA kernels cannot run on this GPU: "
                    f"{self._cuda_unusable[device.index if device.index is not None else torch.cuda.current_device()]}"
                )
        else:
            usable = (
                n
                for n in PREFERENCE.get(device.type, ())
                if self.kernels(n) is not None and (n != "cuda" or self.cuda_usable(device))
            )
            name = next(usable, "ref")
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
        """One line: which backends exist, whether a GPU is visible to them, why the others don't
        exist, and what is forced."""
        gpu = torch.cuda.is_available()
        parts = []
        for name, ok in self.available().items():
            if not ok:
                parts.append(f"{name}: no ({self._errors.get(name, 'not built')})")
            elif name == "cuda" and not gpu:
                parts.append(f"cuda: built (archs {self.built_archs()}), but no GPU visible")
            elif name == "cuda" and self._cuda_unusable:
                why = "; ".join(f"cuda:{i} {reason}" for i, reason in sorted(self._cuda_unusable.items()))
                parts.append(f"cuda: built, but unusable on {why}")
            elif name == "cuda":
                parts.append(f"cuda: yes (archs {self.built_archs()})")
            elif name == "triton" and not gpu and not triton_interpreted():
                parts.append("triton: importable, but no GPU visible (TRITON_INTERPRET=1 runs it on CPU tensors)")
            else:
                parts.append(f"{name}: yes")
        forced = os.environ.get(self.env_var) or "auto"
        return f"{self.package} backends -> {'; '.join(parts)}; {self.env_var}={forced}"
