"""The training lifecycle every runner shares: resume, the epoch loop, evaluation, best metric,
checkpoints, log.txt/TensorBoard, non-finite stops and the end-of-run record.

A runner builds its task parts (data, model, optimizer, one training epoch, one evaluation, a final
test) and hands them to :class:`Lifecycle`::

    life = Lifecycle(output_dir, epochs, TrainingState(model, optimizer, ...), best=Best("test_acc1"))
    start_epoch = life.resume()
    life.fit(train_epoch=lambda epoch: {...}, evaluate=lambda epoch: {...})
    life.finish(final_test)   # optional: one final record

Contract (tested in ``videomamba/tests/test_lifecycle.py``):
- One folder layout: ``checkpoint-latest.pth`` (resume point), ``checkpoint-best.pth``,
  ``checkpoint-<epoch>.pth`` (every ``save_freq`` epochs and the last), ``log.txt``, ``config.json``,
  TensorBoard events (per-step scalars in ``steps/``).
- Per epoch: train -> weights checked finite -> evaluate -> ``checkpoint-latest.pth`` written
  atomically (the commit point) -> best/periodic copies -> log.txt line -> TensorBoard. A kill
  anywhere leaves the previous commit intact; on resume the copies and the log line of the
  resumed epoch are completed from the checkpoint (it stores its own log record), records of later
  epochs are dropped, and TensorBoard purges the scalars of the epochs that are redone.
- Exact resume at epoch boundaries: the checkpoint holds model, optimizer, scheduler, scaler, EMA,
  best metric, the task's own state and every rank's Python/NumPy/torch RNG states, so a resumed
  run continues the same random streams (bitwise equal weights on the CPU; on GPUs only as far as
  the kernels are deterministic).
- Never replace good with bad: the weights (and EMA) are checked finite before evaluation and
  before the checkpoint is written; a non-finite loss or weight stops the run (exit code 1).
- A missing or damaged ``checkpoint-latest.pth`` falls back to the newest loadable checkpoint
  with a warning; a folder with history and nothing loadable is an error, never silently wiped.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from videomamba.core.checkpoint import (
    BEST,
    LATEST,
    PERIODIC,
    atomic_copy,
    atomic_save,
    find_resume_checkpoint,
    get_rng_state,
    plain_config,
    restore_training_state,
    set_rng_state,
)
from videomamba.core.cli import NonFiniteLossError
from videomamba.core.distributed import (
    all_gather_objects,
    any_across_ranks,
    barrier,
    get_rank,
    get_world_size,
    is_main_process,
)
from videomamba.core.logs import RunLog, read_log
from videomamba.core.pretrained import load_checkpoint_file

__all__ = ["Best", "Lifecycle", "TrainingState", "model_description", "non_finite_tensor", "stop_if_not_finite"]

CHECKPOINT_VERSION = 2


@dataclass
class Best:
    """Which evaluation value picks ``checkpoint-best.pth``: ``key`` of the epoch record, higher
    (mode "max") or lower ("min") is better; ``record_as`` also logs the best value so far under that name."""

    key: str
    mode: str = "max"
    record_as: str | None = None

    def improves(self, value: float | None, best: float | None) -> bool:
        if value is None or not math.isfinite(value):
            return False
        if best is None:
            return True
        return value > best if self.mode == "max" else value < best


@dataclass
class TrainingState:
    """Everything a checkpoint saves and a resume restores. ``model`` is the unwrapped model (not DDP);
    ``task_state`` is any object with state_dict()/load_state_dict() (e.g. a global step counter);
    ``extra`` are plain values stored as they are (model name and kwargs, args, config)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer | None = None
    lr_scheduler: Any = None
    grad_step: Any = None
    model_ema: Any = None
    task_state: Any = None
    extra: Mapping[str, Any] = field(default_factory=dict)


def non_finite_tensor(module: nn.Module) -> str | None:
    """The name of the first floating-point parameter or buffer of `module` holding NaN/Inf, else None."""
    for name, tensor in module.state_dict().items():
        if torch.is_floating_point(tensor) and not bool(torch.isfinite(tensor).all()):
            return name
    return None


