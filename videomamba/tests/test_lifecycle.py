"""The training lifecycle's contract on a toy task: kills at every file operation of a save, exact
resume, damaged/missing resume points, torn logs, full disk, non-finite weights, TensorBoard purge."""

from __future__ import annotations

import errno
import json
import os
import random
import socket

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler

from videomamba.core import checkpoint as checkpoint_io
from videomamba.core.checkpoint import BEST, LATEST, ResumeError, WriteError
from videomamba.core.cli import NonFiniteLossError
from videomamba.core.distributed import get_rank, seed_everything, wrap_ddp
from videomamba.core.lifecycle import Best, Lifecycle, TrainingState
from videomamba.core.logs import read_log
from videomamba.core.optim import GradientStep

EPOCHS = 4
# Validation losses (by epoch) that make epochs 0, 1 and 3 the best ones, so best-copies come and go.
VAL_LOSS = [3.0, 2.0, 2.5, 1.0]


class SimulatedKill(BaseException):
    """Raised by the file-operation hook: nothing of the saving code cleans up, as after a SIGKILL."""


class NoisyData(Dataset):
    """Every item draws from Python, NumPy and torch random numbers, so each stream must be restored."""

    def __len__(self) -> int:
        return 12

    def __getitem__(self, index: int):
        x = torch.full((4,), float(index)) + torch.randn(4) + float(np.random.rand()) + random.random()
        return x, torch.tensor(index % 2)


