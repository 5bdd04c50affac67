"""The experiment scripts and submitit runners, executed on a real one-node Slurm cluster.

`tools/slurm_local.sh` starts a cluster under a temporary folder; where Slurm is missing it installs
Debian's Slurm and munge, which the tests allow only with VIDEOMAMBA_TEST_INSTALL_SLURM=1 (`make test`
sets it). Each test submits a real script from the repository through `sbatch`, with the overrides
the scripts document (environment variables for data and output, extra flags appended last) and
sbatch options that fit the jobs on this node (1 task, no GPU). Skipped, with the reason, where
Slurm is absent and may not or cannot be installed. The dry-check of every script lives at the end
and needs no cluster.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
SLURM_LOCAL = REPO / "tools" / "slurm_local.sh"
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL"}
# sbatch options override the scripts' #SBATCH lines (8 GPUs per node) to fit this 2-CPU node.
ONE_TASK = ["--nodes=1", "--ntasks=1", "--ntasks-per-node=1", "--gres=none", "--cpus-per-task=1"]
TWO_TASKS = ["--nodes=1", "--ntasks=2", "--ntasks-per-node=2", "--gres=none", "--cpus-per-task=1"]
TINY_IMAGE = [
    "--model-kwargs", '{"depth": 2, "embed_dim": 32}', "--input-size", "32", "--batch-size", "4", "--device", "cpu",
    "--no_amp", "--num_workers", "0", "--warmup-epochs", "0",
]  # fmt: skip
TINY_IMAGE_FLAGS = [*TINY_IMAGE, "--epochs", "1"]


# Installing system packages is opt-in: `make test` sets it, a bare `pytest` never runs apt-get.
INSTALL_OPT_IN = "VIDEOMAMBA_TEST_INSTALL_SLURM"


def _cannot_run_slurm() -> str | None:
    if not sys.platform.startswith("linux"):
        return "Slurm tests need Linux"
    if all(shutil.which(b) for b in ("slurmctld", "slurmd", "sbatch", "munged")):
        return None
    if os.environ.get(INSTALL_OPT_IN) != "1":
        return f"Slurm is not installed; {INSTALL_OPT_IN}=1 lets the tests install it with apt-get (make test sets it)"
    if not shutil.which("apt-get"):
        return "Slurm is not installed and this machine has no apt-get to install it"
    if os.geteuid() != 0 and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode != 0:
        return "Slurm is not installed and installing Debian packages needs root (or passwordless sudo)"
    return None


@dataclass
class Cluster:
    env: dict[str, str]
    folder: Path

    def run(self, *command: str, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=60, **kwargs)

    def sbatch(self, script: Path, *args: str, options: list[str], env: dict[str, str] | None = None) -> str:
        """Submit `script` from the repository root; returns the job id. Output goes to logs/<id>.out."""
        logs = self.folder / "logs"
        logs.mkdir(exist_ok=True)
        command = ["sbatch", "--parsable", f"--output={logs}/%j.out", f"--chdir={REPO}", *options, str(script), *args]
        proc = subprocess.run(command, env={**self.env, **(env or {})}, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f"sbatch failed: {proc.stderr}"
        return proc.stdout.strip().split(";")[0]

    def state(self, job_id: str) -> str:
        out = self.run("scontrol", "show", "job", "-o", job_id).stdout
        fields = dict(f.split("=", 1) for f in out.split() if "=" in f)
        return fields.get("JobState", "UNKNOWN")

    def wait(self, job_id: str, timeout: float = 240.0, until: set[str] = TERMINAL) -> str:
        """Poll scontrol (sbatch --wait polls every 10 s); fail with the job's output on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.state(job_id)
            if state in until:
                return state
            time.sleep(0.5)
        self.run("scancel", job_id)
        pytest.fail(f"job {job_id} still {self.state(job_id)} after {timeout} s:\n{self.output(job_id)[-3000:]}")

    def start_requeued(self, job_id: str, timeout: float = 60.0) -> None:
        """A requeued job pends two minutes (Reason=BeginTime) before it is eligible again. Make it
        eligible now, again while it still pends: an update made while the requeue is completing
        can be overwritten by it."""
        deadline = time.monotonic() + timeout
        while self.state(job_id) in ("PENDING", "COMPLETING", "REQUEUED", "FAILED", "CANCELLED"):
            assert time.monotonic() < deadline, f"requeued job {job_id} never started"
            if self.state(job_id) == "PENDING":
                self.run("scontrol", "update", f"JobId={job_id}", "StartTime=now")
            time.sleep(1.0)

    def output(self, job_id: str) -> str:
        path = self.folder / "logs" / f"{job_id}.out"
        return path.read_text(errors="replace") if path.exists() else ""

    def assert_completed(self, job_id: str, timeout: float = 240.0) -> str:
        state = self.wait(job_id, timeout)
        out = self.output(job_id)
        assert state == "COMPLETED", f"job {job_id} ended {state}:\n{out[-4000:]}"
        return out


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Cluster:
    reason = _cannot_run_slurm()
    if reason:
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("slurm")
    proc = subprocess.run([str(SLURM_LOCAL), "up", str(folder)], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        if not shutil.which("slurmctld"):
            pytest.skip(f"could not install Slurm: {proc.stderr.strip()[-300:]}")
        pytest.fail(f"tools/slurm_local.sh up failed:\n{proc.stdout}\n{proc.stderr}")
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONUNBUFFERED": "1"}
    for line in proc.stdout.splitlines():
        if line.startswith("export "):
            key, value = line[len("export ") :].split("=", 1)
            env[key] = value.replace("$PATH", os.environ.get("PATH", ""))
    yield Cluster(env, folder)
    subprocess.run([str(SLURM_LOCAL), "down", str(folder)], capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory) -> Path:
    """A 3-class ImageNet-style tree: train/ and val/ images plus meta/{train,val}.txt lists."""
    root = tmp_path_factory.mktemp("imagenet")
    (root / "meta").mkdir()
    for split, count in (("train", 8), ("val", 2)):
        lines = []
        for label in range(3):
            for i in range(count):
                rel = f"n{label:08d}/{split}_{i}.png"
                (root / split / rel).parent.mkdir(parents=True, exist_ok=True)
                pixels = np.random.default_rng(label * 100 + i).normal(60 + 70 * label, 20, (36, 36, 3))
                Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / split / rel)
                lines.append(f"{rel} {label}")
        (root / "meta" / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def _epochs(output_dir: Path) -> list[int]:
    log = output_dir / "log.txt"
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.exists() else []
    return [r["epoch"] for r in records if not r.get("final")]  # the final record (video_sm) has no epoch


def _assert_run_outputs(output_dir: Path, checkpoint: str, epochs: list[int]) -> None:
    assert _epochs(output_dir) == epochs, (
        (output_dir / "log.txt").read_text() if (output_dir / "log.txt").exists() else ""
    )
    assert (output_dir / checkpoint).is_file()
    assert list(output_dir.rglob("events.out.tfevents.*")), "no TensorBoard events"


IMAGE_SCRIPT = REPO / "videomamba/image_sm/exp/videomamba_tiny/run224.sh"


@pytest.mark.slurm
def test_image_sm_script_runs_under_sbatch(cluster, imagenet, tmp_path):
    out_dir = tmp_path / "out"
    job = cluster.sbatch(IMAGE_SCRIPT, *TINY_IMAGE_FLAGS, options=ONE_TASK,
                         env=dict(IMAGENET_ROOT=str(imagenet), OUTPUT_DIR=str(out_dir)))  # fmt: skip
    log = cluster.assert_completed(job)
    assert "run_with" not in log and "-m videomamba.image_sm.main" in log  # the launcher ran the entry point itself
    _assert_run_outputs(out_dir, "checkpoint-latest.pth", [0])


@pytest.mark.slurm
def test_two_tasks_train_together_from_slurm_variables(cluster, imagenet, tmp_path):
    out_dir = tmp_path / "out"
    job = cluster.sbatch(IMAGE_SCRIPT, *TINY_IMAGE_FLAGS, options=TWO_TASKS,
                         env=dict(IMAGENET_ROOT=str(imagenet), OUTPUT_DIR=str(out_dir)))  # fmt: skip
    log = cluster.assert_completed(job)
    assert "+ srun" in log  # the launcher used srun inside the allocation
    for rank in (0, 1):
        assert f"distributed init (slurm, gloo): rank {rank}/2" in log, log[-3000:]
    _assert_run_outputs(out_dir, "checkpoint-latest.pth", [0])


def _submitit_job(cluster: Cluster, runner: str, args: list[str], out_dir: Path) -> str:
    """Submit through a task's submitit runner on the cluster; returns the Slurm job id."""
    slurm = ["--cluster", "slurm", "--partition", "debug", "--nodes", "1", "--ngpus", "1", "--cpus_per_task", "1",
             "--mem_per_gpu", "1", "--timeout", "10"]  # fmt: skip
    command = [sys.executable, "-m", runner, *args, "--output_dir", str(out_dir), *slurm]
    proc = subprocess.run(command, cwd=REPO, env=cluster.env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.split("Submitted job ")[1].split(";")[0].split()[0]


def _submitit_logs(out_dir: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted((out_dir / "submitit").glob("*_log.*")))


def _submitit_result(out_dir: Path, job_id: str):
    import submitit

    job = submitit.SlurmJob(folder=out_dir / "submitit", job_id=job_id)
    return job.result()


@pytest.mark.slurm
def test_image_sm_submitit_result_and_requeue_resume(cluster, imagenet, tmp_path):
    out_dir, epochs = tmp_path / "out", 60
    flags = [*TINY_IMAGE, "--epochs", str(epochs), "--data-set", "IMNET", "--model", "videomamba_tiny",
             "--root_dir_train", str(imagenet / "train"), "--meta_file_train", str(imagenet / "meta/train.txt"),
             "--root_dir_val", str(imagenet / "val"), "--meta_file_val", str(imagenet / "meta/val.txt")]  # fmt: skip
    job = _submitit_job(cluster, "videomamba.image_sm.run_with_submitit", flags, out_dir)
    # Once a checkpoint exists, kill the training process (SIGKILL, as the OOM killer or a node failure
    # would: nothing more gets saved) and requeue the job: Slurm runs it again under the same id, and
    # the run must go on from its last checkpoint. (Slurm's own signals land only after KillWait:
    # submitit ignores SIGTERM, and these epochs take ~40 ms.)
    checkpoint = out_dir / "checkpoint-latest.pth"  # written atomically (rename), so it exists only when complete
    deadline = time.monotonic() + 240
    while not checkpoint.exists() and time.monotonic() < deadline:
        assert cluster.state(job) not in TERMINAL, _submitit_logs(out_dir)
        time.sleep(0.05)
    assert checkpoint.exists(), "the job never wrote a checkpoint"
    subprocess.run(["pkill", "-KILL", "-f", f"submitit.core._submit {out_dir / 'submitit'}"], check=True)
    killed_state = cluster.wait(job, timeout=60)
    last_saved = torch.load(checkpoint, map_location="cpu", weights_only=False)["epoch"]
    assert killed_state != "COMPLETED" and last_saved < epochs - 1, "the job finished before it was killed"
    assert cluster.run("scontrol", "requeue", job).returncode == 0
    cluster.start_requeued(job)
    state = cluster.wait(job, until={"COMPLETED", "FAILED", "CANCELLED"})
    logs = _submitit_logs(out_dir)
    assert state == "COMPLETED", logs[-4000:]
    resumed_at = [int(line.rsplit(" ", 1)[1]) for line in logs.splitlines() if "; starting at epoch " in line]
    assert resumed_at, f"the requeued job did not resume from a checkpoint:\n{logs[-4000:]}"
    assert resumed_at[-1] == last_saved + 1, (resumed_at, last_saved)
    assert _epochs(out_dir) == list(range(epochs)), "an epoch was lost or logged twice across the requeue"
    result = _submitit_result(out_dir, job)
    assert isinstance(result, dict) and result.get("epoch") == epochs - 1, result  # main() returns the last record


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """The demo's synthetic 4-class videos (32 px, 8 frames): train/val/test.csv lists and videos/."""
    pytest.importorskip("av")
    from videomamba.video_sm.demo import write_dataset

    return write_dataset(tmp_path_factory.mktemp("videos"), {"train": 2, "val": 1, "test": 1}, size=32, num_frames=8)


TINY_VIDEO = [
    "--finetune", "", "--model_kwargs", '{"depth": 2, "embed_dim": 32}', "--nb_classes", "4", "--num_frames", "4",
    "--input_size", "32", "--short_side_size", "32", "--batch_size", "4", "--num_sample", "1", "--epochs", "1",
    "--warmup_epochs", "0", "--test_num_segment", "2", "--test_num_crop", "1", "--device", "cpu", "--no_amp",
    "--num_workers", "0", "--video_reader", "pyav",
]  # fmt: skip


@pytest.mark.slurm
def test_video_sm_script_runs_under_sbatch(cluster, videos, tmp_path):
    out_dir = tmp_path / "out"
    script = REPO / "videomamba/video_sm/exp/k400/videomamba_tiny/run_f8x224.sh"
    job = cluster.sbatch(script, *TINY_VIDEO, options=ONE_TASK,
                         env=dict(DATA_PATH=str(videos), PREFIX=str(videos), OUTPUT_DIR=str(out_dir)))  # fmt: skip
    log = cluster.assert_completed(job)
    assert "-m videomamba.video_sm.run_class_finetuning" in log
    records = [json.loads(line) for line in (out_dir / "log.txt").read_text().splitlines()]
    assert records[0]["epoch"] == 0 and "train_loss" in records[0]
    assert "final_top1" in records[-1]  # the multi-view test ran after training
    _assert_run_outputs(out_dir, "checkpoint-latest.pth", [0])


@pytest.mark.slurm
def test_video_sm_submitit_runner_returns_the_result(cluster, videos, tmp_path):
    out_dir = tmp_path / "out"
    flags = ["--task", "finetune", "--model", "videomamba_tiny", "--data_path", str(videos), "--prefix", str(videos),
             "--data_set", "Kinetics_sparse", "--split", ",", *TINY_VIDEO]  # fmt: skip
    job = _submitit_job(cluster, "videomamba.video_sm.run_with_submitit", flags, out_dir)
    assert cluster.wait(job) == "COMPLETED", _submitit_logs(out_dir)[-4000:]
    result = _submitit_result(out_dir, job)
    assert result["epoch"] == 0 and 0.0 <= result["final_top1"] <= 100.0, result
    assert (out_dir / "checkpoint-latest.pth").is_file()


@pytest.mark.slurm
def test_video_mm_script_runs_under_sbatch(cluster, tmp_path):
    from videomamba.video_mm.synthetic import make_synthetic_data, tiny_overrides

    data = tmp_path / "data"
    make_synthetic_data(data)
    out_dir = tmp_path / "out"
    script = REPO / "videomamba/video_mm/exp_pt/videomamba_middle_5m/run.sh"
    overrides = [*tiny_overrides(data), "scheduler.epochs", "1", "log_freq", "1000"]
    job = cluster.sbatch(script, *overrides, options=ONE_TASK, env=dict(OUTPUT_DIR=str(out_dir)))
    log = cluster.assert_completed(job, timeout=400)
    assert "-m videomamba.video_mm.tasks.pretrain" in log
    _assert_run_outputs(out_dir, "checkpoint-latest.pth", [0])
    assert (out_dir / "config.yaml").is_file()


def test_installing_slurm_is_opt_in(monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/apt-get" if name == "apt-get" else None)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.delenv(INSTALL_OPT_IN, raising=False)
    assert f"{INSTALL_OPT_IN}=1" in _cannot_run_slurm()
    monkeypatch.setenv(INSTALL_OPT_IN, "1")
    assert _cannot_run_slurm() is None  # root with apt-get: the fixture may install


# ------------------------------------------------------------------------- dry-check (no Slurm)


def _checker():
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_exp_scripts", REPO / "tools" / "check_exp_scripts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_experiment_script_passes_the_dry_check():
    checker = _checker()
    scripts = checker.find_scripts()
    assert len(scripts) >= 60  # image_sm, video_sm and video_mm recipes
    failures = {str(s.relative_to(REPO)): checker.check_script(s) for s in scripts}
    assert not {k: v for k, v in failures.items() if v}


@pytest.mark.parametrize(
    "script,old,new,problem",
    [
        ("videomamba/image_sm/exp/videomamba_tiny/run224.sh", "--model videomamba_tiny", "--model videomamba_tinyy",
         "unknown model; did you mean videomamba_tiny"),
        ("videomamba/image_sm/exp/videomamba_small/run448.sh", "--model videomamba_small", "--model videomamba_tiny",
         "is a small checkpoint but the model is videomamba_tiny"),
        ("videomamba/video_sm/exp/k400/videomamba_tiny/run_f8x224.sh", "--model videomamba_tiny",
         "--model videomamba_smal", "unknown model; did you mean videomamba_small"),
        ("videomamba/video_sm/exp/k400/videomamba_tiny/run_f8x224.sh", 'DATA_SET="${DATA_SET-Kinetics_sparse}"',
         'DATA_SET="${DATA_SET-Kinetics_sprase}"', "invalid choice"),
        ("videomamba/video_mm/exp_zs/msrvtt/run.sh", '"$@"', 'model.vision_encoder.name videomamba_midle "$@"',
         "not a registered model"),
        ("videomamba/image_sm/exp/videomamba_tiny/run224.sh", "videomamba_launch videomamba.image_sm.main",
         "videomamba_launch videomamba.image_sm.mian", "entry point videomamba.image_sm.mian does not exist"),
    ],
)  # fmt: skip
def test_dry_check_catches_a_wrong_script(tmp_path, script, old, new, problem):
    text = (REPO / script).read_text()
    assert old in text
    broken = tmp_path / Path(script).name
    broken.write_text(text.replace(old, new))
    problems = _checker().check_script(broken)
    assert any(problem in p for p in problems), problems
