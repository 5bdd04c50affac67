"""Run records: ``log.txt`` (one JSON object per line) and live TensorBoard scalars, written by rank 0.

The epoch records of log.txt and the TensorBoard tags use the same names (``train_loss``,
``test_acc1``, ...), so TensorBoard files can be rebuilt from any log.txt with
:func:`write_log_to_tensorboard` (the image_sm ``generate_tensorboard.py`` script does this).
"""

from __future__ import annotations

import json
import math
import os
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


def read_log(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Parse a JSON-lines log; a malformed line raises an error naming the file and line."""
    records = []
    with open(path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{lineno}: not a JSON object ({err.msg})") from err
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
            records.append(record)
    return records


def write_log_to_tensorboard(records: Iterable[Mapping[str, Any]], log_dir: str | os.PathLike) -> int:
    """Write the scalars of epoch records into a fresh TensorBoard event file; returns the count."""
    from torch.utils.tensorboard import SummaryWriter

    count = 0
    writer = SummaryWriter(log_dir=str(log_dir))
    try:
        for index, record in enumerate(records):
            step = int(record.get("epoch", index))
            for tag, value in epoch_scalars(record).items():
                writer.add_scalar(tag, value, step)
                count += 1
    finally:
        writer.close()
    return count


class RunLog:
    """log.txt + TensorBoard for one run; every method is a no-op on non-main ranks."""

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
        self.writer = None
        if self.enabled:
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            if tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(log_dir=str(tensorboard_dir or output_dir))

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        """Append one JSON line and its scalars (at step = record['epoch'])."""
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(dict(record)) + "\n")
        if self.writer is not None:
            step = int(record.get("epoch", 0))
            for tag, value in epoch_scalars(record).items():
                self.writer.add_scalar(tag, value, step)
            self.writer.flush()

    def resume_from(self, epoch: int) -> None:
        """Drop the records of `epoch` and later: they were logged, but a kill came before their checkpoint,
        so the resumed run trains them again. Runners log an epoch before checkpointing it, which keeps
        log.txt equal to range(epochs) across any number of kills."""
        if not self.enabled or not self.path.exists():
            return
        records = read_log(self.path)
        kept = [record for record in records if record.get("epoch", -1) < epoch]
        if len(kept) != len(records):
            tmp = self.path.with_suffix(".txt.tmp")
            tmp.write_text("".join(json.dumps(record) + "\n" for record in kept), encoding="utf-8")
            os.replace(tmp, self.path)

    def log_step(self, step: int, **scalars: float) -> None:
        """Per-iteration scalars (tags prefixed 'step/') while an epoch runs."""
        if self.writer is None:
            return
        for tag, value in scalars.items():
            if value is not None and math.isfinite(value):
                self.writer.add_scalar(f"step/{tag}", float(value), step)

    def write_config(self, config: Mapping[str, Any], name: str = "config.json") -> None:
        if self.enabled:
            with open(self.path.parent / name, "w", encoding="utf-8") as handle:
                json.dump(dict(config), handle, indent=2, sort_keys=True, default=str)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
