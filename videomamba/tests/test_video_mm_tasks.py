"""video_mm tasks end to end on the synthetic data set: masked then unmasked pretraining, zero-shot
retrieval, multiple choice, QA, fine-tuning with auto-resume, and the entry scripts under torchrun."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from videomamba.core.logs import read_log
from videomamba.video_mm.synthetic import make_synthetic_data, tiny_overrides
from videomamba.video_mm.tasks import pretrain, retrieval, retrieval_mc, vqa

pytest.importorskip("av")

REPO = Path(__file__).resolve().parents[2]
EXP = REPO / "videomamba" / "video_mm"
CHANCE_R1 = 100 / 8  # eight test videos, one caption each


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny models run fastest single-threaded, and the suite shares two cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("video_mm_data")
    make_synthetic_data(root)
    return root


def tiny(data: Path) -> list[str]:
    return tiny_overrides(data) + ["log_freq", "1000"]


@pytest.fixture(scope="module")
def pretrained(data, tmp_path_factory):
    """Masked stage (one epoch, with the teacher), then the unmasked stage from its checkpoint."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # module fixtures start before the per-test `one_thread`
    runs = tmp_path_factory.mktemp("runs")
    try:
        masked = pretrain.main(
            [str(EXP / "exp_pt/videomamba_middle_5m/config.py"), *tiny(data), "output_dir", str(runs / "masked"),
             "scheduler.epochs", "1", "test_types", "[]"]
        )  # fmt: skip
        unmasked = pretrain.main(
            [str(EXP / "exp_pt/videomamba_middle_5m_unmasked/config.py"), *tiny(data),
             "output_dir", str(runs / "unmasked"), "scheduler.epochs", "14", "optimizer.lr", "1e-3",
             "pretrained_path", str(runs / "masked/checkpoint-latest.pth")]
        )  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    return dict(runs=runs, masked=masked, unmasked=unmasked)


def test_masked_stage_trains_with_the_teacher_and_writes_its_run_files(pretrained):
    folder = pretrained["runs"] / "masked"
    assert pretrained["masked"] == {}  # no test split configured
    records = read_log(folder / "log.txt")
    assert len(records) == 1 and records[0]["epoch"] == 0
    assert {"train_video-loss_uta", "train_image-loss_uta", "train_video-loss_mlm", "train_video-loss_vtm"} <= set(
        records[0]
    )
    assert list(folder.glob("events.out.tfevents.*")) and (folder / "config.yaml").is_file()
    checkpoint = torch.load(folder / "checkpoint-latest.pth", weights_only=True)
    assert {"model", "optimizer", "scaler", "config", "epoch", "task_state", "rng_states"} <= set(checkpoint)
    assert not any(key.startswith("clip_teacher") for key in checkpoint["model"])
    assert all(value.dtype != torch.bfloat16 for value in checkpoint["model"].values())
    assert (folder / "checkpoint-best.pth").is_file()  # stop_key None: the last epoch is the best


class SimulatedKill(BaseException):
    """Raised at a file operation: no saving code cleans up after it, as after a SIGKILL."""


def test_killed_pretraining_resumes_bitwise(data, tmp_path):
    from videomamba.core import checkpoint as checkpoint_io

    def command(out):
        return [str(EXP / "exp_pt/videomamba_middle_5m/config.py"), *tiny(data), "output_dir", str(out),
                "scheduler.epochs", "2", "test_types", "[]"]  # fmt: skip

    pretrain.main(command(tmp_path / "whole"))
    calls = []

    def kill_at_epoch_1(label):  # epoch 0 takes 3 file operations (latest 2, log 1); the 4th is epoch 1's
        calls.append(label)
        if len(calls) == 4:
            raise SimulatedKill(label)

    checkpoint_io.file_operation_hook = kill_at_epoch_1
    try:
        with pytest.raises(SimulatedKill):
            pretrain.main(command(tmp_path / "killed"))
    finally:
        checkpoint_io.file_operation_hook = None
    assert torch.load(tmp_path / "killed" / "checkpoint-latest.pth", weights_only=True)["epoch"] == 0
    pretrain.main(command(tmp_path / "killed"))
    whole = torch.load(tmp_path / "whole" / "checkpoint-latest.pth", weights_only=True)
    resumed = torch.load(tmp_path / "killed" / "checkpoint-latest.pth", weights_only=True)
    assert all(torch.equal(resumed["model"][k], v) for k, v in whole["model"].items())
    assert read_log(tmp_path / "killed" / "log.txt") == read_log(tmp_path / "whole" / "log.txt")


