#!/usr/bin/env bash
#SBATCH --job-name=k400_videomamba_middle_mask_mask_pretrain
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=8
#SBATCH --gres=gpu:8
#SBATCH --cpus-per-task=16
#SBATCH --output=%x-%j.log
#
# masked pretraining of VideoMamba-M on K400 with a CLIP ViT-B/16 teacher.
# Generated from videomamba/video_sm/exp/presets.py: edit the table there and regenerate.
#
# sbatch runs one process per GPU through srun; plain bash runs GPUS processes with torchrun
# (GPUS=1: a single process). Overrides, for other paths or for tests:
#   environment: DATA_PATH (its train.csv), OUTPUT_DIR, GPUS, PYTHON, VIDEOMAMBA_CHECKPOINTS;
#                PREFIX (root of the video paths), SPLIT (list delimiter), CLIP_TEACHER_PATH: set empty, each
#                leaves its flag out (PREFIX= takes the list paths as they are);
#   flags: arguments after the script name are appended, so they win over the ones below, e.g.
#     GPUS=1 bash videomamba/video_sm/exp/k400/videomamba_middle_mask/run_mask_pretrain.sh --device cpu --no_amp --epochs 1
set -euo pipefail

for root in "${VIDEOMAMBA_ROOT:-}" "$(dirname "${BASH_SOURCE[0]}")/../../../../.." "${SLURM_SUBMIT_DIR:-.}"; do
    launcher="$root/videomamba/tools/launch.sh"
    if [[ -n "$root" && -f "$launcher" ]]; then source "$launcher"; break; fi
done
declare -F videomamba_launch >/dev/null || { echo "run from the repository root or set VIDEOMAMBA_ROOT" >&2; exit 1; }

JOB_NAME=k400_videomamba_middle_mask_mask_pretrain
CHECKPOINTS="${VIDEOMAMBA_CHECKPOINTS:-$VIDEOMAMBA_ROOT/checkpoints}"
DATA_PATH="${DATA_PATH:-data/k400}"
PREFIX="${PREFIX-data/k400}"
OUTPUT_DIR="${OUTPUT_DIR:-$VIDEOMAMBA_ROOT/videomamba/video_sm/exp/k400/videomamba_middle_mask/$JOB_NAME}"
export GPUS="${GPUS:-32}"
SPLIT="${SPLIT-,}"
CLIP_TEACHER_PATH="${CLIP_TEACHER_PATH-$CHECKPOINTS/clip_visual_encoder/vit_b16.pth}"

videomamba_launch videomamba.video_sm.run_videomamba_pretraining \
    --model videomamba_middle_pretrain \
    --data_path "$DATA_PATH/train.csv" \
    ${SPLIT:+--split "$SPLIT"} \
    --num_sample 1 \
    --flip True \
    --mask_type attention \
    --mask_ratio 0.8 \
    --clip_teacher clip_b16 \
    ${CLIP_TEACHER_PATH:+--clip_teacher_path "$CLIP_TEACHER_PATH"} \
    --clip_loss_ratio 1 \
    --clip_loss_type l2 \
    --clip_decoder_embed_dim 576 \
    --clip_output_dim 512 \
    --clip_norm_type l2 \
    --clip_return_layer 1 \
    --clip_return_interval 1 \
    --clip_student_return_interval 1 \
    --clip_return_cls \
    --clip_return_attn \
    --tubelet_size 1 \
    --lr 0.00015 \
    --drop_path 0.4 \
    --batch_size 64 \
    --opt_betas 0.9 0.95 \
    --warmup_epochs 40 \
    --epochs 801 \
    --num_segments 8 \
    --num_frames 8 \
    --sampling_rate 1 \
    --num_workers 12 \
    --save_ckpt_freq 100 \
    --bf16 \
    ${PREFIX:+--prefix "$PREFIX"} \
    --output_dir "$OUTPUT_DIR" \
    "$@"
