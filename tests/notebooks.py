"""Run a notebook from notebooks/ in a fresh kernel and collect what it showed (shared by the notebook tests)."""

from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@dataclass
class NotebookRun:
    outputs: list  # every output of every code cell, in order
    printed: str  # all stream text

    @property
    def pictures(self) -> int:
        return sum("image/png" in output.get("data", {}) for output in self.outputs)


def run_notebook(name: str, working_dir: Path, timeout: int = 300) -> NotebookRun:
    """Execute `notebooks/<name>` with `working_dir` as its folder; fails the test on any cell error."""
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(working_dir)}}).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])]
    errors = [output for output in outputs if output.get("output_type") == "error"]
    assert not errors, errors
    printed = "".join(output.get("text", "") for output in outputs if output.get("output_type") == "stream")
    return NotebookRun(outputs, printed)
