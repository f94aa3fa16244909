#!/usr/bin/env bash
# Set up (or refresh) .venv with snd and its test tools. Idempotent: re-running is quick.
# On a machine without CUDA it installs the CPU torch wheel and pins it for every later
# install (constraints-cpu.txt), since an unpinned torch request pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip"
if command -v nvidia-smi >/dev/null 2>&1; then
  $PIP install -q -e ".[dev]"
else
  .venv/bin/python -c "import torch" 2>/dev/null || $PIP install -q torch==2.13.0
  $PIP install -q -c constraints-cpu.txt -e ".[dev]"
fi
