# Shell helpers shared by the launch scripts; sourced by them, not run on its own.
# shellcheck shell=bash

DRY_RUN="${DRY_RUN:-0}"

# Print the script's header comment (up to the first line that is not a comment).
usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 && !/^#SBATCH/ { sub(/^# ?/, ""); print }' "$0"; }
die() { echo "$(basename "$0"): error: $*" >&2; exit 2; }

# Print a command as a shell would read it back, prefixed with "+ ".
show() {
  local out="+" arg
  for arg in "$@"; do
    if [[ "$arg" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then out+=" $arg"
    elif [[ "$arg" != *\'* ]]; then out+=" '$arg'"
    else out+=" $(printf '%q' "$arg")"; fi
  done
  printf '%s\n' "$out"
}
# Run a command, or only print it in a dry run.
run() { if [[ "$DRY_RUN" == 1 ]]; then show "$@"; else show "$@" >&2; "$@"; fi; }
# Set an environment variable for the trainer, or only print it in a dry run.
setenv() {
  if [[ "$DRY_RUN" == 1 ]]; then show export "$1=$2"; return; fi
  show export "$1=$2" >&2
  export "$1=$2"
}

# The default workdir of a config file[:arg], the trainer's runs/<name>_<dataset>:
# configs/v6.py:fashion_mnist -> runs/v6_fashion_mnist, configs/v6.py -> runs/v6_mnist.
default_workdir() {
  local name="${1##*/}"
  name="${name/.py/}"
  [[ "$name" == *:* ]] || name+=":mnist"  # The configs default to MNIST.
  printf 'runs/%s' "${name//:/_}"
}

# GPU memory: preallocate MEM_FRACTION of each GPU if set, else allocate on demand.
gpu_memory_env() {
  if [[ -n "${MEM_FRACTION:-}" ]]; then
    setenv XLA_PYTHON_CLIENT_MEM_FRACTION "$MEM_FRACTION"
  else
    setenv XLA_PYTHON_CLIENT_PREALLOCATE false
  fi
}

# Run (or print) `srun ARGS` for a job step with the job's CPUs per task: SLURM 22.05's
# srun no longer inherits --cpus-per-task, and a step of one CPU would pin the trainer
# to one core where tasks are bound to their CPUs.
run_srun() {
  local cpus=()
  [[ -z "${SLURM_CPUS_PER_TASK:-}" ]] || cpus=("--cpus-per-task=$SLURM_CPUS_PER_TASK")
  run srun ${cpus[@]+"${cpus[@]}"} "$@"
}
