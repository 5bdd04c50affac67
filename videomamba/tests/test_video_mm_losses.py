"""video_mm losses on inputs whose results can be worked out by hand."""

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from videomamba.video_mm.models.losses import (
    mask_tokens_for_mlm,
    sample_hard_negatives,
    similarity,
    uta_loss,
    vtc_loss,
)

REPO = Path(__file__).resolve().parents[2]


def test_similarity_averages_per_frame_cosines():
    vision = torch.tensor([[[2.0, 0.0], [0.0, 3.0]]])  # one video, two frames pointing along x then y
    text = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    sim_v2t, sim_t2v = similarity(vision, text, temp=0.5)
    expected = torch.tensor([[(1.0 + 0.0) / 2, (2**-0.5 + 2**-0.5) / 2]]) / 0.5
    torch.testing.assert_close(sim_v2t, expected)
    torch.testing.assert_close(sim_t2v, expected.t())


def test_vtc_with_distinct_and_repeated_ids():
    features = torch.eye(2)
    # Distinct ids: each row is a 2-way softmax over logits (1, 0) with the diagonal as target.
    loss = vtc_loss(features, features, torch.tensor([0, 1]), temp=1.0)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)))
    # One id for both pairs: each row's target puts 1/2 on both columns.
    shared = vtc_loss(features, features, torch.tensor([5, 5]), temp=1.0)
    assert shared.item() == pytest.approx(math.log(math.e + 1) - 0.5)


def test_vtc_gradient_pulls_positives_together():
    vision = torch.randn(4, 3, 8, requires_grad=True)
    text = torch.randn(4, 8, requires_grad=True)
    loss = vtc_loss(vision, text, torch.tensor([0, 1, 1, 2]), temp=0.1)
    loss.backward()
    step = torch.optim.SGD([vision, text], lr=0.5)
    step.step()
    assert vtc_loss(vision, text, torch.tensor([0, 1, 1, 2]), temp=0.1) < loss


def test_hard_negatives_are_never_positives():
    generator = torch.Generator().manual_seed(0)
    ids = torch.tensor([0, 0, 1, 2, 2, 2, 3, 4])
    positives = ids[:, None] == ids[None, :]
    for _ in range(50):
        sim = torch.randn(8, 8, generator=generator) * 5
        rows, columns = sample_hard_negatives(sim, ids, hard=True, generator=generator)
        assert rows.tolist() == list(range(8))
        assert not positives[rows, columns].any()
    # Rows whose every column is a positive get no negative.
    rows, columns = sample_hard_negatives(torch.randn(3, 3), torch.tensor([7, 7, 7]))
    assert rows.numel() == 0 and columns.numel() == 0


def test_hard_negatives_prefer_similar_pairs():
    sim = torch.zeros(3, 3)
    sim[0, 2] = 6.0  # for query 0, column 2 is the most similar negative
    counts = torch.zeros(3)
    generator = torch.Generator().manual_seed(1)
    for _ in range(100):
        rows, columns = sample_hard_negatives(sim, torch.tensor([0, 1, 2]), generator=generator)
        counts[columns[0]] += 1
    assert counts[0] == 0 and counts[2] > 75


def test_mlm_masking_rates():
    generator = torch.Generator().manual_seed(0)
    pad, cls, mask_id, vocab = 0, 101, 103, 30000
    ids = torch.randint(1000, 2000, (400, 50), generator=generator)
    ids[:, 0] = cls
    ids[:, 40:] = pad
    masked, labels = mask_tokens_for_mlm(ids, 0.5, mask_id, vocab, (pad, cls), generator=generator)
    selected = labels != -100
    assert not selected[:, 0].any() and not selected[:, 40:].any()  # never CLS or PAD
    assert torch.equal(labels[selected], ids[selected])
    assert torch.equal(masked[~selected], ids[~selected])
    assert selected[:, 1:40].float().mean().item() == pytest.approx(0.5, abs=0.01)
    n = selected.sum().item()
    became_mask = (masked[selected] == mask_id).sum().item() / n
    unchanged = (masked[selected] == ids[selected]).sum().item() / n
    random_word = 1 - became_mask - unchanged
    assert became_mask == pytest.approx(0.8, abs=0.01)
    assert unchanged == pytest.approx(0.1, abs=0.01)
    assert random_word == pytest.approx(0.1, abs=0.01)


def test_uta_is_two_minus_two_cosine():
    student = torch.tensor([[[[3.0, 0.0], [1.0, 1.0]]]])  # (K=1, B=1, L=2, C=2)
    teacher = torch.tensor([[[[0.0, 5.0], [2.0, 2.0]]]])
    # Orthogonal -> 2, parallel -> 0; the mean over positions is 1.
    assert uta_loss(student, teacher).item() == pytest.approx(1.0)
    assert uta_loss(student, -student).item() == pytest.approx(4.0)
    with pytest.raises(ValueError, match="differ"):
        uta_loss(student, teacher[..., :1])


GATHER_WORKER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import torch, torch.distributed as dist
    from videomamba.video_mm.models.losses import all_gather_with_local_grad
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    local = torch.full((2, 3), float(rank + 1), requires_grad=True)
    gathered = all_gather_with_local_grad(local)
    assert gathered.shape == (4, 3) and gathered[:2].eq(1).all() and gathered[2:].eq(2).all()
    weights = torch.arange(12.0).view(4, 3)
    (gathered * weights).sum().backward()
    assert torch.equal(local.grad, weights[2 * rank : 2 * rank + 2]), local.grad
    # One file per rank: the two processes' stdout interleave.
    Path(sys.argv[1], f"rank{rank}.ok").touch()
    dist.destroy_process_group()
    """
)


def test_all_gather_keeps_the_local_gradient_across_two_processes(tmp_path):
    script = tmp_path / "gather.py"
    script.write_text(GATHER_WORKER)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(script),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "rank0.ok").exists() and (tmp_path / "rank1.ok").exists()
