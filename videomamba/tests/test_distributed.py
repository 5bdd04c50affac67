"""core/distributed: launch-mode detection, single-process fallbacks, seeding, rank-0 printing and the
collectives on a real two-process gloo group."""

from __future__ import annotations

import builtins
import os
import random
import socket
import subprocess

import numpy as np
import pytest
import torch
import torch.distributed as dist

from videomamba.core import distributed

LAUNCH_VARIABLES = (
    "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SLURM_PROCID", "SLURM_NTASKS",
    "SLURM_STEP_NUM_TASKS", "SLURM_STEP_ID", "SLURM_STEPID", "SLURM_LOCALID", "SLURM_JOB_NODELIST",
    "SLURM_STEP_NODELIST", "SLURM_JOB_ID",
)  # fmt: skip


@pytest.fixture
def bare_env(monkeypatch):
    """No launcher variables; _environment() writes RANK/WORLD_SIZE/MASTER_* and monkeypatch undoes it."""
    for name in LAUNCH_VARIABLES:
        monkeypatch.setenv(name, "")  # recorded first, so the teardown also removes what the code sets
        monkeypatch.delenv(name)
    return monkeypatch


# ------------------------------------------------------------------------- launch modes


def test_no_launcher_is_a_single_process(bare_env):
    assert distributed._environment() == (0, 1, 0, "single")


def test_torchrun_variables_give_rank_world_and_local_rank(bare_env):
    bare_env.setenv("RANK", "2")
    bare_env.setenv("WORLD_SIZE", "4")
    bare_env.setenv("LOCAL_RANK", "1")
    assert distributed._environment() == (2, 4, 1, "torchrun")
    bare_env.delenv("LOCAL_RANK")
    assert distributed._environment() == (2, 4, 0, "torchrun")


def test_a_batch_script_in_a_multi_task_allocation_is_one_process(bare_env):
    bare_env.setenv("SLURM_PROCID", "0")
    bare_env.setenv("SLURM_NTASKS", "8")
    assert distributed._environment() == (0, 1, 0, "single")  # no SLURM_STEP_ID: not an srun step
    assert "RANK" not in os.environ


def test_an_srun_step_sets_rank_world_and_the_rendezvous(bare_env):
    for name, value in dict(SLURM_PROCID="5", SLURM_NTASKS="8", SLURM_STEP_ID="0", SLURM_LOCALID="1",
                            SLURM_JOB_NODELIST="node7", SLURM_JOB_ID="1234").items():  # fmt: skip
        bare_env.setenv(name, value)
    assert distributed._environment() == (5, 8, 1, "slurm")
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"]) == ("5", "8")
    assert os.environ["MASTER_ADDR"] == "node7"
    assert os.environ["MASTER_PORT"] == "13234"  # 12000 + job id 1234 % 20000: the same on every task
    # The step's task count wins over the job's, and an explicit MASTER_PORT is kept.
    bare_env.delenv("RANK")
    bare_env.delenv("WORLD_SIZE")
    bare_env.setenv("SLURM_STEP_NUM_TASKS", "2")
    bare_env.setenv("MASTER_PORT", "29555")
    bare_env.setenv("SLURM_PROCID", "1")
    assert distributed._environment() == (1, 2, 1, "slurm")
    assert os.environ["MASTER_PORT"] == "29555"


def test_an_srun_step_of_one_task_is_a_single_process(bare_env):
    for name, value in dict(SLURM_PROCID="0", SLURM_NTASKS="1", SLURM_STEPID="3").items():
        bare_env.setenv(name, value)
    assert distributed._environment() == (0, 1, 0, "single")


def test_slurm_master_address_is_the_first_host_of_the_node_list(bare_env):
    def scontrol_missing(*args, **kwargs):
        raise FileNotFoundError("scontrol")

    def scontrol(command, **kwargs):
        assert command == ["scontrol", "show", "hostnames", "gpu[3-4]"]
        return subprocess.CompletedProcess(command, 0, stdout="gpu3\ngpu4\n")

    assert distributed._slurm_master_addr() == "127.0.0.1"  # no node list at all
    bare_env.setattr(distributed.subprocess, "run", scontrol_missing)
    bare_env.setenv("SLURM_JOB_NODELIST", "node7")
    assert distributed._slurm_master_addr() == "node7"  # a single plain host needs no scontrol
    bare_env.setenv("SLURM_STEP_NODELIST", "gpu[3-4]")
    assert distributed._slurm_master_addr() == "127.0.0.1"  # a range that only scontrol can expand
    bare_env.setattr(distributed.subprocess, "run", scontrol)
    assert distributed._slurm_master_addr() == "gpu3"  # the step's node list comes before the job's


