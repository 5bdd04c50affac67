# Shared launcher for the experiment scripts of every task; source it, then call
#   videomamba_launch path/to/entry.py [flags...]
#
# It picks how to start the processes:
#   - inside a Slurm allocation with more than one task (sbatch/salloc): srun, one process per
#     task (the entry script reads SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID);
#   - outside Slurm with GPUS > 1: torchrun --standalone --nproc_per_node=$GPUS on this machine;
#   - otherwise (a one-task allocation, or GPUS=1): one plain python process (one GPU, or the CPU
#     with --device cpu); inside an allocation its size, not GPUS, decides.
# Environment: PYTHON (interpreter, default python), GPUS (processes without Slurm, default 1),
# MASTER_PORT (default: random in 12000-31999), DRY_RUN=1 (print the command, run nothing).
# It exports VIDEOMAMBA_ROOT (the repository) and puts it on PYTHONPATH.

VIDEOMAMBA_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export VIDEOMAMBA_ROOT
export PYTHONPATH="${VIDEOMAMBA_ROOT}${PYTHONPATH:+:${PYTHONPATH}}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
export MASTER_PORT="${MASTER_PORT:-$((12000 + RANDOM % 20000))}"

videomamba_launch() {
    local entry="$1"
    shift
    local python="${PYTHON:-python}"
    local -a cmd
    if [[ -n "${SLURM_JOB_ID:-}" && "${SLURM_NTASKS:-1}" -gt 1 ]]; then
        cmd=(srun --kill-on-bad-exit=1 "${python}" -u "${entry}" "$@")
    elif [[ -z "${SLURM_JOB_ID:-}" && "${GPUS:-1}" -gt 1 ]]; then
        cmd=("${python}" -m torch.distributed.run --standalone --nproc_per_node="${GPUS}" "${entry}" "$@")
    else
        cmd=("${python}" -u "${entry}" "$@")
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
