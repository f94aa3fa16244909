"""Run a notebook from notebooks/ in a fresh kernel and collect what it showed (shared by the notebook tests)."""

import os
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbclient import NotebookClient

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO_ROOT / "notebooks"


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
    # The kernel imports this checkout's snd (as pytest does), not whichever copy the interpreter has installed.
    paths = [str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    client = NotebookClient(notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(working_dir)}})
    client.execute(env=env)
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])]
    errors = [output for output in outputs if output.get("output_type") == "error"]
    assert not errors, errors
    printed = "".join(output.get("text", "") for output in outputs if output.get("output_type") == "stream")
    return NotebookRun(outputs, printed)
