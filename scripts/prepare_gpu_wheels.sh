#!/usr/bin/env bash
# Download, where a package registry is reachable, the wheels scripts/gpu_check.sh installs offline on
# the GPU machine (which has torch, transformers, accelerate, peft, safetensors, einops, nvcc, but no
# gsplat, no pytest and no network). The folder (default ./wheels, git-ignored) travels with the checkout.
#
#   scripts/prepare_gpu_wheels.sh [DIR]
#
# All of them are pure-python (py3-none-any) except ninja (py3-none-manylinux: any CPython), so they
# install on whatever python3 the GPU machine has. gsplat 1.5.3 ships CUDA sources and is compiled on
# first use (gpu_check.sh does that once, for the local GPU architecture). datasets and evaluate are
# not needed by the check (only snd.metrics imports them, and pyarrow, one of their dependencies, is
# specific to a CPython version); pass WITH_DATASETS=PYVER (e.g. 3.12) to add them and their
# dependencies for that python version.
set -euo pipefail
DIR=${1:-wheels}
PIP=${PIP:-python3 -m pip}
mkdir -p "$DIR"
$PIP download --no-deps --dest "$DIR" \
    "gsplat==1.5.3" ninja jaxtyping wadler-lindig "rich>=12" markdown-it-py mdurl pygments \
    pytest pluggy iniconfig
if [ -n "${WITH_DATASETS:-}" ]; then
    $PIP download --dest "$DIR" --only-binary=:all: --python-version "$WITH_DATASETS" \
        --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
        datasets evaluate
fi
ls -l "$DIR"
