"""video_sm: multi-view merge, layer decay, schedules, models, checkpoint inflation, the runners end to end
(fine-tuning, resume, regression, masked pretraining), prediction, the demo's data and the exp scripts.

Every video is written here with PyAV (the demo's synthetic generator, 32 x 32 pixels) and every model
is tiny (2 blocks of width 32), so the whole file runs on a CPU in a few minutes.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

import videomamba.core.pretrain  # noqa: F401  (registers the students)
from videomamba.core import checkpoint as checkpoint_io
from videomamba.core.clip_teacher import build_clip_teacher
from videomamba.core.logs import read_log
from videomamba.core.optim import param_groups
from videomamba.core.pretrained import load_pretrained
from videomamba.video_sm import demo, predict, run_class_finetuning, run_videomamba_pretraining, run_with_submitit
from videomamba.video_sm.datasets import load_test_views
from videomamba.video_sm.engines.multiview import ViewOutput, merge_views
from videomamba.video_sm.exp import presets

pytest.importorskip("av")

TINY = {"depth": 2, "embed_dim": 32}
SIZE = 32


def finetune_args(data: Path, out: Path, *extra: str) -> argparse.Namespace:
    flags = [
        "--model", "videomamba_tiny", "--model_kwargs", json.dumps(TINY),
        "--data_path", str(data), "--prefix", str(data), "--split", ",", "--data_set", "Kinetics_sparse",
        "--nb_classes", "4", "--num_frames", "4", "--input_size", str(SIZE), "--short_side_size", str(SIZE),
        "--test_num_segment", "2", "--test_num_crop", "2", "--batch_size", "4", "--num_sample", "2",
        "--epochs", "1", "--warmup_epochs", "0", "--lr", "1e-3", "--mixup", "0.8", "--cutmix", "1.0",
        "--aa", "rand-m5-n2-mstd0.25-inc1", "--device", "cpu", "--no_amp", "--num_workers", "0",
        "--video_reader", "pyav", "--output_dir", str(out), "--print_freq", "100",
    ]  # fmt: skip
    parser = argparse.ArgumentParser(parents=[run_class_finetuning.get_args_parser()])
    return parser.parse_args(flags + list(extra))


@pytest.fixture(scope="module")
def video_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 train, 4 val, 4 test synthetic videos (4 classes) and a corrupt file listed in train.csv."""
    root = demo.write_dataset(
        tmp_path_factory.mktemp("videos"), {"train": 2, "val": 1, "test": 1}, size=SIZE, num_frames=8
    )
    (root / "videos" / "corrupt.mp4").write_bytes(b"\x00not a video" * 200)
    with open(root / "train.csv", "a") as handle:
        handle.write("videos/corrupt.mp4,1\n")
    return root


# ------------------------------------------------------------------------------ multi-view merge


def _view(video: int, view: tuple[int, int, int], logits: list[float], label: float) -> ViewOutput:
    return ViewOutput(video, view, np.asarray(logits, dtype=np.float32), label)


def test_merge_averages_softmax_and_drops_padded_duplicates():
    records = [
        _view(0, (0, 0, 0), [4.0, 0.0, 0.0], 0),
        _view(0, (0, 1, 0), [0.0, 0.5, 0.0], 0),
        _view(0, (0, 1, 0), [0.0, 9.0, 0.0], 0),  # padded repeat from a distributed sampler: ignored
        _view(1, (0, 0, 0), [0.0, 0.0, 1.0], 2),
    ]
    metrics, rows = merge_views(records, video_ids=["a.mp4", "b.mp4"])
    assert rows[0]["num_views"] == 2 and rows[0]["prediction"] == 0 and rows[0]["video_id"] == "a.mp4"
    expected = (np.exp([4, 0, 0]) / np.exp([4, 0, 0]).sum() + np.exp([0, 0.5, 0]) / np.exp([0, 0.5, 0]).sum()) / 2
    assert rows[0]["topk"][0][1] == pytest.approx(expected[0])
    assert metrics["top1"] == 100.0 and "top5" not in metrics  # three classes: no top-5
    assert metrics["num_videos"] == 2 and metrics["num_views"] == 3