def test_pretraining_learns_retrieval_well_above_chance(pretrained):
    results = pretrained["unmasked"]
    dual = results["msrvtt_1k_test_emb/"]
    print("synthetic R@1 after pretraining:", json.dumps(results))
    assert dual["img_r1"] >= 4 * CHANCE_R1 and dual["txt_r1"] >= 4 * CHANCE_R1
    assert {"txt_r1", "txt_r5", "txt_r10", "img_r1", "img_r5", "img_r10", "r_mean"} <= set(results["msrvtt_1k_test/"])


def test_zero_shot_retrieval_from_the_pretrained_checkpoint(pretrained, data):
    checkpoint = pretrained["runs"] / "unmasked/checkpoint-best.pth"
    # Without the model-size overrides: the checkpoint's stored configuration rebuilds its model.
    sizes = {
        "model.vision_encoder.depth",
        "model.vision_encoder.embed_dim",
        "model.vision_encoder.patch_size",
        "model.vision_encoder.img_size",
        "inputs.image_res",
        "model.embed_dim",
        "model.text_encoder.fusion_layer",
    }
    overrides = tiny(data)
    pairs = zip(overrides[::2], overrides[1::2], strict=True)
    kept = [item for key, value in pairs if key not in sizes for item in (key, value)]
    results = retrieval.main([str(EXP / "exp_zs/msrvtt/config.py"), *kept, "pretrained_path", str(checkpoint),
                              "unscale_lr", "True"])  # fmt: skip
    # The same weights on the same videos and captions (the pretraining layout loaded into the retrieval model).
    for key, value in pretrained["unmasked"]["msrvtt_1k_test_emb/"].items():
        assert results["test_emb/"][key] == pytest.approx(value)
    saved = json.loads((checkpoint.parent / "eval" / "eval_res_latest.json").read_text())
    assert saved["test_emb/"]["img_r1"] == results["test_emb/"]["img_r1"]


def test_multiple_choice(pretrained, data):
    results = retrieval_mc.main(
        [str(EXP / "exp_mc/msrvtt/config.py"), *tiny(data), "output_dir", str(pretrained["runs"] / "mc"),
         "pretrained_path", str(pretrained["runs"] / "unmasked/checkpoint-best.pth")]
    )  # fmt: skip
    print("synthetic multiple-choice accuracy:", results)
    assert results["mc_test/"]["acc"] >= 50.0  # chance: 20
    predictions = json.loads((pretrained["runs"] / "mc" / "mc_test_predictions.json").read_text())
    assert len(predictions) == 8 and all(len(p["scores"]) == 5 for p in predictions)


@pytest.mark.parametrize("answer_mode", ["rank", "generate"])
def test_question_answering(pretrained, data, answer_mode):
    output = pretrained["runs"] / f"qa_{answer_mode}"
    results = vqa.main(
        [str(EXP / "exp_qa/msrvtt/config.py"), *tiny(data), "output_dir", str(output), "answer_mode", answer_mode,
         "pretrained_path", str(pretrained["runs"] / "unmasked/checkpoint-best.pth"), "scheduler.epochs", "8",
         "optimizer.lr", "1e-3", "test_types", "['val']"]
    )  # fmt: skip
    print(f"synthetic QA accuracy ({answer_mode}):", results)
    # Chance is 25% for colours and 50% for directions; always answering one word scores at most 37.5%.
    assert results["val/"]["acc"] > 50.0
    predictions = json.loads((output / "val_predictions.json").read_text())
    assert len(predictions) == 16 and {p["answer"] for p in predictions} <= {
        "red",
        "green",
        "blue",
        "yellow",
        "up",
        "down",
    }


