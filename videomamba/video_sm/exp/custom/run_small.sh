#!/usr/bin/env bash
#SBATCH --job-name=video_small_data
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --output=%x-%j.log
#
# Your own videos, from scratch: a small VideoMamba (2 blocks, width 64) that learns a few hundred
# short clips in minutes on a CPU. See "Train on your own data" in the repository README.
#
# Data: $DATA_PATH/{train,val,test}.csv, lines `path,label` (label from 0), paths relative to PREFIX.
# sbatch runs it as one task; plain bash runs GPUS processes with torchrun (default 1). Overrides:
#   environment: DATA_PATH, PREFIX (default DATA_PATH), NB_CLASSES, SPLIT (list delimiter, default ','),
#                HFLIP (flip probability; 0 for classes that depend on left/right), EPOCHS, LR,
#                BATCH_SIZE, NUM_FRAMES, INPUT_SIZE, MODEL_KWARGS, FINETUNE (empty: from scratch),
#                OUTPUT_DIR, GPUS, PYTHON;
#   flags: arguments after the script name are appended, so they win over the ones below, e.g.
#     DATA_PATH=my_videos NB_CLASSES=4 HFLIP=0 bash videomamba/video_sm/exp/custom/run_small.sh --device cpu --no_amp
set -euo pipefail

for root in "${VIDEOMAMBA_ROOT:-}" "$(dirname "${BASH_SOURCE[0]}")/../../../.." "${SLURM_SUBMIT_DIR:-.}"; do
    if [[ -n "$root" && -f "$root/videomamba/tools/launch.sh" ]]; then source "$root/videomamba/tools/launch.sh"; break; fi
done
declare -F videomamba_launch >/dev/null || { echo "run from the repository root or set VIDEOMAMBA_ROOT" >&2; exit 1; }

JOB_NAME=video_small_data
DATA_PATH="${DATA_PATH:-data/my_videos}"
PREFIX="${PREFIX-$DATA_PATH}"
OUTPUT_DIR="${OUTPUT_DIR:-$VIDEOMAMBA_ROOT/videomamba/video_sm/exp/custom/$JOB_NAME}"
export GPUS="${GPUS:-1}"
FINETUNE="${FINETUNE-}"
# Why these: 32 px frames cut into 8 px patches keep a moving object larger than a patch; tubelets
# of 2 frames put each patch's motion into one token; the mean of the patch tokens (not the cls
# token) feeds the classifier, since a randomly initialised VideoMamba's cls token reads little more
# than the first patches; 2 blocks of width 64 train fast on a CPU.
MODEL_KWARGS="${MODEL_KWARGS:-{\"depth\": 2, \"embed_dim\": 64, \"patch_size\": 8, \"global_pool\": \"avg\"\}}"

videomamba_launch videomamba.video_sm.run_class_finetuning \
    --model videomamba_tiny \
    --model_kwargs "$MODEL_KWARGS" \
    --data_path "$DATA_PATH" \
    --prefix "$PREFIX" \
    --data_set Kinetics_sparse \
    --split "${SPLIT:-,}" \
    --nb_classes "${NB_CLASSES:-4}" \
    ${FINETUNE:+--finetune "$FINETUNE"} \
    --num_frames "${NUM_FRAMES:-8}" \
    --tubelet_size 2 \
    --input_size "${INPUT_SIZE:-32}" \
    --short_side_size "${INPUT_SIZE:-32}" \
    --num_sample 1 \
    --batch_size "${BATCH_SIZE:-16}" \
    --epochs "${EPOCHS:-30}" \
    --warmup_epochs 2 \
    --lr "${LR:-1e-3}" \
    --warmup_lr 1e-5 \
    --min_lr 1e-5 \
    --unscale_lr \
    --opt adamw \
    --opt_betas 0.9 0.999 \
    --weight_decay 0.05 \
    --layer_decay 1.0 \
    --clip_grad 1.0 \
    --drop_path 0.0 \
    --aa '' \
    --reprob 0 \
    --mixup 0 \
    --cutmix 0 \
    --smoothing 0.1 \
    --hflip "${HFLIP:-0.5}" \
    --train_crop_scale 0.8 1.0 \
    --test_num_segment 2 \
    --test_num_crop 1 \
    --save_ckpt_freq 0 \
    --test_best \
    --output_dir "$OUTPUT_DIR" \
    "$@"
