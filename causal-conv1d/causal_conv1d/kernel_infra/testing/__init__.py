"""Test support shared by the kernel packages' test suites (imports pytest; not used at run time).

- `kernel_backends`: the ``kernel`` / ``gpu`` fixtures that run a CUDA-kernel test on the GPU and
  on the CPU emulator of the CUDA thread model (`cuda_emu.h`, built by `emu_build`), poisoned
  guards around tensors, and mutated builds that prove the emulator catches real bugs. On a machine
  where a GPU is visible but a package's CUDA extension is not built, the ``gpu`` tests fail with
  the build command instead of skipping (set KERNEL_TESTS_ALLOW_UNBUILT_CUDA=1 to skip them).
- `triton_compile`: compiles Triton kernels for sm_90 without a GPU and reports their registers.
"""
