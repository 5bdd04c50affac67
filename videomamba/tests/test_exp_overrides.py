"""Exp scripts take their paths and dataset options from environment variables; an empty one leaves
its flag out (or, for video_mm, clears the config key), so a recipe runs on one's own data as is.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
K400 = REPO / "videomamba/video_sm/exp/k400/videomamba_tiny/run_f8x224.sh"
PRETRAIN = REPO / "videomamba/video_sm/exp/k400/videomamba_middle_mask/run_mask_pretrain.sh"
IMAGE = REPO / "videomamba/image_sm/exp/videomamba_tiny/run448.sh"
DISTILL = REPO / "videomamba/image_sm/exp_distill/videomamba_base/run224.sh"
ZERO_SHOT = REPO / "videomamba/video_mm/exp_zs/msrvtt/run.sh"
CLEARED = ("FINETUNE", "SPLIT", "PREFIX", "DATA_SET", "NB_CLASSES", "CLIP_TEACHER_PATH", "TEACHER_CHECKPOINT",
           "ROOT_DIR_TRAIN", "META_FILE_TRAIN", "ROOT_DIR_VAL", "META_FILE_VAL", "PRETRAINED_PATH")  # fmt: skip


def launched(script: Path, **environment: str) -> list[str]:
    """The command the script would run (DRY_RUN), with the given environment on top of a clean one."""
    env = {k: v for k, v in os.environ.items() if k not in CLEARED and not k.startswith("SLURM_")}
    env.update(DRY_RUN="1", GPUS="1", **environment)
    proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return shlex.split(proc.stdout.strip().splitlines()[-1])[1:]


def value(command: list[str], flag: str) -> str | None:
    return command[command.index(flag) + 1] if flag in command else None


def test_video_sm_recipe_defaults_and_empty_overrides():
    default = launched(K400, VIDEOMAMBA_CHECKPOINTS="/ckpt")
    assert value(default, "--finetune") == "/ckpt/videomamba_t16_in1k_res224.pth"
    assert (value(default, "--split"), value(default, "--data_set"), value(default, "--nb_classes")) == (
        ",", "Kinetics_sparse", "400")  # fmt: skip
    changed = launched(K400, SPLIT=" ", NB_CLASSES="4", DATA_SET="SSV2", FINETUNE="/my/init.pth")
    assert (value(changed, "--split"), value(changed, "--nb_classes"), value(changed, "--data_set")) == (
        " ",
        "4",
        "SSV2",
    )
    assert value(changed, "--finetune") == "/my/init.pth"
    cleared = launched(K400, FINETUNE="", SPLIT="", PREFIX="", DATA_SET="", NB_CLASSES="")
    assert not {"--finetune", "--split", "--prefix", "--data_set", "--nb_classes"} & set(cleared)
    pretrain = launched(PRETRAIN, SPLIT="", CLIP_TEACHER_PATH="", PREFIX="")
    assert not {"--split", "--clip_teacher_path", "--prefix"} & set(pretrain)


def test_image_sm_recipe_empty_overrides_read_class_folders():
    default = launched(IMAGE, IMAGENET_ROOT="/in1k", VIDEOMAMBA_CHECKPOINTS="/ckpt")
    assert value(default, "--meta_file_train") == "/in1k/meta/train.txt"
    assert value(default, "--finetune") == "/ckpt/videomamba_t16_in1k_res224.pth"
    own = launched(IMAGE, ROOT_DIR_TRAIN="/shapes/train", ROOT_DIR_VAL="/shapes/val", META_FILE_TRAIN="",
                   META_FILE_VAL="", FINETUNE="")  # fmt: skip
    assert value(own, "--root_dir_train") == "/shapes/train" and value(own, "--root_dir_val") == "/shapes/val"
    assert not {"--meta_file_train", "--meta_file_val", "--finetune"} & set(own)
    assert "--teacher_pretrained_path" not in launched(DISTILL, TEACHER_CHECKPOINT="")


@pytest.mark.parametrize(
    "setting,expected", [({}, None), ({"PRETRAINED_PATH": ""}, ""), ({"PRETRAINED_PATH": "/a.pth"}, "/a.pth")]
)
def test_video_mm_pretrained_path_from_the_environment(setting, expected):
    command = launched(ZERO_SHOT, **setting)
    assert value(command, "pretrained_path") == expected
