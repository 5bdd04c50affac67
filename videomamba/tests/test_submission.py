"""core/submission: the submission flags, the executor parameters `submit` derives from them, and the
job's run and requeue steps, with submitit's executor and job environment replaced by recorders
(the real local executor and Slurm runs are in test_image_sm.py and test_slurm.py)."""

from __future__ import annotations

import argparse
import pickle

import pytest

from videomamba.core.submission import SubmititJob, add_submitit_arguments, submit

submitit = pytest.importorskip("submitit")  # the `slurm` extra


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--output_dir", default="")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--resume", default="")
    return add_submitit_arguments(parser).parse_args(argv)


def test_submission_flags_keep_the_original_defaults():
    args = vars(parse())
    assert {k: args[k] for k in ("ngpus", "nodes", "timeout", "partition", "cpus_per_task", "mem_per_gpu")} == {
        "ngpus": 8, "nodes": 2, "timeout": 2800, "partition": "video5", "cpus_per_task": 16, "mem_per_gpu": 100,
    }  # fmt: skip
    assert (args["job_dir"], args["comment"], args["use_volta32"], args["cluster"], args["wait"]) == (
        "", "", False, None, False,
    )  # fmt: skip


def test_an_unknown_cluster_is_refused(capsys):
    with pytest.raises(SystemExit):
        parse("--cluster", "pbs")
    assert "invalid choice: 'pbs'" in capsys.readouterr().err


class RecordingExecutor:
    """Stands in for submitit.AutoExecutor and keeps what `submit` gave it."""

    made: list[RecordingExecutor] = []

    def __init__(self, folder: str, cluster: str | None = None, slurm_max_num_timeout: int = 3):
        self.folder, self.cluster, self.max_timeouts = folder, cluster, slurm_max_num_timeout
        self.parameters: dict = {}
        self.submitted: list = []
        RecordingExecutor.made.append(self)

    def update_parameters(self, **parameters) -> None:
        self.parameters.update(parameters)

    def submit(self, job):
        self.submitted.append(job)
        return argparse.Namespace(job_id="42")


@pytest.fixture
def executor(monkeypatch):
    RecordingExecutor.made = []
    monkeypatch.setattr(submitit, "AutoExecutor", RecordingExecutor)
    return RecordingExecutor.made


def test_submit_on_cpu_asks_for_no_gpus_and_puts_the_job_folder_in_the_output(executor, tmp_path, capsys):
    out = tmp_path / "out"
    args = parse("--output_dir", str(out), "--device", "cpu", "--ngpus", "2", "--nodes", "1", "--mem_per_gpu", "10",
                 "--use_volta32", "--comment", "ablation", "--cluster", "slurm", "--timeout", "60")  # fmt: skip
    job = SubmititJob(args, "builtins:vars", "checkpoint-latest.pth")
    assert submit(args, job, name="videomamba_image", default_job_dir="unused/%j").job_id == "42"
    (made,) = executor
    assert args.job_dir == str(out / "submitit") and (out / "submitit").is_dir()
    assert (made.folder, made.cluster, made.max_timeouts, made.submitted) == (args.job_dir, "slurm", 30, [job])
    assert made.parameters == {
        "name": "videomamba_image", "timeout_min": 60, "nodes": 1, "tasks_per_node": 2, "gpus_per_node": 0,
        "cpus_per_task": 16, "mem_gb": 20, "slurm_partition": "video5", "slurm_signal_delay_s": 120,
        "slurm_constraint": "volta32gb", "slurm_comment": "ablation",
    }  # fmt: skip
    assert capsys.readouterr().out == f"Submitted job 42; logs in {out / 'submitit'}\n"


