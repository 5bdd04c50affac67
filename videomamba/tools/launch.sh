# The one launcher of every experiment script (all three tasks). Source it, then call
#   videomamba_launch MODULE [flags...]            e.g. videomamba_launch videomamba.image_sm.main --model ...
#   video_mm_launch TASK CONFIG [key value ...]    TASK: pretrain, retrieval, retrieval_mc or vqa
# or run it as a command: bash videomamba/tools/launch.sh MODULE [flags...]
#
# Entry points are modules of the installed `videomamba` package, always started with `-m`.
# How the processes start:
#   - inside a Slurm allocation with more than one task (sbatch/salloc): srun, one process per
#     task (the entry reads SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID); several nodes work the same way;
#   - outside Slurm with GPUS > 1: torchrun --standalone --nproc_per_node=$GPUS on this machine;
#   - otherwise (a one-task allocation, or GPUS=1): one plain python process (one GPU, or the CPU
#     with --device cpu); inside an allocation its size, not GPUS, decides.
# Environment: PYTHON (interpreter, default python), GPUS (processes without Slurm, default 1),
# MASTER_PORT (default: random in 12000-31999), DRY_RUN=1 (print the command, run nothing).
# It exports VIDEOMAMBA_ROOT (the repository holding this file) and puts it first on PYTHONPATH, so
# a script runs the code of its own checkout even where another copy of the package is installed.
#
# video_mm_launch turns the data, checkpoint and output folders into config overrides, from the
# environment when set:
#   DATA_DIR   annotations and media (default <repo>/data/video_mm; layout in video_mm/configs/data.py)
#   MODEL_DIR  released checkpoints, vit_b16.pth, bert-base-uncased/ (default $VIDEOMAMBA_CHECKPOINTS
#              or <repo>/checkpoints)
#   OUTPUT_DIR the run's folder (default: output/ beside the config)
#   PRETRAINED_PATH, VISION_PRETRAINED  when set, replace the config's pretrained_path (video-text
#              checkpoint) and model.vision_encoder.pretrained; set empty, the run starts without it
# Further `key value` pairs are appended, so they win.

VIDEOMAMBA_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export VIDEOMAMBA_ROOT
export PYTHONPATH="${VIDEOMAMBA_ROOT}${PYTHONPATH:+:${PYTHONPATH}}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
export MASTER_PORT="${MASTER_PORT:-$((12000 + RANDOM % 20000))}"

videomamba_launch() {
    local module="$1"
    shift
    local python="${PYTHON:-python}"
    local -a cmd
    if [[ -n "${SLURM_JOB_ID:-}" && "${SLURM_NTASKS:-1}" -gt 1 ]]; then
        cmd=(srun --kill-on-bad-exit=1 "${python}" -u -m "${module}" "$@")
    elif [[ -z "${SLURM_JOB_ID:-}" && "${GPUS:-1}" -gt 1 ]]; then
        cmd=("${python}" -m torch.distributed.run --standalone --nproc_per_node="${GPUS}" -m "${module}" "$@")
    else
        cmd=("${python}" -u -m "${module}" "$@")
    fi
    # Shell-quoted, so the printed command can be pasted or parsed (tools/check_exp_scripts.py does).
    printf '+'
    printf ' %q' "${cmd[@]}"
    printf '\n'

    if [[ -n "${DRY_RUN:-}" ]]; then
        return 0
    fi
    "${cmd[@]}"
}

video_mm_launch() {
    local task="$1" config="$2"
    shift 2
    local -a checkpoints=()
    if [[ -n "${PRETRAINED_PATH+set}" ]]; then checkpoints+=(pretrained_path "$PRETRAINED_PATH"); fi
    if [[ -n "${VISION_PRETRAINED+set}" ]]; then checkpoints+=(model.vision_encoder.pretrained "$VISION_PRETRAINED"); fi
    videomamba_launch "videomamba.video_mm.tasks.$task" "$config" \
        data_dir "${DATA_DIR:-$VIDEOMAMBA_ROOT/data/video_mm}" \
        model_dir "${MODEL_DIR:-${VIDEOMAMBA_CHECKPOINTS:-$VIDEOMAMBA_ROOT/checkpoints}}" \
        output_dir "${OUTPUT_DIR:-$(dirname "$config")/output}" \
        "${checkpoints[@]}" \
        "$@"
}

# Run as a command rather than sourced.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    set -euo pipefail
    if [[ $# -lt 1 ]]; then
        echo "usage: bash videomamba/tools/launch.sh MODULE [flags...]   (e.g. videomamba.image_sm.main)" >&2
        exit 2
    fi
    videomamba_launch "$@"
fi
