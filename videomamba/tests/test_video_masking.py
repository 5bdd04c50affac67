"""Token masks for masked video pretraining: ratios, shapes, structure, determinism, attention guidance."""

from __future__ import annotations

import pytest
import torch

from videomamba.core.masking import (
    attention_mask,
    build_mask,
    gather_visible,
    num_masked_tokens,
    prepend_cls_column,
    random_mask,
    row_mask,
    tube_mask,
)

GRID = (4, 6, 5)  # (T', H', W')
TOKENS = 4 * 6 * 5


@pytest.mark.parametrize("mask_type", ["tube", "random", "tube_row", "random_row"])
@pytest.mark.parametrize("ratio", [0.0, 0.5, 0.8, 0.9])
def test_masks_have_the_requested_shape_and_ratio(mask_type, ratio):
    mask = build_mask(mask_type, 3, GRID, ratio, generator=torch.Generator().manual_seed(0))
    assert mask.shape == (3, TOKENS) and mask.dtype == torch.bool
    counts = mask.sum(dim=1)
    assert (counts == counts[0]).all()
    expected = {
        "tube": 4 * num_masked_tokens(30, ratio),
        "random": num_masked_tokens(TOKENS, ratio),
        "tube_row": 4 * 5 * num_masked_tokens(6, ratio),
        "random_row": 5 * num_masked_tokens(4 * 6, ratio),
    }[mask_type]
    assert counts[0] == expected


def test_tube_and_row_structure():
    generator = torch.Generator().manual_seed(1)
    tube = tube_mask(2, 4, 30, 0.75, generator=generator).view(2, 4, 30)
    assert (tube == tube[:, :1]).all() and not torch.equal(tube[0], tube[1])
    rows = row_mask(2, 4, 6, 5, 0.5, same_rows_every_frame=True, generator=generator).view(2, 4, 6, 5)
    assert (rows == rows[..., :1]).all() and (rows == rows[:, :1]).all()
    joint = row_mask(8, 4, 6, 5, 0.5, same_rows_every_frame=False, generator=generator).view(8, 4, 6, 5)
    assert (joint == joint[..., :1]).all() and not (joint == joint[:, :1]).all()


def test_masks_are_deterministic_under_a_seeded_generator():
    first = random_mask(4, 100, 0.9, generator=torch.Generator().manual_seed(7))
    again = random_mask(4, 100, 0.9, generator=torch.Generator().manual_seed(7))
    other = random_mask(4, 100, 0.9, generator=torch.Generator().manual_seed(8))
    assert torch.equal(first, again) and not torch.equal(first, other)
    attention = torch.rand(2, 4, 30, generator=torch.Generator().manual_seed(0))
    a = attention_mask(attention, 0.8, generator=torch.Generator().manual_seed(3))
    b = attention_mask(attention, 0.8, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_topk_attention_mask_keeps_exactly_the_most_attended_tokens():
    attention = torch.rand(2, 4, 30, generator=torch.Generator().manual_seed(0))
    mask = attention_mask(attention, 0.8, sampling="topk").view(2, 4, 30)
    keep = 30 - int(30 * 0.8)
    assert ((~mask).sum(-1) == keep).all()
    top = attention.topk(keep, dim=-1).indices
    assert (~mask).gather(-1, top).all()


def test_multinomial_attention_mask_follows_the_attention():
    attention = torch.full((3, 4, 30), 1e-6)
    attention[..., [2, 11, 17, 29]] = 1.0  # four dominant patches per frame, more than the 6 kept
    mask = attention_mask(attention, 0.8, generator=torch.Generator().manual_seed(0)).view(3, 4, 30)
    assert ((~mask).sum(-1) == 6).all()
    assert (~mask[..., [2, 11, 17, 29]]).all()
    flat = attention_mask(torch.rand(2, 50), 0.5, sampling="topk")
    assert flat.shape == (2, 50) and (flat.sum(1) == 25).all()
    underflowed = torch.zeros(1, 1, 30)
    underflowed[..., 0] = 1.0  # bf16 softmax can round most weights to zero
    assert (~attention_mask(underflowed, 0.5)).sum() == 15
    with pytest.raises(ValueError, match="non-negative"):
        attention_mask(-attention, 0.5)


def test_cls_column_and_visible_gathering():
    mask = tube_mask(2, 4, 30, 0.75, generator=torch.Generator().manual_seed(0))
    with_cls = prepend_cls_column(mask)
    assert with_cls.shape == (2, 1 + TOKENS) and not with_cls[:, 0].any()
    tokens = torch.arange(2 * (1 + TOKENS) * 3, dtype=torch.float32).view(2, 1 + TOKENS, 3)
    visible = gather_visible(tokens, with_cls)
    assert visible.shape == (2, 1 + 4 * 8, 3)
    torch.testing.assert_close(visible[1], tokens[1][~with_cls[1]])
    stacked = gather_visible(torch.stack([tokens, tokens + 1]), with_cls)
    assert stacked.shape == (2, 2, 33, 3)
    torch.testing.assert_close(stacked[1], visible + 1)
    uneven = torch.zeros(2, 1 + TOKENS, dtype=torch.bool)
    uneven[0, 5] = True
    with pytest.raises(ValueError, match="same number of visible tokens"):
        gather_visible(tokens, uneven)


def test_build_mask_checks_its_inputs():
    with pytest.raises(ValueError, match="needs the teacher's attention"):
        build_mask("attention", 2, GRID, 0.8)
    with pytest.raises(ValueError, match="expected"):
        build_mask("attention", 2, GRID, 0.8, attention=torch.rand(2, 30))
    with pytest.raises(ValueError, match="unknown mask_type"):
        build_mask("checkerboard", 2, GRID, 0.8)
    with pytest.raises(ValueError, match="mask_ratio"):
        random_mask(1, 10, 1.0)
    mask = build_mask("attention", 2, GRID, 0.8, attention=torch.rand(2, 4, 30), attention_sampling="topk")
    assert mask.shape == (2, TOKENS)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_masks_on_gpu_match_cpu_for_a_cpu_generator():
    cpu = build_mask("tube", 4, GRID, 0.75, generator=torch.Generator().manual_seed(5))
    gpu = build_mask("tube", 4, GRID, 0.75, device="cuda", generator=torch.Generator().manual_seed(5))
    assert gpu.is_cuda and torch.equal(gpu.cpu(), cpu)
    attention = torch.rand(4, 4, 30, device="cuda")
    mask = attention_mask(attention, 0.8, generator=torch.Generator("cuda").manual_seed(0))
    assert mask.is_cuda and ((~mask).view(4, 4, 30).sum(-1) == 6).all()
