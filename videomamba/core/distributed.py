"""Process-group setup from torchrun, Slurm or nothing, and collectives that work without one.

Launch modes, detected from the environment:
- torchrun / torch.distributed.launch / submitit (exported): RANK, WORLD_SIZE, LOCAL_RANK;
- srun: SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID (the master address is the first host of
  the job, the port MASTER_PORT or one derived from the job id);
- neither (or a world of one): a single process, no process group.
The backend is nccl for CUDA devices and gloo otherwise, so CPU runs work everywhere.
"""

from __future__ import annotations

import builtins
import contextlib
import datetime
import os
import random
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

__all__ = [
    "DistributedInfo",
    "all_gather_objects",
    "all_reduce_mean",
    "all_reduce_sum",
    "any_across_ranks",
    "barrier",
    "cleanup_distributed",
    "distributed_session",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_dist_initialized",
    "is_main_process",
    "resolve_device",
    "seed_everything",
    "seed_worker",
    "setup_print",
    "wrap_ddp",
]


@dataclass
class DistributedInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    distributed: bool = False
    backend: str | None = None
    launcher: str = "single"


def is_dist_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_dist_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_dist_initialized() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def _slurm_master_addr() -> str:
    nodelist = os.environ.get("SLURM_STEP_NODELIST") or os.environ.get("SLURM_JOB_NODELIST") or ""
    if nodelist:
        try:
            hosts = subprocess.run(
                ["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True
            ).stdout.split()
            if hosts:
                return hosts[0]
        except (OSError, subprocess.CalledProcessError):
            pass
        if "[" not in nodelist and "," not in nodelist:
            return nodelist
    return "127.0.0.1"


def _environment() -> tuple[int, int, int, str]:
    """(rank, world_size, local_rank, launcher) read from the environment."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)), "torchrun"
    # Only srun steps count: a batch script run inside a multi-task allocation is one process.
    in_srun_step = "SLURM_PROCID" in env and ("SLURM_STEP_ID" in env or "SLURM_STEPID" in env)
    slurm_world = int(env.get("SLURM_STEP_NUM_TASKS", env.get("SLURM_NTASKS", "1")))
    if in_srun_step and slurm_world > 1:
        # torch's env:// rendezvous needs the master address/port, which srun does not export.
        env.setdefault("MASTER_ADDR", _slurm_master_addr())
        env.setdefault("MASTER_PORT", str(12000 + int(env.get("SLURM_JOB_ID", "0")) % 20000))
        rank, world = int(env["SLURM_PROCID"]), slurm_world
        env["RANK"], env["WORLD_SIZE"] = str(rank), str(world)
        return rank, world, int(env.get("SLURM_LOCALID", 0)), "slurm"
    return 0, 1, 0, "single"


def init_distributed(device: str = "cuda", dist_url: str = "env://", timeout_minutes: int = 30) -> DistributedInfo:
    """Initialise the default process group if the environment describes more than one process.

    ``device`` picks the backend (nccl for cuda, gloo otherwise) and, on CUDA, the local GPU.
    """
    rank, world_size, local_rank, launcher = _environment()
    info = DistributedInfo(rank=rank, world_size=world_size, local_rank=local_rank, launcher=launcher)
    use_cuda = torch.device(device).type == "cuda"
    if use_cuda and torch.cuda.is_available():
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    if world_size <= 1:
        return info
    info.backend = "nccl" if use_cuda else "gloo"
    info.distributed = True
    if not is_dist_initialized():
        dist.init_process_group(
            backend=info.backend,
            init_method=dist_url,
            world_size=world_size,
            rank=rank,
            timeout=datetime.timedelta(minutes=timeout_minutes),
        )
    print(
        f"| distributed init ({launcher}, {info.backend}): rank {rank}/{world_size}, local rank {local_rank}",
        flush=True,
    )
    dist.barrier()
    return info


def resolve_device(name: str) -> torch.device:
    """The device a runner's --device names, on CUDA the process's current GPU; a clear error without one."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda but no CUDA device is visible; pass --device cpu to run on the CPU")
    if device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
        torch.backends.cudnn.benchmark = True
    return device


def wrap_ddp(model: torch.nn.Module, device: torch.device, find_unused_parameters: bool = False) -> torch.nn.Module:
    """DistributedDataParallel around `model` when a process group is up; the model itself otherwise."""
    if not is_dist_initialized():
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=device_ids, find_unused_parameters=find_unused_parameters
    )


@contextlib.contextmanager
def distributed_session(
    device_name: str, dist_url: str = "env://", seed: int | None = None
) -> Iterator[tuple[DistributedInfo, torch.device]]:
    """A runner's process setup: process group, rank-0 printing, device, seed + rank; torn down on exit."""
    info = init_distributed(device_name, dist_url)
    setup_print(info.rank == 0)
    try:
        device = resolve_device(device_name)
        if seed is not None:
            seed_everything(seed, info.rank)
        yield info, device
    finally:
        cleanup_distributed()


def cleanup_distributed() -> None:
    if is_dist_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if is_dist_initialized():
        dist.barrier()


def _reduce_device() -> torch.device:
    # nccl reduces CUDA tensors only; gloo reduces CPU tensors.
    if is_dist_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (a copy); the tensor itself when not distributed."""
    if not is_dist_initialized():
        return tensor
    reduced = tensor.detach().to(_reduce_device(), copy=True)
    dist.all_reduce(reduced)
    return reduced.to(tensor.device)


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    return all_reduce_sum(tensor) / get_world_size()


def all_gather_objects(obj: object) -> list[object]:
    """Every rank's picklable `obj`, in rank order ([obj] without a process group)."""
    if not is_dist_initialized():
        return [obj]
    gathered: list[object] = [None] * get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def any_across_ranks(flag: bool) -> bool:
    """True on every rank if ``flag`` is True on any rank (local value without a process group)."""
    if not is_dist_initialized():
        return bool(flag)
    return bool(all_reduce_sum(torch.tensor([1.0 if flag else 0.0])).item() > 0)


def seed_everything(seed: int, rank: int = 0) -> int:
    """Seed python, numpy and torch with seed + rank; returns the seed used."""
    seed = seed + rank
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return seed


def seed_worker(worker_id: int) -> None:
    """DataLoader worker_init_fn: derive python and numpy seeds from the worker's torch seed."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def setup_print(is_main: bool) -> None:
    """Silence print() on non-main ranks; print(..., force=True) still prints everywhere."""
    original = getattr(builtins.print, "_videomamba_original", builtins.print)

    def rank_aware_print(*args, **kwargs):
        force = kwargs.pop("force", False)
        if is_main or force:
            original(*args, **kwargs)

    rank_aware_print._videomamba_original = original
    builtins.print = rank_aware_print
