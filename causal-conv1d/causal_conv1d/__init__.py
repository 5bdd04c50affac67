"""Causal depthwise conv1d with CPU, CUDA and Triton kernels beside a PyTorch reference."""

__version__ = "1.1.0"

from causal_conv1d.causal_conv1d_interface import (
    causal_conv1d_fn,
    causal_conv1d_ref,
    causal_conv1d_update,
    dispatcher,
)

__all__ = ["causal_conv1d_fn", "causal_conv1d_ref", "causal_conv1d_update", "dispatcher", "__version__"]
