#!/usr/bin/env bash
#SBATCH --job-name=videomamba_mm_custom
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --output=%x-%j.log
#
# Your own video-text pairs, from scratch (see config.py and "Train on your own data" in the README).
#
# sbatch runs one process per GPU through srun; plain bash runs GPUS processes with torchrun
# (default 1). Environment: TRAIN_JSON (`[{"video": ..., "caption": ...}]`), TEST_JSON (the same
# with a list of captions per video; empty: no test), MEDIA_ROOT (folder the video paths are
# relative to), TOKENIZER (a folder with vocab.txt, default $MODEL_DIR/bert-base-uncased),
# TEXT_CONFIG (the BERT architecture, default config_bert_small.json here), OUTPUT_DIR, GPUS, PYTHON.
# `key value` config overrides after the script name win, e.g.
#   TRAIN_JSON=my/train.json TEST_JSON=my/test.json MEDIA_ROOT=my/videos \
#       bash videomamba/video_mm/exp_pt/custom/run.sh device cpu scheduler.epochs 5
set -euo pipefail

for root in "${VIDEOMAMBA_ROOT:-}" "$(dirname "${BASH_SOURCE[0]}")/../../../.." "${SLURM_SUBMIT_DIR:-.}"; do
    if [[ -n "$root" && -f "$root/videomamba/tools/launch.sh" ]]; then source "$root/videomamba/tools/launch.sh"; break; fi
done
declare -F video_mm_launch >/dev/null || { echo "run from the repository root or set VIDEOMAMBA_ROOT" >&2; exit 1; }

export GPUS="${GPUS:-1}"
MEDIA_ROOT="${MEDIA_ROOT:-data/my_videos}"
TRAIN_JSON="${TRAIN_JSON:-$MEDIA_ROOT/train.json}"
TEST_JSON="${TEST_JSON-$MEDIA_ROOT/test.json}"
paths=(train_file "[{'anno_path': '$TRAIN_JSON', 'media_root': '$MEDIA_ROOT', 'media_type': 'video'}]")
if [[ -n "$TEST_JSON" ]]; then
    paths+=(test_file "{'test': {'anno_path': '$TEST_JSON', 'media_root': '$MEDIA_ROOT', 'media_type': 'video'}}")
else
    paths+=(test_file "{}" test_types "[]")
fi
[[ -n "${TOKENIZER:-}" ]] && paths+=(model.text_encoder.pretrained "$TOKENIZER")
[[ -n "${TEXT_CONFIG:-}" ]] && paths+=(model.text_encoder.config "$TEXT_CONFIG")
export OUTPUT_DIR="${OUTPUT_DIR:-$VIDEOMAMBA_ROOT/videomamba/video_mm/exp_pt/custom/output}"
video_mm_launch pretrain "$VIDEOMAMBA_ROOT/videomamba/video_mm/exp_pt/custom/config.py" "${paths[@]}" "$@"
