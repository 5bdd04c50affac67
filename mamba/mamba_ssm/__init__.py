"""Selective scan and the bidirectional Mamba block (VideoMamba), with CPU, CUDA and Triton kernels."""

__version__ = "1.1.0"

from mamba_ssm.modules.mamba_simple import Block, InferenceParams, Mamba
from mamba_ssm.ops.selective_scan_interface import (
    bimamba_inner_fn,
    dispatcher,
    mamba_inner_fn,
    mamba_inner_fn_no_out_proj,
    selective_scan_fn,
)
from mamba_ssm.ops.triton.layernorm import RMSNorm, layer_norm_fn, rms_norm_fn

__all__ = [
    "Block",
    "InferenceParams",
    "Mamba",
    "RMSNorm",
    "bimamba_inner_fn",
    "dispatcher",
    "layer_norm_fn",
    "mamba_inner_fn",
    "mamba_inner_fn_no_out_proj",
    "rms_norm_fn",
    "selective_scan_fn",
]
