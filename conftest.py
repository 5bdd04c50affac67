"""Suite-wide test settings: deterministic CPU threading, Triton's interpreter without a GPU, an
environment that no test can leak into the next one, and the timeouts of long tests."""

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


# Every test gets pyproject.toml's `timeout` (300 s). A test marked `slow` or `slurm` gets
# LONG_TEST_TIMEOUT instead, unless it names its own with @pytest.mark.timeout(N). The limits are
# about 4x the longest time measured on a loaded 2-core machine, so a busy CI runner stays green
# while a hung test still ends. (A module-scoped fixture's setup counts toward its first test.)
LONG_TEST_TIMEOUT = 1200


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        long = item.get_closest_marker("slow") or item.get_closest_marker("slurm")
        if long and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(LONG_TEST_TIMEOUT))
