"""Submit video_sm fine-tuning (default) or masked pretraining (``--task pretrain``) through submitit.

Takes the chosen runner's flags plus the submission flags of `videomamba.core.submission`.
``--output_dir`` is honoured; without it, the job folder is the output folder. On a timeout or
preemption the job is requeued and resumes from ``<output_dir>/checkpoint-latest.pth``.
``--cluster local`` (or ``debug``) runs the job on this machine with submitit's local executor.

    python -m videomamba.video_sm.run_with_submitit --nodes 2 --ngpus 8 --model videomamba_tiny ...
    python -m videomamba.video_sm.run_with_submitit --task pretrain --model videomamba_middle_pretrain ...
"""

import argparse
import sys
from typing import Any

from videomamba.core.submission import SubmititJob, add_submitit_arguments, submit

__all__ = ["TASKS", "cli", "get_submitit_parser", "submit_task"]

# task -> runner module (each writes checkpoint-latest.pth into --output_dir)
TASKS = {
    "finetune": "videomamba.video_sm.run_class_finetuning",
    "regression": "videomamba.video_sm.run_class_finetuning",
    "pretrain": "videomamba.video_sm.run_videomamba_pretraining",
}


def get_submitit_parser(task: str = "finetune") -> argparse.ArgumentParser:
    """The runner's flags for `task` plus the submission flags."""
    import importlib

    runner = importlib.import_module(TASKS[task])
    parser = argparse.ArgumentParser(f"Submitit for VideoMamba video_sm ({task})", parents=[runner.get_args_parser()])
    parser.add_argument("--task", default=task, choices=sorted(TASKS), help="which runner to submit")
    if task == "regression":
        parser.set_defaults(regression=True, mixup=0.0, cutmix=0.0, smoothing=0.0, nb_classes=1)
    return add_submitit_arguments(parser)


def submit_task(args: argparse.Namespace) -> Any:
    """Submit the runner of args.task; returns the submitit job."""
    job = SubmititJob(args, entry=f"{TASKS[args.task]}:main", latest_checkpoint="checkpoint-latest.pth")
    return submit(args, job, name=f"videomamba_video_{args.task}", default_job_dir=f"output/video_sm/{args.task}/%j")


def cli(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # The task decides which runner's flags exist, so it is read first.
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--task", default="finetune", choices=sorted(TASKS))
    known, _ = pre.parse_known_args(argv)
    args = get_submitit_parser(known.task).parse_args(argv)
    job = submit_task(args)
    if args.wait:
        print(job.result())
    return 0


if __name__ == "__main__":
    from videomamba.core.cli import run_cli

    raise SystemExit(run_cli(cli))