def test_merge_keeps_every_window_of_long_videos():
    # Two windows x two segments: the original keyed views by (segment, crop) and kept one window.
    records = [_view(0, (w, s, 0), [0.0] * 4 + [3.0 if w == 1 else -3.0], 4) for w in (0, 1) for s in (0, 1)]
    records += [_view(1, (0, 0, 0), [5.0, 0, 0, 0, 0], 4)]
    metrics, rows = merge_views(records)
    assert rows[0]["num_views"] == 4
    assert rows[0]["topk"][-1][1] > 0  # top-5 of 5 classes lists every class
    assert metrics["top1"] == 50.0 and "top5" not in metrics  # five classes: top-5 is always 100 %


def test_merge_regression_averages_predictions_and_reports_mse():
    records = [_view(0, (0, 0, 0), [1.0], 2.0), _view(0, (0, 1, 0), [3.0], 2.0), _view(1, (1, 0, 0), [0.0], 1.0)]
    metrics, rows = merge_views(records, regression=True)
    assert [r["prediction"] for r in rows] == [2.0, 0.0]
    assert metrics["mse"] == pytest.approx(0.5) and metrics["mae"] == pytest.approx(0.5)


# ---------------------------------------------------------------------------------- layer decay


def _scales(model: torch.nn.Module, **kwargs: object) -> dict[str, float]:
    return {n: g["lr_scale"] for g in param_groups(model, 0.05, layer_decay=0.5, **kwargs) for n in g["param_names"]}


def test_layer_decay_correct_and_as_released():
    model = timm.create_model("videomamba_tiny", num_frames=4, img_size=SIZE, num_classes=3, depth=3, embed_dim=32)
    scales = _scales(model)
    # stem = layer 0, block i = layer i + 1, head/final norm = layer depth + 1 (scale 1).
    assert scales["patch_embed.proj.weight"] == scales["temporal_pos_embedding"] == 0.5**4
    assert [scales[f"layers.{i}.mixer.in_proj.weight"] for i in range(3)] == [0.5**3, 0.5**2, 0.5]
    assert scales["head.weight"] == scales["norm_f.weight"] == 1.0
    released = _scales(model, released_layer_decay=True)
    assert released["patch_embed.proj.weight"] == released["cls_token"] == released["pos_embed"] == 0.5**4
    assert released["temporal_pos_embedding"] == released["layers.0.mixer.in_proj.weight"] == 1.0
    assert released["head.weight"] == 1.0


# ------------------------------------------------------------------------------------- models


@pytest.mark.parametrize("frames,tubelet", [(4, 1), (8, 2)])
def test_video_classifier_forward_backward(frames, tubelet):
    model = timm.create_model(
        "videomamba_tiny", num_frames=frames, tubelet_size=tubelet, img_size=SIZE, num_classes=5,
        fc_drop_rate=0.5, grad_checkpointing=True, grad_checkpointing_blocks=1, **TINY,
    )  # fmt: skip
    assert model.temporal_pos_embedding.shape[1] == frames // tubelet
    clip = torch.randn(2, 3, frames, SIZE, SIZE)
    logits = model(clip)
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()
    logits.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_pretraining_student_forward_backward_with_mask():
    from videomamba.core.masking import prepend_cls_column, tube_mask

    student = timm.create_model("videomamba_tiny_pretrain", num_frames=4, img_size=SIZE, clip_output_dim=16, **TINY)
    mask = prepend_cls_column(tube_mask(2, 4, 4, 0.5))
    out = student(torch.randn(2, 3, 4, SIZE, SIZE), mask)
    assert out.clip_features.shape == (1, 2, 1 + 4 * 2, 16)
    out.clip_features.sum().backward()
    assert student.layers[-1].mixer.out_proj.weight.grad.abs().sum() > 0  # the last mixer is aligned too


