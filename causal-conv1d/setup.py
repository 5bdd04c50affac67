"""Builds causal_conv1d._C_cpu (always) and causal_conv1d._C_cuda (when CUDA is available).

Switches: CAUSAL_CONV1D_SKIP_CUDA_BUILD=TRUE, CAUSAL_CONV1D_FORCE_CUDA_BUILD=TRUE, TORCH_CUDA_ARCH_LIST.
Install with `pip install --no-build-isolation -e causal-conv1d` so the installed torch is used.
"""

import glob
import os
import sys

from setuptools import setup
from torch.utils.cpp_extension import BuildExtension

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # PEP 517 builds do not add it
from causal_conv1d.kernel_infra.build import kernel_extensions

setup(
    ext_modules=kernel_extensions(
        "CAUSAL_CONV1D",
        "causal_conv1d",
        cpu_sources=sorted(glob.glob("csrc/cpu/*.cpp")),
        cuda_sources=sorted(glob.glob("csrc/cuda/*.cu")) + sorted(glob.glob("csrc/cuda/*.cpp")),
    ),
    cmdclass={"build_ext": BuildExtension},
)
