#!/usr/bin/env bash
#SBATCH --job-name=videomamba_tiny_res224to448
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=8
#SBATCH --gres=gpu:8
#SBATCH --cpus-per-task=16
#SBATCH --output=%x-%j.log
#
# VideoMamba-Ti fine-tuned 224 -> 448 (release: 79.3 top-1); constant lr after warm-up.
#
# sbatch runs one process per GPU through srun; plain bash runs GPUS processes with torchrun
# (GPUS=1: a single process). Overrides, for other paths or for tests:
#   environment: IMAGENET_ROOT, OUTPUT_DIR, GPUS, PYTHON, VIDEOMAMBA_CHECKPOINTS;
#                DATA_SET, ROOT_DIR_TRAIN, META_FILE_TRAIN, ROOT_DIR_VAL, META_FILE_VAL, FINETUNE: set empty,
#                each leaves its flag out (META_FILE_TRAIN= META_FILE_VAL= read class folders
#                under ROOT_DIR_TRAIN / ROOT_DIR_VAL, FINETUNE= trains from scratch);
#   flags: arguments after the script name are appended, so they win over the ones below, e.g.
#     GPUS=1 bash videomamba/image_sm/exp/videomamba_tiny/run448.sh --device cpu --no_amp --epochs 1
set -euo pipefail

for root in "${VIDEOMAMBA_ROOT:-}" "$(dirname "${BASH_SOURCE[0]}")/../../../.." "${SLURM_SUBMIT_DIR:-.}"; do
    if [[ -n "$root" && -f "$root/videomamba/tools/launch.sh" ]]; then source "$root/videomamba/tools/launch.sh"; break; fi
done
declare -F videomamba_launch >/dev/null || { echo "run from the repository root or set VIDEOMAMBA_ROOT" >&2; exit 1; }

JOB_NAME=videomamba_tiny_res224to448
IMAGENET_ROOT="${IMAGENET_ROOT:-data/imagenet}"
CHECKPOINTS="${VIDEOMAMBA_CHECKPOINTS:-$VIDEOMAMBA_ROOT/checkpoints}"
OUTPUT_DIR="${OUTPUT_DIR:-$VIDEOMAMBA_ROOT/videomamba/image_sm/exp/videomamba_tiny/$JOB_NAME}"
export GPUS="${GPUS:-8}"
# `${VAR-default}`: an unset variable takes the recipe's value, an empty one clears the flag.
DATA_SET="${DATA_SET-IMNET}"
ROOT_DIR_TRAIN="${ROOT_DIR_TRAIN-$IMAGENET_ROOT/train}"
META_FILE_TRAIN="${META_FILE_TRAIN-$IMAGENET_ROOT/meta/train.txt}"
ROOT_DIR_VAL="${ROOT_DIR_VAL-$IMAGENET_ROOT/val}"
META_FILE_VAL="${META_FILE_VAL-$IMAGENET_ROOT/meta/val.txt}"
FINETUNE="${FINETUNE-$CHECKPOINTS/videomamba_t16_in1k_res224.pth}"

videomamba_launch videomamba.image_sm.main \
    --model videomamba_tiny \
    ${FINETUNE:+--finetune "$FINETUNE"} \
    ${DATA_SET:+--data-set "$DATA_SET"} \
    ${ROOT_DIR_TRAIN:+--root_dir_train "$ROOT_DIR_TRAIN"} \
    ${META_FILE_TRAIN:+--meta_file_train "$META_FILE_TRAIN"} \
    ${ROOT_DIR_VAL:+--root_dir_val "$ROOT_DIR_VAL"} \
    ${META_FILE_VAL:+--meta_file_val "$META_FILE_VAL"} \
    --input-size 448 \
    --batch-size 256 \
    --lr 5e-6 \
    --min-lr 5e-6 \
    --weight-decay 1e-8 \
    --drop-path 0 \
    --epochs 30 \
    --warmup-epochs 5 \
    --no-repeated-aug \
    --aa v0 \
    --bf16 \
    --dist-eval \
    --no-model-ema \
    --output_dir "$OUTPUT_DIR" \
    "$@"
