"""notebooks/distill_synthetic.ipynb runs top to bottom on a small setting of the embedded default (nano-2d), offline."""

import re

import pytest

from tests.notebooks import run_notebook


@pytest.mark.slow
def test_distill_notebook_executes(tmp_path, monkeypatch):
    monkeypatch.setenv("SND_DISTILL_NOTEBOOK_STEPS", "3")
    monkeypatch.setenv("SND_DISTILL_NOTEBOOK_TINY", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    run = run_notebook("distill_synthetic.ipynb", tmp_path, timeout=600)
    assert "stages reproduce the teacher's target exactly: True" in run.printed
    assert "3 steps in" in run.printed and "student" in run.printed and "pca_before_after.png" in run.printed
    assert "distilled features (1, 128, 4, 5)" in run.printed  # nano-2d: 32 x 40 target -> 4 x 5 patches of 8 px, 128 channels
    # SnD vs the same-view control on one held-out pair: a score line per model, and the matches drawn
    assert "held-out pair:" in run.printed
    for name in ("base (nano-2d)", "SnD", "control (same view)"):
        line = re.search(rf"^{re.escape(name)} +recall@6px +([\d.]+) % +consistency AUC ([\d.]+)$", run.printed, re.M)
        assert line, (name, run.printed[-1500:])
        assert 0 <= float(line[1]) <= 100 and 0 <= float(line[2]) <= 1
    assert run.pictures >= 5
