"""core/metrics: top-k accuracy, the smoothed meters, their cross-rank sum and the progress logger,
against values worked out by hand."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from videomamba.core import metrics
from videomamba.core.metrics import MetricLogger, SmoothedValue, accuracy

# Four samples, three classes. Class ranking per row and the rank of the target:
#   row 0: 1 > 2 > 0, target 1 -> top-1    row 1: 0 > 1 > 2, target 1 -> top-2
#   row 2: 2 > 1 > 0, target 0 -> top-3    row 3: 0 > 2 > 1, target 0 -> top-1
LOGITS = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5], [0.6, 0.1, 0.3]])
TARGETS = torch.tensor([1, 1, 0, 0])


def test_top_k_accuracy_in_percent():
    top1, top2, top3 = accuracy(LOGITS, TARGETS, topk=(1, 2, 3))
    assert (top1.item(), top2.item(), top3.item()) == (50.0, 75.0, 100.0)


def test_k_above_the_number_of_classes_counts_every_class():
    top1, top5 = accuracy(LOGITS, TARGETS, topk=(1, 5))
    assert (top1.item(), top5.item()) == (50.0, 100.0)
    (default,) = accuracy(LOGITS[:1], TARGETS[:1])  # topk defaults to (1,)
    assert default.item() == 100.0


def filled_meter() -> SmoothedValue:
    meter = SmoothedValue(window_size=3)
    meter.update(1.0)
    meter.update(2.0, n=3)  # e.g. the mean over a batch of 3
    meter.update(4.0)
    meter.update(8.0)
    return meter


def test_smoothed_value_window_and_global_average():
    meter = filled_meter()  # window [2, 4, 8]; count 1 + 3 + 1 + 1 = 6, total 1 + 6 + 4 + 8 = 19
    assert (meter.median, meter.avg, meter.max, meter.value) == (4.0, 14 / 3, 8.0, 8.0)
    assert (meter.count, meter.total, meter.global_avg) == (6, 19.0, 19 / 6)
    assert str(meter) == "4.0000 (3.1667)"
    assert str(SmoothedValue(fmt="{value:.1f} max {max:.0f} avg {avg:.2f}")) == "nan max nan avg nan"


def test_an_empty_meter_is_nan_everywhere():
    meter = SmoothedValue()
    assert all(math.isnan(v) for v in (meter.median, meter.avg, meter.global_avg, meter.max, meter.value))


def test_synchronize_sums_count_and_total_over_ranks_and_keeps_the_window(monkeypatch):
    meter = filled_meter()
    meter.synchronize_between_processes()  # no process group: nothing changes
    assert (meter.count, meter.total) == (6, 19.0)
    monkeypatch.setattr(metrics, "all_reduce_sum", lambda tensor: tensor * 2)  # two ranks with the same values
    meter.synchronize_between_processes()
    assert (meter.count, meter.total, meter.global_avg, meter.median) == (12, 38.0, 19 / 6, 4.0)


def test_metric_logger_meters_by_name():
    logger = MetricLogger()
    logger.update(loss=torch.tensor(2.0), acc1=50, skipped=None)
    logger.update(n=3, loss=1.0, acc1=100)
    assert list(logger.meters) == ["loss", "acc1"]  # None values make no meter
    assert logger.loss is logger.meters["loss"]
    with pytest.raises(AttributeError, match="'MetricLogger' object has no attribute 'accuracy'"):
        _ = logger.accuracy
    assert logger.global_averages() == {"loss": (2.0 + 3 * 1.0) / 4, "acc1": (50 + 3 * 100) / 4}
    logger.add_meter("lr", SmoothedValue(window_size=1, fmt="{value:.2e}"))
    logger.update(lr=0.001)
    # The median of an even window is its lower middle value: loss [2, 1] -> 1, acc1 [50, 100] -> 50.
    assert str(logger) == "loss: 1.0000 (1.2500)  acc1: 50.0000 (87.5000)  lr: 1.00e-03"


def test_metric_logger_synchronizes_every_meter(monkeypatch):
    logger = MetricLogger()
    logger.update(loss=1.0, acc1=50.0)
    monkeypatch.setattr(metrics, "all_reduce_sum", lambda tensor: tensor * 2)
    logger.synchronize_between_processes()
    assert [(m.count, m.total) for m in logger.meters.values()] == [(2, 2.0), (2, 100.0)]


@pytest.fixture
def clock(monkeypatch):
    """time.time() that advances one second per call: every step takes a known, non-zero time."""
    ticks = itertools.count()
    monkeypatch.setattr(metrics.time, "time", lambda: float(next(ticks)))
    monkeypatch.setattr(metrics, "PROGRESS_SECONDS", math.inf)


def test_log_every_prints_every_print_freq_steps_and_the_last(clock, capsys):
    logger = MetricLogger()
    seen = []
    for item in logger.log_every(range(6), print_freq=2, header="Epoch: [3]", samples_per_step=8):
        seen.append(item)
        logger.update(loss=float(item))
    lines = capsys.readouterr().out.splitlines()
    assert seen == [0, 1, 2, 3, 4, 5]
    assert [line.split("  ")[:2] for line in lines[:-1]] == [["Epoch: [3]", f"[{i}/6]"] for i in (0, 2, 4, 5)]
    assert all("eta: 0:00:" in line and "loss: " in line and "samples/s" in line for line in lines[:-1])
    assert lines[-1].startswith("Epoch: [3] total time: 0:00:") and lines[-1].endswith(" s / it)")


def test_log_every_without_a_length_has_no_eta_and_counts_iterations(clock, capsys):
    list(MetricLogger().log_every(iter("abc"), print_freq=1, header="Test:"))
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("  ")[1] for line in lines[:-1]] == ["[0/0]", "[1/0]", "[2/0]"]
    assert not any("eta" in line for line in lines) and all("it/s" in line for line in lines[:-1])
