"""The video_sm experiment recipes as one table, and the generator of their sbatch scripts.

Every recipe of the original release's ``exp/`` folder is a row here, with its bugs fixed:
- k400 tiny 224->384 and ssv2 tiny 224->288 use videomamba_tiny (the original ran videomamba_small,
  the SSv2 one also with a t16_ssv2_f64 checkpoint at 64 frames);
- breakfast/coin tiny f64 start from the f64 K400 checkpoint (the original loaded f32 with orig_t_size 64);
- lvu regression scripts read the right data sets (whole videos vs windows were swapped) and a
  regression task (the original pointed at the 10-class "director" task with nb_classes 1);
- ssv2 middle_mask 224->288 reads SSV2 (the original used Kinetics_sparse with ',');
- coin middle_mask f64 tests 10 x 3 views like the others (the original used 4 x 3);
- ssv2 mask pretraining runs 200 epochs as in the model zoo (the script said 801);
- every orig_t_size matches the frames of the checkpoint it loads.
The scripts use the corrected layer decay; append ``--layer_decay_as_released`` to reproduce the
published runs exactly (see the README).

Regenerate after editing the table: ``python -m videomamba.video_sm.exp.presets`` (``--check`` only
reports scripts that differ from the table).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from videomamba.core.backbone import VIDEOMAMBA_SIZES, model_size

__all__ = ["RECIPES", "Recipe", "recipe_flags", "render", "write_all"]

EXP_DIR = Path(__file__).resolve().parent
TINY_AA = "rand-m5-n2-mstd0.25-inc1"
# data set -> (--data_set, --nb_classes, --split, default data folder, test views seg x crop)
DATASETS = {
    "k400": ("Kinetics_sparse", 400, ",", "data/k400", (4, 3)),
    "ssv2": ("SSV2", 174, " ", "data/ssv2", (2, 3)),
    "breakfast": ("Kinetics_sparse", 10, ",", "data/breakfast", (4, 3)),
    "coin": ("Kinetics_sparse", 180, ",", "data/coin", (10, 3)),
}


@dataclass
class Recipe:
    """One experiment script. ``init`` is a checkpoint file name in $VIDEOMAMBA_CHECKPOINTS."""

    path: str  # relative to exp/
    description: str
    model: str
    init: str
    frames: int
    epochs: int
    warmup: int
    lr: float
    gpus: int
    batch_size: int
    drop_path: float
    weight_decay: float = 0.05
    layer_decay: float | None = None  # None: the runner's default (0.75)
    resolution: int = 224
    dataset: str = "k400"
    orig_t_size: int | None = None
    update_freq: int = 1
    aa: str | None = None
    test_views: tuple[int, int] | None = None
    extra: list[str] = field(default_factory=list)
    entry: str = "run_class_finetuning.py"


def _tag(size: str) -> str:
    """The released-file tag of a size (``t16``)."""
    return VIDEOMAMBA_SIZES[size]["file_tag"]


def _in1k(model: str) -> str:
    return f"videomamba_{_tag(model_size(model))}_in1k_res224.pth"


def _short_video_recipes() -> list[Recipe]:
    """K400 and SSv2: IN-1K inflation, high-resolution fine-tunes, and mask-pretrained fine-tunes."""
    rows = []
    # (size, dataset) -> (epochs, lr, {frames: (gpus, batch per GPU)}, drop_path, wd)
    scratch = {
        ("tiny", "k400"): (70, 2e-4, {8: (8, 64), 16: (8, 64), 32: (8, 32), 64: (16, 16)}, 0.1, 0.1),
        ("small", "k400"): (50, 2e-4, {8: (8, 64), 16: (16, 32), 32: (16, 16), 64: (16, 8)}, 0.35, 0.05),
        ("middle", "k400"): (50, None, {8: (16, 32), 16: (16, 16), 32: (16, 8), 64: (16, 4)}, 0.8, 0.05),
        ("tiny", "ssv2"): (35, 4e-4, {8: (8, 64), 16: (8, 64)}, 0.1, 0.1),
        ("small", "ssv2"): (30, 4e-4, {8: (8, 64), 16: (16, 32)}, 0.35, 0.05),
        ("middle", "ssv2"): (30, 4e-4, {8: (16, 32), 16: (16, 16)}, 0.8, 0.05),
    }
    for (size, data), (epochs, lr, layouts, drop_path, wd) in scratch.items():
        model = f"videomamba_{size}"
        for frames, (gpus, batch) in layouts.items():
            rows.append(
                Recipe(
                    path=f"{data}/{model}/run_f{frames}x224.sh",
                    description=f"VideoMamba-{size} on {data.upper()}, {frames} frames, from the IN-1K image model",
                    model=model,
                    init=_in1k(model),
                    frames=frames,
                    epochs=epochs,
                    warmup=5,
                    lr=lr if lr is not None else (2e-4 if frames == 8 else 1e-4),
                    gpus=gpus,
                    batch_size=batch,
                    drop_path=drop_path,
                    weight_decay=wd,
                    dataset=data,
                    aa=TINY_AA if size == "tiny" else None,
                )
            )
    # High resolution: k400 f64 224 -> 384, ssv2 f16 224 -> 288.
    hires = {
        ("tiny", "k400"): (10, 2, 16, 6, 0.1),
        ("small", "k400"): (6, 1, 32, 2, 0.35),
        ("middle", "k400"): (6, 1, 16, 1, 0.8),
        ("tiny", "ssv2"): (10, 2, 16, 12, 0.1),
        ("small", "ssv2"): (10, 2, 16, 12, 0.35),
        ("middle", "ssv2"): (10, 2, 16, 6, 0.8),
    }
    for (size, data), (epochs, warmup, gpus, batch, drop_path) in hires.items():
        model, tag = f"videomamba_{size}", _tag(size)
        frames, res = (64, 384) if data == "k400" else (16, 288)
        rows.append(
            Recipe(
                path=f"{data}/{model}/run_f{frames}x224to{res}.sh",
                description=f"VideoMamba-{size} on {data.upper()}, {frames} frames, fine-tuned 224 -> {res}",
                model=model,
                init=f"videomamba_{tag}_{data}_f{frames}_res224.pth",
                frames=frames,
                epochs=epochs,
                warmup=warmup,
                lr=5e-6,
                gpus=gpus,
                batch_size=batch,
                drop_path=drop_path,
                weight_decay=1e-8,
                resolution=res,
                dataset=data,
                orig_t_size=frames,
                update_freq=2 if (size, data) in (("small", "k400"), ("middle", "k400")) else 1,
                aa=TINY_AA if size == "tiny" else None,
            )
        )
    # Fine-tunes of the masked-pretrained VideoMamba-M (8-frame checkpoint, temporal embedding resampled).
    mask_batches = {"k400": {8: 32, 16: 16, 32: 8, 64: 4}, "ssv2": {8: 32, 16: 16}}
    for data, batches in mask_batches.items():
        for frames, batch in batches.items():
            rows.append(
                Recipe(
                    path=f"{data}/videomamba_middle_mask/run_f{frames}x224.sh",
                    description=f"masked-pretrained VideoMamba-M on {data.upper()}, {frames} frames",
                    model="videomamba_middle",
                    init=f"videomamba_m16_{data}_mask_pt_f8_res224.pth",
                    frames=frames,
                    epochs=45 if data == "k400" else 30,
                    warmup=5,
                    lr=1e-4,
                    gpus=16,
                    batch_size=batch,
                    drop_path=0.4,
                    layer_decay=0.8,
                    dataset=data,
                    orig_t_size=8,
                )
            )
        frames, res = (64, 384) if data == "k400" else (16, 288)
        rows.append(
            Recipe(
                path=f"{data}/videomamba_middle_mask/run_f{frames}x224to{res}.sh",
                description=f"masked-pretrained VideoMamba-M on {data.upper()}, {frames} frames, 224 -> {res}",
                model="videomamba_middle",
                init=f"videomamba_m16_{data}_mask_ft_f{frames}_res224.pth",
                frames=frames,
                epochs=6 if data == "k400" else 10,
                warmup=1 if data == "k400" else 2,
                lr=5e-6,
                gpus=16,
                batch_size=1 if data == "k400" else 6,
                drop_path=0.4,
                weight_decay=1e-8,
                layer_decay=0.8,
                resolution=res,
                dataset=data,
                orig_t_size=frames,
                update_freq=2 if data == "k400" else 1,
            )
        )
    return rows


def _long_video_recipes() -> list[Recipe]:
    """Breakfast and COIN (whole videos, 32/64 frames) from the matching K400 checkpoints."""
    rows = []
    # size -> (epochs breakfast, epochs coin, gpus, batch at 32 frames, drop_path, wd, layer_decay)
    settings = {
        "tiny": (70, 40, 8, 32, 0.1, 0.1, None),
        "small": (50, 35, 16, 16, 0.4, 0.05, None),
        "middle": (50, 30, 8, 8, 0.8, 0.05, 0.8),
        "middle_mask": (45, 30, 8, 8, 0.4, 0.05, 0.8),
    }
    for data in ("breakfast", "coin"):
        for size, (epochs_b, epochs_c, gpus, batch32, drop_path, wd, layer_decay) in settings.items():
            base = size.removesuffix("_mask")
            model, tag = f"videomamba_{base}", _tag(base)
            for frames in (32, 64):
                mask = "_mask_ft" if size == "middle_mask" else ""
                # Tiny at 64 frames ran on 16 GPUs with half the per-GPU batch.
                gpus_here, batch = (16, 16) if (size == "tiny" and frames == 64) else (gpus, batch32 // (frames // 32))
                rows.append(
                    Recipe(
                        path=f"{data}/videomamba_{size}/run_f{frames}x224.sh",
                        description=f"{'masked-pretrained ' if mask else ''}VideoMamba-{base} on "
                        f"{data.capitalize()}, {frames} frames, from the K400 f{frames} model",
                        model=model,
                        init=f"videomamba_{tag}_k400{mask}_f{frames}_res224.pth",
                        frames=frames,
                        epochs=epochs_b if data == "breakfast" else epochs_c,
                        warmup=5,
                        lr=2e-4,
                        gpus=gpus_here,
                        batch_size=batch,
                        drop_path=drop_path,
                        weight_decay=wd,
                        layer_decay=layer_decay,
                        dataset=data,
                        orig_t_size=frames,
                        aa=TINY_AA if size == "tiny" else None,
                    )
                )
    return rows


def _lvu_recipes() -> list[Recipe]:
    """LVU with VideoMamba-Ti from the K400 f32 model: classification and regression, whole videos or windows."""
    rows = []
    for name, regression, windows in (
        ("run_class", False, False),
        ("run_class_trim", False, True),
        ("run_regression", True, False),
        ("run_regression_trim", True, True),
    ):
        extra = ["--trimmed", "60", "--time_stride", "16"] if windows else []
        task = "like" if regression else "director"
        what = "regression (like)" if regression else "classification (director, 10 classes)"
        rows.append(
            Recipe(
                path=f"lvu/{name}.sh",
                description=f"LVU {what}, {'60 s windows every 16 s' if windows else 'whole videos'}",
                model="videomamba_tiny",
                init="videomamba_t16_k400_f32_res224.pth",
                frames=32,
                epochs=70,
                warmup=5,
                lr=4e-4,
                gpus=8,
                batch_size=8,
                drop_path=0.15,
                weight_decay=0.1,
                dataset=f"lvu:{task}:{'LVU' if windows else 'Kinetics_sparse'}",
                orig_t_size=32,
                aa=TINY_AA,
                extra=extra,
                entry="run_regression_finetuning.py" if regression else "run_class_finetuning.py",
            )
        )
    return rows


def _pretrain_recipes() -> list[Recipe]:
    """Masked pretraining of VideoMamba-M with a CLIP ViT-B/16 teacher on K400 (800 epochs) and SSv2 (200)."""
    return [
        Recipe(
            path=f"{data}/videomamba_middle_mask/run_mask_pretrain.sh",
            description=f"masked pretraining of VideoMamba-M on {data.upper()} with a CLIP ViT-B/16 teacher",
            model="videomamba_middle_pretrain",
            init="",
            frames=8,
            epochs=801 if data == "k400" else 201,
            warmup=40,
            lr=1.5e-4,
            gpus=32,
            batch_size=64,
            drop_path=0.4,
            dataset=data,
            entry="run_videomamba_pretraining.py",
        )
        for data in ("k400", "ssv2")
    ]


RECIPES: list[Recipe] = _short_video_recipes() + _long_video_recipes() + _lvu_recipes() + _pretrain_recipes()

HEADER = """#!/usr/bin/env bash
#SBATCH --job-name={job}
#SBATCH --nodes={nodes}
#SBATCH --ntasks-per-node={per_node}
#SBATCH --gres=gpu:{per_node}
#SBATCH --cpus-per-task=16
#SBATCH --output=%x-%j.log
#
# {description}.
# Generated from videomamba/video_sm/exp/presets.py: edit the table there and regenerate.
#
# sbatch runs one process per GPU through srun; plain bash runs GPUS processes with torchrun
# (GPUS=1: a single process). Overrides, for other paths or for tests:
#   environment: DATA_PATH ({data_help}), OUTPUT_DIR, GPUS, PYTHON, VIDEOMAMBA_CHECKPOINTS;
#                {clearable}: set empty, each
#                leaves its flag out ({empty_examples});
#   flags: arguments after the script name are appended, so they win over the ones below, e.g.
#     GPUS=1 bash videomamba/video_sm/exp/{path} --device cpu --no_amp --epochs 1
set -euo pipefail

