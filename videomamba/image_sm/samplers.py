"""Repeated-augmentation sampler (Hoffer et al. 2020; as used by DeiT and the original image_sm)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sized

import torch
from torch.utils.data import Sampler

from videomamba.core.distributed import get_rank, get_world_size

__all__ = ["RASampler"]


class RASampler(Sampler[int]):
    """Each epoch: shuffle, repeat every index ``num_repeats`` times, deal the stream across ranks.

    Consecutive copies of an index land on different ranks, so each rank sees a different
    augmentation of the same image in a step. As in the original, an epoch is truncated to
    ``len(dataset) // selected_round * selected_round / world_size`` samples per rank, keeping
    the epoch length of plain sampling; a dataset smaller than ``selected_round`` keeps that
    length too, ceil(len / world_size) (the original would yield no sample at all), and
    ``selected_round=0`` disables the truncation.
    """

    def __init__(
        self,
        dataset: Sized,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = True,
        num_repeats: int = 3,
        selected_round: int = 256,
        seed: int = 0,
    ):
        if num_repeats < 1:
            raise ValueError(f"num_repeats must be >= 1, got {num_repeats}")
        self.dataset = dataset
        self.num_replicas = get_world_size() if num_replicas is None else num_replicas
        self.rank = get_rank() if rank is None else rank
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank {self.rank} is outside [0, {self.num_replicas})")
        self.shuffle = shuffle
        self.num_repeats = num_repeats
        self.seed = seed
        self.epoch = 0
        size = len(dataset)
        self.num_samples = math.ceil(size * num_repeats / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas
        if not selected_round:
            self.num_selected_samples = self.num_samples  # no truncation: every repeat is used
        elif size >= selected_round:
            self.num_selected_samples = size // selected_round * selected_round // self.num_replicas
        else:
            self.num_selected_samples = math.ceil(size / self.num_replicas)

    def __iter__(self) -> Iterator[int]:
        size = len(self.dataset)
        if self.shuffle:
            generator = torch.Generator()
            generator.manual_seed(self.seed + self.epoch)
            order = torch.randperm(size, generator=generator)
        else:
            order = torch.arange(size)
        indices = order.repeat_interleave(self.num_repeats).tolist()
        # Pad by cycling so every rank gets the same count.
        indices = (indices * math.ceil(self.total_size / max(len(indices), 1)))[: self.total_size]
        own = indices[self.rank : self.total_size : self.num_replicas]
        return iter(own[: self.num_selected_samples])

    def __len__(self) -> int:
        return self.num_selected_samples

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
