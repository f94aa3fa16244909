"""notebooks/quickstart.ipynb runs top to bottom, offline: by default on the shipped nano-2d, or on a random tiny
model (its asserts check the outputs)."""

import pytest

from tests.notebooks import run_notebook


def test_quickstart_notebook_runs_offline_on_the_shipped_nano_2d(tmp_path, monkeypatch):
    monkeypatch.delenv("SND_QUICKSTART_MODEL", raising=False)  # the default, as a reader runs it
    run = run_notebook("quickstart.ipynb", tmp_path)
    assert "SnDModel 128 channels, patch 8" in run.printed  # nano-2d, loaded from the package folder
    assert "torch.Size([1, 128, 16, 22])" in run.printed  # 128 x 176 image -> 16 x 22 patches of 8 px
    assert run.pictures >= 2  # the input and the PCA picture were drawn


@pytest.mark.slow
def test_quickstart_notebook_tiny_option(tmp_path, monkeypatch):
    monkeypatch.setenv("SND_QUICKSTART_MODEL", "tiny")
    run = run_notebook("quickstart.ipynb", tmp_path)
    assert "SnDModel 32 channels, patch 14" in run.printed
    assert "torch.Size([1, 32, 16, 22])" in run.printed  # 224 x 308 image -> 16 x 22 patches of 14 px