def test_finetune_inflates_image_checkpoints_and_resamples_time(tmp_path):
    image = timm.create_model("videomamba_tiny", img_size=SIZE, num_classes=7, **TINY)
    torch.save({"model": image.state_dict()}, tmp_path / "image.pth")
    args = argparse.Namespace(
        finetune=str(tmp_path / "image.pth"), model_key="model|module", model_prefix="", delete_head=False,
        orig_t_size=8, tubelet_size=2,
    )  # fmt: skip
    video = timm.create_model("videomamba_tiny", num_frames=4, tubelet_size=2, img_size=SIZE, num_classes=3, **TINY)
    run_class_finetuning.load_finetune_checkpoint(video, args)
    weight = video.patch_embed.proj.weight
    assert torch.equal(weight[:, :, 1], image.patch_embed.proj.weight) and weight[:, :, 0].abs().sum() == 0
    assert torch.equal(video.pos_embed, image.pos_embed)
    assert torch.equal(video.layers[1].mixer.in_proj.weight, image.layers[1].mixer.in_proj.weight)

    # A 4-frame video checkpoint into an 8-frame model: the temporal embedding is interpolated.
    short = timm.create_model("videomamba_tiny", num_frames=4, img_size=SIZE, num_classes=3, **TINY)
    with torch.no_grad():
        short.temporal_pos_embedding.copy_(torch.arange(4.0).view(1, 4, 1).expand(1, 4, 32))
    torch.save(short.state_dict(), tmp_path / "video.pth")  # bare, as the video releases
    args.finetune, args.tubelet_size = str(tmp_path / "video.pth"), 1
    long = timm.create_model("videomamba_tiny", num_frames=8, img_size=SIZE, num_classes=3, **TINY)
    with pytest.warns(UserWarning, match="orig_t_size"):  # 4 positions, but --orig_t_size 8 says 8
        run_class_finetuning.load_finetune_checkpoint(long, args)
    ramp = long.temporal_pos_embedding[0, :, 0]
    assert ramp[0] == 0 and ramp[-1] == 3 and torch.all(ramp[1:] >= ramp[:-1])


# ----------------------------------------------------------------------------- runners end to end


def test_finetune_run_tests_resumes_and_survives_a_corrupt_video(video_data, tmp_path, caplog):
    out = tmp_path / "run"
    with caplog.at_level("WARNING"):
        result = run_class_finetuning.main(finetune_args(video_data, out, "--model_ema", "--model_ema_decay", "0.9"))
    assert "corrupt.mp4" in caplog.text  # read, logged, replaced: the epoch went on
    for name in ("checkpoint-latest.pth", "checkpoint-best.pth", "config.json", "log.txt", "predictions.jsonl"):
        assert (out / name).is_file(), name
    assert list(out.glob("events.out.tfevents.*"))
    records = read_log(out / "log.txt")
    assert records[0]["epoch"] == 0 and "train_loss" in records[0] and "val_acc1" in records[0]
    assert "val_acc5" not in records[0]  # four classes
    assert records[-1]["final_num_videos"] == 4 and records[-1]["final_num_views"] == 16
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["num_views"] == 4 and len(r["topk"]) == 4 for r in rows)
    assert result["final_top1"] == records[-1]["final_top1"]
    checkpoint = torch.load(out / "checkpoint-latest.pth", weights_only=True)
    assert checkpoint["epoch"] == 0 and checkpoint["model_name"] == "videomamba_tiny" and checkpoint["model_ema"]

    # Re-running with more epochs resumes at epoch 1 instead of starting over.
    run_class_finetuning.main(finetune_args(video_data, out, "--epochs", "2", "--model_ema"))
    assert [r["epoch"] for r in read_log(out / "log.txt") if "train_loss" in r] == [0, 1]
    assert torch.load(out / "checkpoint-latest.pth", weights_only=True)["epoch"] == 1

    # --eval tests the run's checkpoint again without training.
    evaluated = run_class_finetuning.main(finetune_args(video_data, out, "--eval", "--test_num_segment", "1"))
    assert evaluated["final_num_views"] == 8


class SimulatedKill(BaseException):
    """Raised at a file operation: no saving code cleans up after it, as after a SIGKILL."""


def _kill_at(n: int):
    calls = []

    def hook(label: str) -> None:
        calls.append(label)
        if len(calls) == n:
            raise SimulatedKill(label)

    return hook


