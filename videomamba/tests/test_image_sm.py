"""image_sm end to end on CPU with synthetic images: data, sampler, training, resume, distillation,
distributed (torchrun, gloo), submitit (local executor), NaN guard, TensorBoard and the exp scripts."""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torchvision
from PIL import Image

import videomamba.image_sm.models  # noqa: F401  (registers the distillation variants)
from videomamba.core import checkpoint as checkpoint_io
from videomamba.core.logs import read_log
from videomamba.image_sm.datasets import (
    Cifar100,
    ImageFolderDataset,
    ImageListDataset,
    INatDataset,
    build_transform,
    read_meta_file,
)
from videomamba.image_sm.main import get_args_parser
from videomamba.image_sm.samplers import RASampler
from videomamba.tools import generate_tensorboard

REPO = Path(__file__).resolve().parents[2]
IMAGE_SM = REPO / "videomamba" / "image_sm"
MAIN, MAIN_DISTILL = "videomamba.image_sm.main", "videomamba.image_sm.main_distill"
TINY_MODEL = '{"depth": 2, "embed_dim": 32}'
TINY = ["--model", "videomamba_tiny", "--model-kwargs", TINY_MODEL, "--input-size", "32", "--batch-size", "4",
        "--device", "cpu", "--no_amp", "--num_workers", "0", "--warmup-epochs", "0", "--print_freq", "2"]  # fmt: skip
CLASSES = 3


def run_script(module: str, *args, expect_ok: bool = True, env: dict | None = None, launcher=None):
    """Run an entry point as users do (``python -m``, from the repository root); returns the finished process."""
    command = [*(launcher or [sys.executable]), "-m", module, *map(str, args)]
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, env=full_env)
    if expect_ok:
        assert proc.returncode == 0, f"{command} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


