"""`scripts/benchmark.py data` reaches snd.benchmarks.data and reports what it rendered (no timing asserted).

Through the script's main(argv) in this process; the real launch of scripts/benchmark.py is
tests/benchmarks/test_render_benchmark.py::test_script_dispatches_to_render."""

import json

from tests.script_main import script_main


def test_data_benchmark_reports_views_rendered(capsys):
    assert script_main("benchmark", ["data", "--sizes", "16x24", "--scenes", "2", "--frames", "3", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(row["height"], row["width"], row["views"]) for row in rows] == [(16, 24, 6)]
    assert rows[0]["views_per_second"] > 0
