"""What every command line of the code base shares: the entry wrapper, argument handling, progress lines.

:func:`run_cli` wraps each entry point and decides how the process ends:
- a mistake in what the user gave (a missing file, a malformed list, an unknown model, flags that do
  not go together) raises :class:`UserError` (or a subclass) and becomes one line ``error: <message>``
  on stderr and exit code 2, as argparse does for bad flags. ``VIDEOMAMBA_DEBUG=1`` (or ``--debug``
  anywhere on the command line) shows the traceback of user errors too;
- a NaN/Inf loss or weight raises :class:`NonFiniteLossError` on every rank and becomes
  ``Stopping: <message>`` and exit code 1 (the last good checkpoint is kept);
- any other exception is a bug and keeps its traceback.

The runners also share their argument handling: both flag spellings (``--some-flag`` /
``--some_flag``), the lr scaling rule, the precision choice, and the model configuration stored in
their own checkpoints.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO, TypeVar

import torch

__all__ = [
    "DEBUG_ENV",
    "NON_FINITE_EXIT_CODE",
    "USER_ERROR_EXIT_CODE",
    "MissingFileError",
    "NonFiniteLossError",
    "Progress",
    "UserError",
    "accept_both_spellings",
    "adopt_stored_model_args",
    "create_model",
    "progress",
    "registered_model",
    "resolve_precision",
    "run_cli",
    "scale_lr",
    "unknown_model_error",
]

DEBUG_ENV = "VIDEOMAMBA_DEBUG"
USER_ERROR_EXIT_CODE = 2  # as argparse's for bad flags
NON_FINITE_EXIT_CODE = 1
T = TypeVar("T")


class UserError(ValueError):
    """Bad input from the user; the message alone (naming the file or flag) says what to fix."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the user named does not exist; the message says where it was looked for."""


class NonFiniteLossError(RuntimeError):
    """Raised on every rank when any rank's loss (or the weights) holds NaN or Inf."""


def _debug_requested(argv: list[str]) -> bool:
    return os.environ.get(DEBUG_ENV, "").lower() not in ("", "0", "false", "no") or "--debug" in argv


def run_cli(entry: Callable[[], Any], argv: list[str] | None = None) -> int:
    """Run ``entry()`` and return the process exit code.

    A :class:`UserError` becomes ``error: ...`` on stderr and exit code 2; a
    :class:`NonFiniteLossError` becomes ``Stopping: ...`` and exit code 1 (on every rank: each
    raises it). ``--debug`` is taken out of ``sys.argv`` (so the entry point's parser never sees
    it) and shows the traceback of user errors as well.
    """
    argv = sys.argv if argv is None else argv
    debug = _debug_requested(argv)
    while "--debug" in argv:
        argv.remove("--debug")
    try:
        code = entry()
    except UserError as err:
        if debug:
            traceback.print_exc()
        sys.stderr.write(f"error: {str(err).strip()}\n")
        sys.stderr.flush()
        return USER_ERROR_EXIT_CODE
    except NonFiniteLossError as err:
        sys.stderr.write(f"Stopping: {err}\n")
        sys.stderr.flush()
        return NON_FINITE_EXIT_CODE
    # Entry points return an exit code, or a result (video_mm's metrics, the demo's folder) meaning success.
    return code if isinstance(code, int) else 0


# ------------------------------------------------------------------------------- models


