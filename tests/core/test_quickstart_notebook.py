"""notebooks/quickstart.ipynb runs top to bottom on a tiny model, offline (its asserts check the outputs)."""

import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "quickstart.ipynb"


def test_quickstart_notebook_executes(tmp_path, monkeypatch):
    monkeypatch.setenv("SND_QUICKSTART_MODEL", "tiny")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    printed = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "torch.Size([1, 32, 16, 22])" in printed  # 224 x 308 image -> 16 x 22 patches, 32 channels (tiny)
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2  # the pictures were drawn