def test_killed_finetuning_resumes_bitwise_and_evaluates_without_model_flags(video_data, tmp_path):
    extra = ("--epochs", "2", "--model_ema", "--model_ema_decay", "0.9")
    run_class_finetuning.main(finetune_args(video_data, tmp_path / "whole", *extra))
    # The 8th file operation is the first write of epoch 1's checkpoint (config 2, epoch 0: latest 2, best 2, log 1).
    checkpoint_io.file_operation_hook = _kill_at(8)
    try:
        with pytest.raises(SimulatedKill):
            run_class_finetuning.main(finetune_args(video_data, tmp_path / "killed", *extra))
    finally:
        checkpoint_io.file_operation_hook = None
    assert torch.load(tmp_path / "killed" / "checkpoint-latest.pth", weights_only=True)["epoch"] == 0
    run_class_finetuning.main(finetune_args(video_data, tmp_path / "killed", *extra))
    whole = torch.load(tmp_path / "whole" / "checkpoint-latest.pth", weights_only=True)
    resumed = torch.load(tmp_path / "killed" / "checkpoint-latest.pth", weights_only=True)
    for part in ("model", "model_ema"):
        assert all(torch.equal(resumed[part][k], v) for k, v in whole[part].items()), part
    assert read_log(tmp_path / "killed" / "log.txt") == read_log(tmp_path / "whole" / "log.txt")
    assert sum(1 for r in read_log(tmp_path / "killed" / "log.txt") if r.get("final")) == 1

    # --eval of the run's own folder without the model flags: the stored configuration rebuilds the model.
    flags = finetune_args(video_data, tmp_path / "whole", "--eval")
    flags.model_kwargs, flags.input_size, flags.num_frames = {}, 224, 16
    evaluated = run_class_finetuning.main(flags)
    assert evaluated["final_num_videos"] == 4


def test_regression_mode_end_to_end(video_data, tmp_path):
    data = tmp_path / "regression"
    data.mkdir()
    for split in ("train", "val", "test"):  # the same videos with a float target per video
        lines = (video_data / f"{split}.csv").read_text().splitlines()
        targets = [f"{line.rsplit(',', 1)[0]},{0.25 * i - 0.5}\n" for i, line in enumerate(lines)]
        (data / f"{split}.csv").write_text("".join(targets))
    out = tmp_path / "run"
    args = finetune_args(
        video_data, out, "--regression", "--nb_classes", "1", "--mixup", "0", "--cutmix", "0", "--smoothing", "0",
        "--epochs", "2", "--test_best",
    )  # fmt: skip
    args.data_path, args.prefix = str(data), str(video_data)
    result = run_class_finetuning.main(args)
    records = [r for r in read_log(out / "log.txt") if "val_loss" in r]
    best_epoch = int(np.argmin([r["val_loss"] for r in records]))
    best = torch.load(out / "checkpoint-best.pth", weights_only=True)
    assert best["epoch"] == best_epoch and best["best_metric"] == pytest.approx(records[best_epoch]["val_loss"])
    assert "final_mse" in result and "final_top1" not in result
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert all(isinstance(r["prediction"], float) for r in rows)
    with pytest.raises(ValueError, match="--nb_classes 1"):
        run_class_finetuning.main(finetune_args(video_data, out, "--regression", "--mixup", "0", "--cutmix", "0"))


def test_masked_pretraining_with_a_tiny_clip_teacher(video_data, tmp_path):
    teacher = build_clip_teacher("clip_test_tiny")  # 32 px, patch 8: a 4 x 4 grid
    torch.save({f"visual.{k}": v for k, v in teacher.state_dict().items()}, tmp_path / "clip.pth")
    lines = [ln.replace("videos/", f"{video_data}/videos/").replace(",", " ") for ln in
             (video_data / "train.csv").read_text().splitlines()]  # fmt: skip
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path / "pretrain"
    flags = [
        "--model", "videomamba_tiny_pretrain", "--model_kwargs", json.dumps({**TINY, "patch_size": 8}),
        "--data_path", str(tmp_path / "list.txt"), "--num_frames", "4", "--num_segments", "4", "--input_size", "32",
        "--clip_teacher", "clip_test_tiny", "--clip_teacher_path", str(tmp_path / "clip.pth"),
        "--clip_input_resolution", "32", "--clip_teacher_embed_dim", "32", "--clip_output_dim", "16",
        "--clip_return_cls", "--clip_return_attn", "True", "--mask_type", "attention", "--mask_ratio", "0.5",
        "--flip", "False", "--batch_size", "4", "--epochs", "2", "--warmup_epochs", "0", "--device", "cpu",
        "--no_amp", "--num_workers", "0", "--video_reader", "pyav",
    ]  # fmt: skip
    parser = argparse.ArgumentParser(parents=[run_videomamba_pretraining.get_args_parser()])
    args = parser.parse_args([*flags, "--output_dir", str(out)])
    assert args.flip is False and args.clip_return_cls is True  # real booleans, unlike type=bool
    record = run_videomamba_pretraining.main(args)
    assert record["epoch"] == 1 and np.isfinite(record["train_loss"]) and record["train_loss"] > 0
    # Killed at the first write of epoch 1 (config 2, epoch 0: latest 2, log 1) and resumed: the same weights.
    checkpoint_io.file_operation_hook = _kill_at(6)
    try:
        with pytest.raises(SimulatedKill):
            run_videomamba_pretraining.main(parser.parse_args([*flags, "--output_dir", str(tmp_path / "killed")]))
    finally:
        checkpoint_io.file_operation_hook = None
    run_videomamba_pretraining.main(parser.parse_args([*flags, "--output_dir", str(tmp_path / "killed")]))
    resumed = torch.load(tmp_path / "killed" / "checkpoint-latest.pth", weights_only=True)
    whole = torch.load(out / "checkpoint-latest.pth", weights_only=True)
    assert all(torch.equal(resumed["model"][k], v) for k, v in whole["model"].items())
    checkpoint = torch.load(out / "checkpoint-latest.pth", weights_only=True)
    assert any(k.startswith("clip_decoder.") for k in checkpoint["model"])
    assert not any(k.startswith(("conv1", "transformer.")) for k in checkpoint["model"])  # no teacher inside
    # The student initialises a classifier: decoders ignored, norm -> norm_f, new head kept.
    classifier = timm.create_model("videomamba_tiny", num_frames=4, img_size=32, patch_size=8, num_classes=4, **TINY)
    report = load_pretrained(classifier, out / "checkpoint-latest.pth")
    assert report.ok and torch.equal(classifier.norm_f.weight, checkpoint["model"]["norm_f.weight"])


