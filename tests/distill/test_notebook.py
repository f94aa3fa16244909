"""notebooks/distill_synthetic.ipynb runs top to bottom on a tiny setting, offline."""

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
    assert "distilled features (1, 32, 2, 3)" in run.printed  # 28 x 42 target -> 2 x 3 patches, 32 channels
    assert run.pictures >= 4
