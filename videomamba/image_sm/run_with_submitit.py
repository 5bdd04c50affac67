"""Submit main.py (training, fine-tuning or self-distillation) through submitit.

Takes every main.py flag plus the submission flags of `videomamba.core.submission`.
``--output_dir`` is honoured (the original replaced it with the job folder); without it, the job
folder is the output folder. On a timeout or preemption the job is requeued and resumes from
``<output_dir>/checkpoint-latest.pth``. ``--cluster local`` (or ``debug``) runs the job on this machine
with submitit's local executor, which is how the tests drive it.
"""

import argparse
from typing import Any

from videomamba.core.submission import SubmititJob, add_submitit_arguments
from videomamba.core.submission import submit as submit_job
from videomamba.image_sm.main import get_args_parser

__all__ = ["Trainer", "get_submitit_parser", "submit"]


def get_submitit_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser("Submitit for VideoMamba image_sm", parents=[get_args_parser()])
    return add_submitit_arguments(parser)


class Trainer(SubmititJob):
    """The picklable job running image_sm's main(args)."""

    def __init__(self, args: argparse.Namespace):
        super().__init__(args, entry="videomamba.image_sm.main:main", latest_checkpoint="checkpoint-latest.pth")

    def requeued(self) -> "Trainer":
        return Trainer(self.args)


def submit(args: argparse.Namespace) -> Any:
    """Configure the executor from the flags and submit one job; returns the submitit job."""
    return submit_job(args, Trainer(args), name="videomamba_image", default_job_dir="output/image_sm/%j")


def cli(argv: list[str] | None = None) -> int:
    args = get_submitit_parser().parse_args(argv)
    job = submit(args)
    if args.wait:
        print(job.result())
    return 0


if __name__ == "__main__":
    # Submit through the importable module so the pickled Trainer is found by reference in the job.
    from videomamba.core.cli import run_cli
    from videomamba.image_sm import run_with_submitit

    raise SystemExit(run_cli(run_with_submitit.cli))
