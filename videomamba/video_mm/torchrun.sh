#!/usr/bin/env bash
# torchrun on every node of a Slurm job, all nodes meeting at the job's first node:
#   srun --ntasks-per-node=1 bash videomamba/video_mm/torchrun.sh --nnodes=2 --nproc_per_node=8 \
#       videomamba/video_mm/tasks/pretrain.py CONFIG [key value ...]
# (the original release's launcher). The rendezvous address is the first host of the job's node list;
# the port is MASTER_PORT if set, else derived from the job id, so concurrent jobs do not collide
# (the original computed a port and then used a hard-coded 10054). Outside Slurm it runs on this
# machine alone. PYTHON picks the interpreter; DRY_RUN=1 prints the command without running it.
set -euo pipefail

first_host() {
    local nodes="$1" host
    if host="$(scontrol show hostnames "$nodes" 2>/dev/null | head -n 1)" && [[ -n "$host" ]]; then
        echo "$host"
    elif [[ "${nodes%%,*}" == *"["* ]]; then
        # Without a working scontrol: the first host of "gpu[03-04,7],cpu1" is gpu03.
        local rest="${nodes#*[}"
        echo "${nodes%%[*}${rest%%[],-]*}"
    else
        echo "${nodes%%,*}"
    fi
}

if [[ -n "${SLURM_JOB_NODELIST:-}" ]]; then
    MASTER_ADDR="${MASTER_ADDR:-$(first_host "$SLURM_JOB_NODELIST")}"
    MASTER_PORT="${MASTER_PORT:-$((12000 + SLURM_JOB_ID % 20000))}"
    RDZV_ID="${SLURM_JOB_ID}"
else
    MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}"
    MASTER_PORT="${MASTER_PORT:-$((12000 + RANDOM % 20000))}"
    RDZV_ID="local-$$"
fi
cmd=("${PYTHON:-python}" -m torch.distributed.run
    --rdzv_backend=c10d --rdzv_endpoint="${MASTER_ADDR}:${MASTER_PORT}" --rdzv_id="${RDZV_ID}" "$@")
echo "+ ${cmd[*]}"
if [[ -n "${DRY_RUN:-}" ]]; then
    exit 0
fi
exec "${cmd[@]}"
