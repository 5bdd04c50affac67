"""Running meters and the progress logger (rate, ETA, memory), reduced across ranks when distributed."""

from __future__ import annotations

import datetime
import math
import time
from collections import defaultdict, deque
from collections.abc import Iterable, Iterator
from typing import Any

import torch

from videomamba.core.distributed import all_reduce_sum

__all__ = ["PROGRESS_SECONDS", "MetricLogger", "SmoothedValue", "accuracy"]

PROGRESS_SECONDS = 30.0


class SmoothedValue:
    """A windowed median/average plus a global average of a scalar series."""

    def __init__(self, window_size: int = 20, fmt: str = "{median:.4f} ({global_avg:.4f})"):
        self.deque: deque[float] = deque(maxlen=window_size)
        self.total = 0.0
        self.count = 0
        self.fmt = fmt

    def update(self, value: float, n: int = 1) -> None:
        self.deque.append(value)
        self.count += n
        self.total += value * n

    def synchronize_between_processes(self) -> None:
        """Sum count and total over ranks (the window stays local); a no-op without a process group."""
        reduced = all_reduce_sum(torch.tensor([self.count, self.total], dtype=torch.float64))
        self.count, self.total = int(reduced[0].item()), float(reduced[1].item())

    @property
    def median(self) -> float:
        return float(torch.tensor(list(self.deque)).median().item()) if self.deque else math.nan

    @property
    def avg(self) -> float:
        return sum(self.deque) / len(self.deque) if self.deque else math.nan

    @property
    def global_avg(self) -> float:
        return self.total / self.count if self.count else math.nan

    @property
    def max(self) -> float:
        return max(self.deque) if self.deque else math.nan

    @property
    def value(self) -> float:
        return self.deque[-1] if self.deque else math.nan

    def __str__(self) -> str:
        return self.fmt.format(
            median=self.median, avg=self.avg, global_avg=self.global_avg, max=self.max, value=self.value
        )


class MetricLogger:
    """Named meters plus ``log_every``, which prints progress with ETA, rate and memory."""

    def __init__(self, delimiter: str = "  "):
        self.meters: defaultdict[str, SmoothedValue] = defaultdict(SmoothedValue)
        self.delimiter = delimiter

    def update(self, n: int = 1, **values: float | torch.Tensor) -> None:
        for name, value in values.items():
            if value is None:
                continue
            if isinstance(value, torch.Tensor):
                value = value.item()
            self.meters[name].update(float(value), n=n)

    def add_meter(self, name: str, meter: SmoothedValue) -> None:
        self.meters[name] = meter

    def __getattr__(self, name: str) -> SmoothedValue:
        meters = self.__dict__.get("meters", {})
        if name in meters:
            return meters[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __str__(self) -> str:
        return self.delimiter.join(f"{name}: {meter}" for name, meter in self.meters.items())

    def synchronize_between_processes(self) -> None:
        for meter in self.meters.values():
            meter.synchronize_between_processes()

    def global_averages(self) -> dict[str, float]:
        return {name: meter.global_avg for name, meter in self.meters.items()}

    def log_every(
        self, iterable: Iterable[Any], print_freq: int, header: str = "", samples_per_step: int | None = None
    ) -> Iterator[Any]:
        """Yield from ``iterable``, printing progress every ``print_freq`` steps, at least every
        ``PROGRESS_SECONDS`` seconds (slow CPU steps never leave minutes of silence) and at the end."""
        total = len(iterable) if hasattr(iterable, "__len__") else 0
        width = len(str(total))
        step_time, data_time = SmoothedValue(fmt="{avg:.4f}"), SmoothedValue(fmt="{avg:.4f}")
        start = end = last_print = time.time()
        i = 0
        for i, obj in enumerate(iterable):
            data_time.update(time.time() - end)
            yield obj
            step_time.update(time.time() - end)
            if i % print_freq == 0 or i == total - 1 or time.time() - last_print >= PROGRESS_SECONDS:
                last_print = time.time()
                parts = [header, f"[{i:>{width}}/{total}]"]
                if total:
                    eta = step_time.global_avg * (total - i - 1)
                    parts.append(f"eta: {datetime.timedelta(seconds=int(eta))}")
                parts += [str(self), f"time: {step_time}", f"data: {data_time}"]
                if samples_per_step and step_time.avg > 0:
                    parts.append(f"rate: {samples_per_step / step_time.avg:.1f} samples/s")
                elif step_time.avg > 0:
                    parts.append(f"rate: {1 / step_time.avg:.2f} it/s")
                if torch.cuda.is_available() and torch.cuda.is_initialized():
                    parts.append(f"max mem: {torch.cuda.max_memory_allocated() / 2**20:.0f}MB")
                print(self.delimiter.join(p for p in parts if p), flush=True)
            end = time.time()
        elapsed = time.time() - start
        steps = i + 1 if total or i else 0
        print(f"{header} total time: {datetime.timedelta(seconds=int(elapsed))} ({elapsed / max(steps, 1):.4f} s / it)")


def accuracy(output: torch.Tensor, target: torch.Tensor, topk: tuple[int, ...] = (1,)) -> list[torch.Tensor]:
    """Top-k accuracies in percent; k is capped at the number of classes."""
    num_classes = output.shape[-1]
    maxk = min(max(topk), num_classes)
    pred = output.topk(maxk, dim=1).indices.t()
    correct = pred.eq(target.reshape(1, -1).expand_as(pred))
    return [correct[: min(k, maxk)].reshape(-1).float().sum() * (100.0 / target.shape[0]) for k in topk]