def test_retrieval_fine_tuning_resumes_where_it_stopped(pretrained, data):
    output = pretrained["runs"] / "finetune"
    checkpoint = pretrained["runs"] / "unmasked/checkpoint-best.pth"
    command = [str(EXP / "exp_zs/msrvtt/config.py"), *tiny(data), "evaluate", "False", "output_dir", str(output),
               "pretrained_path", str(checkpoint), "optimizer.lr", "1e-4"]  # fmt: skip
    retrieval.main([*command, "scheduler.epochs", "1"])
    first = torch.load(output / "checkpoint-latest.pth", weights_only=True)
    retrieval.main([*command, "scheduler.epochs", "2"])  # the same command, one more epoch: resumes
    records = read_log(output / "log.txt")
    assert [r["epoch"] for r in records] == [0, 1]
    second = torch.load(output / "checkpoint-latest.pth", weights_only=True)
    assert second["epoch"] == 1 and second["task_state"]["global_step"] == 2 * first["task_state"]["global_step"]
    assert "train_video-loss_vtc" in records[1] and "test/r_mean" in records[1]


def test_entry_point_under_the_shared_launcher_with_two_processes(pretrained, data):
    output = pretrained["runs"] / "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHON": sys.executable, "GPUS": "2"}
    env.pop("SLURM_JOB_ID", None)
    result = subprocess.run(
        ["bash", "videomamba/tools/launch.sh", "videomamba.video_mm.tasks.retrieval",
         str(EXP / "exp_zs/msrvtt/config.py"), *tiny(data),
         "evaluate", "False", "output_dir", str(output), "scheduler.epochs", "1", "batch_size", "4",
         "pretrained_path", str(pretrained["runs"] / "unmasked/checkpoint-best.pth"), "optimizer.lr", "1e-4"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "--nproc_per_node=2 -m videomamba.video_mm.tasks.retrieval" in result.stdout  # torchrun, module entry
    assert "distributed init (torchrun, gloo): rank 0/2" in result.stdout
    records = read_log(output / "log.txt")
    assert len(records) == 1 and records[0]["test/r_mean"] > 0
    # 64 pairs over 2 ranks in batches of 4 per rank: 8 steps, the same on both ranks.
    assert torch.load(output / "checkpoint-latest.pth", weights_only=True)["task_state"]["global_step"] == 8


RUN_SCRIPTS = sorted(EXP.glob("exp_*/*/run.sh"))


@pytest.mark.parametrize("script", RUN_SCRIPTS, ids=lambda p: f"{p.parent.parent.name}/{p.parent.name}")
def test_experiment_scripts_launch_their_config_with_overrides(script, tmp_path):
    env = {**os.environ, "DRY_RUN": "1", "GPUS": "1", "DATA_DIR": "/data", "MODEL_DIR": "/ckpt"}
    env.pop("SLURM_JOB_ID", None)
    result = subprocess.run(
        ["bash", str(script), "optimizer.lr", "1e-5"], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    )
    command = result.stdout.strip().splitlines()[-1].split()
    assert command[2:4] == ["-u", "-m"] and command[4].startswith("videomamba.video_mm.tasks.")
    entry, config = command[4], Path(command[5])
    assert importlib.util.find_spec(entry) is not None and config == script.parent / "config.py"
    overrides = command[6:]
    assert overrides[:6] == ["data_dir", "/data", "model_dir", "/ckpt", "output_dir", str(script.parent / "output")]
    assert overrides[-2:] == ["optimizer.lr", "1e-5"]  # the caller's overrides come last and win
