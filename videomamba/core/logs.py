"""Run records: ``log.txt`` (one JSON object per line) and live TensorBoard scalars, written by rank 0.

The epoch records of log.txt and the TensorBoard tags use the same names (``train_loss``,
``test_acc1``, ...), so TensorBoard files can be rebuilt from any log.txt with
:func:`write_log_to_tensorboard` (``python -m videomamba.tools.generate_tensorboard`` does this).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["RunLog", "epoch_scalars", "read_log", "write_log_to_tensorboard"]

# Record fields that are bookkeeping, not curves.
NON_SCALAR_KEYS = ("epoch", "n_parameters")


def epoch_scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """The finite numeric fields of a log record, keyed by their TensorBoard tag."""
    scalars = {}
    for key, value in record.items():
        if key in NON_SCALAR_KEYS or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value):
            scalars[key] = float(value)
    return scalars


def read_log(path: str | os.PathLike, tolerant: bool = False) -> list[dict[str, Any]]:
    """Parse a JSON-lines log; a malformed line raises an error naming the file and line.

    tolerant: skip malformed lines (torn by a kill or a full disk, non-UTF-8 bytes) with a warning
    naming the file and line instead (how a resumed run reads its own log.txt).
    """
    records = []
    with open(path, "rb") as handle:
        raw_lines = handle.read().split(b"\n")
    for lineno, raw in enumerate(raw_lines, 1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
            if not isinstance(record, dict):
                raise ValueError(f"expected a JSON object, got {type(record).__name__}")
        except UnicodeDecodeError as err:
            problem = f"{path}:{lineno}: not UTF-8 text (byte {err.start})"
        except json.JSONDecodeError as err:
            problem = f"{path}:{lineno}: not a JSON object ({err.msg})"
        except ValueError as err:
            problem = f"{path}:{lineno}: {err}"
        else:
            records.append(record)
            continue
        if not tolerant:
            raise ValueError(problem)
        warnings.warn(f"{problem}; line dropped", stacklevel=2)
    return records


def write_log_to_tensorboard(records: Iterable[Mapping[str, Any]], log_dir: str | os.PathLike) -> int:
    """Write the scalars of epoch records into a fresh TensorBoard event file; returns the count."""
    from torch.utils.tensorboard import SummaryWriter

    count = 0
    writer = SummaryWriter(log_dir=str(log_dir))
    try:
        for index, record in enumerate(records):
            if record.get("final"):  # the end-of-run record is not a point of the epoch curves
                continue
            step = int(record.get("epoch", index))
            for tag, value in epoch_scalars(record).items():
                writer.add_scalar(tag, value, step)
                count += 1
    finally:
        writer.close()
    return count


class RunLog:
    """log.txt + TensorBoard for one run; every method is a no-op on non-main ranks.

    log.txt lines are written whole (one write of the complete line, flushed and fsynced); a failed
    write raises WriteError naming the path, the OS error and the free space. TensorBoard writers
    are opened on first use with a ``purge_step`` (see :meth:`start_at`), so the scalars of epochs
    redone after a kill replace the old ones. Epoch scalars go to the TensorBoard folder, per-step
    scalars (tags ``step/...``) to its ``steps`` subfolder (their own purge step).
    """

    def __init__(
        self,
        output_dir: str | os.PathLike | None,
        enabled: bool = True,
        tensorboard: bool = True,
        tensorboard_dir: str | os.PathLike | None = None,
    ):
        """TensorBoard events go to `tensorboard_dir` when given (the video runners' --log_dir), else output_dir."""
        self.enabled = enabled and bool(output_dir)
        self.path = Path(output_dir) / "log.txt" if output_dir else None
        self.tensorboard = tensorboard and self.enabled
        self.tensorboard_dir = Path(tensorboard_dir or output_dir) if self.enabled else None
        self.writer = None
        self.step_writer = None
        self.purge_epoch: int | None = None
        self.purge_step: int | None = None
        if self.enabled:
            Path(output_dir).mkdir(parents=True, exist_ok=True)

    def start_at(self, epoch: int, step: int | None = None) -> None:
        """The run (re)starts at `epoch` (global step `step`): TensorBoard drops what was logged from there on."""
        self.close()
        self.purge_epoch = epoch if epoch > 0 else None
        self.purge_step = step if step else None

    def _epoch_writer(self):
        if self.writer is None and self.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(self.tensorboard_dir), purge_step=self.purge_epoch)
        return self.writer

    def _step_writer(self):
        if self.step_writer is None and self.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.step_writer = SummaryWriter(log_dir=str(self.tensorboard_dir / "steps"), purge_step=self.purge_step)
        return self.step_writer

    def append(self, record: Mapping[str, Any]) -> None:
        """Append one JSON line to log.txt (one write of the whole line, flushed and fsynced)."""
        if not self.enabled:
            return
        from videomamba.core.checkpoint import file_operation, write_error

        line = json.dumps(dict(record)) + "\n"
        file_operation(f"append {self.path.name}")
        try:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as err:
            raise write_error(self.path, err) from err

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        """Append one JSON line and its scalars (at step = record['epoch'])."""
        if not self.enabled:
            return
        self.append(record)
        writer = self._epoch_writer()
        if writer is not None and "epoch" in record:
            step = int(record["epoch"])
            for tag, value in epoch_scalars(record).items():
                writer.add_scalar(tag, value, step)
            writer.flush()

    def resume_from(self, epoch: int, last_record: Mapping[str, Any] | None = None) -> None:
        """Keep the records of the epochs before `epoch`, the first epoch this run trains.

        Records of later epochs (logged by an attempt killed before its checkpoint), final records,
        torn lines and lines that are not UTF-8 JSON are dropped with a warning naming the file.
        `last_record` (the record stored in the resumed checkpoint) is appended when log.txt lost it.
        """
        if not self.enabled:
            return
        self.start_at(epoch)
        if not self.path.exists():
            if last_record is None:
                return
            records = []
        else:
            records = read_log(self.path, tolerant=True)
        kept = [r for r in records if isinstance(r.get("epoch"), int) and r["epoch"] < epoch and not r.get("final")]
        later = sorted({r.get("epoch") for r in records if r not in kept and not r.get("final")}, key=str)
        if later:
            warnings.warn(
                f"{self.path}: dropped the records of epochs {later} (redone from epoch {epoch})", stacklevel=2
            )
        if last_record is not None and not any(r["epoch"] == last_record.get("epoch") for r in kept):
            kept.append(dict(last_record))
        from videomamba.core.checkpoint import atomic_write_text

        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def log_step(self, step: int, **scalars: float) -> None:
        """Per-iteration scalars (tags prefixed 'step/') while an epoch runs."""
        writer = self._step_writer() if self.enabled else None
        if writer is None:
            return
        for tag, value in scalars.items():
            if value is not None and math.isfinite(value):
                writer.add_scalar(f"step/{tag}", float(value), step)

    def write_config(self, config: Mapping[str, Any], name: str = "config.json") -> None:
        if self.enabled:
            from videomamba.core.checkpoint import atomic_write_text

            text = json.dumps(dict(config), indent=2, sort_keys=True, default=str)
            atomic_write_text(self.path.parent / name, text)

    def close(self) -> None:
        for writer in (self.writer, self.step_writer):
            if writer is not None:
                writer.close()
        self.writer = self.step_writer = None