# ------------------------------------------------------------------------- one process, no group


def test_without_a_process_group_everything_is_local(bare_env):
    info = distributed.init_distributed("cpu")
    assert info == distributed.DistributedInfo()  # rank 0 of 1, no backend, launcher "single"
    assert not distributed.is_dist_initialized()
    assert (distributed.get_rank(), distributed.get_world_size(), distributed.is_main_process()) == (0, 1, True)
    tensor = torch.tensor([2.0, 3.0])
    assert distributed.all_reduce_sum(tensor) is tensor
    assert torch.equal(distributed.all_reduce_mean(tensor), tensor)
    assert distributed.all_gather_objects({"a": 1}) == [{"a": 1}]
    assert distributed.any_across_ranks(True) is True and distributed.any_across_ranks(0) is False
    distributed.barrier()
    distributed.cleanup_distributed()
    model = torch.nn.Linear(2, 2)
    assert distributed.wrap_ddp(model, torch.device("cpu")) is model


def test_resolve_device(monkeypatch):
    assert distributed.resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="--device cuda but no CUDA device is visible; pass --device cpu"):
        distributed.resolve_device("cuda")


def test_distributed_session_gives_info_and_device_and_seeds(bare_env):
    bare_env.setattr(builtins, "print", builtins.print)
    with distributed.distributed_session("cpu", seed=7) as (info, device):
        drawn = torch.rand(3)
        assert info.rank == 0 and not info.distributed and device == torch.device("cpu")
    torch.manual_seed(7)
    assert torch.equal(drawn, torch.rand(3))


# ------------------------------------------------------------------------- seeding and printing


def test_seed_everything_adds_the_rank():
    assert distributed.seed_everything(10, rank=3) == 13
    drawn = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(13)
    np.random.seed(13)
    torch.manual_seed(13)
    assert drawn == (random.random(), np.random.rand(), torch.rand(1).item())


def test_seed_worker_derives_python_and_numpy_seeds_from_torch():
    torch.manual_seed(2**32 + 5)  # reduced modulo 2**32 for numpy
    distributed.seed_worker(0)
    drawn = (random.random(), np.random.rand())
    random.seed(5)
    np.random.seed(5)
    assert drawn == (random.random(), np.random.rand())


def test_only_the_main_rank_prints_unless_forced(monkeypatch, capsys):
    monkeypatch.setattr(builtins, "print", builtins.print)
    distributed.setup_print(is_main=False)
    distributed.setup_print(is_main=False)  # set up twice: wraps the original print, not its own wrapper
    print("hidden")
    print("shown", force=True)
    distributed.setup_print(is_main=True)
    print("main")
    assert capsys.readouterr().out == "shown\nmain\n"


# ------------------------------------------------------------------------- two gloo processes


def _two_rank_worker(rank: int, port: int) -> None:
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))  # fmt: skip
    info = distributed.init_distributed("cpu", timeout_minutes=2)
    try:
        assert (info.rank, info.world_size, info.distributed, info.backend) == (rank, 2, True, "gloo")
        assert (distributed.get_rank(), distributed.get_world_size()) == (rank, 2)
        assert distributed.is_main_process() == (rank == 0)
        value = torch.tensor([1.0, 10.0]) * (rank + 1)  # rank 0: [1, 10], rank 1: [2, 20]
        assert torch.equal(distributed.all_reduce_sum(value), torch.tensor([3.0, 30.0]))
        assert torch.equal(value, torch.tensor([1.0, 10.0]) * (rank + 1))  # the input is left alone
        assert torch.equal(distributed.all_reduce_mean(value), torch.tensor([1.5, 15.0]))
        assert distributed.all_gather_objects({"rank": rank}) == [{"rank": 0}, {"rank": 1}]
        assert distributed.any_across_ranks(rank == 1) and not distributed.any_across_ranks(False)
        model = distributed.wrap_ddp(torch.nn.Linear(2, 2), torch.device("cpu"))
        assert isinstance(model, torch.nn.parallel.DistributedDataParallel)
        distributed.barrier()
    finally:
        distributed.cleanup_distributed()
    assert not dist.is_initialized()


def test_collectives_on_two_gloo_processes():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Forked, the workers start with everything imported (spawned ones spend most of their time importing);
    # each sets one torch thread before its first op. A worker's failure raises here.
    torch.multiprocessing.start_processes(_two_rank_worker, args=(port,), nprocs=2, start_method="fork")