for root in "${{VIDEOMAMBA_ROOT:-}}" "$(dirname "${{BASH_SOURCE[0]}}")/{up}" "${{SLURM_SUBMIT_DIR:-.}}"; do
    launcher="$root/videomamba/tools/launch.sh"
    if [[ -n "$root" && -f "$launcher" ]]; then source "$launcher"; break; fi
done
declare -F videomamba_launch >/dev/null || {{ echo "run from the repository root or set VIDEOMAMBA_ROOT" >&2; exit 1; }}

JOB_NAME={job}
CHECKPOINTS="${{VIDEOMAMBA_CHECKPOINTS:-$VIDEOMAMBA_ROOT/checkpoints}}"
DATA_PATH="${{DATA_PATH:-{data_path}}}"
PREFIX="${{PREFIX-{prefix}}}"
OUTPUT_DIR="${{OUTPUT_DIR:-$VIDEOMAMBA_ROOT/videomamba/video_sm/exp/{folder}/$JOB_NAME}}"
export GPUS="${{GPUS:-{gpus}}}"
"""


def _fmt(value: float) -> str:
    return f"{value:g}"


def _data_flags(recipe: Recipe) -> tuple[dict[str, str], str, str]:
    """(dataset variables' defaults, default data path, default prefix) for the recipe's data set."""
    if recipe.dataset.startswith("lvu:"):
        _, task, data_set = recipe.dataset.split(":")
        regression = recipe.entry == "run_regression_finetuning.py"
        values = {"DATA_SET": data_set, "NB_CLASSES": "1" if regression else "10", "SPLIT": ","}
        return values, f"data/lvu/{task}", "data/lvu"
    data_set, classes, split, folder, _ = DATASETS[recipe.dataset]
    return {"DATA_SET": data_set, "NB_CLASSES": str(classes), "SPLIT": split}, folder, folder


def _optional(flag: str, variable: str) -> str:
    """The flag and the variable's value, or nothing when the variable is empty."""
    return f'${{{variable}:+{flag} "${variable}"}}'


# Dataset options read from the environment: variable -> runner flag.
DATA_VARIABLES = {"DATA_SET": "--data_set", "NB_CLASSES": "--nb_classes", "SPLIT": "--split"}


def _finetune_flags(recipe: Recipe) -> list[str]:
    seg, crop = recipe.test_views or DATASETS.get(recipe.dataset, (0, 0, 0, 0, (4, 3)))[4]
    flags = [
        _optional("--finetune", "FINETUNE"),
        "--num_frames", str(recipe.frames),
        "--tubelet_size", "1",
        "--input_size", str(recipe.resolution),
        "--short_side_size", str(recipe.resolution),
        "--num_sample", "2",
        "--batch_size", str(recipe.batch_size),
        "--update_freq", str(recipe.update_freq),
        "--epochs", str(recipe.epochs),
        "--warmup_epochs", str(recipe.warmup),
        "--lr", _fmt(recipe.lr),
        "--opt", "adamw",
        "--opt_betas", "0.9", "0.999",
        "--weight_decay", _fmt(recipe.weight_decay),
        "--drop_path", _fmt(recipe.drop_path),
        "--test_num_segment", str(seg),
        "--test_num_crop", str(crop),
    ]  # fmt: skip
    if recipe.orig_t_size is not None:
        flags += ["--orig_t_size", str(recipe.orig_t_size)]
    if recipe.layer_decay is not None:
        flags += ["--layer_decay", _fmt(recipe.layer_decay)]
    if recipe.aa is not None:
        flags += ["--aa", recipe.aa]
    return flags + ["--num_workers", "12", "--dist_eval", "--test_best", "--bf16"]


def _pretrain_flags(recipe: Recipe) -> list[str]:
    return [
        "--data_path", '"$DATA_PATH/train.csv"',
        _optional("--split", "SPLIT"),
        "--num_sample", "1",
        "--flip", "True",
        "--mask_type", "attention",
        "--mask_ratio", "0.8",
        "--clip_teacher", "clip_b16",
        _optional("--clip_teacher_path", "CLIP_TEACHER_PATH"),
        "--clip_loss_ratio", "1",
        "--clip_loss_type", "l2",
        "--clip_decoder_embed_dim", "576",
        "--clip_output_dim", "512",
        "--clip_norm_type", "l2",
        "--clip_return_layer", "1",
        "--clip_return_interval", "1",
        "--clip_student_return_interval", "1",
        "--clip_return_cls",
        "--clip_return_attn",
        "--tubelet_size", "1",
        "--lr", _fmt(recipe.lr),
        "--drop_path", _fmt(recipe.drop_path),
        "--batch_size", str(recipe.batch_size),
        "--opt_betas", "0.9", "0.95",
        "--warmup_epochs", str(recipe.warmup),
        "--epochs", str(recipe.epochs),
        "--num_segments", "8",
        "--num_frames", str(recipe.frames),
        "--sampling_rate", "1",
        "--num_workers", "12",
        "--save_ckpt_freq", "100",
        "--bf16",
    ]  # fmt: skip


def recipe_flags(recipe: Recipe) -> list[str]:
    """The runner flags of a recipe as shell words (variables such as "$DATA_PATH" still quoted)."""
    flags = ["--model", recipe.model]
    if recipe.entry == "run_videomamba_pretraining.py":
        flags += _pretrain_flags(recipe) + [_optional("--prefix", "PREFIX")]
    else:
        flags += ["--data_path", '"$DATA_PATH"', _optional("--prefix", "PREFIX")]
        flags += [_optional(flag, variable) for variable, flag in DATA_VARIABLES.items()] + recipe.extra
        flags += _finetune_flags(recipe)
    return flags + ["--output_dir", '"$OUTPUT_DIR"']


def render(recipe: Recipe) -> str:
    """The sbatch script of one recipe."""
    data_values, data_path, prefix = _data_flags(recipe)
    pretraining = recipe.entry == "run_videomamba_pretraining.py"
    folder = str(Path(recipe.path).parent)
    job = f"{folder.replace('/', '_')}_{Path(recipe.path).stem.removeprefix('run_')}"
    text = HEADER.format(
        job=job,
        nodes=max(1, recipe.gpus // 8),
        per_node=min(8, recipe.gpus),
        description=recipe.description,
        data_help="its train.csv" if pretraining else "folder of train/val/test.csv",
        clearable=(
            "PREFIX (root of the video paths), SPLIT (list delimiter), CLIP_TEACHER_PATH"
            if pretraining
            else "PREFIX (root of the video paths), DATA_SET, NB_CLASSES, SPLIT (list delimiter), FINETUNE"
        ),
        empty_examples="PREFIX= takes the list paths as they are"
        + ("" if pretraining else ", FINETUNE= trains from scratch"),
        path=recipe.path,
        up="/".join([".."] * (len(Path(recipe.path).parts) + 2)),
        data_path=data_path,
        prefix=prefix,
        folder=folder,
        gpus=recipe.gpus,
    )
    # `${VAR-default}`: an unset variable takes the recipe's value, an empty one clears the flag.
    if pretraining:
        text += 'SPLIT="${SPLIT-,}"\n'
        text += 'CLIP_TEACHER_PATH="${CLIP_TEACHER_PATH-$CHECKPOINTS/clip_visual_encoder/vit_b16.pth}"\n'
    else:
        text += "".join(f'{variable}="${{{variable}-{value}}}"\n' for variable, value in data_values.items())
    if recipe.init:
        text += f'FINETUNE="${{FINETUNE-$CHECKPOINTS/{recipe.init}}}"\n'
    lines, current = [], ""
    for flag in recipe_flags(recipe):
        if flag.startswith(("--", "${")) and current:
            lines.append(current)
            current = ""
        current = f"{current} {flag}".strip()
    lines.append(current)
    body = "".join(f"    {line} \\\n" for line in lines)
    module = f"videomamba.video_sm.{Path(recipe.entry).stem}"
    return text + f'\nvideomamba_launch {module} \\\n{body}    "$@"\n'


def write_all(check: bool = False) -> list[Path]:
    """Write (or with check=True only compare) every recipe's script; returns the paths that differ."""
    paths = [r.path for r in RECIPES]
    if len(set(paths)) != len(paths):
        raise ValueError("two recipes write the same script")
    changed = []
    for recipe in RECIPES:
        path = EXP_DIR / recipe.path
        text = render(recipe)
        if path.is_file() and path.read_text() == text:
            continue
        changed.append(path)
        if not check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            path.chmod(0o755)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the video_sm exp/*.sh scripts from the preset table")
    parser.add_argument("--check", action="store_true", help="only list scripts that differ from the table")
    args = parser.parse_args(argv)
    changed = write_all(check=args.check)
    for path in changed:
        print(("differs: " if args.check else "wrote: ") + str(path.relative_to(EXP_DIR)))
    print(f"{len(RECIPES)} recipes, {len(changed)} {'differ' if args.check else 'written'}")
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    from videomamba.core.cli import run_cli

    raise SystemExit(run_cli(main))
