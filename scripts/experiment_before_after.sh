#!/usr/bin/env bash
# Before/after experiment on this CPU: distil the tiny_synthetic preset (tiny random student, synthetic
# scenes; the embedded default when BENCHMARKS.md recorded this experiment) with 3 seeds, then evaluate each student
# before and after on the synthetic benchmark. (SnD vs its 2D control on nano-2d: scripts/experiment_3d_awareness.py.)
#   bash scripts/experiment_before_after.sh [OUTPUT_DIR] [SEEDS...]
# Uses the repository's .venv (set PYTHON=... for another interpreter); an interrupted run resumes.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
OUT="${1:-outputs/before_after}"
shift || true
SEEDS=("${@:-0 1 2}")
SEEDS=(${SEEDS[@]})
RUNS=()
for seed in "${SEEDS[@]}"; do
  run="$OUT/distill-seed$seed"
  if [ ! -f "$run/student/config.json" ]; then
    "$PYTHON" -m accelerate.commands.launch --config_file "$ROOT/configs/accelerate/cpu.yaml" "$ROOT/scripts/distill.py" --config tiny_synthetic \
      --seed "$seed" --output_dir "$run" --resume_from_checkpoint latest --no_progress
  fi
  RUNS+=(--run "$run")
done
"$PYTHON" "$ROOT/scripts/experiment_before_after.py" "${RUNS[@]}" --output-dir "$OUT/evaluation" --num-threads 1 --no-progress
