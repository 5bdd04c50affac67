"""Submitting a task's training entry point to Slurm (or locally) through submitit, with requeue-and-resume.

Each task's ``run_with_submitit.py`` adds its own runner's flags and calls `submit` with a
`SubmititJob` naming its entry point. ``--output_dir`` is honoured (the original replaced it with
the job folder); without it, the job folder is the output folder. On a timeout or preemption
submitit calls `SubmititJob.checkpoint`, which requeues the same job resuming from the run's
latest checkpoint. ``--cluster local`` (or ``debug``) runs the job on this machine.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from typing import Any

__all__ = ["SubmititJob", "add_submitit_arguments", "submit"]


def add_submitit_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The submission flags (the original's names and defaults, plus --cluster and --wait)."""
    group = parser.add_argument_group("submitit")
    group.add_argument("--ngpus", default=8, type=int, help="GPUs (= tasks) per node")
    group.add_argument("--nodes", default=2, type=int, help="number of nodes")
    group.add_argument("--timeout", default=2800, type=int, help="job time limit in minutes")
    group.add_argument("--job_dir", default="", help="submitit folder (default: <output_dir>/submitit)")
    group.add_argument("--partition", default="video5", help="Slurm partition")
    group.add_argument("--use_volta32", action="store_true", help="request V100-32GB nodes (constraint volta32gb)")
    group.add_argument("--comment", default="", help="Slurm comment")
    group.add_argument("--cpus_per_task", default=16, type=int)
    group.add_argument("--mem_per_gpu", default=100, type=int, help="GB of memory per GPU")
    group.add_argument(
        "--cluster", default=None, choices=("slurm", "local", "debug"), help="(new) submitit cluster (default: auto)"
    )
    group.add_argument("--wait", action="store_true", help="(new) wait for the job and report its result")
    return parser


class SubmititJob:
    """The picklable job: sets up the distributed environment and runs ``entry(args)``.

    Args:
        args: the parsed flags (runner flags plus the submission flags).
        entry: ``"package.module:function"``, imported inside the job so the pickle stays small.
        latest_checkpoint: the file name of the runner's latest checkpoint in ``--output_dir``.
    """

    def __init__(self, args: argparse.Namespace, entry: str, latest_checkpoint: str) -> None:
        self.args = args
        self.entry = entry
        self.latest_checkpoint = latest_checkpoint

    def __call__(self) -> Any:
        import submitit

        module_name, function_name = self.entry.split(":")
        run = getattr(importlib.import_module(module_name), function_name)
        env = submitit.JobEnvironment()
        if not self.args.output_dir:
            self.args.output_dir = str(self.args.job_dir).replace("%j", str(env.job_id))
        # submitit knows every task's rank; export it in torchrun's variables for init_distributed.
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        print(f"Process group: {env.global_rank}/{env.num_tasks}, output in {self.args.output_dir}", flush=True)
        return run(self.args)

    def requeued(self) -> SubmititJob:
        """A copy for the requeued job (subclasses with a fixed entry point override this)."""
        return SubmititJob(self.args, self.entry, self.latest_checkpoint)

    def checkpoint(self) -> Any:
        """Called by submitit on timeout/preemption: requeue, resuming from the latest checkpoint."""
        import submitit

        latest = Path(self.args.output_dir) / self.latest_checkpoint if self.args.output_dir else None
        if latest is not None and latest.is_file():
            self.args.resume = str(latest)
        print(f"Requeuing; resume from {self.args.resume or 'scratch'}", flush=True)
        return submitit.helpers.DelayedSubmission(self.requeued())


def submit(args: argparse.Namespace, job: SubmititJob, name: str, default_job_dir: str) -> Any:
    """Configure the executor from the submission flags and submit `job`; returns the submitit job."""
    import submitit

    if not args.job_dir:
        args.job_dir = str(Path(args.output_dir) / "submitit") if args.output_dir else default_job_dir
    Path(str(args.job_dir).replace("%j", "")).mkdir(parents=True, exist_ok=True)
    executor = submitit.AutoExecutor(folder=args.job_dir, cluster=args.cluster, slurm_max_num_timeout=30)
    use_gpus = str(args.device).startswith("cuda")
    kwargs: dict[str, Any] = {}
    if args.use_volta32:
        kwargs["slurm_constraint"] = "volta32gb"
    if args.comment:
        kwargs["slurm_comment"] = args.comment
    executor.update_parameters(
        name=name,
        timeout_min=args.timeout,
        nodes=args.nodes,
        tasks_per_node=args.ngpus,
        gpus_per_node=args.ngpus if use_gpus else 0,
        cpus_per_task=args.cpus_per_task,
        mem_gb=args.mem_per_gpu * args.ngpus,
        slurm_partition=args.partition,
        slurm_signal_delay_s=120,
        **kwargs,
    )
    submitted = executor.submit(job)
    print(f"Submitted job {submitted.job_id}; logs in {args.job_dir}")
    return submitted
