"""Expensive test inputs (a launched training run, a converted checkpoint) built once per test run.

A module-scoped fixture is built once per pytest process, and with `pytest -n 2` the tests of one module may
run on both workers, so each would build it. :func:`build_once` is xdist's documented pattern for this: the
first worker to ask builds into a folder shared by all workers of the run, under a file lock; the others
wait for it and reuse the result. Without xdist it is an ordinary cached build in the run's temp folder."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock


def build_once(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """The folder ``name`` after ``build(folder)`` has filled it, built once per test run across xdist workers.

    A build that raised leaves no completion mark, so the next caller builds again (and fails the same way,
    with the real error) instead of reusing half-written files."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # <basetemp>/popen-gwN -> <basetemp>, shared by the workers of this run
    folder = root / f"shared-{name}"
    with FileLock(str(folder) + ".lock"):
        done = folder / ".built"
        if not done.is_file():
            if folder.exists():
                shutil.rmtree(folder)
            folder.mkdir()
            build(folder)
            done.touch()
    return folder
