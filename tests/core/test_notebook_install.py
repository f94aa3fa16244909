"""Every notebook installs snd from this repository (a variable at the top), never a name that is not on the index."""

from __future__ import annotations

import importlib.util
import subprocess

import nbformat
import pytest

from tests.notebooks import NOTEBOOKS


@pytest.mark.parametrize("name", ["quickstart.ipynb", "distill_synthetic.ipynb", "evaluate.ipynb"])
def test_notebook_installs_from_the_repository(name, monkeypatch):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    assert not any("splat-and-distill" in cell.source for cell in notebook.cells)
    install = next(cell for cell in notebook.cells if cell.cell_type == "code")
    assert install.source.splitlines()[2].startswith("SND_SOURCE = ")

    calls = []
    monkeypatch.setattr(subprocess, "check_call", lambda command: calls.append(command))
    with monkeypatch.context() as fresh:
        fresh.setattr(importlib.util, "find_spec", lambda name, *args: None)  # as on a fresh Colab
        exec(compile(install.source, name, "exec"), {})
        assert calls and calls[0][1:] == ["-m", "pip", "install", "-q", "-e", ".."]  # the repository above notebooks/
        calls.clear()
        exec(compile(install.source.replace('SND_SOURCE = ".."', 'SND_SOURCE = "git+https://example.org/snd"'), name, "exec"), {})
        assert calls[0][-1] == "git+https://example.org/snd"
    calls.clear()
    exec(compile(install.source, name, "exec"), {})  # snd importable here: nothing installed
    assert calls == []
