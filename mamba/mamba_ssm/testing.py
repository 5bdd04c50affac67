"""Test support: a faster Triton interpreter for running the Triton kernels on CPU tensors.

Triton's interpreter (``TRITON_INTERPRET=1``) runs ``tl.associative_scan`` and ``tl.reduce`` with a
custom combine function one element at a time in Python, which makes a single small Mamba mixer take
minutes. `fast_triton_interpreter` swaps those two interpreter routines for equivalents that apply
the same combine function, in the same order, to whole slices along the scanned axis; the kernels
themselves are unchanged. The test suites of ``mamba_ssm`` and ``videomamba`` use it, and check it
against the stock routines.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

__all__ = ["fast_triton_interpreter", "interpreter_ops"]


def _as_tuple(result: Any) -> tuple:
    return result if isinstance(result, tuple) else (result,)


def _sliced_scan(self, input):
    data = [np.moveaxis(arg.handle.data, self.axis, 0) for arg in input]
    outs = [np.empty_like(d) for d in data]
    acc = None
    for i in range(data[0].shape[0]):
        cur = tuple(self.to_tensor(d[i], arg.dtype) for d, arg in zip(data, input, strict=True))
        acc = cur if acc is None else _as_tuple(self.combine_fn.fn(*acc, *cur))
        for o, a in zip(outs, acc, strict=True):
            o[i] = np.reshape(a.handle.data, o[i].shape)
    return [self.to_tensor(np.moveaxis(o, 0, self.axis), arg.dtype) for o, arg in zip(outs, input, strict=True)]


def _sliced_reduce(self, input):
    original_axis = self.axis
    input, axis = self.unravel(input, self.axis)
    data = [np.moveaxis(arg.handle.data, axis, 0) for arg in input]
    acc = None
    for i in range(data[0].shape[0]):
        cur = tuple(self.to_tensor(d[i], arg.dtype) for d, arg in zip(data, input, strict=True))
        acc = cur if acc is None else _as_tuple(self.combine_fn.fn(*acc, *cur))
    ret = []
    for a, d, arg in zip(acc, data, input, strict=True):
        out = np.reshape(a.handle.data, d.shape[1:]).astype(d.dtype)
        if self.keep_dims:
            out = np.expand_dims(out, axis) if original_axis is not None else out.reshape((1,) * d.ndim)
        elif original_axis is None:
            out = out.item()
        ret.append(self.to_tensor(out, arg.dtype))
    return ret


def interpreter_ops() -> tuple[Any, Any] | None:
    """Triton's interpreter classes (ScanOps, ReduceOps) that the speed-up patches, or None when this
    Triton version lacks them (the speed-up is then skipped and the stock interpreter runs)."""
    try:
        from triton.runtime import interpreter
    except ImportError:
        return None
    ops = (getattr(interpreter, "ScanOps", None), getattr(interpreter, "ReduceOps", None))
    if not all(ops) or not hasattr(ops[0], "generic_scan") or not hasattr(ops[1], "generic_reduce"):
        return None
    return ops


@contextlib.contextmanager
def fast_triton_interpreter(enabled: bool = True) -> Iterator[None]:
    """Within the block, the interpreter scans and reduces whole slices at a time (see the module notes)."""
    ops = interpreter_ops() if enabled else None
    if ops is None:
        yield
        return
    scan_ops, reduce_ops = ops
    saved = scan_ops.generic_scan, reduce_ops.generic_reduce
    scan_ops.generic_scan, reduce_ops.generic_reduce = _sliced_scan, _sliced_reduce
    try:
        yield
    finally:
        scan_ops.generic_scan, reduce_ops.generic_reduce = saved
