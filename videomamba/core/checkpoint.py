"""Training checkpoints: the output-folder layout, crash-safe writes, resume-point discovery, RNG state.

Layout of a run's folder (every task): ``checkpoint-latest.pth`` (the resume point, every epoch),
``checkpoint-best.pth`` (best validation metric), ``checkpoint-<epoch>.pth`` (periodic saves).
The original release's names (``checkpoint.pth``, ``checkpoint-<N>.pth``, ``ckpt_latest.pth``,
``ckpt_<N>.pth``, ...) are recognised when resuming a folder, so old runs continue.

Writes: a checkpoint goes to a temp file in the same folder (flushed, fsynced) and is renamed over
its target, so a kill leaves either the previous or the new file. ``checkpoint-latest.pth`` is the
commit point of an epoch: the best/periodic copies and the log record are written after it and are
re-done from it on resume if a kill came in between (see :mod:`videomamba.core.lifecycle`).
A failed write (full disk, permissions) raises :class:`WriteError`: one line with the path, the OS
error and the free space. Checkpoints hold only tensors and plain containers, so
``torch.load(weights_only=True)`` reads them.
"""

from __future__ import annotations

import argparse
import errno
import os
import random
import re
import shutil
import signal
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from videomamba.core.cli import UserError
from videomamba.core.distributed import is_main_process
from videomamba.core.pretrained import CheckpointError, extract_state_dict, load_checkpoint_file, load_pretrained

__all__ = [
    "BEST",
    "LATEST",
    "PERIODIC",
    "ResumeError",
    "WriteError",
    "atomic_copy",
    "atomic_save",
    "atomic_write_text",
    "checkpoint_files",
    "file_operation",
    "find_resume_checkpoint",
    "get_rng_state",
    "plain_config",
    "restore_training_state",
    "set_rng_state",
    "write_error",
]

LATEST, BEST, PERIODIC = "checkpoint-latest.pth", "checkpoint-best.pth", "checkpoint-{epoch}.pth"
# Every checkpoint name a run folder may hold, ours and the original release's, as (pattern, role).
_KNOWN_NAMES = (
    (re.compile(r"checkpoint-latest\.pth"), "latest"),
    (re.compile(r"checkpoint\.pth"), "latest"),
    (re.compile(r"ckpt_latest\.pth"), "latest"),
    (re.compile(r"checkpoint-best\.pth"), "best"),
    (re.compile(r"best_checkpoint\.pth"), "best"),
    (re.compile(r"ckpt_best\.pth"), "best"),
    (re.compile(r"checkpoint-(\d+)\.pth"), "periodic"),
    (re.compile(r"checkpoint_e(\d+)\.pth"), "periodic"),
    (re.compile(r"ckpt_(\d+)\.pth"), "periodic"),
)
_TMP_MARK = ".tmp-"
KILL_ENV = "VIDEOMAMBA_KILL_AT_FILE_OP"  # tests: SIGKILL this process before its N-th file operation

# Tests may set this to a callable run before every file operation (e.g. to simulate a kill).
file_operation_hook: Callable[[str], None] | None = None
_file_operations = 0


def file_operation(label: str) -> None:
    """Mark the start of one file operation of a save; the point where kill-injection tests strike."""
    global _file_operations
    _file_operations += 1
    if file_operation_hook is not None:
        file_operation_hook(label)
    kill_at = os.environ.get(KILL_ENV)
    if kill_at and _file_operations == int(kill_at):
        os.kill(os.getpid(), signal.SIGKILL)


class WriteError(UserError, RuntimeError):
    """A checkpoint or log write failed; the message is one line (path, OS error, free space).

    A UserError so that entry points print it as that one line: the fix is on the machine, not in the code.
    """


class ResumeError(UserError, RuntimeError):
    """A run folder has history but no loadable resume point (printed as one line by entry points)."""


def _free_space(path: Path) -> str:
    folder = path if path.is_dir() else path.parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return "free space unknown"
    return f"{free / 2**20:.1f} MiB free"


