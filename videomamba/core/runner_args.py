"""What every runner does with its arguments: both flag spellings, lr scaling, precision, and the
model configuration stored in the run's own checkpoints."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable
from typing import Any

import torch

__all__ = ["accept_both_spellings", "adopt_stored_model_args", "resolve_precision", "scale_lr"]


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
    from videomamba.core.pretrained import load_checkpoint_file

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
