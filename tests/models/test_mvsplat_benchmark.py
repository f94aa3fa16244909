"""The lift benchmark's measuring step and table (no timing assertions: numbers depend on the machine)."""

from snd.benchmarks.lift import LiftBenchmarkConfig, _measure, _resolution, format_table


class ListQueue(list):
    def put(self, item):
        self.append(item)


def test_measure_reports_time_memory_and_counts():
    queue = ListQueue()
    _measure(LiftBenchmarkConfig(config="tiny", repeats=1, warmup=0), 32, 32, queue)
    (row,) = queue
    assert "error" not in row, row
    assert row["resolution"] == "32x32" and row["gaussians"] == 2 * 32 * 32 and row["runs"] == 1
    assert row["ms_per_scene"] > 0 and row["peak_memory_mib"] > 0
    table = format_table([row])
    assert "| 32x32 | 2 | 2,048 |" in table


def test_bad_resolution_is_reported_not_raised():
    queue = ListQueue()
    _measure(LiftBenchmarkConfig(config="tiny", repeats=1, warmup=0), 30, 32, queue)
    assert "multiples of" in queue[0]["error"]
    assert "error: ValueError" in format_table(queue)
    assert _resolution("576x880") == (576, 880)


def test_compare_official_names_a_missing_checkout_and_formats_rows(tmp_path):
    from snd.benchmarks.lift import _compare_official, format_comparison

    queue = ListQueue()
    _compare_official(LiftBenchmarkConfig(config="tiny", repeats=1, warmup=0), 32, 32, str(tmp_path), queue)
    assert "FileNotFoundError" in queue[0]["error"] and "depth_predictor_multiview.py" in queue[0]["error"]
    row = dict(resolution="256x256", clock="CPU (process_time)", official_ms=1000.0, ours_ms=919.0, ratio=0.919, runs=3, max_depth_difference=0.0, depth_std=3.5)
    table = format_comparison([row] + queue)
    assert "| 256x256 | CPU (process_time) | 1000 | 919 | 0.919x |" in table
    assert "error: FileNotFoundError" in table
