#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, to try the SLURM scripts (and test them).
#
# When: you want to run launch/slurm_gpu.sbatch or launch/slurm_sweep.sbatch for real
# without a cluster. `start` writes a slurm.conf for this host alone (AuthType=auth/none,
# ProctrackType=proctrack/linuxproc, TaskPlugin=task/none, this machine's CPUs, every
# file under SLURM_DIR), starts slurmctld and slurmd, and waits until the node is idle;
# `stop` cancels the cluster's jobs and stops the two daemons it started, by PID.
# Needs: root (slurmd runs jobs as their user) and Debian's slurm-wlm
# (apt-get install slurm-wlm). No munge: the cluster trusts every local user.
# Exit status 3: SLURM cannot start here (not root, no SLURM binaries), with the reason.
#
# Usage: launch/local_slurm.sh [start|stop|status]
#   start (the default) prints the line to paste, `export SLURM_CONF=...`: sbatch,
#   salloc, srun, squeue, scancel and sinfo read the cluster's address from it.
# Settings (environment): SLURM_DIR=/tmp/digits_jax_slurm (configuration, state, logs,
#   PID files) SLURMCTLD_PORT=6817 SLURMD_PORT=6818 CPUS=<this machine's> WAIT=60
#   (seconds to wait for the node to be idle).
#
# Examples:
#   launch/local_slurm.sh && export SLURM_CONF=/tmp/digits_jax_slurm/slurm.conf
#   GPUS_PER_NODE=0 CPUS_PER_TASK=1 launch/slurm_sweep.sbatch --configs=v2,v3 \
#     --datasets=mnist --num_seeds=2 -- --override=num_epochs=1
#   launch/local_slurm.sh stop
set -euo pipefail

# shellcheck source=launch/_lib.sh
source "$(dirname "$0")/_lib.sh"  # usage, die

SLURM_DIR="${SLURM_DIR:-/tmp/digits_jax_slurm}"
CONF="$SLURM_DIR/slurm.conf"
DAEMONS=(slurmctld slurmd)

cannot() { echo "$(basename "$0"): SLURM cannot start here: $*" >&2; exit 3; }

check_can_start() {
  [[ "$(id -u)" == 0 ]] ||
    cannot "it needs root (slurmd starts jobs as their user); run it as root," \
      "or use a real cluster."
  local d
  for d in "${DAEMONS[@]}" sbatch salloc srun squeue scancel sinfo scontrol; do
    command -v "$d" > /dev/null || [[ -x "/usr/sbin/$d" ]] ||
      cannot "no '$d' on PATH; install Debian's slurm-wlm (apt-get install slurm-wlm)."
  done
}

daemon() {  # $1: slurmctld or slurmd; its path (Debian puts them in /usr/sbin).
  command -v "$1" || echo "/usr/sbin/$1"
}

pid_of() {  # $1: a daemon; prints its PID if it runs (from the PID file it wrote).
  local file="$SLURM_DIR/$1.pid" pid
  [[ -f "$file" ]] || return 1
  pid="$(< "$file")"
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2> /dev/null && echo "$pid"
}

write_conf() {
  local host cpus
  host="$(hostname -s)"
  cpus="${CPUS:-$(nproc)}"
  mkdir -p "$SLURM_DIR/state" "$SLURM_DIR/spool"
  cat > "$CONF" << EOF
# Written by launch/local_slurm.sh: a one-node cluster on $host.
ClusterName=digitsjax
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=${SLURMCTLD_PORT:-6817}
SlurmdPort=${SLURMD_PORT:-6818}
AuthType=auth/none
CredType=cred/none
SlurmUser=root
SlurmdUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=600
KillWait=5
MailProg=/bin/true
StateSaveLocation=$SLURM_DIR/state
SlurmdSpoolDir=$SLURM_DIR/spool
SlurmctldPidFile=$SLURM_DIR/slurmctld.pid
SlurmdPidFile=$SLURM_DIR/slurmd.pid
SlurmctldLogFile=$SLURM_DIR/slurmctld.log
SlurmdLogFile=$SLURM_DIR/slurmd.log
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

wait_idle() {  # Until the node takes jobs, or WAIT seconds.
  local host state="" i
  host="$(hostname -s)"
  for ((i = 0; i < ${WAIT:-60} * 2; i++)); do
    state="$(SLURM_CONF="$CONF" sinfo -h -n "$host" -o %T 2> /dev/null || true)"
    [[ "$state" == idle* || "$state" == mixed* || "$state" == allocated* ]] && return 0
    sleep 0.5
  done
  die "the node is '${state:-not answering}' after ${WAIT:-60}s;" \
    "see $SLURM_DIR/slurmctld.log and slurmd.log"
}

start() {
  check_can_start
  local d
  for d in "${DAEMONS[@]}"; do
    ! pid_of "$d" > /dev/null ||
      die "$d already runs (PID $(pid_of "$d")) for $SLURM_DIR; stop it first: $0 stop"
  done
  write_conf
  "$(daemon slurmctld)" -f "$CONF"  # Both fork into the background and write PID files.
  "$(daemon slurmd)" -f "$CONF"
  wait_idle
  echo "A one-node SLURM cluster runs (slurmctld PID $(pid_of slurmctld), slurmd PID" \
    "$(pid_of slurmd)); for sbatch, salloc and squeue:" >&2
  echo "export SLURM_CONF=$CONF"
}

stop() {
  local d pid i jobs=()
  if pid_of slurmctld > /dev/null; then  # Jobs first: their processes outlive slurmd.
    mapfile -t jobs < <(SLURM_CONF="$CONF" squeue -h -o %A 2> /dev/null || true)
    ((${#jobs[@]} == 0)) || SLURM_CONF="$CONF" scancel "${jobs[@]}" 2> /dev/null || true
    for ((i = 0; i < 20 && ${#jobs[@]}; i++)); do
      [[ -z "$(SLURM_CONF="$CONF" squeue -h -o %A 2> /dev/null)" ]] && break
      sleep 0.5
    done
  fi
  for d in slurmd slurmctld; do
    pid="$(pid_of "$d")" || continue
    kill "$pid"
    for ((i = 0; i < 40; i++)); do kill -0 "$pid" 2> /dev/null || break; sleep 0.25; done
    ! kill -0 "$pid" 2> /dev/null || die "$d (PID $pid) did not stop; kill -9 $pid"
    echo "Stopped $d (PID $pid)." >&2
  done
}

status() {
  local d
  for d in "${DAEMONS[@]}"; do
    if pid_of "$d" > /dev/null; then echo "$d: PID $(pid_of "$d")"; else echo "$d: not running"; fi
  done
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  -h | --help) usage ;;
  *) die "unknown command '$1' (start, stop or status; see --help)" ;;
esac
