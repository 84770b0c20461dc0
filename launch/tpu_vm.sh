#!/usr/bin/env bash
# Train digits_jax on a Cloud TPU VM or a multi-host TPU pod slice, from your machine.
#
# When: you have a Google Cloud project with TPU quota. Creates the TPU, copies
# this checkout to every worker, installs, trains on all workers at once, copies
# the workdir back from worker 0 and deletes the TPU.
# Needs: gcloud, logged in, with the TPU API enabled; the workers download the
# data with tensorflow-datasets. A slice of several hosts trains with
# --distributed, and its hosts share no disk: give it a WORKDIR on a folder every worker
# sees, e.g. a Cloud Storage bucket mounted with gcsfuse at the same path on each worker.
#
# Usage: launch/tpu_vm.sh [--dry-run] [create|setup|train|fetch|delete|all] [-- FLAGS...]
#   setup: copy the code and pip install; all (default): every step in order,
#   deleting the TPU at the end or on failure, unless KEEP=1.
#   --dry-run: print every command (prefixed "+ "), run nothing; or DRY_RUN=1.
#   FLAGS go to the trainer, e.g. -- --config.num_epochs=3
#
# Settings (environment), with their defaults:
#   TPU_NAME=digits-jax  ZONE=us-west4-a  PROJECT= (gcloud's)  SPOT=1 (Spot TPU)
#   ACCELERATOR_TYPE=v5litepod-8  VERSION=v2-alpha-tpuv5-lite, the runtime (v6e:
#     v2-alpha-tpuv6e, v5p: v2-alpha-tpuv5, v4 and older: tpu-ubuntu2204-base)
#   MULTIHOST=auto: --distributed when the slice has over 8 chips/cores (so over
#     one host); 1 or 0 forces it on or off
#   CONFIG=configs/v6.py  WORKDIR=runs/<config>_<dataset> (under REMOTE_DIR, or an absolute shared path)
#   REMOTE_DIR=digits_jax  REMOTE_PYTHON=python3  LOCAL_DIR=runs (fetched to)
#
# Examples:
#   PROJECT=my-proj launch/tpu_vm.sh
#   ACCELERATOR_TYPE=v5litepod-16 WORKDIR=/mnt/gcs/v6 launch/tpu_vm.sh -- --config.seed=1
#   KEEP=1 launch/tpu_vm.sh; launch/tpu_vm.sh train; launch/tpu_vm.sh delete
#   launch/tpu_vm.sh --dry-run
set -euo pipefail

# shellcheck source=launch/_lib.sh
source "$(dirname "$0")/_lib.sh"  # usage, die, show, run, default_workdir, ...

# Quote words for the remote shell that `gcloud ... ssh --command` starts.
quote() { local s; s="$(printf '%q ' "$@")"; printf '%s' "${s% }"; }

step=all
extra=()
while (($#)); do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    -h | --help) usage; exit 0 ;;
    create | setup | train | fetch | delete | all) step="$1" ;;
    --) shift; extra+=("$@"); break ;;
    -*) die "unknown option '$1' (trainer flags go after '--'; see --help)" ;;
    *) die "unknown step '$1' (create|setup|train|fetch|delete|all; see --help)" ;;
  esac
  shift
done

TPU_NAME="${TPU_NAME:-digits-jax}"
ZONE="${ZONE:-us-west4-a}"
ACCELERATOR_TYPE="${ACCELERATOR_TYPE:-v5litepod-8}"
VERSION="${VERSION:-v2-alpha-tpuv5-lite}"
CONFIG="${CONFIG:-configs/v6.py}"
WORKDIR="${WORKDIR:-$(default_workdir "$CONFIG")}"
REMOTE_DIR="${REMOTE_DIR:-digits_jax}"
REMOTE_PYTHON="${REMOTE_PYTHON:-python3}"
LOCAL_DIR="${LOCAL_DIR:-runs}"
MULTIHOST="${MULTIHOST:-auto}"
if [[ "$MULTIHOST" == auto ]]; then
  # v2-v5p count TensorCores (8 a host), v5e/v6e chips (8 on a single host).
  size="${ACCELERATOR_TYPE##*-}"
  [[ "$size" =~ ^[0-9]+$ ]] || die "no size in ACCELERATOR_TYPE='$ACCELERATOR_TYPE'; set MULTIHOST"
  MULTIHOST=$((size > 8 ? 1 : 0))
fi
[[ "$MULTIHOST" == [01] ]] || die "MULTIHOST must be auto, 0 or 1, not '$MULTIHOST'"

cd "$(dirname "$0")/.."  # the repository root, which is what gets copied
tpu=(gcloud compute tpus tpu-vm)
where=(--zone="$ZONE")
[[ -n "${PROJECT:-}" ]] && where+=(--project="$PROJECT")
on_all() { run "${tpu[@]}" ssh "$TPU_NAME" "${where[@]}" --worker=all --command "$1"; }
rdir="$(quote "$REMOTE_DIR")"

create() {
  local spot=()
  [[ "${SPOT:-0}" == 1 ]] && spot=(--spot)
  run "${tpu[@]}" create "$TPU_NAME" "${where[@]}" --accelerator-type="$ACCELERATOR_TYPE" \
    --version="$VERSION" ${spot[@]+"${spot[@]}"}
}
setup() {
  local paths=(pyproject.toml digits_jax configs)
  [[ -f README.md ]] && paths+=(README.md)
  local pip
  pip="$(quote "$REMOTE_PYTHON") -m pip install"
  on_all "mkdir -p $rdir"
  run "${tpu[@]}" scp --recurse --worker=all "${where[@]}" "${paths[@]}" "$TPU_NAME:$REMOTE_DIR/"
  on_all "cd $rdir && $pip -U pip && $pip -e . \"jax[tpu]\""
}
train() {
  local cmd flags=("--config=$CONFIG" "--workdir=$WORKDIR")
  ((MULTIHOST)) && flags+=(--distributed)
  if ((MULTIHOST)) && [[ "$WORKDIR" != /* ]]; then
    echo "warning: the hosts of a multi-host slice share no disk: use an absolute WORKDIR" \
      "on a folder every worker mounts (e.g. a gcsfuse-mounted bucket)" >&2
  fi
  cmd="$(quote "$REMOTE_PYTHON" -m digits_jax.main "${flags[@]}" ${extra[@]+"${extra[@]}"})"
  on_all "cd $rdir && $cmd"
}
fetch() {
  run mkdir -p "$LOCAL_DIR"
  local src="$WORKDIR"
  [[ "$src" == /* ]] || src="$REMOTE_DIR/$src"
  run "${tpu[@]}" scp --recurse --worker=0 "${where[@]}" "$TPU_NAME:$src" "$LOCAL_DIR/"
}
delete() { run "${tpu[@]}" delete "$TPU_NAME" "${where[@]}" --quiet; }

if [[ "$step" != all ]]; then
  "$step"
  exit 0
fi
create
# A TPU bills while it exists: delete it on every exit, failures included.
[[ "${KEEP:-0}" == 1 ]] || trap delete EXIT
setup
train
fetch
if [[ "${KEEP:-0}" == 1 ]]; then
  echo "KEEP=1: the TPU $TPU_NAME is still up; delete it with: $0 delete" >&2
fi
