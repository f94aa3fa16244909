"""notebooks/distill_synthetic.ipynb runs top to bottom on a tiny setting, offline."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "distill_synthetic.ipynb"


@pytest.mark.slow
def test_distill_notebook_executes(tmp_path, monkeypatch):
    monkeypatch.setenv("SND_DISTILL_NOTEBOOK_STEPS", "3")
    monkeypatch.setenv("SND_DISTILL_NOTEBOOK_TINY", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    printed = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "stages run: ['lift', 'teacher', 'upsample', 'render', 'blend']" in printed
    assert "3 steps in" in printed and "student" in printed and "pca_before_after.png" in printed
    assert "distilled features (1, 32, 2, 3)" in printed  # 28 x 42 target -> 2 x 3 patches, 32 channels
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 4
