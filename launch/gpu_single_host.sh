#!/usr/bin/env bash
# Train digits_jax on one GPU host (one or several NVIDIA GPUs), in a virtualenv.
#
# When: a workstation or cloud VM with GPUs. One process drives every GPU it
# sees (data parallel over a mesh); no --distributed is needed on one host.
# Needs: an NVIDIA driver (the jax[cudaNN] wheels bring their own CUDA), python3
# with venv, internet for pip, and for tensorflow-datasets unless
# DIGITS_JAX_MNIST_DIR / DIGITS_JAX_FASHION_MNIST_DIR name folders of IDX files.
#
# Usage: launch/gpu_single_host.sh [--dry-run] [--setup-only] [--config.FIELD=V ...] [-- FLAGS...]
#   --dry-run      print every command (prefixed "+ ") and run nothing; or DRY_RUN=1
#   --setup-only   create the venv and install, do not train (e.g. for SLURM)
#   --config.X=V   passed to the trainer, as is everything after "--"
#
# Settings (environment):
#   CONFIG=configs/v6.py    config file[:arg], e.g. configs/v6.py:fashion_mnist
#   WORKDIR=runs/<config>_<dataset>  checkpoints, metrics, figures; running again resumes
#   VENV=.venv              venv to create or reuse; VENV= (empty) uses $PYTHON
#   PYTHON=python3          interpreter that creates the venv
#   CUDA=12                 12 installs jax[cuda12], 13 installs jax[cuda13]
#   SKIP_INSTALL=1          skip pip (the venv is already set up)
#   MEM_FRACTION=0.5        preallocate this fraction of each GPU; by default
#                           JAX allocates on demand (XLA_PYTHON_CLIENT_PREALLOCATE=false)
#
# Examples:
#   launch/gpu_single_host.sh
#   CONFIG=configs/v6.py:fashion_mnist CUDA=13 launch/gpu_single_host.sh --config.num_epochs=3
#   CUDA_VISIBLE_DEVICES=0 CONFIG=configs/v1.py WORKDIR=/tmp/v1 launch/gpu_single_host.sh
#   launch/gpu_single_host.sh --dry-run -- --config.batch_size=64
set -euo pipefail

# shellcheck source=launch/_lib.sh
source "$(dirname "$0")/_lib.sh"  # usage, die, show, run, setenv, default_workdir, ...

setup_only=0
extra=()
while (($#)); do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --setup-only) setup_only=1 ;;
    -h | --help) usage; exit 0 ;;
    --config.*) extra+=("$1") ;;
    --) shift; extra+=("$@"); break ;;
    *) die "unknown option '$1' (trainer flags go after '--'; see --help)" ;;
  esac
  shift
done

CONFIG="${CONFIG:-configs/v6.py}"
WORKDIR="${WORKDIR:-$(default_workdir "$CONFIG")}"
VENV="${VENV-.venv}"
PYTHON="${PYTHON:-python3}"
CUDA="${CUDA:-12}"
[[ "$CUDA" == 12 || "$CUDA" == 13 ]] || die "CUDA must be 12 or 13, not '$CUDA'"

cd "$(dirname "$0")/.."  # the repository root: pip install -e . and configs/ live here

py="$PYTHON"
if [[ -n "$VENV" ]]; then
  py="$VENV/bin/python"
  [[ -x "$py" ]] || run "$PYTHON" -m venv "$VENV"
fi
if [[ "${SKIP_INSTALL:-0}" != 1 ]]; then
  run "$py" -m pip install -U pip
  run "$py" -m pip install -e .
  # After the project, so that the CUDA plugin matches the jax that ends up installed.
  run "$py" -m pip install -U "jax[cuda$CUDA]"
fi
if ((setup_only)); then exit 0; fi

gpu_memory_env
run "$py" -m digits_jax.main "--config=$CONFIG" "--workdir=$WORKDIR" ${extra[@]+"${extra[@]}"}
