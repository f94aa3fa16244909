"""The render benchmark measures what it claims: same scene, same backend, same result both ways."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
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


def test_bound_benchmark_rows_bound_and_baseline(capsys):
    """The bound is the stated formula on counted pairs; a git revision's renderer runs beside the current one."""
    from snd.benchmarks.render import GEOMETRY_FLOPS, HardwareRates, load_baseline_renderer, main, render_bound, run_bound_benchmark

    rates = HardwareRates(matmul_gflops=50.0, copy_gbps=10.0, device="test")
    bound = render_bound(contributing_pairs=1000, pixels=100, gaussians=400, channels=8, rates=rates)
    assert bound["flops"] == 1000 * (2 * 8 + GEOMETRY_FLOPS)
    assert bound["bytes"] == 4 * 8 * (400 + 100) + 4 * 10 * 400
    assert bound["bound_ms"] == pytest.approx(1000 * max(bound["flops"] / 50e9, bound["bytes"] / 10e9))

    rows, measured = run_bound_benchmark(channels=(3, 8), num_gaussians=1500, height=24, width=32, repeats=1, baseline="HEAD")
    assert measured.matmul_gflops > 0 and measured.copy_gbps > 0
    assert [row["channels"] for row in rows] == [3, 8]
    for row in rows:
        assert 0 < row["pairs_per_pixel"] <= row["evaluated_per_pixel"]
        expected = render_bound(round(row["pairs_per_pixel"] * 24 * 32), 24 * 32, 1500, row["channels"], measured)
        assert row["flops"] == expected["flops"]
        assert row["current_gap"] == pytest.approx(row["current_ms"] / row["bound_ms"])
        assert row["baseline_ms"] > 0 and row["current_faults"] >= 0
        assert row["max_abs_difference"] < 1e-5  # HEAD's renderer agrees with the working tree's

    main(["--bound", "--channels", "4", "--gaussians", "800", "--resolution", "16x24", "--repeats", "1", "--threads", "1"])
    out = capsys.readouterr().out
    assert "fp32 matmul" in out and "| 800 | 16x24 | 4 |" in out

    with pytest.raises(ValueError, match="no-such-revision"):
        load_baseline_renderer("no-such-revision")


def test_measure_counts_the_faults_of_the_call_alone(monkeypatch):
    """_measure's fault count is the process counter's change over the call: with getrusage faked to a counter that
    only the measured function moves (by 123), it is 123, and the function's output comes back."""
    import resource
    from types import SimpleNamespace

    from snd.benchmarks.render import _measure

    fake = {"faults": 5000}
    monkeypatch.setattr(resource, "getrusage", lambda who: SimpleNamespace(ru_minflt=fake["faults"]))

    def call():
        fake["faults"] += 123
        return "rendered"

    measured = _measure(call, "cpu")
    assert measured["faults"] == 123 and measured["output"] == "rendered"
    assert measured["cpu_ms"] >= 0 and measured["wall_ms"] >= 0
