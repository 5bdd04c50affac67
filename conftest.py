"""Suite-wide test settings: deterministic CPU threading and Triton's interpreter without a GPU."""

import os

import torch

# Without a GPU, Triton kernels can only run in its interpreter (on CPU tensors); it must be set
# before any kernel module is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

torch.set_num_threads(min(2, os.cpu_count() or 1))
