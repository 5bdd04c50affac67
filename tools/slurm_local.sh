#!/usr/bin/env bash
# A one-node Slurm cluster for tests, entirely under one folder (nothing is written to /etc).
#
#   tools/slurm_local.sh up   [DIR]   install packages if missing, start munge + slurmctld + slurmd,
#                                     wait until the node is idle, print the environment to use
#   tools/slurm_local.sh down [DIR]   stop the daemons by their PIDs
#   tools/slurm_local.sh env  [DIR]   print the environment again (eval "$(tools/slurm_local.sh env)")
#
# DIR defaults to $SLURM_LOCAL_DIR or /tmp/videomamba-slurm. The printed environment exports
# SLURM_CONF (every client call needs it) and puts a small `sacct` on PATH that answers from
# `scontrol show job`, since there is no accounting database and submitit polls sacct.
set -euo pipefail

cmd=${1:?usage: $0 up|down|env [DIR]}
dir=$(realpath -m "${2:-${SLURM_LOCAL_DIR:-/tmp/videomamba-slurm}}")
here=$(cd "$(dirname "$0")" && pwd)
conf=$dir/etc/slurm.conf

print_env() {
  echo "export SLURM_CONF=$conf"
  echo "export PATH=$here/slurm_shims:\$PATH"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

stop_pidfile() {
  local f=$1
  [ -f "$f" ] || return 0
  local pid; pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

case $cmd in
  env) print_env ;;
  down)
    # Cancel what is still queued or running while the daemons can still clean it up.
    if [ -f "$conf" ] && [ -f "$dir/run/slurmctld.pid" ]; then
      SLURM_CONF=$conf scancel --full --quiet --user "$(id -un)" 2>/dev/null || true
      for _ in $(seq 50); do
        [ -z "$(SLURM_CONF=$conf squeue -h 2>/dev/null)" ] && break
        sleep 0.2
      done
    fi
    stop_pidfile "$dir/run/slurmd.pid"
    stop_pidfile "$dir/run/slurmctld.pid"
    stop_pidfile "$dir/munge/munged.pid"
    # Job scripts orphaned by a killed daemon still name their spool folder.
    pkill -f "$dir/spool/" 2>/dev/null || true
    ;;
  up)
    if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
        || ! command -v munged >/dev/null; then
      apt_get=(apt-get); [ "$(id -u)" = 0 ] || apt_get=(sudo apt-get)
      packages=(slurmctld slurmd slurm-client munge)
      # A fresh container may have no package lists yet: update them only when the install needs it.
      DEBIAN_FRONTEND=noninteractive "${apt_get[@]}" install -y -q "${packages[@]}" >/dev/null \
        || { "${apt_get[@]}" update -q >/dev/null && DEBIAN_FRONTEND=noninteractive "${apt_get[@]}" install -y -q "${packages[@]}" >/dev/null; }
    fi
    "$0" down "$dir"
    rm -rf "$dir"
    mkdir -p "$dir"/{etc,state,spool,log,run,munge}
    chmod 700 "$dir/munge"
    head -c 1024 /dev/urandom > "$dir/munge/munge.key"
    chmod 400 "$dir/munge/munge.key"
    socket=$dir/munge/munge.socket
    munged --force --key-file="$dir/munge/munge.key" --socket="$socket" --pid-file="$dir/munge/munged.pid" \
      --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/munged.seed"
    host=$(hostname -s)
    # The node line as slurmd sees this machine, minus its uptime.
    node=$(slurmd -C | head -n 1)
    cat > "$conf" <<CONF
ClusterName=videomamba-local
SlurmctldHost=$host
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
AuthType=auth/munge
AuthInfo=socket=$socket
CredType=cred/munge
SlurmUser=$(id -un)
SlurmdUser=root
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
# Quick cancels: submitit jobs ignore SIGTERM.
KillWait=5
# Keep finished jobs visible to scontrol (the sacct shim reads them) for an hour.
MinJobAge=3600
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
$node State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
    export SLURM_CONF=$conf
    slurmctld -f "$conf"
    slurmd -f "$conf"
    for _ in $(seq 100); do
      state=$(sinfo -h -o %t 2>/dev/null | head -n 1 || true)
      [ "$state" = idle ] && break
      sleep 0.2
    done
    if [ "$state" != idle ]; then
      echo "slurm_local: node did not become idle (state '$state'); logs in $dir/log" >&2
      exit 1
    fi
    print_env
    ;;
  *) echo "usage: $0 up|down|env [DIR]" >&2; exit 2 ;;
esac