def test_predict_prints_topk_and_writes_features(video_data, tmp_path, capsys):
    model = timm.create_model("videomamba_tiny", num_frames=4, img_size=SIZE, num_classes=4, **TINY)
    kwargs = dict(num_frames=4, img_size=SIZE, num_classes=4, **TINY)
    torch.save({"model": model.state_dict(), "model_name": "videomamba_tiny", "model_kwargs": kwargs, "epoch": 0},
               tmp_path / "ckpt.pth")  # fmt: skip
    video = video_data / "videos" / "test_0000.mp4"
    argv = [str(video), "--checkpoint", str(tmp_path / "ckpt.pth"), "--labels", str(video_data / "labels.txt"),
            "--topk", "3", "--num_segments", "2", "--device", "cpu", "--features", str(tmp_path / "f.npy"),
            "--window_seconds", "0.5", "--window_stride", "0.25"]  # fmt: skip
    assert predict.main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    ranked = [ln for ln in lines if ln.strip()[:2].strip(".").isdigit()]
    assert len(ranked) == 3 and any(name in ranked[0] for name in demo.CLASS_NAMES)
    probabilities = [float(ln.rsplit(None, 1)[1].rstrip("%")) for ln in ranked]
    assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 100.01
    assert np.load(tmp_path / "f.npy").shape == (32,)
    assert np.load(tmp_path / "f.windows.npy").shape == (3, 32)  # 1 s video: windows at 0, 0.25, 0.5 s
    # With --json, stdout is the JSON result alone; the messages about written files go to stderr.
    assert predict.main([*argv, "--json"]) == 0
    captured = capsys.readouterr()
    assert len(json.loads(captured.out)) == 3 and "features (32,) -> " in captured.err
    # A bare state dict needs --model and the sizes.
    torch.save(model.state_dict(), tmp_path / "bare.pth")
    assert predict.main([str(video), "--checkpoint", str(tmp_path / "bare.pth"), "--model", "videomamba_tiny",
                         "--model_kwargs", json.dumps(TINY), "--num_frames", "4", "--input_size", str(SIZE),
                         "--device", "cpu", "--json"]) == 0  # fmt: skip
    assert len(json.loads(capsys.readouterr().out.strip().splitlines()[-1])) == 4
    assert predict.main([str(tmp_path / "missing.mp4"), "--checkpoint", str(tmp_path / "ckpt.pth")]) == 2


