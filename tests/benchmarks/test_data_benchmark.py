"""`scripts/benchmark.py data` reaches snd.benchmarks.data and reports what it rendered (no timing asserted)."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "benchmark.py"


def test_data_benchmark_reports_views_rendered():
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "data", "--sizes", "16x24", "--scenes", "2", "--frames", "3", "--json"],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(result.stdout)
    assert [(row["height"], row["width"], row["views"]) for row in rows] == [(16, 24, 6)]
    assert rows[0]["views_per_second"] > 0
