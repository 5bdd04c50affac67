import math

import pytest
import torch

from videomamba.core.schedules import apply_schedules, cosine_schedule


def test_cosine_schedule_shape():
    values = cosine_schedule(1.0, 0.1, epochs=3, steps_per_epoch=10, warmup_epochs=1, warmup_start_value=0.0)
    assert len(values) == 30
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)  # linear warm-up ends at base
    assert values[10] == pytest.approx(1.0) and values[-1] == pytest.approx(0.1)
    decay = values[10:]
    assert all(a >= b for a, b in zip(decay, decay[1:], strict=False))
    assert decay[len(decay) // 2] == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 0.5)), abs=0.05)


def test_fractional_warmup_and_override():
    assert len(cosine_schedule(1.0, 0.0, epochs=1, steps_per_epoch=10, warmup_epochs=0.2)) == 10
    values = cosine_schedule(1.0, 0.0, epochs=1, steps_per_epoch=10, warmup_steps=4, warmup_start_value=0.5)
    assert values[:4] == pytest.approx([0.625, 0.75, 0.875, 1.0])


def test_apply_schedules_uses_lr_scale_and_only_decayed_groups():
    params = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))]
    opt = torch.optim.AdamW(
        [dict(params=[params[0]], lr_scale=0.5, weight_decay=0.05), dict(params=[params[1]], weight_decay=0.0)]
    )
    lr = apply_schedules(opt, 100, [1.0, 2.0], [0.1, 0.2])  # past the end: last value
    assert lr == 2.0
    assert opt.param_groups[0]["lr"] == 1.0 and opt.param_groups[0]["weight_decay"] == 0.2
    assert opt.param_groups[1]["lr"] == 2.0 and opt.param_groups[1]["weight_decay"] == 0.0