def test_model_arguments_stored_under_the_original_names_still_build_the_model(tmp_path):
    # Checkpoints written before the renames record kernel_size / use_checkpoint / checkpoint_num.
    model = timm.create_model("videomamba_tiny", num_frames=4, tubelet_size=2, img_size=SIZE, num_classes=3, **TINY)
    stored = dict(num_frames=4, kernel_size=2, img_size=SIZE, num_classes=3, use_checkpoint=True, checkpoint_num=1)
    torch.save({"model": model.state_dict(), "model_name": "videomamba_tiny", "model_kwargs": {**stored, **TINY}},
               tmp_path / "old.pth")  # fmt: skip
    args = predict.get_args_parser().parse_args(["clip.mp4", "--checkpoint", str(tmp_path / "old.pth")])
    rebuilt, kwargs = predict.build_predictor(args)
    assert kwargs["tubelet_size"] == 2 and "kernel_size" not in kwargs and not rebuilt.grad_checkpointing
    assert torch.equal(rebuilt.patch_embed.proj.weight, model.patch_embed.proj.weight)
    # The runners take the original's flags as aliases of the new ones.
    flags = run_class_finetuning.get_args_parser().parse_args(["--use_checkpoint", "--checkpoint_num", "3"])
    assert flags.grad_checkpointing and flags.grad_checkpointing_blocks == 3


def test_predict_prints_the_value_of_a_regression_checkpoint(video_data, tmp_path, capsys):
    # A one-output model used to be reported as "class 0, 100 %"; it is a regressor.
    model = timm.create_model("videomamba_tiny", num_frames=4, img_size=SIZE, num_classes=1, **TINY).eval()
    kwargs = dict(num_frames=4, img_size=SIZE, num_classes=1, **TINY)
    torch.save({"model": model.state_dict(), "model_name": "videomamba_tiny", "model_kwargs": kwargs},
               tmp_path / "reg.pth")  # fmt: skip
    video = str(video_data / "videos" / "test_0000.mp4")
    flags = ["--checkpoint", str(tmp_path / "reg.pth"), "--num_segments", "2", "--num_crops", "2", "--device", "cpu"]
    assert predict.main([video, *flags, "--json"]) == 0
    value = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["prediction"]
    views = load_test_views(video, num_frames=4, num_segments=2, num_crops=2, input_size=SIZE, short_side_size=SIZE)
    with torch.no_grad():
        assert value == pytest.approx(model(views).mean().item(), abs=1e-5)
    assert predict.main([video, *flags]) == 0
    assert capsys.readouterr().out.strip().endswith(f"{value:.4f} (mean of 4 views)")


def test_mixup_with_an_odd_batch_is_refused_before_training(video_data, tmp_path):
    args = finetune_args(video_data, tmp_path / "odd", "--batch_size", "3", "--num_sample", "1")
    with pytest.raises(ValueError, match=r"even number of clips per batch.*--batch_size 3 x --num_sample 1"):
        run_class_finetuning.check_args(args)
    run_class_finetuning.check_args(finetune_args(video_data, tmp_path / "odd", "--batch_size", "3"))  # 3 x 2 clips
    run_class_finetuning.check_args(
        finetune_args(video_data, tmp_path / "odd", "--batch_size", "3", "--num_sample", "1", "--mixup", "0",
                      "--cutmix", "0")
    )  # fmt: skip


# ------------------------------------------------------------------------------ demo and scripts


def test_demo_classes_share_the_same_frame_distribution():
    # Moving one way is moving the other way played backwards, from the last position: the same
    # positions, so with a uniform random start the frame multisets do not depend on the class.
    forward = demo.mover_positions(5.0, 1, 1.0, 24, SIZE)
    backward = demo.mover_positions(forward[-1], -1, 1.0, 24, SIZE)
    assert np.allclose(np.sort(forward), np.sort(backward)) and not np.allclose(forward, backward)
    assert np.allclose(np.diff(np.unwrap(forward, period=SIZE)), 1.0)  # wraps around the edge, constant speed
    # The class changes only the directions: same shapes, colours, starts and noise.
    videos = {name: demo.render_video(np.random.default_rng(3), name, SIZE, 8) for name in demo.CLASS_NAMES}
    assert len({video[0].tobytes() for video in videos.values()}) == 1
    assert len({video.tobytes() for video in videos.values()}) == len(demo.CLASS_NAMES)


