"""Video-text losses: contrastive (VTC), matching with hard negatives (VTM), masked language modelling
(MLM) and unmasked-token alignment with the CLIP teacher (UTA).

Conventions: vision features are (B, C) or per frame (B, T, C); a video-text similarity with
per-frame features is the mean over frames of the per-frame cosine similarities. ``positive_ids``
give each pair an id; pairs with equal ids are positives of each other (several captions of one video).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from videomamba.core.distributed import get_rank, is_dist_initialized

__all__ = [
    "all_gather_with_local_grad",
    "mask_tokens_for_mlm",
    "positive_mask",
    "sample_hard_negatives",
    "similarity",
    "uta_loss",
    "vtc_loss",
]


def all_gather_with_local_grad(tensor: Tensor) -> Tensor:
    """Concatenate `tensor` from every rank (rank order); gradients flow into this rank's own slice.

    The other ranks' slices are constants here: their gradients are computed by their own ranks,
    and DDP's gradient averaging combines the contributions. Every rank must pass the same shape.
    Without a process group, `tensor` itself.
    """
    if not is_dist_initialized():
        return tensor
    gathered = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, tensor.detach().contiguous())
    gathered[get_rank()] = tensor
    return torch.cat(gathered)


def similarity(vision: Tensor, text: Tensor, temp: Tensor | float) -> tuple[Tensor, Tensor]:
    """(vision-to-text, text-to-vision) cosine similarities divided by `temp`, in float32.

    vision: (Bv, C) or (Bv, T, C) per frame (the similarity is then averaged over frames); text: (Bt, C).
    """
    vision = F.normalize(vision.float(), dim=-1)
    text = F.normalize(text.float(), dim=-1)
    if vision.dim() == 3:
        sim = torch.einsum("vtc,nc->vtn", vision, text).mean(dim=1)
    else:
        sim = vision @ text.t()
    sim = sim / temp
    return sim, sim.t()


def positive_mask(row_ids: Tensor, column_ids: Tensor) -> Tensor:
    """(R, C) bool: True where the pair ids are equal."""
    return row_ids.view(-1, 1) == column_ids.view(1, -1)


def vtc_loss(vision: Tensor, text: Tensor, positive_ids: Tensor, temp: Tensor | float) -> Tensor:
    """Symmetric contrastive loss over the batch gathered from all ranks.

    Targets are the id-equality matrix normalised per row, so all positives of a query share its
    probability mass; the loss is the mean of the two directions' soft cross-entropies.
    """
    vision = all_gather_with_local_grad(vision)
    text = all_gather_with_local_grad(text)
    ids = all_gather_with_local_grad(positive_ids)
    sim_v2t, sim_t2v = similarity(vision, text, temp)
    targets = positive_mask(ids, ids).float()
    targets = targets / targets.sum(dim=1, keepdim=True)
    loss_v2t = -(F.log_softmax(sim_v2t, dim=1) * targets).sum(dim=1).mean()
    loss_t2v = -(F.log_softmax(sim_t2v, dim=1) * targets).sum(dim=1).mean()
    return (loss_v2t + loss_t2v) / 2


def sample_hard_negatives(
    sim: Tensor, positive_ids: Tensor, hard: bool = True, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """For each row of `sim` (queries against the batch) one negative column, never a positive.

    With `hard`, columns are drawn with probability softmax(sim) (similar but wrong pairs are
    likelier); otherwise uniformly among the non-positives. Returns (row indices that have a
    negative, their negative column); rows whose every column is a positive are left out.
    """
    positives = positive_mask(positive_ids, positive_ids)
    weights = F.softmax(sim.float(), dim=1) + 1e-4 if hard else torch.ones_like(sim, dtype=torch.float32)
    weights = torch.nan_to_num(weights, nan=1e-2, posinf=1e-2, neginf=1e-2).masked_fill(positives, 0.0)
    rows = torch.nonzero(weights.sum(dim=1) > 0).flatten()
    if rows.numel() == 0:
        return rows, rows
    columns = torch.multinomial(weights[rows], 1, generator=generator).flatten()
    return rows, columns


def mask_tokens_for_mlm(
    input_ids: Tensor,
    probability: float,
    mask_token_id: int,
    vocab_size: int,
    never_mask: tuple[int, ...],
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """BERT masking: (masked input ids, labels).

    Each token is selected with `probability`, except the ids in `never_mask` (PAD and CLS). Of the
    selected tokens 80% become [MASK], 10% a random word and 10% stay; labels are the original ids at
    selected positions and -100 elsewhere.
    """

    def draw(p: float) -> Tensor:
        return torch.rand(input_ids.shape, generator=generator, device=generator_device) < p

    generator_device = generator.device if generator is not None else input_ids.device
    protected = torch.zeros_like(input_ids, dtype=torch.bool)
    for token_id in never_mask:
        protected |= input_ids == token_id
    selected = draw(probability).to(input_ids.device) & ~protected
    labels = input_ids.masked_fill(~selected, -100)
    to_mask = draw(0.8).to(input_ids.device) & selected
    # Half of the remaining 20% get a random word: 10% of the selected tokens.
    to_random = draw(0.5).to(input_ids.device) & selected & ~to_mask
    random_words = torch.randint(vocab_size, input_ids.shape, generator=generator, device=generator_device)
    masked = input_ids.masked_fill(to_mask, mask_token_id)
    masked = torch.where(to_random, random_words.to(input_ids.device), masked)
    return masked, labels


def uta_loss(student: Tensor, teacher: Tensor, norm_type: str = "l2", loss_type: str = "l2") -> Tensor:
    """Unmasked-token alignment of student and teacher features at the same (visible) positions.

    ``l2`` on L2-normalised features is mean(2 - 2·cos), the squared distance of unit vectors;
    ``smooth_l1`` is the Smooth-L1 distance.
    """
    if student.shape != teacher.shape:
        raise ValueError(f"student features {tuple(student.shape)} and teacher {tuple(teacher.shape)} differ")
    student, teacher = student.float(), teacher.float()
    if norm_type == "l2":
        student, teacher = F.normalize(student, dim=-1), F.normalize(teacher, dim=-1)
    elif norm_type != "none":
        raise ValueError(f"uta_norm_type must be 'l2' or 'none', got {norm_type!r}")
    if loss_type == "l2":
        return (student - teacher).pow(2).sum(dim=-1).mean()
    if loss_type == "smooth_l1":
        return F.smooth_l1_loss(student, teacher)
    raise ValueError(f"uta_loss_type must be 'l2' or 'smooth_l1', got {loss_type!r}")
