"""A tenth of the hostile-input probe on every CI run: every tenth case in id order (each family represented, a
different mix of refusal kinds and valid controls), run by the real forked runner. The whole probe
(``python -m tests.hostile --out DIR --jobs 2``, about 6 minutes here) is measured in BENCHMARKS.md; this keeps a
regression from landing unseen between measurements. No case may crash, hang, exhaust memory, lose data, run code,
refuse a valid input, accept an invalid one or refuse it without naming the file or field."""

from __future__ import annotations

import pytest

from tests.hostile.__main__ import load_case_modules
from tests.hostile.harness import CASES, report_markdown, run_cases

STRIDE = 10


@pytest.mark.slow
def test_a_tenth_of_the_probe_is_all_clear_or_ok(tmp_path):
    modules = load_case_modules()
    ordered = sorted((case for case in CASES.values() if not case.family.startswith("self")), key=lambda case: case.id)
    sample = [case for index, case in enumerate(ordered) if index % STRIDE == 0]
    assert len({case.family for case in sample}) == len({case.family for case in ordered}), "a family is missing"
    for name in sorted({case.setup.__module__ for case in sample}):
        prepare = getattr(modules[name], "prepare", None)
        if prepare is not None:
            prepare(tmp_path / "fixtures" / name.rsplit(".", 1)[-1])
    results = run_cases(sample, tmp_path)
    bad = [result for result in results if result.outcome not in ("clear", "ok")]
    assert not bad, report_markdown(results)
    assert any(result.outcome == "ok" for result in results) and any(result.outcome == "clear" for result in results)