def write_error(path: Path, err: BaseException) -> WriteError:
    """One-line WriteError for a failed write of ``path`` (finds the OS error behind torch's wrappers)."""
    cause: BaseException | None = err
    while cause is not None and not isinstance(cause, OSError):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, OSError) and cause.errno is not None:
        reason = os.strerror(cause.errno)
    elif "unexpected pos" in str(err) or "file write failed" in str(err):
        reason = os.strerror(errno.ENOSPC) + " (probably)"
    else:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return WriteError(f"could not write {path}: {reason}; {_free_space(path)}")


class _RecordingWriter:
    """A file object that remembers the OSError of a failed write (torch.save rewraps it)."""

    def __init__(self, handle):
        self.handle = handle
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self.handle.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self.handle.flush()


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}{_TMP_MARK}{os.getpid()}")


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def _replace_atomically(path: Path, fill: Callable[[Any], None], what: str) -> Path:
    """Write a temp file next to `path` with fill(handle), fsync it, rename it over `path`.

    A failed write raises WriteError (and removes the temp file); a kill leaves the temp file,
    which the next resume removes, and `path` as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    _remove_quietly(tmp)
    file_operation(f"{what} {tmp.name}")
    try:
        with open(tmp, "wb") as handle:
            fill(handle)
            handle.flush()
            os.fsync(handle.fileno())
        file_operation(f"rename {tmp.name} -> {path.name}")
        os.replace(tmp, path)
    except WriteError:
        _remove_quietly(tmp)
        raise
    except OSError as err:
        _remove_quietly(tmp)
        raise write_error(path, err) from err
    _fsync_dir(path.parent)
    return path


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """torch.save to ``path`` through a temp file + fsync + os.replace; WriteError on failure."""
    path = Path(path)

    def fill(handle) -> None:
        writer = _RecordingWriter(handle)
        try:
            torch.save(obj, writer)
        except RuntimeError as err:  # torch hides the OS error of a failed write behind its own
            raise write_error(path, writer.error or err) from err

    return _replace_atomically(path, fill, "write")


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Replace a small text file (log.txt, config.json) atomically; WriteError on failure."""
    _replace_atomically(Path(path), lambda handle: handle.write(text.encode("utf-8")), "write")


def atomic_copy(src: Path, dst: Path) -> None:
    """Give dst the content of src atomically. A real copy, not a hard link: damage to one file
    must not reach the others, which are the fallbacks when the latest checkpoint is unreadable."""

    def fill(handle) -> None:
        with open(src, "rb") as source:
            shutil.copyfileobj(source, handle, 2**24)

    _replace_atomically(Path(dst), fill, f"copy {src.name} ->")


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


# ------------------------------------------------------------------------------ RNG state


