"""notebooks/evaluate.ipynb runs top to bottom on a tiny model, offline, and draws its pictures."""

from tests.notebooks import run_notebook


def test_evaluate_notebook_executes(tmp_path, monkeypatch):
    monkeypatch.setenv("SND_EVAL_MODEL", "tiny")
    run = run_notebook("evaluate.ipynb", tmp_path)
    assert "['correspondence', 'depth', 'normals', 'segmentation']" in run.printed
    assert "pca.png" in run.printed and "depth_0000.png" in run.printed
    assert run.pictures >= 5
    assert any("| my-backbone |" in o.get("data", {}).get("text/markdown", "") for o in run.outputs)
