"""The --protocol snd results table: header settings and the smoke-run flag for every task."""

from snd.eval.report import protocol_table


def _result(metrics, **settings):
    return {"metrics": metrics, "settings": settings}


def test_header_names_protocol_and_flags_smoke_runs_of_every_task():
    results = {"m": {
        "normals": _result({"rmse": 30.0}, iterations_run=2, schedule_iterations=9000, max_iters=2, crop="480x480 centre",
                           zero_normals="count_90", unrelated_key="hidden"),
        "correspondence": _result({"recall_10px": 40.0}, pairs_evaluated=3, pairs_total=1500, image_mean=(0.5, 0.5, 0.5)),
        "depth": _result({"rmse": 0.5}, iterations_run=307_200, max_iters=307_200),
    }}
    table = protocol_table(results, protocol="snd", version="1.0", dataset="nyuv2")
    assert table.startswith("# Evaluation: protocol `snd` version 1.0, dataset `nyuv2`")
    normals_line = next(line for line in table.splitlines() if line.startswith("- **normals**"))
    assert "zero_normals=count_90" in normals_line and "crop=480x480 centre" in normals_line
    assert "unrelated_key" not in normals_line  # only the named settings go into the header
    assert "stopped after 2 of 9000 iterations" in table  # judged against the schedule, not the user's cap
    assert "stopped after 3 of 1500 pairs" in table
    assert table.count("smoke run") == 2  # the full-length depth run is not flagged
