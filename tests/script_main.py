"""``scripts/<name>.py``'s ``main`` loaded into the test process, for tests that are not about the process boundary.

A launched script pays ~5-10 s of interpreter start and imports (torch, transformers, accelerate, snd) before it
does any work; calling its ``main(argv)`` here runs the same argument parsing and library code without that.
Each script keeps at least one real launch in its tests (the command line users type)."""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@lru_cache(maxsize=None)
def script_module(name: str):
    """The module ``scripts/<name>.py``, executed once per test process (its ``__main__`` block does not run)."""
    path = SCRIPTS / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"snd_tests_script_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def script_main(name: str, argv: list[str]) -> int:
    """``scripts/<name>.py``'s ``main(argv)``: its exit status (exceptions propagate)."""
    return script_module(name).main([str(arg) for arg in argv])
