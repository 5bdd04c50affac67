"""One model-size table (`VIDEOMAMBA_SIZES`): every task's model names come from it.

A size added to the table (here at run time, through `add_model_size`, in a fresh process so the
registry of the other tests is untouched) is creatable in every task with no other edit.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import timm
import torch

import videomamba.core.pretrain
import videomamba.image_sm.models  # noqa: F401  (registers the *_distill variants)
from videomamba.core.backbone import VIDEOMAMBA_SIZES, model_size

REPO = Path(__file__).resolve().parents[2]

# The model names of the original release (image_sm, video_sm, video_mm's vision encoder).
RELEASED_NAMES = [
    "videomamba_tiny", "videomamba_small", "videomamba_middle", "videomamba_base",
    "videomamba_middle_distill", "videomamba_base_distill", "videomamba_middle_pretrain",
]  # fmt: skip


def test_every_released_name_and_every_size_of_every_family_is_registered():
    for name in RELEASED_NAMES:
        assert timm.is_model(name), name
    for size in VIDEOMAMBA_SIZES:
        for suffix in ("", "_distill", "_pretrain"):
            assert timm.is_model(f"videomamba_{size}{suffix}")
            assert model_size(f"videomamba_{size}{suffix}") == size
    assert model_size("deit_tiny_patch16_224") is None and model_size("videomamba_huge") is None


def test_a_registered_entrypoint_builds_its_size():
    with torch.device("meta"):
        model = timm.create_model("videomamba_small_pretrain", num_frames=8)
    assert (model.embed_dim, len(model.layers)) == (384, 24)
    assert "VideoMamba-small (D=384, 24 blocks)" in timm.models.model_entrypoint("videomamba_small_pretrain").__doc__


NEW_SIZE_SCRIPT = """
import sys

import timm
import torch

import videomamba.core.pretrain
import videomamba.image_sm.models
from videomamba.core.backbone import add_model_size

add_model_size("pico", embed_dim=32, depth=2, file_tag="p16")
small = dict(img_size=32, num_classes=3)

# image_sm: classifier and self-distillation student, through the runner's own --model check
from videomamba.image_sm.main import get_args_parser
args = get_args_parser().parse_args(["--model", "videomamba_pico_distill", "--data-path", "x"])
model = timm.create_model(args.model, teacher_embed_dim=8, **small)
assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3) and model.embed_dim == 32 and len(model.layers) == 2

# video_sm: fine-tuning classifier and masked-pretraining student
from videomamba.video_sm.run_class_finetuning import get_args_parser as finetune_parser
args = finetune_parser().parse_args(["--model", "videomamba_pico", "--data_path", "x"])
video = timm.create_model(args.model, num_frames=4, **small)
assert video(torch.randn(1, 3, 4, 32, 32)).shape == (1, 3)
student = timm.create_model("videomamba_pico_pretrain", num_frames=4, img_size=32)
assert student.embed_dim == 32

# video_mm: the vision encoder named in the config
from omegaconf import OmegaConf
from videomamba.video_mm.models.umt import build_vision_encoder
encoder = build_vision_encoder(OmegaConf.create(dict(name="videomamba_pico", img_size=32, num_frames=4)))
assert (encoder.embed_dim, len(encoder.layers)) == (32, 2)

# the experiment tools read the released-file tag from the table
from videomamba.video_sm.exp.presets import _in1k
assert _in1k("videomamba_pico") == "videomamba_p16_in1k_res224.pth"
sys.path.insert(0, "tools")
import check_exp_scripts
assert check_exp_scripts._size_problems("videomamba_pico", {"--finetune": "videomamba_t16_k400_f8_res224.pth"})
assert not check_exp_scripts._size_problems("videomamba_pico", {"--finetune": "videomamba_p16_k400_f8_res224.pth"})
print("ok")
"""


def test_a_size_added_to_the_table_is_creatable_in_every_task():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(NEW_SIZE_SCRIPT)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


def test_video_mm_rejects_a_vision_encoder_name_without_a_size():
    from omegaconf import OmegaConf

    from videomamba.video_mm.config import ConfigError
    from videomamba.video_mm.models.umt import build_vision_encoder

    with pytest.raises(ConfigError, match="names no model size; use one of videomamba_tiny"):
        build_vision_encoder(OmegaConf.create(dict(name="vit_b16")))
