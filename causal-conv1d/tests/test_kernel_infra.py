"""The shared kernel infrastructure (`causal_conv1d.kernel_infra`) as both kernel packages use it:
the backend table, the emulator's view of each package's sources, and what the CUDA-kernel tests do
on a machine where a GPU is visible but a CUDA extension is not built (simulated here on the CPU)."""

import pytest
import torch

import causal_conv1d
import mamba_ssm
from causal_conv1d.kernel_infra import BACKENDS, PREFERENCE, Dispatcher
from causal_conv1d.kernel_infra.testing import kernel_backends


def test_both_packages_dispatch_with_the_shared_dispatcher():
    assert isinstance(causal_conv1d.dispatcher, Dispatcher) and isinstance(mamba_ssm.dispatcher, Dispatcher)
    assert BACKENDS == ("ref", "cpu", "cuda", "triton")
    assert PREFERENCE["cuda"] == ("cuda", "triton")  # the C++ kernels first, Triton when they are not built


def test_a_backend_listed_in_the_preference_table_is_picked_on_its_device(monkeypatch):
    """Adding a backend is one table entry plus its module: the dispatcher then picks it."""
    monkeypatch.setitem(PREFERENCE, "cpu", ("mybackend", "cpu"))
    monkeypatch.delenv("NEWPKG_BACKEND", raising=False)
    d = Dispatcher("newpkg", "NEWPKG_BACKEND", {"mybackend": "causal_conv1d.ref_kernels"})
    assert d.pick("op", torch.device("cpu"), torch.float32) == "mybackend"


@pytest.mark.parametrize("package", ["causal_conv1d", "mamba_ssm"])
def test_emulator_finds_each_package_sources(package):
    cuda_dir, entry = kernel_backends.emulated_sources(package)
    assert entry.suffix == ".cpp" and entry.exists()
    assert any(cuda_dir.glob("*.cu"))


def _unbuilt_dispatcher() -> Dispatcher:
    return Dispatcher("fakepkg", "FAKEPKG_BACKEND", {"cuda": "fakepkg_no_such_module._C_cuda"})


def test_visible_gpu_without_cuda_build_fails_with_the_build_command(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv(kernel_backends.ALLOW_UNBUILT_CUDA_ENV, raising=False)
    with pytest.raises(pytest.fail.Exception) as failure:
        kernel_backends.cuda_backend([_unbuilt_dispatcher()])
    message = str(failure.value)
    assert "GPU is visible but the fakepkg CUDA kernels are not built" in message
    assert "make install CUDA_BUILD=TRUE" in message and kernel_backends.ALLOW_UNBUILT_CUDA_ENV in message


def test_unbuilt_cuda_skips_only_when_allowed(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv(kernel_backends.ALLOW_UNBUILT_CUDA_ENV, "1")
    reason = kernel_backends.cuda_backend([_unbuilt_dispatcher()])
    assert isinstance(reason, str) and "not built" in reason
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert kernel_backends.cuda_backend([_unbuilt_dispatcher()]) == "no CUDA device"