def build(out, epochs=EPOCHS, **options):
    seed_everything(0, get_rank())
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.3), nn.Linear(8, 2))
    trained = wrap_ddp(model, torch.device("cpu"))  # the model itself without a process group
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1, gamma=0.9)
    data = NoisyData()
    loader = DataLoader(data, batch_size=4, sampler=RandomSampler(data))
    state = TrainingState(model, optimizer, scheduler, GradientStep("cpu", fp16_scaling=False))
    life = Lifecycle(out, epochs, state, save_freq=2, best=Best("val_loss", "min", "best_val_loss"), **options)
    life.steps_per_epoch = len(loader)

    def train_epoch(epoch: int) -> dict[str, float]:
        total = 0.0
        for step, (x, y) in enumerate(loader):
            loss = nn.functional.cross_entropy(trained(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            life.log.log_step(epoch * len(loader) + step, loss=loss.item())
            total += float(loss)
        scheduler.step()
        return {"loss": total / len(loader)}

    def evaluate(epoch: int) -> dict[str, float]:
        return {"val_loss": VAL_LOSS[epoch]}

    return life, model, train_epoch, evaluate


def run(out, epochs=EPOCHS, **options):
    life, model, train_epoch, evaluate = build(out, epochs, **options)
    life.resume()
    life.fit(train_epoch, evaluate)
    life.finish(lambda: {"final_score": float(model[0].weight.sum())})
    return model


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "run"
    model = run(out)
    return out, {k: v.clone() for k, v in model.state_dict().items()}


def assert_consistent(out, reference):
    """Every invariant of a finished run folder, compared with the uninterrupted run."""
    ref_out, ref_weights = reference
    records = read_log(out / "log.txt")
    assert [r.get("epoch") for r in records if not r.get("final")] == list(range(EPOCHS))
    assert sum(1 for r in records if r.get("final")) == 1 and records[-1].get("final")
    assert records == read_log(ref_out / "log.txt")
    assert not list(out.glob(".*tmp*")), "temp files left behind"
    latest = torch.load(out / LATEST, weights_only=True)
    for name, tensor in ref_weights.items():
        assert torch.equal(latest["model"][name], tensor), f"{name} differs from the uninterrupted run"
    best_epoch = min(range(EPOCHS), key=lambda e: VAL_LOSS[e])
    best = torch.load(out / BEST, weights_only=True)
    assert best["epoch"] == best_epoch
    ref_best = torch.load(ref_out / BEST, weights_only=True)
    assert all(torch.equal(best["model"][k], ref_best["model"][k]) for k in ref_best["model"])
    for epoch in (1, 3):  # save_freq 2, and the last epoch
        assert torch.load(out / f"checkpoint-{epoch}.pth", weights_only=True)["epoch"] == epoch


def count_file_operations(tmp_path) -> int:
    seen = []
    checkpoint_io.file_operation_hook = seen.append
    try:
        run(tmp_path / "count")
    finally:
        checkpoint_io.file_operation_hook = None
    return len(seen)


def kill_at(n: int):
    calls = iter(range(1, 10**6))

    def hook(label: str) -> None:
        if next(calls) == n:
            raise SimulatedKill(label)

    return hook


def killed_run(out, n: int) -> None:
    """run(out), killed at its n-th file operation."""
    checkpoint_io.file_operation_hook = kill_at(n)
    try:
        with pytest.raises(SimulatedKill):
            run(out)
    finally:
        checkpoint_io.file_operation_hook = None


def test_kill_between_every_pair_of_file_operations_leaves_a_consistent_run(tmp_path, reference):
    operations = count_file_operations(tmp_path)
    assert operations >= 4 * EPOCHS
    for n in range(1, operations + 1):
        out = tmp_path / f"kill{n}"
        killed_run(out, n)
        run(out)
        assert_consistent(out, reference)


def test_repeated_kills_resume_to_the_same_weights(tmp_path, reference):
    out = tmp_path / "run"
    for n in (3, 5, 2, 7):  # each attempt dies at its n-th file operation
        killed_run(out, n)
    run(out)
    assert_consistent(out, reference)


def test_resume_restores_every_random_stream(tmp_path, reference):
    out = tmp_path / "run"
    run(out, epochs=2)  # stops after epoch 1 (a shorter schedule would change the lr: StepLR does not)
    checkpoint = torch.load(out / LATEST, weights_only=True)
    assert len(checkpoint["rng_states"]) == 1 and checkpoint["lr_scheduler"]["last_epoch"] == 2
    out2 = tmp_path / "run2"
    run(out2, epochs=2)
    # Scrambling the generators before resuming must not matter: the checkpoint's states win.
    life, model, train_epoch, evaluate = build(out2)
    torch.manual_seed(123), np.random.seed(123), random.seed(123)
    assert life.resume() == 2
    life.fit(train_epoch, evaluate)
    _, ref_weights = reference
    assert all(torch.equal(model.state_dict()[k], v) for k, v in ref_weights.items())


def test_missing_or_damaged_latest_falls_back_to_the_newest_loadable(tmp_path):
    out = tmp_path / "run"
    run(out, epochs=EPOCHS)
    (out / LATEST).write_bytes(b"torn")
    life, *_ = build(out, epochs=EPOCHS + 1)
    with pytest.warns(UserWarning, match=r"skipped checkpoint-latest.pth \(.*\); resuming from checkpoint-3.pth"):
        assert life.resume() == 4
    (out / LATEST).unlink()
    for name in ("checkpoint-3.pth", BEST):
        (out / name).write_bytes(b"")
    life, *_ = build(out, epochs=EPOCHS + 1)
    with pytest.warns(UserWarning, match=r"checkpoint-latest.pth \(missing\).*resuming from checkpoint-1.pth"):
        assert life.resume() == 2
    assert [r["epoch"] for r in read_log(out / "log.txt")] == [0, 1]  # later records dropped, not wiped


def test_a_folder_with_history_and_nothing_loadable_is_never_wiped(tmp_path):
    out = tmp_path / "run"
    run(out, epochs=1)
    for path in out.glob("checkpoint*.pth"):
        path.unlink()
    life, *_ = build(out)
    with pytest.raises(ResumeError, match=r"holds a previous run but no loadable checkpoint.*--no_auto_resume"):
        life.resume()
    assert read_log(out / "log.txt")  # untouched
    life, *_ = build(out, auto_resume=False)
    assert life.resume() == 0 and (out / "log.txt.old").is_file()


def test_original_release_names_are_resumed(tmp_path):
    out = tmp_path / "run"
    run(out, epochs=2)
    (out / LATEST).rename(out / "checkpoint.pth")
    life, *_ = build(out)
    assert life.resume() == 2 and life.resumed_from == out / "checkpoint.pth"


def test_torn_and_non_utf8_log_lines_are_dropped_with_a_warning(tmp_path, reference):
    out = tmp_path / "run"
    run(out, epochs=2)
    records = [r for r in read_log(out / "log.txt") if not r.get("final")]
    text = "".join(json.dumps(r) + "\n" for r in records).encode()
    (out / "log.txt").write_bytes(b"\xff\xfe not text\n" + text + b'{"epoch": 2, "train_lo')
    with pytest.warns(UserWarning, match=r"log.txt:1: not UTF-8 text"):
        run(out)
    assert_consistent(out, reference)


def test_full_disk_is_one_clear_line_and_keeps_the_previous_files(tmp_path, monkeypatch):
    out = tmp_path / "run"
    run(out, epochs=1)
    before = (out / LATEST).read_bytes()

    def no_space(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_io._RecordingWriter, "write", no_space)
    with pytest.raises(WriteError) as failure:
        run(out, epochs=2)
    message = str(failure.value)
    assert "\n" not in message and str(out / LATEST) in message
    assert "No space left on device" in message and "MiB free" in message
    assert (out / LATEST).read_bytes() == before and not list(out.glob(".*tmp*"))
    monkeypatch.undo()

    import videomamba.core.logs as logs

    def failing_open(path, mode="r", *args, **kwargs):
        if "a" in mode:
            raise OSError(errno.ENOSPC, "No space left on device")
        return open(path, mode, *args, **kwargs)

    monkeypatch.setattr(logs, "open", failing_open, raising=False)
    with pytest.raises(WriteError, match=r"could not write .*log.txt: No space left on device; .* MiB free"):
        run(out, epochs=2)
    monkeypatch.undo()
    run(out, epochs=2)  # the log line lost to the full disk is restored from the checkpoint
    assert [r.get("epoch") for r in read_log(out / "log.txt")] == [0, 1, None]


def test_non_finite_weights_stop_before_anything_is_written(tmp_path):
    out = tmp_path / "run"
    run(out, epochs=1)
    before = (out / LATEST).read_bytes()
    life, model, train_epoch, evaluate = build(out, epochs=2)
    life.resume()

    def poisoned(epoch):
        stats = train_epoch(epoch)
        with torch.no_grad():
            model[2].bias.fill_(float("nan"))
        return stats

    with pytest.raises(NonFiniteLossError, match=r"non-finite weights \(2.bias\) after epoch 1 \(step 2, its last\)"):
        life.fit(poisoned, evaluate)
    assert (out / LATEST).read_bytes() == before
    assert [r.get("epoch") for r in read_log(out / "log.txt")] == [0]


def test_tensorboard_scalars_of_redone_steps_are_replaced(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    lives = []

    def flush_then_kill(label):
        if label.startswith("write .checkpoint-latest") and len(lives) == 0:
            lives.append(label)
            raise SimulatedKill(label)

    run(out, epochs=1)
    checkpoint_io.file_operation_hook = flush_then_kill
    life, model, train_epoch, evaluate = build(out, epochs=2)
    life.resume()
    try:
        with pytest.raises(SimulatedKill):
            life.fit(train_epoch, evaluate)  # fit closes (flushes) its writers on the way out
    finally:
        checkpoint_io.file_operation_hook = None
    run(out, epochs=2)
    events = EventAccumulator(str(out / "steps"))
    events.Reload()
    steps = [event.step for event in events.Scalars("step/loss")]
    assert steps == list(range(6))
    epochs = EventAccumulator(str(out))
    epochs.Reload()
    assert [event.step for event in epochs.Scalars("train_loss")] == [0, 1]


def test_progress_lines_come_at_least_every_few_seconds(monkeypatch, capsys):
    from videomamba.core import metrics

    monkeypatch.setattr(metrics, "PROGRESS_SECONDS", 0.0)  # every step is "slow"
    list(metrics.MetricLogger().log_every(range(5), print_freq=1000, header="Epoch: [0]"))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Epoch: [0]  [")]
    assert len(lines) == 5 and all("eta:" in line and "rate:" in line for line in lines)


def _ddp_worker(rank: int, world: int, port: int, runs: list[tuple[str, int]]) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        for out, epochs in runs:
            run(out, epochs=epochs)
    finally:
        dist.destroy_process_group()


def _spawn_two(*runs: tuple[str, int]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    torch.multiprocessing.spawn(_ddp_worker, args=(2, port, list(runs)), nprocs=2)


def test_two_process_gloo_resume_is_bitwise_exact(tmp_path):
    # The whole run, and one that stops after epoch 1 (a fresh process pair resumes it to the end).
    _spawn_two((str(tmp_path / "whole"), EPOCHS), (str(tmp_path / "resumed"), 2))
    _spawn_two((str(tmp_path / "resumed"), EPOCHS))
    whole = torch.load(tmp_path / "whole" / LATEST, weights_only=True)
    resumed = torch.load(tmp_path / "resumed" / LATEST, weights_only=True)
    assert len(resumed["rng_states"]) == 2  # one per rank
    assert not torch.equal(resumed["rng_states"][0]["torch"], resumed["rng_states"][1]["torch"])
    assert all(torch.equal(resumed["model"][k], v) for k, v in whole["model"].items())


def test_every_runner_accepts_both_flag_spellings_and_unscale_lr():
    from videomamba.image_sm.main import get_args_parser as image_parser
    from videomamba.video_sm.run_class_finetuning import get_args_parser as finetune_parser
    from videomamba.video_sm.run_videomamba_pretraining import get_args_parser as pretrain_parser

    for build_parser in (image_parser, finetune_parser, pretrain_parser):
        parser = build_parser(add_help=True)
        for spelling in (["--batch-size", "3", "--unscale-lr"], ["--batch_size", "3", "--unscale_lr"]):
            args = parser.parse_args([*spelling, "--output-dir", "x", "--no_auto_resume"])
            assert args.batch_size == 3 and args.unscale_lr and args.output_dir == "x" and not args.auto_resume


def test_precision_is_said_and_no_amp_wins(capsys):
    from videomamba.core.cli import resolve_precision, scale_lr

    assert resolve_precision(torch.device("cpu"), amp=True, bf16=False)[:2] == (False, torch.float32)
    assert resolve_precision(torch.device("cpu"), amp=True, bf16=True)[:2] == (True, torch.bfloat16)
    assert resolve_precision(torch.device("cpu"), amp=False, bf16=True)[2] == "fp32"
    out = capsys.readouterr().out
    assert "Precision: fp32 on cpu" in out and "--no_amp wins" in out
    assert scale_lr(1e-3, 16, 256, unscale=False) == 16 / 256
    assert "pass --unscale_lr" in capsys.readouterr().out
    assert scale_lr(1e-3, 16, 256, unscale=True) == 1.0


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 1 MiB tmpfs (needs root and mount permission; skipped otherwise)."""
    import subprocess

    folder = tmp_path / "tmpfs"
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def test_a_really_full_disk_is_one_clear_line(tiny_tmpfs):
    from videomamba.core.checkpoint import atomic_save

    atomic_save({"w": torch.zeros(10)}, tiny_tmpfs / LATEST)
    with pytest.raises(WriteError, match=r"could not write .*checkpoint-latest.pth: No space left on device; .* free"):
        atomic_save({"w": torch.zeros(1_000_000)}, tiny_tmpfs / LATEST)  # 4 MB
    assert torch.load(tiny_tmpfs / LATEST, weights_only=True)["w"].shape == (10,)
    assert [p.name for p in tiny_tmpfs.iterdir()] == [LATEST]
