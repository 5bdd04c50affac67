"""Suite-wide test settings: deterministic CPU threading, Triton's interpreter without a GPU, and
an environment that no test can leak into the next one."""

import os

import pytest
import torch

# Without a GPU, Triton kernels can only run in its interpreter (on CPU tensors); it must be set
# before any kernel module is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _restore_environment():
    """Launch-mode detection writes RANK/WORLD_SIZE/MASTER_* into os.environ; a value left behind
    by one test would make every later run try to join a process group that never forms."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)
