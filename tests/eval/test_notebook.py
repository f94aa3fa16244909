"""notebooks/evaluate.ipynb runs top to bottom on a tiny model, offline, and draws its pictures."""

from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "evaluate.ipynb"


def test_evaluate_notebook_executes(tmp_path, monkeypatch):
    monkeypatch.setenv("SND_EVAL_MODEL", "tiny")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    printed = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "['correspondence', 'depth', 'normals', 'segmentation']" in printed
    assert "pca.png" in printed and "depth_0000.png" in printed
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 5
    assert any("| my-backbone |" in o.get("data", {}).get("text/markdown", "") for o in outputs)