def test_exp_scripts_match_the_table_and_parse(monkeypatch):
    assert presets.write_all(check=True) == []
    runners = {
        "run_class_finetuning.py": run_class_finetuning.get_args_parser(),
        "run_regression_finetuning.py": run_class_finetuning.get_args_parser(),
        "run_videomamba_pretraining.py": run_videomamba_pretraining.get_args_parser(),
    }
    registered = set(timm.list_models("videomamba_*"))
    for recipe in presets.RECIPES:
        # `${VAR:+--flag "$VAR"}` (left out when VAR is empty) as the flag with the script's default value.
        defaults = dict(re.findall(r'^(\w+)="\$\{\w+-(.*)\}"$', presets.render(recipe), re.MULTILINE))
        text = re.sub(
            r'\$\{(\w+):\+(--\w+) "\$\w+"\}',
            lambda m, defaults=defaults: f"{m[2]} {shlex.quote(defaults[m[1]])}",
            " ".join(presets.recipe_flags(recipe)),
        )
        words = shlex.split(text.replace("$", "X"))
        args = argparse.ArgumentParser(parents=[runners[recipe.entry]]).parse_args(words)
        assert args.model in registered, recipe.path
        if recipe.entry != "run_videomamba_pretraining.py":
            assert args.model.removeprefix("videomamba_") in recipe.init.replace("t16", "tiny").replace(
                "s16", "small"
            ).replace("m16", "middle"), recipe.path
            frames_in_init = [int(p[1:]) for p in recipe.init.split("_") if p[:1] == "f" and p[1:].isdigit()]
            assert not frames_in_init or frames_in_init[0] == args.orig_t_size, recipe.path


def test_video_submitit_parser_and_requeue(tmp_path):
    parser = run_with_submitit.get_submitit_parser("pretrain")
    args = parser.parse_args(["--clip_return_cls", "--output_dir", str(tmp_path), "--ngpus", "1"])
    assert args.task == "pretrain" and args.clip_return_cls is True
    (tmp_path / "checkpoint-latest.pth").write_bytes(b"")
    job = run_with_submitit.SubmititJob(args, "videomamba.video_sm.run_videomamba_pretraining:main",
                                        "checkpoint-latest.pth")  # fmt: skip
    requeued = job.checkpoint()
    assert requeued.function.args.resume == str(tmp_path / "checkpoint-latest.pth")
    regression = run_with_submitit.get_submitit_parser("regression").parse_args([])
    assert regression.regression and regression.mixup == 0 and regression.nb_classes == 1


def test_distributed_multiview_test_gathers_views_and_drops_padding(video_data, tmp_path):
    """Two gloo processes with --dist_eval: 3 videos x 3 views = 9 items, padded to 10 by the sampler."""
    import os
    import subprocess
    import sys

    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "val", "test"):
        (data / f"{split}.csv").write_text("".join((video_data / "test.csv").read_text().splitlines(True)[:3]))
    model = timm.create_model("videomamba_tiny", num_frames=4, img_size=SIZE, num_classes=4, **TINY)
    torch.save(model.state_dict(), tmp_path / "weights.pth")
    args = finetune_args(data, tmp_path / "single", "--eval", "--resume", str(tmp_path / "weights.pth"))
    args.prefix, args.test_num_segment, args.test_num_crop = str(video_data), 3, 1
    single = run_class_finetuning.main(args)

    repo = Path(run_class_finetuning.__file__).parents[2]
    argv = [
        "--model", "videomamba_tiny", "--model_kwargs", json.dumps(TINY), "--data_path", str(data),
        "--prefix", str(video_data), "--split", ",", "--nb_classes", "4", "--num_frames", "4",
        "--input_size", str(SIZE), "--short_side_size", str(SIZE), "--test_num_segment", "3", "--test_num_crop", "1",
        "--batch_size", "2", "--eval", "--resume", str(tmp_path / "weights.pth"), "--dist_eval", "--device", "cpu",
        "--no_amp", "--num_workers", "0", "--video_reader", "pyav", "--output_dir", str(tmp_path / "dist"),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "videomamba.video_sm.run_class_finetuning"]  # fmt: skip
    result = subprocess.run(command + argv, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "dist" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(r["num_views"] == 3 for r in rows)  # the padded repeat counted once
    reference = [json.loads(line) for line in (tmp_path / "single" / "predictions.jsonl").read_text().splitlines()]
    for got, want in zip(rows, reference, strict=True):
        assert got["prediction"] == want["prediction"]
        assert got["topk"][0][1] == pytest.approx(want["topk"][0][1], abs=1e-5)
    assert single["final_num_views"] == 9
