"""Kernel infrastructure shared by the kernel packages `causal_conv1d` and `mamba_ssm`.

It ships inside causal_conv1d (which mamba_ssm depends on and installs after); neither package
reaches the other's internals for it. Three parts:

- `dispatch`: the `Dispatcher` each package owns (``causal_conv1d.dispatcher``,
  ``mamba_ssm.dispatcher``): picks the backend of each op call (``ref``, ``cpu``, ``cuda``,
  ``triton``) from the tensor's device and what is built, honours the package's ``*_BACKEND``
  environment variable, and records what ran.
- `build`: the setup.py rules of both packages (the CPU extension always, the CUDA one when a
  toolkit is present, ``<PREFIX>_SKIP_CUDA_BUILD`` / ``<PREFIX>_FORCE_CUDA_BUILD``), and the
  C++ headers both packages' CPU kernels include (``causal_conv1d/include``: cpu_simd.h, cpu_isa.h).
- `testing`: test support (imports pytest): the CUDA-kernel test fixtures, the CPU emulator of the
  CUDA thread model, and the Triton compile check for sm_90.

Adding a kernel backend:

1. Write a module with the same functions as the package's reference backend module
   (``causal_conv1d/ref_kernels.py``: ``fwd``/``bwd``; ``mamba_ssm/ops/ref_kernels.py``:
   ``num_chunks``/``fwd``/``bwd``), and test it against the reference (as
   ``tests/test_triton_kernels.py`` does).
2. Name it in the package's ``Dispatcher(modules=...)`` (``causal_conv1d_interface.py``,
   ``mamba_ssm/ops/selective_scan_interface.py``).
3. If it is a new kind of backend, add it to `dispatch.PREFERENCE` for the device types it serves.
   A compiled one adds its sources to the package's setup.py through `build.kernel_extensions`.
"""

from causal_conv1d.kernel_infra.dispatch import BACKENDS, KERNEL_DTYPES, PREFERENCE, Dispatcher, triton_interpreted

__all__ = ["BACKENDS", "KERNEL_DTYPES", "PREFERENCE", "Dispatcher", "triton_interpreted"]
