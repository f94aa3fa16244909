#!/usr/bin/env bash
# Test SnDImageProcessorTorchvision (the torchvision image-processor backend) in a venv of its own.
#
# snd never depends on torchvision, and neither the repository's .venv nor CI has it: PyPI's torchvision does not
# import beside the CPU torch 2.13.0 the project pins. This script builds a separate venv (default /tmp/tvenv) with
# torch 2.14.1 + torchvision 0.29.1 (the PyPI x86_64 wheels, CUDA build: ~5.5 GB of disk; runs on the CPU),
# transformers 5.25.0 and snd[dev] from this checkout (torch pinned with a constraints file, so nothing replaces
# it), then runs:
#   * tests/models/test_snd_image_processor_torchvision.py (PIL vs torchvision backend, vs transformers' Dinov2 pair)
#   * the common image-processor tests of tests/models/test_transformers_common.py, SnD and the Dinov2 reference
#     (RUN_SLOW=1), which with torchvision present also test the torchvision backend
#   * with --all: the whole of tests/models (RUN_SLOW=1)
# Needs Python 3.11 (python3.11, or PYTHON=...), x86_64 Linux, and PyPI. Reuses the venv when it is there.
# test_backends_equivalence of the common tests downloads a COCO image: offline it fails, for SnD and the
# reference alike, so it is deselected unless WITH_NETWORK=1 (test_snd_image_processor_torchvision covers the same
# ground on local images). Exit status: non-zero if any test failed.
#   bash scripts/check_torchvision_backend.sh [--all] [VENV]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
ALL=0
if [ "${1:-}" = "--all" ]; then ALL=1; shift; fi
VENV="${1:-/tmp/tvenv}"
PYTHON="${PYTHON:-python3.11}"
[ "$(uname -m)" = x86_64 ] || { echo "x86_64 only (the pinned torch/torchvision wheels)" >&2; exit 2; }
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -c "import torchvision" 2>/dev/null || "$VENV/bin/pip" install -q torch==2.14.1 torchvision==0.29.1
CONSTRAINTS="$(mktemp)"
trap 'rm -f "$CONSTRAINTS"' EXIT
echo "torch==2.14.1" > "$CONSTRAINTS"
"$VENV/bin/pip" install -q -c "$CONSTRAINTS" transformers==5.25.0 -e "$ROOT[dev]"
"$VENV/bin/python" -c "import torch, torchvision, transformers; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'transformers', transformers.__version__)"
cd "$ROOT"
status=0
"$VENV/bin/python" -m pytest tests/models/test_snd_image_processor_torchvision.py -q -p no:cacheprovider || status=$?
OFFLINE_K="not test_backends_equivalence"; [ "${WITH_NETWORK:-0}" != 1 ] || OFFLINE_K="not nothing_deselected"
RUN_SLOW=1 "$VENV/bin/python" -m pytest tests/models/test_transformers_common.py -k "ImageProcessing and $OFFLINE_K" -q -rfs -p no:cacheprovider || status=$?
if [ "$ALL" = 1 ]; then
  RUN_SLOW=1 "$VENV/bin/python" -m pytest tests/models -k "$OFFLINE_K" -q -rfs -p no:cacheprovider || status=$?
fi
exit "$status"
