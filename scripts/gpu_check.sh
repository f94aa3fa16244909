#!/usr/bin/env bash
# GPU check (issue 15): CUDA tests, GPU render benchmark, a paper-preset step at 576x880 and the paper
# presets' measured memory, time-boxed (default 470 s in all), report in OUTDIR/gpu_check.md.
#
#   scripts/gpu_check.sh OUTDIR [--budget SECONDS] [--stages ...] [--wheels DIR] [--cache DIR]
#
# Needs: one CUDA GPU, python3 with torch (CUDA build), transformers, accelerate, peft, safetensors,
# einops, nvcc. No network: gsplat, its dependencies and pytest come from ./wheels (prepare them with
# scripts/prepare_gpu_wheels.sh on a machine that reaches the package registry, then copy the folder
# along with the checkout). gsplat's kernels are built for this GPU's architecture only.
# Stages and their limits: python -m snd.benchmarks.gpu_check --help, and src/snd/benchmarks/gpu_check.py.
set -u
if [ $# -lt 1 ]; then
    echo "usage: scripts/gpu_check.sh OUTDIR [--budget SECONDS] [--stages ...] [--wheels DIR] [--cache DIR]" >&2
    exit 2
fi
cd "$(dirname "$0")/.." || exit 2
PYTHON=${PYTHON:-python3}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" -m snd.benchmarks.gpu_check "$@"
