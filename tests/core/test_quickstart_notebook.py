"""notebooks/quickstart.ipynb runs top to bottom on a tiny model, offline (its asserts check the outputs)."""

from tests.notebooks import run_notebook


def test_quickstart_notebook_executes(tmp_path, monkeypatch):
    monkeypatch.setenv("SND_QUICKSTART_MODEL", "tiny")
    run = run_notebook("quickstart.ipynb", tmp_path)
    assert "torch.Size([1, 32, 16, 22])" in run.printed  # 224 x 308 image -> 16 x 22 patches, 32 channels (tiny)
    assert run.pictures >= 2  # the input and the PCA picture were drawn
