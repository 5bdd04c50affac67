"""Data loaders: distributed sampling, and interleaving image and video batches in lock-step on all ranks.

Pretraining mixes image corpora and video corpora, one loader per media type. Each step takes a batch
from one of them; the order of media types over the epoch is a random permutation, in proportion to
the loaders' lengths, drawn on rank 0 and broadcast, so every rank runs the same media type (and hence
the same shapes and the same collectives) at every step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, SequentialSampler

from videomamba.core.cli import UserError
from videomamba.core.distributed import get_rank, get_world_size, is_dist_initialized, seed_worker

__all__ = ["MediaInterleavedLoader", "build_loader"]


def build_loader(
    dataset: Dataset,
    batch_size: int,
    num_workers: int,
    train: bool,
    seed: int = 0,
    distributed: bool | None = None,
    collate_fn: Callable | None = None,
    pin_memory: bool = False,
) -> DataLoader:
    """Training loaders shuffle, drop the last incomplete batch and shard across ranks; evaluation
    loaders keep the order and (unless `distributed`) give every rank the whole split."""
    distributed = train and is_dist_initialized() if distributed is None else distributed
    if distributed:
        sampler = DistributedSampler(
            dataset, num_replicas=get_world_size(), rank=get_rank(), shuffle=train, seed=seed, drop_last=train
        )
    else:
        sampler = RandomSampler(dataset) if train else SequentialSampler(dataset)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        drop_last=train,
        collate_fn=collate_fn,
        worker_init_fn=seed_worker,
        persistent_workers=False,  # fresh workers each epoch, seeded from the (restorable) torch RNG: exact resume
    )
    if train and len(loader) == 0:
        raise UserError(
            f"{type(dataset).__name__} of {len(dataset)} samples gives no full batch of {batch_size} per rank "
            f"({get_world_size()} ranks); lower the batch size"
        )
    return loader


class MediaInterleavedLoader:
    """Iterate several loaders (keyed by media type) as one: yields ``(media_type, batch)``."""

    def __init__(self, loaders: Mapping[str, DataLoader], seed: int = 0) -> None:
        if not loaders:
            raise ValueError("MediaInterleavedLoader needs at least one loader")
        self.loaders = dict(loaders)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        for loader in self.loaders.values():
            if isinstance(loader.sampler, DistributedSampler):
                loader.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return sum(len(loader) for loader in self.loaders.values())

    def step_order(self) -> list[str]:
        """The media type of every step of this epoch (identical on every rank)."""
        names = list(self.loaders)
        order = torch.cat([torch.full((len(loader),), i) for i, loader in enumerate(self.loaders.values())])
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = order[torch.randperm(len(order), generator=generator)].tolist()
        if is_dist_initialized():
            shared: list[Any] = [order]
            dist.broadcast_object_list(shared, src=0)
            order = shared[0]
        return [names[i] for i in order]

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        iterators = {name: iter(loader) for name, loader in self.loaders.items()}
        for name in self.step_order():
            yield name, next(iterators[name])
