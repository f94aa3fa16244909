"""The render benchmark measures what it claims: same scene, same backend, same result both ways."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from snd.benchmarks.render import RenderBenchmarkConfig, format_table, run_render_benchmark, synthetic_lifted_scene
from snd.splatting import render_features

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "benchmark.py"


def test_synthetic_scene_covers_the_target_view():
    scene = synthetic_lifted_scene(4000, 32, 48, 5, seed=1)
    assert scene["means"].shape == (4000, 3) and scene["colors"].shape == (4000, 5)
    out = render_features(**scene)
    assert out.renders.shape == (1, 32, 48, 5)
    assert out.alphas.mean() > 0.9  # per-pixel Gaussians of two overlapping views fill the middle view


def test_run_render_benchmark_rows():
    config = RenderBenchmarkConfig(channels=(9,), num_gaussians=(2000,), resolutions=((24, 32),), repeats=1, chunked_sample=2)
    rows = run_render_benchmark(config)
    (row,) = rows
    assert row["calls"] == 3 and row["timed_calls"] == 2
    assert row["one_pass_ms"] > 0 and row["chunked_ms"] > 0
    assert row["max_abs_difference"] < 1e-5  # chunked and one-pass renders agree
    table = format_table(rows)
    assert "| 2,000 | 24x32 | 9 | 3 | 2 |" in table


def test_script_dispatches_to_render():
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "render", "--quick", "--channels", "6", "--gaussians", "1000", "--repeats", "1", "--threads", "1"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| 1,000 | 64x96 | 6 | 2 | 2 |" in result.stdout
    assert f"torch {torch.__version__}" in result.stdout
