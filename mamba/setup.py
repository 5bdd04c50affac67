"""Builds mamba_ssm._C_cpu (always) and mamba_ssm._C_cuda (when CUDA is available).

Switches: MAMBA_SKIP_CUDA_BUILD=TRUE, MAMBA_FORCE_CUDA_BUILD=TRUE, TORCH_CUDA_ARCH_LIST.
Install causal-conv1d first, then `pip install --no-build-isolation -e mamba`.
"""

import glob

from setuptools import setup
from torch.utils.cpp_extension import BuildExtension

try:
    from causal_conv1d.kernel_infra.build import kernel_extensions
except ImportError as exc:
    raise SystemExit(
        "mamba_ssm builds with causal_conv1d's build rules: pip install --no-build-isolation -e causal-conv1d first"
    ) from exc

setup(
    ext_modules=kernel_extensions(
        "MAMBA",
        "mamba_ssm",
        cpu_sources=sorted(glob.glob("csrc/cpu/*.cpp")),
        cuda_sources=sorted(glob.glob("csrc/cuda/*.cu")) + sorted(glob.glob("csrc/cuda/*.cpp")),
    ),
    cmdclass={"build_ext": BuildExtension},
)
