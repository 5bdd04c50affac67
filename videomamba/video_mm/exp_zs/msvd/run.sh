#!/usr/bin/env bash
#SBATCH --job-name=videomamba_mm_zs_msvd
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=16
#SBATCH --output=%x-%j.log
#
# Zero-shot retrieval on MSVD with videomamba_m16_25M_f8_res224.pth
# (release: T2V R@1 42.0, V2T R@1 62.7).
#
# sbatch runs one process per GPU through srun; plain bash runs GPUS processes with torchrun
# (GPUS=1: one process). Environment: DATA_DIR, MODEL_DIR, OUTPUT_DIR, GPUS, PYTHON (see videomamba/tools/launch.sh).
# `key value` config overrides after the script name win, e.g.
#   GPUS=1 bash videomamba/video_mm/exp_zs/msvd/run.sh device cpu fp16 False bf16 False
set -euo pipefail

for root in "${VIDEOMAMBA_ROOT:-}" "$(dirname "${BASH_SOURCE[0]}")/../../../.." "${SLURM_SUBMIT_DIR:-.}"; do
    if [[ -n "$root" && -f "$root/videomamba/tools/launch.sh" ]]; then source "$root/videomamba/tools/launch.sh"; break; fi
done
declare -F video_mm_launch >/dev/null || { echo "run from the repository root or set VIDEOMAMBA_ROOT" >&2; exit 1; }

export GPUS="${GPUS:-1}"
video_mm_launch retrieval "$VIDEOMAMBA_ROOT/videomamba/video_mm/exp_zs/msvd/config.py" "$@"
