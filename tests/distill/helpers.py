"""Run the real ``scripts/distill.py`` on a tiny setting: launched in subprocesses (as diffusers' example tests do)
where the process boundary is what is tested (``accelerate launch``, kill -9, environment-configured Hub access), and
its ``main(argv)`` in-process otherwise (same argument parsing and code path, without ~7 s of interpreter start and
imports per run)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from snd.distill.config import dotted_flags_to_overrides

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "distill.py"

# The shipped preset the machinery tests start from: the tiny random student (patch 14) on synthetic scenes. The
# embedded default distils the shipped nano-2d backbone, a real (if small) run; the tests need the tiny one.
TINY_CONFIG = "tiny_synthetic"

# Tiny but complete: 28x42 synthetic views (2x3 patch grid), 2 scenes, 64 prototypes. `--config` comes first, so a
# test that passes its own `--config` after these flags gets its own.
TINY_FLAGS = [
    "--data.image_height", "28",
    "--data.image_width", "42",
    "--data.num_scenes", "2",
    "--data.num_frames", "10",
    "--data.max_gap", "9",
    "--data.samples_per_scene", "4",
    "--head.num_prototypes", "64",
    "--head.hidden_dim", "32",
    "--head.bottleneck_dim", "16",
    "--training.log_every", "1",
    "--training.report_to", "none",
    "--no_progress",
]
TINY = ["--config", TINY_CONFIG, *TINY_FLAGS]
# The same setting in-process: `load_config(TINY_CONFIG, TINY_OVERRIDES)` or `run(config=TINY_CONFIG, overrides=...)`.
TINY_OVERRIDES = dotted_flags_to_overrides([flag for flag in TINY_FLAGS if flag != "--no_progress"])


def script_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "src"), str(REPO_ROOT)]), "TOKENIZERS_PARALLELISM": "false"})
    env.update(extra or {})
    return env


def launch_command(args: list[str], num_processes: int = 1) -> list[str]:
    """``accelerate launch`` for real multi-process runs; a plain interpreter for one process (same code path)."""
    if num_processes == 1:
        return [sys.executable, str(SCRIPT), *args]
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
    return [
        accelerate, "launch", "--multi_gpu", "--num_processes", str(num_processes), "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(29500 + os.getpid() % 1000),
        str(SCRIPT), *args,
    ]


def run_distill(args: list[str], num_processes: int = 1, check: bool = True, env: dict | None = None, timeout: float = 600):
    result = subprocess.run(
        launch_command(args, num_processes), cwd=REPO_ROOT, env=script_env(env), capture_output=True, text=True, timeout=timeout
    )
    if check and result.returncode != 0:
        raise AssertionError(f"distill.py {args} failed ({result.returncode})\n--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-6000:]}")
    return result


def distill_main(args: list[str]) -> int:
    """``scripts/distill.py``'s ``main(args)`` in this process; returns its exit status (exceptions propagate).

    The test process runs one intra-op thread (tests/conftest.py), as the launched scripts do (OMP_NUM_THREADS=1),
    so an in-process run is bit-identical to a launched one with the same arguments."""
    from tests.script_main import script_main

    return script_main("distill", args)