def stop_if_not_finite(loss_value: float, epoch: int, step: int, global_step: int, last_finite: float) -> None:
    """Raise NonFiniteLossError on every rank (naming the step) if any rank's loss is not finite.

    Called before the backward pass, so the weights stay finite; collective, so no rank hangs.
    """
    if any_across_ranks(not math.isfinite(loss_value)):
        raise NonFiniteLossError(
            f"non-finite loss at epoch {epoch}, step {step} (global step {global_step}): this rank ({get_rank()}) "
            f"has {loss_value}, last finite value {last_finite}; stopping every rank"
        )


def model_description(name: str, kwargs: Mapping[str, Any], args: Any) -> dict[str, Any]:
    """What a runner stores in its checkpoints beside the weights, so they rebuild their model."""
    return dict(model_name=name, model_kwargs=plain_config(kwargs), args=plain_config(args))


class Lifecycle:
    """Resume, epoch loop, checkpoints and logs of one run (see the module docstring)."""

    @classmethod
    def from_args(cls, args: Any, state: TrainingState, save_freq: int, **options: Any) -> Lifecycle:
        """The lifecycle of a runner with the usual flags: --output_dir, --epochs, --resume,
        --auto_resume/--no_auto_resume and --start_epoch."""
        return cls(
            args.output_dir or None,
            args.epochs,
            state,
            resume=args.resume,
            auto_resume=args.auto_resume,
            start_epoch=args.start_epoch,
            save_freq=save_freq,
            **options,
        )

    def __init__(
        self,
        output_dir: str | os.PathLike | None,
        epochs: int,
        state: TrainingState,
        *,
        resume: str | os.PathLike | None = None,
        auto_resume: bool = True,
        start_epoch: int = 0,
        save_freq: int = 0,
        save: bool = True,
        best: Best | None = None,
        last_is_best: bool = False,
        samplers: tuple[Any, ...] = (),
        steps_per_epoch: int | None = None,
        n_parameters: int | None = None,
        tensorboard_dir: str | os.PathLike | None = None,
        log_enabled: bool = True,
    ):
        """last_is_best: when there is no `best` value to compare, the last epoch is copied to checkpoint-best.pth."""
        self.output_dir = Path(output_dir) if output_dir else None
        self.epochs = epochs
        self.state = state
        self.resume_path = str(resume) if resume else ""
        self.auto_resume = auto_resume
        self.start_epoch = start_epoch
        self.save_freq = save_freq
        self.saving = save and self.output_dir is not None and is_main_process()
        self.best = best
        self.last_is_best = last_is_best
        self.samplers = samplers
        self.steps_per_epoch = steps_per_epoch
        self.n_parameters = n_parameters
        self.best_metric: float | None = None
        self.best_epoch: int | None = None
        self.resumed_from: Path | None = None
        self.log = RunLog(self.output_dir, enabled=log_enabled and is_main_process(), tensorboard_dir=tensorboard_dir)

    # ------------------------------------------------------------------------------ resume

    def _log_has_records(self) -> bool:
        path = self.output_dir / "log.txt" if self.output_dir else None
        return bool(path and path.is_file() and read_log(path, tolerant=True))

    def _load_resume_point(self) -> tuple[Path, dict[str, Any]] | None:
        own_latest = self.output_dir / LATEST if self.output_dir else None
        if self.resume_path and (own_latest is None or Path(self.resume_path) != own_latest):
            path = Path(self.resume_path)
            return path, dict(load_checkpoint_file(path))
        if not (self.auto_resume or self.resume_path):
            self._set_history_aside()
            return None
        return find_resume_checkpoint(self.output_dir, has_history=self._log_has_records())

    def _set_history_aside(self) -> None:
        """Starting over in a folder with history (--no_auto_resume): keep the old log as log.txt.old."""
        log_path = self.output_dir / "log.txt" if self.output_dir else None
        if log_path is not None and log_path.is_file() and is_main_process():
            os.replace(log_path, log_path.with_name("log.txt.old"))
            print(f"Starting over in {self.output_dir}: the previous log.txt is now log.txt.old")

    def resume(self) -> int:
        """Restore the newest resume point (if any); returns the first epoch to train."""
        found = self._load_resume_point()
        last_record = None
        if found is not None:
            path, checkpoint = found
            state = self.state
            restored = restore_training_state(
                checkpoint,
                state.model,
                optimizer=state.optimizer,
                lr_scheduler=state.lr_scheduler,
                loss_scaler=state.grad_step,
                model_ema=state.model_ema,
            )["restored"]
            if state.task_state is not None and isinstance(checkpoint.get("task_state"), Mapping):
                state.task_state.load_state_dict(checkpoint["task_state"])
                restored.append("task state")
            if self._restore_rng(checkpoint.get("rng_states")):
                restored.append("RNG states")
            self.start_epoch = int(checkpoint["epoch"]) + 1
            self.best_metric = checkpoint.get("best_metric", checkpoint.get("max_accuracy"))
            self.best_epoch = checkpoint.get("best_epoch")
            self.resumed_from = path
            last_record = checkpoint.get("log_record")
            print(f"Resuming from {path}: restored {', '.join(restored)}; starting at epoch {self.start_epoch}")
            if self.saving and path == self.output_dir / LATEST:
                self._complete_epoch(path, checkpoint)
        self.log.resume_from(self.start_epoch, last_record)
        self.log.start_at(self.start_epoch, self.start_epoch * (self.steps_per_epoch or 0))
        barrier()
        return self.start_epoch

    def _restore_rng(self, states: Any) -> bool:
        if not isinstance(states, list) or not states:
            return False
        if len(states) != get_world_size():
            print(
                f"Note: the checkpoint's random states come from {len(states)} processes and this run has "
                f"{get_world_size()}; they are not restored, so the run continues with other random numbers"
            )
            return False
        set_rng_state(states[get_rank()])
        return True

    def _periodic_due(self, epoch: int) -> bool:
        return self.save_freq > 0 and ((epoch + 1) % self.save_freq == 0 or epoch == self.epochs - 1)

    def _complete_epoch(self, latest: Path, checkpoint: Mapping[str, Any]) -> None:
        """Redo the copies of the resumed epoch that a kill after its commit may have prevented."""
        epoch = int(checkpoint["epoch"])
        best = self.output_dir / BEST
        if checkpoint.get("best_epoch") == epoch and _stored_epoch(best) != epoch:
            print(f"Completing {best.name} of epoch {epoch} (the previous attempt stopped before copying it)")
            atomic_copy(latest, best)
        periodic = self.output_dir / PERIODIC.format(epoch=epoch)
        if self._periodic_due(epoch) and _stored_epoch(periodic) != epoch:
            print(f"Completing {periodic.name} (the previous attempt stopped before copying it)")
            atomic_copy(latest, periodic)

    # ------------------------------------------------------------------------------ epochs

    def check_finite(self, epoch: int) -> None:
        """Stop (NonFiniteLossError, exit code 1) if the weights or the EMA hold NaN/Inf after `epoch`."""
        for what, module in (
            ("weights", self.state.model),
            ("EMA weights", getattr(self.state.model_ema, "module", None)),
        ):
            name = non_finite_tensor(module) if module is not None else None
            if name is not None:
                step = f" (step {self.steps_per_epoch - 1}, its last)" if self.steps_per_epoch else ""
                raise NonFiniteLossError(
                    f"non-finite {what} ({name}) after epoch {epoch}{step} although the loss was finite; "
                    "the last good checkpoint is kept"
                )

    def checkpoint_state(self, epoch: int, record: Mapping[str, Any]) -> dict[str, Any]:
        """The checkpoint of `epoch` (collective: gathers every rank's RNG state)."""
        state = self.state
        rng_states = all_gather_objects(get_rng_state())
        return dict(
            model=state.model.state_dict(),
            optimizer=state.optimizer.state_dict() if state.optimizer is not None else None,
            lr_scheduler=state.lr_scheduler.state_dict() if state.lr_scheduler is not None else None,
            scaler=state.grad_step.state_dict() if state.grad_step is not None else None,
            model_ema=state.model_ema.module.state_dict() if state.model_ema is not None else None,
            task_state=state.task_state.state_dict() if state.task_state is not None else None,
            epoch=epoch,
            best_metric=self.best_metric,
            best_epoch=self.best_epoch,
            rng_states=rng_states,
            log_record=plain_config(record),
            version=CHECKPOINT_VERSION,
            **state.extra,
        )

    def save_epoch(self, epoch: int, record: Mapping[str, Any], is_best: bool) -> None:
        """Commit `epoch`: latest checkpoint, then its best/periodic copies, then its log line."""
        checkpoint = self.checkpoint_state(epoch, record)
        if self.saving:
            latest = atomic_save(checkpoint, self.output_dir / LATEST)
            if is_best:
                atomic_copy(latest, self.output_dir / BEST)
            if self._periodic_due(epoch):
                atomic_copy(latest, self.output_dir / PERIODIC.format(epoch=epoch))
        self.log.log_epoch(record)
        barrier()

    def fit(
        self,
        train_epoch: Callable[[int], Mapping[str, float]],
        evaluate: Callable[[int], Mapping[str, Any]] | None = None,
        after_epoch: Callable[[int, Mapping[str, Any], bool], None] | None = None,
    ) -> dict[str, Any]:
        """Train epochs start_epoch..epochs-1; returns the last epoch's record.

        train_epoch(epoch) returns the epoch's training means (logged as ``train_<name>``);
        evaluate(epoch) returns record fields as they are (e.g. ``test_acc1``);
        after_epoch(epoch, record, is_best) runs after the epoch is committed.
        """
        record: dict[str, Any] = {}
        started = time.time()
        print(f"Start training for {self.epochs} epochs (from epoch {self.start_epoch})")
        try:
            for epoch in range(self.start_epoch, self.epochs):
                for sampler in self.samplers:
                    if hasattr(sampler, "set_epoch"):
                        sampler.set_epoch(epoch)
                record = {f"train_{k}": v for k, v in train_epoch(epoch).items()}
                self.check_finite(epoch)
                if evaluate is not None:
                    record.update(evaluate(epoch))
                is_best = self._update_best(epoch, record)
                record["epoch"] = epoch
                if self.n_parameters is not None:
                    record["n_parameters"] = self.n_parameters
                self.save_epoch(epoch, record, is_best)
                if after_epoch is not None:
                    after_epoch(epoch, record, is_best)
        finally:
            self.log.close()
        elapsed = int(time.time() - started)
        print(f"Training time {elapsed // 3600}:{elapsed % 3600 // 60:02d}:{elapsed % 60:02d}")
        return record

    def _update_best(self, epoch: int, record: dict[str, Any]) -> bool:
        value = record.get(self.best.key) if self.best is not None else None
        if value is None:  # nothing to compare (no metric, or none this epoch)
            is_best = self.last_is_best and epoch == self.epochs - 1
        else:
            is_best = self.best.improves(float(value), self.best_metric)
            if is_best:
                self.best_metric = float(value)
            if self.best.record_as and self.best_metric is not None:
                record[self.best.record_as] = self.best_metric
                print(f"Best {self.best.key} so far: {self.best_metric:.4f}")
        if is_best:
            self.best_epoch = epoch
        return is_best

    def finish(self, final: Callable[[], Mapping[str, Any]]) -> dict[str, Any]:
        """Run the final step (e.g. the multi-view test) and log its record once (``"final": true``)."""
        results = dict(final())
        self.log.append({"final": True, **results})
        self.log.close()
        return results


def _stored_epoch(path: Path) -> int | None:
    """The epoch stored in a checkpoint file (None if missing or unreadable); memory-mapped, cheap."""
    if not path.is_file():
        return None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # an unreadable copy is rewritten
        return None
    epoch = checkpoint.get("epoch") if isinstance(checkpoint, Mapping) else None
    return int(epoch) if epoch is not None else None