def test_submit_without_an_output_dir_uses_the_default_job_folder(executor, tmp_path):
    args = parse("--ngpus", "4")
    submit(args, SubmititJob(args, "builtins:vars", "x.pth"), name="n", default_job_dir=str(tmp_path / "jobs/%j"))
    (made,) = executor
    assert args.job_dir == str(tmp_path / "jobs/%j")  # submitit puts the job id in place of %j
    assert (tmp_path / "jobs").is_dir() and not (tmp_path / "jobs/%j").exists()
    assert (made.parameters["gpus_per_node"], made.parameters["tasks_per_node"], made.parameters["mem_gb"]) == (
        4, 4, 400,
    )  # fmt: skip
    assert "slurm_constraint" not in made.parameters and "slurm_comment" not in made.parameters


def test_an_explicit_job_dir_is_kept(executor, tmp_path):
    args = parse("--output_dir", str(tmp_path / "out"), "--job_dir", str(tmp_path / "elsewhere"))
    submit(args, SubmititJob(args, "builtins:vars", "x.pth"), name="n", default_job_dir="unused")
    assert executor[0].folder == str(tmp_path / "elsewhere") and (tmp_path / "elsewhere").is_dir()
    assert not (tmp_path / "out").exists()


class FakeJobEnvironment:
    job_id, global_rank, num_tasks = "77", 1, 4


class RecordingTorchEnvironment:
    exports: list[dict] = []

    def export(self, **kwargs):
        RecordingTorchEnvironment.exports.append(kwargs)
        return self


def test_the_job_exports_the_ranks_and_runs_the_entry_point(monkeypatch, capsys):
    monkeypatch.setattr(submitit, "JobEnvironment", FakeJobEnvironment)
    monkeypatch.setattr(submitit.helpers, "TorchDistributedEnvironment", RecordingTorchEnvironment)
    RecordingTorchEnvironment.exports = []
    args = parse("--job_dir", "/jobs/%j")
    result = SubmititJob(args, "builtins:vars", "checkpoint-latest.pth")()  # the entry point gets args
    assert result is vars(args) and args.output_dir == "/jobs/77"  # no --output_dir: the job's folder
    assert RecordingTorchEnvironment.exports == [{"set_cuda_visible_devices": False}]
    assert capsys.readouterr().out == "Process group: 1/4, output in /jobs/77\n"
    args = parse("--job_dir", "/jobs/%j", "--output_dir", "/mine")
    SubmititJob(args, "builtins:vars", "checkpoint-latest.pth")()
    assert args.output_dir == "/mine"


def test_requeue_resumes_from_the_latest_checkpoint(tmp_path, capsys):
    args = parse("--output_dir", str(tmp_path))
    job = SubmititJob(args, "videomamba.image_sm.main:main", "checkpoint-latest.pth")
    again = job.checkpoint()
    assert isinstance(again, submitit.helpers.DelayedSubmission)
    assert args.resume == "" and "resume from scratch" in capsys.readouterr().out  # nothing saved yet
    (tmp_path / "checkpoint-latest.pth").write_bytes(b"saved")
    again = job.checkpoint()
    assert args.resume == str(tmp_path / "checkpoint-latest.pth")
    requeued = again.function
    assert isinstance(requeued, SubmititJob) and requeued is not job
    assert (requeued.args.resume, requeued.entry, requeued.latest_checkpoint) == (
        args.resume, "videomamba.image_sm.main:main", "checkpoint-latest.pth",
    )  # fmt: skip
    assert f"resume from {tmp_path / 'checkpoint-latest.pth'}" in capsys.readouterr().out


def test_requeue_uses_the_subclass_copy_and_the_job_pickles():
    class Pinned(SubmititJob):
        def requeued(self) -> Pinned:
            return Pinned(self.args, "pinned:entry", self.latest_checkpoint)

    args = parse("--resume", "old.pth")
    assert isinstance(Pinned(args, "a:b", "x.pth").checkpoint().function, Pinned)
    assert args.resume == "old.pth"  # no output folder: the resume flag is left as given
    copy = pickle.loads(pickle.dumps(SubmititJob(args, "a:b", "x.pth")))
    assert (copy.args, copy.entry, copy.latest_checkpoint) == (args, "a:b", "x.pth")