def _write_image(path: Path, value: int, size: int = 40) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    array = np.clip(rng.normal(value, 20, (size, size, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(array).save(path)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """train/ (8 per class) and val/ (2 per class) class folders, plus meta lists of the same files."""
    root = tmp_path_factory.mktemp("images")
    for split, count in (("train", 8), ("val", 2)):
        lines = []
        for label in range(CLASSES):
            for i in range(count):
                rel = f"class{label}/img{i}.png"
                _write_image(root / split / rel, 40 + 80 * label + i)
                lines.append(f"{rel} {label}")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def trained_run(image_folder, tmp_path_factory) -> Path:
    """One epoch of main.py on the folder dataset (shared by several tests, never modified)."""
    out = tmp_path_factory.mktemp("run") / "out"
    run_script(MAIN, *TINY, "--data-path", image_folder, "--epochs", 1, "--output_dir", out)
    return out


# ------------------------------------------------------------------------------------ data


def test_meta_file_errors_name_the_file_and_line(tmp_path):
    meta = tmp_path / "train_meta.txt"
    meta.write_text("a/1.jpg 0\n\n# comment\nb/2 with space.jpg 3\nbroken_line_without_label\n")
    with pytest.raises(ValueError, match=r"train_meta.txt:5: expected '<relative path> <integer label>'"):
        read_meta_file(meta)
    meta.write_text("a/1.jpg 0\nb/2 with space.jpg 3\n")
    assert read_meta_file(meta) == [("a/1.jpg", 0), ("b/2 with space.jpg", 3)]
    with pytest.raises(ValueError, match=r"train_meta.txt:2: label 3 out of range \(the model has 3 classes\)"):
        read_meta_file(meta, num_classes=3)
    with pytest.raises(FileNotFoundError, match="nowhere.txt"):
        ImageListDataset(tmp_path, tmp_path / "nowhere.txt")


def test_unreadable_images_are_replaced_counted_and_bounded(tmp_path, caplog):
    _write_image(tmp_path / "good.png", 100)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    (tmp_path / "meta.txt").write_text("good.png 0\nbad.png 1\n")
    dataset = ImageListDataset(tmp_path, tmp_path / "meta.txt")
    with caplog.at_level("WARNING"):
        image, label = dataset[1]
    assert label == 0 and image.size == (40, 40)  # replaced by the readable sample
    assert dataset.num_failed >= 1 and str(tmp_path / "bad.png") in caplog.text
    (tmp_path / "all_bad.txt").write_text("bad.png 1\n")
    hopeless = ImageListDataset(tmp_path, tmp_path / "all_bad.txt")
    with pytest.raises(RuntimeError, match="11 unreadable images in a row"):
        hopeless[0]
    assert hopeless.num_failed == 11


def test_image_folder_and_meta_list_agree(image_folder):
    folder = ImageFolderDataset(image_folder / "train")
    listed = ImageListDataset(image_folder / "train", image_folder / "train.txt")
    assert folder.classes == ["class0", "class1", "class2"]
    assert sorted(folder.samples) == sorted(listed.samples)


def test_cifar100_reads_the_python_release(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    data = np.random.default_rng(0).integers(0, 255, (5, 3072), dtype=np.uint8)
    with open(folder / "train", "wb") as handle:
        pickle.dump({"data": data, "fine_labels": [0, 1, 2, 99, 5]}, handle)
    dataset = Cifar100(tmp_path, train=True)
    image, label = dataset[3]
    assert len(dataset) == 5 and label == 99 and image.size == (32, 32)
    assert np.array_equal(np.asarray(image)[:, :, 0], data[3, :1024].reshape(32, 32))
    with pytest.raises(FileNotFoundError, match="cifar-100-python/test"):
        Cifar100(tmp_path, train=False)


def test_inaturalist_labels_follow_the_requested_level(tmp_path):
    categories = [
        {"id": 0, "name": "a", "genus": "g1", "kingdom": "Plantae"},
        {"id": 1, "name": "b", "genus": "g1", "kingdom": "Plantae"},
        {"id": 2, "name": "c", "genus": "g2", "kingdom": "Animalia"},
    ]
    (tmp_path / "categories.json").write_text(json.dumps(categories))
    for split, ids in (("train", [2, 0, 1]), ("val", [1, 2])):
        images = [{"id": i, "file_name": f"{split}/{c}/{i}.jpg"} for i, c in enumerate(ids)]
        annotations = [{"image_id": i, "category_id": c} for i, c in enumerate(ids)]
        (tmp_path / f"{split}2018.json").write_text(json.dumps({"images": images, "annotations": annotations}))
    by_name = INatDataset(tmp_path, train=False, year=2018, category="name")
    assert by_name.nb_classes == 3 and [s[1] for s in by_name.samples] == [2, 0]  # ids in train order c, a, b
    assert by_name.samples[0][0] == str(tmp_path / "val/1/0.jpg")
    by_genus = INatDataset(tmp_path, train=True, year=2018, category="genus")
    assert by_genus.nb_classes == 2 and [s[1] for s in by_genus.samples] == [0, 1, 1]


def test_transforms_give_the_input_size(image_folder):
    image = Image.open(image_folder / "train/class0/img0.png").convert("RGB")
    base = get_args_parser().parse_args([])
    for size, three in ((32, False), (48, False), (48, True)):
        args = argparse.Namespace(**{**vars(base), "input_size": size, "ThreeAugment": three})
        assert build_transform(True, args)(image).shape == (3, size, size)
        assert build_transform(False, args)(image).shape == (3, size, size)
    args = argparse.Namespace(**{**vars(base), "input_size": 48, "ThreeAugment": True, "src": True})
    assert build_transform(True, args)(image).shape == (3, 48, 48)


def test_folder_images_of_any_size_are_resized_at_input_size_32():
    # Only CIFAR's native 32x32 images skip resizing; a folder image smaller or larger than the input is resized.
    base = get_args_parser().parse_args(["--input-size", "32"])
    for width, height in ((30, 18), (90, 70)):
        image = Image.new("RGB", (width, height), (200, 30, 30))
        for is_train in (True, False):
            assert build_transform(is_train, base)(image).shape == (3, 32, 32)
    evaluated = build_transform(False, base)(Image.new("RGB", (30, 18), (200, 30, 30)))
    assert torch.allclose(evaluated, evaluated[:, :1, :1].expand_as(evaluated))  # resized, not zero-padded
    cifar = argparse.Namespace(**{**vars(base), "data_set": "CIFAR"})
    assert isinstance(build_transform(True, cifar).transforms[0], torchvision.transforms.RandomCrop)


def test_rand_augment_at_full_magnitude_posterizes_instead_of_crashing(image_folder):
    # inc1 posterize at magnitude 10 asks for 0 bits, which Pillow 13 rejects; mstd noise reaches it.
    image = Image.open(image_folder / "train/class0/img0.png").convert("RGB")
    args = argparse.Namespace(**{**vars(get_args_parser().parse_args([])), "aa": "rand-m10-n2-inc1"})
    build_transform(True, args)
    op = timm.data.auto_augment.AugmentOp("PosterizeIncreasing", prob=1.0, magnitude=10)
    assert np.asarray(op(image)).max() <= 128  # one bit kept


def test_ra_sampler_repeats_each_image_across_ranks():
    dataset = list(range(512))
    per_rank = [list(RASampler(dataset, num_replicas=3, rank=r, num_repeats=3, seed=1)) for r in range(3)]
    assert all(len(s) == 512 // 3 for s in per_rank)  # truncated to len // 256 * 256 / world
    full = [list(RASampler(dataset, num_replicas=3, rank=r, selected_round=0, seed=1)) for r in range(3)]
    counts = np.bincount(np.concatenate(full), minlength=512)
    assert (counts == 3).all()  # every image three times in total
    assert [full[r][0] for r in range(3)] == [full[0][0]] * 3  # the three copies go to different ranks
    sampler = RASampler(dataset, num_replicas=2, rank=0)
    first = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first
    assert len(list(RASampler(list(range(10)), num_replicas=2, rank=1))) == 5  # small sets are not emptied


# ------------------------------------------------------------------------------- training


def test_main_writes_log_tensorboard_and_a_self_describing_checkpoint(trained_run):
    records = read_log(trained_run / "log.txt")
    assert [r["epoch"] for r in records] == [0]
    assert {"train_loss", "train_lr", "test_loss", "test_acc1", "test_ema_acc1"} <= set(records[0])
    assert "test_acc5" not in records[0]  # three classes: top-5 would always be 100 %
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(trained_run))
    events.Reload()
    assert {"train_loss", "test_acc1"} <= set(events.Tags()["scalars"])
    steps = EventAccumulator(str(trained_run / "steps"))
    steps.Reload()
    assert {"step/train_loss", "step/lr"} <= set(steps.Tags()["scalars"])
    checkpoint = torch.load(trained_run / "checkpoint-latest.pth", weights_only=True)
    assert checkpoint["epoch"] == 0 and checkpoint["model_name"] == "videomamba_tiny"
    assert checkpoint["model_kwargs"]["depth"] == 2 and checkpoint["model_kwargs"]["num_classes"] == CLASSES
    assert checkpoint["args"]["epochs"] == 1 and checkpoint["model_ema"] is not None
    assert (trained_run / "checkpoint-best.pth").is_file() and (trained_run / "config.json").is_file()
    assert json.loads((trained_run / "config.json").read_text())["model_name"] == "videomamba_tiny"
    assert not list(trained_run.glob(".*tmp*"))  # atomic writes leave no temp file


def test_main_resumes_without_repeating_an_epoch(trained_run, image_folder, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(trained_run, out)
    proc = run_script(MAIN, *TINY, "--data-path", image_folder, "--epochs", 2, "--output_dir", out)
    assert f"Resuming from {out / 'checkpoint-latest.pth'}" in proc.stdout
    assert "Epoch: [0]" not in proc.stdout and "Epoch: [1]" in proc.stdout
    assert [r["epoch"] for r in read_log(out / "log.txt")] == [0, 1]
    assert torch.load(out / "checkpoint-latest.pth", weights_only=True)["epoch"] == 1


def test_killed_and_resumed_run_ends_bitwise_equal_to_the_uninterrupted_one(image_folder, tmp_path):
    args = [*TINY, "--data-path", image_folder, "--epochs", 2]
    run_script(MAIN, *args, "--output_dir", tmp_path / "whole")
    # SIGKILL at the 8th file operation: config.json (2), epoch 0 latest (2), best (2), log line (1), then
    # the first write of epoch 1's checkpoint, so epoch 1 is trained again after the restart.
    proc = run_script(MAIN, *args, "--output_dir", tmp_path / "killed", expect_ok=False,
                      env={checkpoint_io.KILL_ENV: "8"})  # fmt: skip
    assert proc.returncode == -9
    assert torch.load(tmp_path / "killed" / "checkpoint-latest.pth", weights_only=True)["epoch"] == 0
    run_script(MAIN, *args, "--output_dir", tmp_path / "killed")
    whole = torch.load(tmp_path / "whole" / "checkpoint-latest.pth", weights_only=True)
    resumed = torch.load(tmp_path / "killed" / "checkpoint-latest.pth", weights_only=True)
    for part in ("model", "model_ema"):
        for name, tensor in whole[part].items():
            assert torch.equal(resumed[part][name], tensor), f"{part} {name} differs after the resume"
    assert read_log(tmp_path / "killed" / "log.txt") == read_log(tmp_path / "whole" / "log.txt")


def test_resumed_log_drops_epochs_logged_after_the_last_checkpoint(tmp_path):
    # A kill between an epoch's log line and its checkpoint: the resumed run trains that epoch again.
    from videomamba.core.logs import RunLog

    first = RunLog(tmp_path, tensorboard=False)
    for epoch in range(3):
        first.log_epoch({"epoch": epoch, "train_loss": 1.0 / (epoch + 1)})
    resumed = RunLog(tmp_path, tensorboard=False)
    resumed.resume_from(2)
    resumed.log_epoch({"epoch": 2, "train_loss": 0.25})
    assert [(r["epoch"], r["train_loss"]) for r in read_log(tmp_path / "log.txt")] == [(0, 1.0), (1, 0.5), (2, 0.25)]


def test_eval_uses_ema_only_when_it_was_loaded(trained_run, image_folder, tmp_path):
    # No model flags: the checkpoint's stored configuration (depth 2, width 32, 32 px) rebuilds the model.
    no_model_flags = [a for a in TINY if a not in ("--model-kwargs", TINY_MODEL, "--input-size", "32")]
    latest = trained_run / "checkpoint-latest.pth"
    proc = run_script(MAIN, *no_model_flags, "--data-path", image_folder, "--eval", "--resume", latest)
    assert "Model configuration from" in proc.stdout and "input_size 32 (flag: 224)" in proc.stdout
    assert "Accuracy of the network on 6 test images" in proc.stdout and "Test (EMA):" in proc.stdout
    proc = run_script(MAIN, *TINY, "--data-path", image_folder, "--eval", "--output_dir", tmp_path / "fresh")
    assert "No EMA weights were loaded" in proc.stdout and "Test (EMA):" not in proc.stdout


def test_finetune_at_a_higher_resolution(trained_run, image_folder, tmp_path):
    args = [*TINY, "--input-size", 64, "--data-path", image_folder, "--epochs", 1, "--output_dir", tmp_path / "ft"]
    proc = run_script(MAIN, *args, "--finetune", trained_run / "checkpoint-latest.pth")
    assert "pos_embed (1, 5, 32) -> (1, 17, 32) (bicubic, grid 2x2 -> 4x4)" in proc.stdout
    assert read_log(tmp_path / "ft" / "log.txt")[0]["epoch"] == 0


def test_nan_guard_stops_the_run_naming_the_step(trained_run, image_folder, tmp_path):
    checkpoint = torch.load(trained_run / "checkpoint-latest.pth", weights_only=True)
    weights = dict(checkpoint["model"])
    weights["head.bias"] = torch.full_like(weights["head.bias"], float("nan"))
    torch.save({"model": weights}, tmp_path / "nan.pth")
    out = tmp_path / "nan_run"
    args = [*TINY, "--data-path", image_folder, "--epochs", 1, "--output_dir", out, "--finetune", tmp_path / "nan.pth"]
    proc = run_script(MAIN, *args, expect_ok=False)
    assert proc.returncode == 1
    assert "Stopping: non-finite loss at epoch 0, step 0" in proc.stderr
    assert not (out / "checkpoint-latest.pth").exists()


def _write_teacher(path: Path) -> None:
    teacher = timm.create_model("videomamba_small", depth=2, embed_dim=48, img_size=32, num_classes=1000)
    torch.save({"model": teacher.state_dict()}, path)  # the released image-checkpoint layout


def test_main_distill_trains_resumes_and_continues_without_teacher(image_folder, tmp_path):
    _write_teacher(tmp_path / "teacher.pth")
    out = tmp_path / "distill"
    args = [*TINY, "--model", "videomamba_middle", "--teacher_model", "videomamba_small", "--teacher_embed_dim", 48,
            "--teacher-model-kwargs", '{"depth": 2, "embed_dim": 48}', "--teacher_pretrained_path",
            tmp_path / "teacher.pth", "--data-path", image_folder, "--output_dir", out]  # fmt: skip
    proc = run_script(MAIN_DISTILL, *args, "--epochs", 1)
    assert "student videomamba_middle -> videomamba_middle_distill" in proc.stdout
    record = read_log(out / "log.txt")[0]
    assert record["train_loss"] == pytest.approx(record["train_loss_cls"] + record["train_loss_distill"], rel=1e-4)
    assert 0 < record["train_loss_distill"] < 4  # 2 - 2 cos over unit vectors
    checkpoint = torch.load(out / "checkpoint-latest.pth", weights_only=True)
    assert checkpoint["model_name"] == "videomamba_middle_distill" and "distill_head.1.weight" in checkpoint["model"]
    proc = run_script(MAIN_DISTILL, *args, "--epochs", 2)
    assert "Epoch: [0]" not in proc.stdout and [r["epoch"] for r in read_log(out / "log.txt")] == [0, 1]
    # Continuing without the teacher drops the distill head, keeps scheduler and epoch, not the optimizer.
    plain = [*TINY, "--model", "videomamba_middle", "--data-path", image_folder, "--no-model-ema"]
    proc = run_script(MAIN, *plain, "--epochs", 3, "--load_from_distill", out / "checkpoint-latest.pth")
    assert "at epoch 2 (distill head dropped, optimizer restarted)" in proc.stdout and "Epoch: [2]" in proc.stdout


def test_main_distill_requires_a_teacher(image_folder, capsys):
    from videomamba.image_sm.main_distill import distill_cli

    with pytest.raises(SystemExit) as exit_info:
        distill_cli([*TINY, "--data-path", str(image_folder)])
    assert exit_info.value.code == 2 and "needs --teacher_pretrained_path" in capsys.readouterr().err


def test_two_process_gloo_run_with_torchrun(image_folder, tmp_path):
    out = tmp_path / "ddp"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    proc = run_script(MAIN, *TINY, "--data-path", image_folder, "--epochs", 1, "--dist-eval", "--output_dir", out,
                      launcher=launcher, env={"OMP_NUM_THREADS": "1"})  # fmt: skip
    assert "distributed init (torchrun, gloo): rank 1/2" in proc.stdout + proc.stderr
    assert [r["epoch"] for r in read_log(out / "log.txt")] == [0]
    assert "train_loss" in read_log(out / "log.txt")[0]


def test_submitit_local_executor_runs_and_requeues(image_folder, tmp_path):
    from videomamba.image_sm import run_with_submitit

    out = tmp_path / "submitit_run"
    parser = run_with_submitit.get_submitit_parser()
    args = parser.parse_args([*TINY, "--data-path", str(image_folder), "--epochs", "1", "--output_dir", str(out),
                              "--cluster", "local", "--ngpus", "1", "--nodes", "1", "--timeout", "20"])  # fmt: skip
    job = run_with_submitit.submit(args)
    record = job.result()
    assert record["epoch"] == 0 and (out / "checkpoint-latest.pth").is_file()
    assert (out / "submitit").is_dir() and args.output_dir == str(out)  # --output_dir is honoured
    requeued = run_with_submitit.Trainer(args).checkpoint()
    assert type(requeued).__name__ == "DelayedSubmission"
    assert requeued.function.args.resume == str(out / "checkpoint-latest.pth")


def test_generate_tensorboard_rebuilds_events_from_log(trained_run, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    shutil.copy(trained_run / "log.txt", tmp_path / "log.txt")
    assert generate_tensorboard.main([str(tmp_path / "log.txt"), "--out", str(tmp_path / "tb")]) == 0
    events = EventAccumulator(str(tmp_path / "tb" / tmp_path.name))
    events.Reload()
    record = read_log(trained_run / "log.txt")[0]
    assert events.Scalars("test_acc1")[0].value == pytest.approx(record["test_acc1"])
    assert events.Scalars("train_loss")[0].step == 0
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "log.txt").write_text('{"epoch": 0}\nnot json\n')
    with pytest.raises(ValueError, match=r"log.txt:2: not a JSON object"):
        generate_tensorboard.main([str(tmp_path / "bad")])


# ---------------------------------------------------------------------------------- scripts

EXP_SCRIPTS = {
    "exp/videomamba_tiny/run224.sh": ("main", "videomamba_tiny", 224, None),
    "exp/videomamba_tiny/run448.sh": ("main", "videomamba_tiny", 448, "videomamba_t16_in1k_res224.pth"),
    "exp/videomamba_tiny/run576.sh": ("main", "videomamba_tiny", 576, "videomamba_t16_in1k_res224to448.pth"),
    "exp/videomamba_small/run224.sh": ("main", "videomamba_small", 224, None),
    "exp/videomamba_small/run448.sh": ("main", "videomamba_small", 448, "videomamba_s16_in1k_res224.pth"),
    "exp/videomamba_small/run576.sh": ("main", "videomamba_small", 576, "videomamba_s16_in1k_res224to448.pth"),
    "exp_distill/videomamba_middle/run224.sh": ("main_distill", "videomamba_middle", 224, None),
    "exp_distill/videomamba_base/run224.sh": ("main_distill", "videomamba_base", 224, None),
    "exp_distill/videomamba_middle/run448.sh": ("main", "videomamba_middle", 448, "videomamba_m16_in1k_res224.pth"),
    "exp_distill/videomamba_middle/run576.sh": (
        "main", "videomamba_middle", 576, "videomamba_m16_in1k_res224to448.pth"),
}  # fmt: skip


@pytest.mark.parametrize("script", sorted(EXP_SCRIPTS))
def test_exp_scripts_build_the_recipe_command(script, tmp_path):
    entry, model, size, finetune = EXP_SCRIPTS[script]
    path = IMAGE_SM / script
    assert path.read_text().count("#SBATCH") >= 4
    env = {**os.environ, "DRY_RUN": "1", "VIDEOMAMBA_CHECKPOINTS": "/ckpt", "GPUS": "8"}
    proc = subprocess.run(["bash", str(path), "--epochs", "1"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    echoed = proc.stdout.strip().splitlines()[-1].split()
    assert echoed[0] == "+"
    command = echoed[1:]
    assert command[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=8"]
    assert command[5:7] == ["-m", f"videomamba.image_sm.{entry}"]
    assert command[command.index("--model") + 1] == model
    assert command[command.index("--input-size") + 1] == str(size)
    assert command[-2:] == ["--epochs", "1"]  # extra flags come last, so they win
    assert {"--bf16", "--dist-eval", "--no-model-ema"} <= set(command)
    if finetune:
        assert command[command.index("--finetune") + 1] == f"/ckpt/{finetune}"
    if entry == "main_distill":
        assert command[command.index("--teacher_model") + 1] == "videomamba_small"
        assert command[command.index("--teacher_pretrained_path") + 1] == "/ckpt/videomamba_s16_in1k_res224.pth"


def test_exp_script_runs_without_slurm_with_overrides(image_folder, tmp_path):
    out = tmp_path / "exp_out"
    env = {
        **os.environ,
        "GPUS": "1",
        "PYTHON": sys.executable,
        "OUTPUT_DIR": str(out),
        "ROOT_DIR_TRAIN": str(image_folder / "train"),
        "META_FILE_TRAIN": str(image_folder / "train.txt"),
        "ROOT_DIR_VAL": str(image_folder / "val"),
        "META_FILE_VAL": str(image_folder / "val.txt"),
    }
    overrides = [*TINY, "--nb_classes", str(CLASSES), "--epochs", "1"]
    script = IMAGE_SM / "exp/videomamba_tiny/run224.sh"
    proc = subprocess.run(["bash", str(script), *overrides], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert read_log(out / "log.txt")[0]["epoch"] == 0


# ------------------------------------------------------------------------- shared utilities