def unknown_model_error(name: str, flag: str = "--model") -> UserError:
    """A UserError for a model name timm does not know, with the closest registered names."""
    import timm

    registered = timm.list_models()
    close = difflib.get_close_matches(name, registered, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    videomamba_names = ", ".join(m for m in registered if m.startswith("videomamba_"))
    subject = f"{flag} {name}" if flag else name
    return UserError(
        f"{subject}: unknown model{hint} (VideoMamba models: {videomamba_names}; "
        "any timm model name works where the task allows it)"
    )


def registered_model(name: str) -> str:
    """argparse ``type=`` for model flags: the name if timm knows it, else the closest registered names."""
    import timm

    import videomamba.core.backbone  # noqa: F401  (registers the VideoMamba models)

    if not timm.is_model(name):
        raise argparse.ArgumentTypeError(str(unknown_model_error(name, "")).strip())
    return name


def create_model(name: str, flag: str = "--model", **kwargs: Any) -> Any:
    """``timm.create_model(name, **kwargs)``; an unknown name is a UserError with suggestions."""
    import timm

    import videomamba.core.backbone  # noqa: F401  (registers the VideoMamba models)

    if not timm.is_model(name):
        raise unknown_model_error(name, flag)
    return timm.create_model(name, **kwargs)


# ---------------------------------------------------------------------------- arguments


def accept_both_spellings(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Let every ``--some-flag`` also be written ``--some_flag`` and the other way round.

    The original's image runner uses dashes and its video runners underscores; users mix them up.
    Parsers built with ``parents=[parser]`` inherit the aliases.
    """
    for action in list(parser._actions):
        for option in list(action.option_strings):
            if not option.startswith("--"):
                continue
            for alias in ("--" + option[2:].replace("-", "_"), "--" + option[2:].replace("_", "-")):
                if alias not in parser._option_string_actions:
                    action.option_strings.append(alias)
                    parser._option_string_actions[alias] = action
    return parser


def scale_lr(lr: float, total_batch: int, reference: int, unscale: bool, flag: str = "--unscale_lr") -> float:
    """The lr factor: total_batch / reference (the original's linear scaling rule), or 1 with ``unscale``.

    Says what it did, and warns when the scaling shrinks the lr more than 10x (a small batch on a
    small data set, where the typed lr was probably meant as the lr itself).
    """
    if unscale:
        print(f"lr {lr:g} used as given ({flag}; not scaled by the total batch {total_batch} / {reference})")
        return 1.0
    factor = total_batch / reference
    scaled = lr * factor
    print(f"lr scaled by total batch {total_batch} / {reference}: {lr:g} -> {scaled:g}")
    if factor < 0.1:
        print(
            f"Warning: the lr scaling shrinks --lr {lr:g} {1 / factor:.0f}x to {scaled:g}; if you meant {lr:g} as "
            f"the lr itself (e.g. a small batch on a small data set), pass {flag}"
        )
    return factor


def resolve_precision(device: torch.device, amp: bool, bf16: bool) -> tuple[bool, torch.dtype, str]:
    """(autocast on, its dtype, a label for logs and config.json) from --no_amp/--bf16 and the device.

    float16 autocast is a CUDA feature here: on the CPU it is not used (fp32), while --bf16 turns on
    bfloat16 autocast on purpose. --no_amp wins over --bf16, with a note instead of a silent mix.
    """
    if not amp:
        if bf16:
            print("Note: --no_amp and --bf16 were both given; --no_amp wins, training in fp32")
        label, enabled, dtype = "fp32", False, torch.float32
    elif bf16:
        label, enabled, dtype = "bf16 autocast", True, torch.bfloat16
    elif device.type == "cuda":
        label, enabled, dtype = "fp16 autocast (loss scaling)", True, torch.float16
    else:
        print(f"Note: float16 autocast is for CUDA; on {device.type} this run uses fp32 (--bf16: bfloat16 autocast)")
        label, enabled, dtype = "fp32", False, torch.float32
    print(f"Precision: {label} on {device.type}")
    return enabled, dtype, label


def adopt_stored_model_args(args: argparse.Namespace, path: str | os.PathLike, keys: Iterable[str]) -> list[str]:
    """Take the model configuration (``keys`` of the stored args) from a checkpoint this code base wrote.

    A stored value wins over a contradicting flag, with one printed line saying what was adapted;
    released checkpoints (no stored args) change nothing. Returns the adapted keys.
    """
    from videomamba.core.pretrained import load_checkpoint_file  # it imports this module

    try:
        checkpoint = load_checkpoint_file(path)
    except Exception:  # the loader that follows reports unreadable files properly
        return []
    stored: Any = checkpoint.get("args") if isinstance(checkpoint, dict) else None
    if not isinstance(stored, dict):
        return []
    adapted = []
    for key in keys:
        if key in stored and getattr(args, key, None) != stored[key]:
            adapted.append(f"{key} {stored[key]!r} (flag: {getattr(args, key, None)!r})")
            setattr(args, key, stored[key])
    if adapted:
        print(f"Model configuration from {path} (it wins over the flags): {', '.join(adapted)}")
    return adapted


# ----------------------------------------------------------------------------- progress


class Progress:
    """Prints ``<what>: done/total (pct) rate/s, ETA m:ss`` at most every ``every`` seconds, and at the end."""

    def __init__(
        self, total: int | None, what: str, unit: str = "items", every: float = 10.0, stream: TextIO | None = None
    ):
        self.total, self.what, self.unit, self.every = total, what, unit, every
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0
        self.start = self.last = time.monotonic()

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        rate = self.done / elapsed
        if self.total:
            left = (self.total - self.done) / rate if rate > 0 else float("inf")
            eta = f"{int(left // 60)}:{int(left % 60):02d}" if left != float("inf") else "?"
            return (
                f"{self.what}: {self.done}/{self.total} {self.unit} ({100 * self.done / self.total:.0f} %), "
                f"{rate:.1f} {self.unit}/s, ETA {eta}"
            )
        return f"{self.what}: {self.done} {self.unit}, {rate:.1f} {self.unit}/s, {elapsed:.0f} s"

    def update(self, count: int = 1) -> None:
        self.done += count
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self.stream.write(self.line() + "\n")
            self.stream.flush()

    def finish(self) -> None:
        """The final line, printed only when the work took longer than one reporting interval."""
        if time.monotonic() - self.start >= self.every:
            self.stream.write(self.line().split(", ETA")[0] + ", done\n")
            self.stream.flush()


def progress(
    items: Iterable[T], what: str, total: int | None = None, unit: str = "items", every: float = 10.0
) -> Iterator[T]:
    """Iterate ``items`` printing a progress line (rate and ETA) to stderr every ``every`` seconds."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    meter = Progress(total, what, unit, every)
    for item in items:
        yield item
        meter.update()
    meter.finish()
