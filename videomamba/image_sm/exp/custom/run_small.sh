#!/usr/bin/env bash
#SBATCH --job-name=image_small_data
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --output=%x-%j.log
#
# Your own images, from scratch: a small VideoMamba (2 blocks, width 64) that learns a few hundred
# images in minutes on a CPU. See "Train on your own data" in the repository README.
#
# Data: $DATA_PATH/train/<class>/* and $DATA_PATH/val/<class>/* (any Pillow format and mode).
# sbatch runs it as one task; plain bash runs GPUS processes with torchrun (default 1). Overrides:
#   environment: DATA_PATH, NB_CLASSES, EPOCHS, LR, BATCH_SIZE, INPUT_SIZE, MODEL_KWARGS,
#                FINETUNE (empty: from scratch), OUTPUT_DIR, GPUS, PYTHON;
#   flags: arguments after the script name are appended, so they win over the ones below, e.g.
#     DATA_PATH=my_images NB_CLASSES=4 bash videomamba/image_sm/exp/custom/run_small.sh --device cpu --no_amp
set -euo pipefail

for root in "${VIDEOMAMBA_ROOT:-}" "$(dirname "${BASH_SOURCE[0]}")/../../../.." "${SLURM_SUBMIT_DIR:-.}"; do
    if [[ -n "$root" && -f "$root/videomamba/tools/launch.sh" ]]; then source "$root/videomamba/tools/launch.sh"; break; fi
done
declare -F videomamba_launch >/dev/null || { echo "run from the repository root or set VIDEOMAMBA_ROOT" >&2; exit 1; }

JOB_NAME=image_small_data
DATA_PATH="${DATA_PATH:-data/my_images}"
OUTPUT_DIR="${OUTPUT_DIR:-$VIDEOMAMBA_ROOT/videomamba/image_sm/exp/custom/$JOB_NAME}"
export GPUS="${GPUS:-1}"
FINETUNE="${FINETUNE-}"
# Why these: 32 px images cut into 4 px patches keep an object larger than a patch; the mean of the
# patch tokens (not the cls token) feeds the classifier, since a randomly initialised VideoMamba's
# cls token reads little more than the first patches; 2 blocks of width 64 train fast on a CPU.
MODEL_KWARGS="${MODEL_KWARGS:-{\"depth\": 2, \"embed_dim\": 64, \"patch_size\": 4, \"global_pool\": \"avg\"\}}"

videomamba_launch videomamba.image_sm.main \
    --model videomamba_tiny \
    --model-kwargs "$MODEL_KWARGS" \
    --data-set IMNET \
    --data-path "$DATA_PATH" \
    --nb_classes "${NB_CLASSES:-4}" \
    ${FINETUNE:+--finetune "$FINETUNE"} \
    --input-size "${INPUT_SIZE:-32}" \
    --eval-crop-ratio 1.0 \
    --batch-size "${BATCH_SIZE:-16}" \
    --epochs "${EPOCHS:-30}" \
    --warmup-epochs 2 \
    --lr "${LR:-1e-3}" \
    --warmup-lr 1e-5 \
    --min-lr 1e-5 \
    --unscale-lr \
    --weight-decay 0.05 \
    --clip-grad 1.0 \
    --drop-path 0.0 \
    --aa none \
    --color-jitter 0 \
    --reprob 0 \
    --mixup 0 \
    --cutmix 0 \
    --smoothing 0.1 \
    --no-repeated-aug \
    --no-model-ema \
    --save_freq 0 \
    --output_dir "$OUTPUT_DIR" \
    "$@"
