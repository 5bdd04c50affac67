"""Training checkpoints: atomic writes, latest/best/periodic files, auto-resume, state restore.

A checkpoint is written to a temporary file in the same folder and renamed over the target with
``os.replace``, so a kill at any moment leaves either the previous or the new file, never a torn
one. Checkpoints are self-describing and hold only tensors and plain containers (model name,
model kwargs and the run's arguments as dicts), so ``torch.load(weights_only=True)`` reads them.
"""

from __future__ import annotations

import argparse
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from videomamba.core.checkpoint import CheckpointError, extract_state_dict, load_checkpoint_file, load_pretrained

__all__ = ["CheckpointSaver", "atomic_save", "find_resume_checkpoint", "plain_config", "restore_training_state"]

_TMP_MARK = ".tmp-"


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """torch.save to ``path`` through a temp file + fsync + os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{_TMP_MARK}{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)
    return path


def _atomic_copy(src: Path, dst: Path) -> None:
    """Give dst the content of src atomically: a hard link when possible, else a copy."""
    tmp = dst.with_name(f".{dst.name}{_TMP_MARK}{os.getpid()}")
    try:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(dst.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def plain_config(config: argparse.Namespace | Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the run's arguments made of plain Python values (safe for weights_only loading)."""
    items = vars(config).items() if isinstance(config, argparse.Namespace) else config.items()
    return {str(k): _plain(v) for k, v in items}


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


class CheckpointSaver:
    """Writes the latest checkpoint every epoch, a best copy on improvement, and periodic copies.

    File names are arguments so each task keeps its users' names (image_sm: ``checkpoint.pth``,
    ``best_checkpoint.pth``, ``checkpoint_e{epoch}.pth``).
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        latest_name: str = "checkpoint.pth",
        best_name: str = "best_checkpoint.pth",
        periodic_name: str = "checkpoint_e{epoch}.pth",
        save_freq: int = 0,
        enabled: bool = True,
    ):
        self.output_dir = Path(output_dir)
        self.latest_name, self.best_name, self.periodic_name = latest_name, best_name, periodic_name
        self.save_freq = save_freq
        self.enabled = enabled

    @property
    def latest_path(self) -> Path:
        return self.output_dir / self.latest_name

    def save(self, state: Mapping[str, Any], epoch: int, is_best: bool = False, is_last: bool = False) -> list[Path]:
        """Write latest; copy it to best if is_best and to the periodic name every save_freq epochs."""
        if not self.enabled:
            return []
        written = [atomic_save(dict(state), self.latest_path)]
        if is_best:
            best = self.output_dir / self.best_name
            _atomic_copy(self.latest_path, best)
            written.append(best)
        if self.save_freq > 0 and ((epoch + 1) % self.save_freq == 0 or is_last):
            periodic = self.output_dir / self.periodic_name.format(epoch=epoch)
            _atomic_copy(self.latest_path, periodic)
            written.append(periodic)
        return written


def find_resume_checkpoint(output_dir: str | os.PathLike | None, name: str = "checkpoint.pth") -> Path | None:
    """The latest checkpoint of a previous run in output_dir, if any (never 'best')."""
    if not output_dir:
        return None
    folder = Path(output_dir)
    # Temp files are only left by a kill during a write; the previous checkpoint is intact.
    for stale in folder.glob(f".*{_TMP_MARK}*"):
        if stale.is_file():
            stale.unlink(missing_ok=True)
    path = folder / name
    return path if path.is_file() else None


def restore_training_state(
    path: str | os.PathLike,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    lr_scheduler: Any = None,
    loss_scaler: Any = None,
    model_ema: Any = None,
    weights_only: bool = True,
    exact: bool = True,
) -> dict[str, Any]:
    """Load a training checkpoint: model and, when given, optimizer, scheduler, scaler, EMA.

    exact: the model's keys and shapes must match exactly (resuming a run); with exact=False the
    model goes through the adapting loader instead (e.g. evaluating a released checkpoint).
    Returns the checkpoint dict (with 'epoch', 'max_accuracy', ...) and, under 'restored', the
    names of the parts that were restored.
    """
    checkpoint = load_checkpoint_file(path, weights_only=weights_only)
    if not isinstance(checkpoint, Mapping) or "model" not in checkpoint:
        raise CheckpointError(f"{path}: not a training checkpoint (no 'model' entry)")
    if exact:
        model.load_state_dict(extract_state_dict(checkpoint, key="model", source=str(path)))
    else:
        load_pretrained(model, checkpoint, key="model")
    restored = ["model"]
    parts = (("optimizer", optimizer), ("lr_scheduler", lr_scheduler), ("scaler", loss_scaler))
    for key, target in parts:
        if target is not None and isinstance(checkpoint.get(key), Mapping) and checkpoint[key]:
            target.load_state_dict(checkpoint[key])
            restored.append(key)
    if model_ema is not None and isinstance(checkpoint.get("model_ema"), Mapping) and checkpoint["model_ema"]:
        model_ema.module.load_state_dict(checkpoint["model_ema"])
        restored.append("model_ema")
    return {**checkpoint, "restored": restored}
