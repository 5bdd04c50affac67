#!/usr/bin/env bash
#SBATCH --job-name=videomamba_mm_pt_videomamba_middle_17m
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=8
#SBATCH --gres=gpu:8
#SBATCH --cpus-per-task=16
#SBATCH --output=%x-%j.log
#
# VideoMamba-M video-text pretraining on 17M pairs, masked stage (10 epochs). Then run
# ../videomamba_middle_17m_unmasked (released result: videomamba_m16_17M_f8_res224.pth).
#
# sbatch runs one process per GPU through srun; plain bash runs GPUS processes with torchrun
# (GPUS=1: one process). Environment: DATA_DIR, MODEL_DIR, OUTPUT_DIR, GPUS, PYTHON (see videomamba/tools/launch.sh).
# `key value` config overrides after the script name win, e.g.
#   GPUS=1 bash videomamba/video_mm/exp_pt/videomamba_middle_17m/run.sh device cpu fp16 False bf16 False
set -euo pipefail

for root in "${VIDEOMAMBA_ROOT:-}" "$(dirname "${BASH_SOURCE[0]}")/../../../.." "${SLURM_SUBMIT_DIR:-.}"; do
    if [[ -n "$root" && -f "$root/videomamba/tools/launch.sh" ]]; then source "$root/videomamba/tools/launch.sh"; break; fi
done
declare -F video_mm_launch >/dev/null || { echo "run from the repository root or set VIDEOMAMBA_ROOT" >&2; exit 1; }

export GPUS="${GPUS:-8}"
video_mm_launch pretrain "$VIDEOMAMBA_ROOT/videomamba/video_mm/exp_pt/videomamba_middle_17m/config.py" "$@"
