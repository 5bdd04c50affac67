#!/usr/bin/env bash
#SBATCH --job-name=breakfast_videomamba_tiny_f64x224
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=8
#SBATCH --gres=gpu:8
#SBATCH --cpus-per-task=16
#SBATCH --output=%x-%j.log
#
# VideoMamba-tiny on Breakfast, 64 frames, from the K400 f64 model.
# Generated from videomamba/video_sm/exp/presets.py: edit the table there and regenerate.
#
# sbatch runs one process per GPU through srun; plain bash runs GPUS processes with torchrun
# (GPUS=1: a single process). Overrides, for other paths or for tests:
#   environment: DATA_PATH (folder of train/val/test.csv), OUTPUT_DIR, GPUS, PYTHON, VIDEOMAMBA_CHECKPOINTS;
#                PREFIX (root of the video paths), DATA_SET, NB_CLASSES, SPLIT (list delimiter), FINETUNE: set empty, each
#                leaves its flag out (PREFIX= takes the list paths as they are, FINETUNE= trains from scratch);
#   flags: arguments after the script name are appended, so they win over the ones below, e.g.
#     GPUS=1 bash videomamba/video_sm/exp/breakfast/videomamba_tiny/run_f64x224.sh --device cpu --no_amp --epochs 1
set -euo pipefail

for root in "${VIDEOMAMBA_ROOT:-}" "$(dirname "${BASH_SOURCE[0]}")/../../../../.." "${SLURM_SUBMIT_DIR:-.}"; do
    launcher="$root/videomamba/tools/launch.sh"
    if [[ -n "$root" && -f "$launcher" ]]; then source "$launcher"; break; fi
done
declare -F videomamba_launch >/dev/null || { echo "run from the repository root or set VIDEOMAMBA_ROOT" >&2; exit 1; }

JOB_NAME=breakfast_videomamba_tiny_f64x224
CHECKPOINTS="${VIDEOMAMBA_CHECKPOINTS:-$VIDEOMAMBA_ROOT/checkpoints}"
DATA_PATH="${DATA_PATH:-data/breakfast}"
PREFIX="${PREFIX-data/breakfast}"
OUTPUT_DIR="${OUTPUT_DIR:-$VIDEOMAMBA_ROOT/videomamba/video_sm/exp/breakfast/videomamba_tiny/$JOB_NAME}"
export GPUS="${GPUS:-16}"
DATA_SET="${DATA_SET-Kinetics_sparse}"
NB_CLASSES="${NB_CLASSES-10}"
SPLIT="${SPLIT-,}"
FINETUNE="${FINETUNE-$CHECKPOINTS/videomamba_t16_k400_f64_res224.pth}"

videomamba_launch videomamba.video_sm.run_class_finetuning \
    --model videomamba_tiny \
    --data_path "$DATA_PATH" \
    ${PREFIX:+--prefix "$PREFIX"} \
    ${DATA_SET:+--data_set "$DATA_SET"} \
    ${NB_CLASSES:+--nb_classes "$NB_CLASSES"} \
    ${SPLIT:+--split "$SPLIT"} \
    ${FINETUNE:+--finetune "$FINETUNE"} \
    --num_frames 64 \
    --tubelet_size 1 \
    --input_size 224 \
    --short_side_size 224 \
    --num_sample 2 \
    --batch_size 16 \
    --update_freq 1 \
    --epochs 70 \
    --warmup_epochs 5 \
    --lr 0.0002 \
    --opt adamw \
    --opt_betas 0.9 0.999 \
    --weight_decay 0.1 \
    --drop_path 0.1 \
    --test_num_segment 4 \
    --test_num_crop 3 \
    --orig_t_size 64 \
    --aa rand-m5-n2-mstd0.25-inc1 \
    --num_workers 12 \
    --dist_eval \
    --test_best \
    --bf16 \
    --output_dir "$OUTPUT_DIR" \
    "$@"