def get_rng_state() -> dict[str, Any]:
    """This process's Python, NumPy, torch (and CUDA) generator states, in weights_only-safe types."""
    version, internal, gauss = random.getstate()
    numpy_state = np.random.get_state()
    state = {
        "python": [version, torch.tensor(internal, dtype=torch.int64), gauss],
        "numpy": [
            numpy_state[0],
            torch.from_numpy(numpy_state[1].astype(np.int64)),
            int(numpy_state[2]),
            int(numpy_state[3]),
            float(numpy_state[4]),
        ],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(int(x) for x in internal.tolist()), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------- discovery


def checkpoint_files(folder: str | os.PathLike) -> list[tuple[Path, str]]:
    """(path, role) of every checkpoint in a run folder, ours and the original's names."""
    found = []
    folder = Path(folder)
    if not folder.is_dir():
        return found
    for path in sorted(folder.iterdir()):
        for pattern, role in _KNOWN_NAMES:
            if pattern.fullmatch(path.name) and path.is_file():
                found.append((path, role))
                break
    return found


def remove_temp_files(folder: str | os.PathLike) -> None:
    """Temp files are only left by a kill during a write; the files they were meant to replace are intact."""
    folder = Path(folder)
    if folder.is_dir():
        for stale in folder.glob(f".*{_TMP_MARK}*"):
            if stale.is_file():
                _remove_quietly(stale)


def _load_candidate(path: Path) -> tuple[dict[str, Any] | None, str]:
    """(checkpoint, '') or (None, why it cannot be resumed from)."""
    try:
        checkpoint = load_checkpoint_file(path)
    except Exception as err:  # any unreadable file is skipped with its reason
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return None, reason.replace(f"{path}: ", "")
    if not isinstance(checkpoint, Mapping) or "model" not in checkpoint or "epoch" not in checkpoint:
        return None, "not a training checkpoint (no 'model' and 'epoch' entries)"
    return dict(checkpoint), ""


def find_resume_checkpoint(
    output_dir: str | os.PathLike | None, has_history: bool = False
) -> tuple[Path, dict[str, Any]] | None:
    """The newest loadable checkpoint of a run folder, and its content, or None in a fresh folder.

    ``checkpoint-latest.pth`` (or the original's latest name) is tried first; when it is missing or
    unreadable, every other checkpoint is tried, newest epoch first, with a warning naming what was
    skipped and why. A folder with history (checkpoints, or ``has_history``: log records) and no
    loadable checkpoint raises ResumeError: starting over there would wipe it.
    """
    if not output_dir:
        return None
    folder = Path(output_dir)
    if is_main_process():  # only the writing rank: another rank could remove a temp file in flight
        remove_temp_files(folder)
    files = checkpoint_files(folder)
    latest = [path for path, role in files if role == "latest"]
    skipped: list[str] = []
    for path in latest:
        checkpoint, reason = _load_candidate(path)
        if checkpoint is not None:
            return path, checkpoint
        skipped.append(f"{path.name} ({reason})")
    if not latest and files:
        skipped.append(f"{LATEST} (missing)")
    candidates = []
    for path, role in files:
        if role == "latest":
            continue
        checkpoint, reason = _load_candidate(path)
        if checkpoint is None:
            skipped.append(f"{path.name} ({reason})")
        else:
            candidates.append((int(checkpoint["epoch"]), role != "best", path, checkpoint))
    if candidates:
        _, _, path, checkpoint = max(candidates, key=lambda c: (c[0], c[1]))
        warnings.warn(
            f"{folder}: skipped {', '.join(skipped)}; resuming from {path.name} (epoch {checkpoint['epoch']})",
            stacklevel=2,
        )
        return path, checkpoint
    if files or has_history:
        what = ", ".join(skipped) if skipped else "log.txt has records but there is no checkpoint"
        raise ResumeError(
            f"{folder}: holds a previous run but no loadable checkpoint ({what}); to start over, "
            "pass --no_auto_resume (the old log.txt is kept as log.txt.old) or choose a new output folder"
        )
    return None


# ------------------------------------------------------------------------------ restore


def restore_training_state(
    path: str | os.PathLike | Mapping[str, Any],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    lr_scheduler: Any = None,
    loss_scaler: Any = None,
    model_ema: Any = None,
    weights_only: bool = True,
    exact: bool = True,
) -> dict[str, Any]:
    """Load a training checkpoint (a path or an already loaded dict): model and, when given, optimizer,
    scheduler, scaler, EMA.

    exact: the model's keys and shapes must match exactly (resuming a run); with exact=False the
    model goes through the adapting loader instead (e.g. evaluating a released checkpoint).
    Returns the checkpoint dict and, under 'restored', the names of the parts that were restored.
    """
    checkpoint = path if isinstance(path, Mapping) else load_checkpoint_file(path, weights_only=weights_only)
    source = "checkpoint" if isinstance(path, Mapping) else str(path)
    if not isinstance(checkpoint, Mapping) or "model" not in checkpoint:
        raise CheckpointError(f"{source}: not a training checkpoint (no 'model' entry)")
    if exact:
        model.load_state_dict(extract_state_dict(checkpoint, key="model", source=source))
    else:
        load_pretrained(model, dict(checkpoint), key="model")
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
