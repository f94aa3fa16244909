"""The GPU check's CPU-side logic: arguments, report, skipping without CUDA, failures and time limits."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from snd.benchmarks import gpu_check
from snd.benchmarks.gpu_check import CheckContext, StageResult, check_overrides, preset_overrides, run_check, run_command
from snd.distill.config import load_config

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.sh"


def test_without_cuda_every_gpu_stage_is_skipped_and_the_report_written(tmp_path, capsys):
    outdir = tmp_path / "out"
    code = gpu_check.main([str(outdir), "--budget", "120", "--wheels", str(tmp_path / "no-wheels")])
    assert code == 0
    report = (outdir / "gpu_check.md").read_text()
    assert "| environment | ok |" in report and "- cuda_available: False" in report
    assert "| install | skipped |" in report and "prepare_gpu_wheels.sh" in report
    for stage in sorted(gpu_check.NEEDS_CUDA):
        assert f"| {stage} | skipped | 0.0 | no CUDA device |" in report
    assert (outdir / "logs" / "environment.log").is_file()
    assert "report:" in capsys.readouterr().out


def _context(tmp_path, budget=60.0):
    context = CheckContext(outdir=tmp_path / "out", cache=tmp_path / "cache", wheels=tmp_path / "wheels", python=sys.executable, budget=budget)
    context.has_cuda = True  # pretend, so that the GPU stages are planned
    return context


def test_failures_and_timeouts_are_recorded_and_later_stages_still_run(tmp_path, monkeypatch):
    def broken(context):
        raise RuntimeError("stage exploded")

    mark = tmp_path / "grandchild-finished"

    def slow(context):  # its own child must die with it
        code = f"import subprocess, time; subprocess.Popen(['sh', '-c', 'sleep 3; touch {mark}']); print('started', flush=True); time.sleep(30)"
        return run_command("render", [sys.executable, "-c", code], context, timeout=2)

    def failing(context):
        return run_command("train_step", [sys.executable, "-c", "import sys; print('bad input'); sys.exit(3)"], context, timeout=20)

    def fine(context):
        return StageResult("preset_memory", "ok", 0.1, output="| preset | batch |\n|---|---|\n| x | 1 |")

    monkeypatch.setitem(gpu_check.STAGE_FUNCTIONS, "cuda_tests", broken)
    monkeypatch.setitem(gpu_check.STAGE_FUNCTIONS, "render", slow)
    monkeypatch.setitem(gpu_check.STAGE_FUNCTIONS, "train_step", failing)
    monkeypatch.setitem(gpu_check.STAGE_FUNCTIONS, "preset_memory", fine)
    context = _context(tmp_path)
    results = run_check(context, ("cuda_tests", "render", "train_step", "preset_memory"))
    assert [r.status for r in results] == ["failed", "timed out", "failed", "ok"]
    assert "RuntimeError: stage exploded" in results[0].note
    assert results[1].seconds < 10 and "killed after 2 s" in results[1].note and "started" in results[1].output
    assert results[2].note == "exit status 3" and "bad input" in (tmp_path / "out" / "logs" / "train_step.log").read_text()
    report = (tmp_path / "out" / "gpu_check.md").read_text()  # written after every stage
    assert "| render | timed out |" in report and "| train_step | failed |" in report and "| x | 1 |" in report
    time.sleep(3)
    assert not mark.exists()  # the time-out ended the whole process group


def test_spent_budget_skips_the_remaining_stages(tmp_path, monkeypatch):
    ran = []
    monkeypatch.setitem(gpu_check.STAGE_FUNCTIONS, "render", lambda context: ran.append("render") or StageResult("render", "ok"))
    context = _context(tmp_path, budget=1.0)  # under the 5 s a stage needs at least
    results = run_check(context, ("render",))
    assert ran == [] and results[0].status == "skipped" and results[0].note == "time budget spent"
    # and a command's time limit is cut to what is left of the budget
    context = _context(tmp_path, budget=2.0)
    result = run_command("render", [sys.executable, "-c", "import time; time.sleep(20)"], context, timeout=60)
    assert result.status == "timed out" and result.seconds < 10


def test_gsplat_build_failure_switches_training_stages_to_the_torch_renderer(tmp_path, monkeypatch):
    context = _context(tmp_path)
    context.env["PYTHONPATH"] = str(tmp_path / "empty")  # no gsplat importable
    result = gpu_check.stage_gsplat_build(context)
    assert result.status == "failed" and not context.gsplat_ok
    assert gpu_check._backend_overrides(context) == ["teacher.render_backend=torch"]


def test_paper_presets_become_runnable_offline_without_changing_anything_else():
    for preset, architecture in (("scannetpp_dinov2s", "dinov2-s"), ("scannetpp_dinov2b", "dinov2-b")):
        assert load_config("default", preset_overrides(preset)) == load_config(preset)  # the overrides are the preset
        paper = load_config(preset)
        config = load_config("default", check_overrides(preset, Path("/tmp/mvsplat"), batch_size=3))
        assert config.model.pretrained is None and config.model.preset == architecture
        assert (config.data.image_height, config.data.image_width) == (576, 880) and config.data.dataset == "synthetic"
        assert config.lifter.kind == "mvsplat" and config.lifter.checkpoint == "/tmp/mvsplat"
        assert config.training.batch_size == 3
        assert (config.head, config.loss, config.teacher) == (paper.head, paper.loss, paper.teacher)
        assert config.model.finetune == paper.model.finetune and config.model.lora_rank == paper.model.lora_rank


def test_arguments_report_helpers_and_the_shell_wrapper(tmp_path):
    assert gpu_check.cuda_arch_list((9, 0)) == "9.0" and gpu_check.cuda_arch_list((12, 1)) == "12.1"
    files = [Path(name).name for name in gpu_check.cuda_test_files()]
    assert "test_gsplat_parity.py" in files and "test_render.py" not in files  # only modules with CUDA-marked tests
    with pytest.raises(SystemExit):
        gpu_check.main([])  # OUTDIR is required
    a_file = tmp_path / "file"
    a_file.write_text("")
    with pytest.raises(SystemExit):
        gpu_check.main([str(a_file)])
    with pytest.raises(SystemExit):
        gpu_check.main([str(tmp_path / "x"), "--budget", "0"])
    table = gpu_check.format_memory_table(
        [dict(preset="p", batch=1, status="ok", peak_allocated_gib=12.34, peak_reserved_gib=14.0, step_s=0.5),
         dict(preset="p", batch=4, status="out of memory")]
    )
    assert "| p | 1 | ok | 12.3 | 14.0 | 0.50 |" in table and "| p | 4 | out of memory |  |  |  |" in table

    usage = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True)
    assert usage.returncode == 2 and "usage" in usage.stderr
    run = subprocess.run(
        ["bash", str(SCRIPT), str(tmp_path / "sh-out"), "--stages", "environment", "--budget", "60"],
        capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "HOME": str(tmp_path)}, timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "| environment | ok |" in (tmp_path / "sh-out" / "gpu_check.md").read_text()


def test_preset_memory_reports_what_was_measured_before_a_time_out(tmp_path, monkeypatch):
    context = _context(tmp_path)
    (context.cache / "mvsplat-random").mkdir(parents=True)
    (context.cache / "mvsplat-random" / "config.json").write_text("{}")
    measured = '{"preset": "scannetpp_dinov2s", "batch": 1, "status": "ok", "peak_allocated_gib": 20.5, "peak_reserved_gib": 22.0, "step_s": 1.5}'
    oom = '{"preset": "scannetpp_dinov2s", "batch": 2, "status": "out of memory"}'
    seen = {}

    def fake_run(name, command, context, timeout, cwd=None):
        seen["command"] = command
        return StageResult(name, "timed out", 150.0, "killed after 150 s", f"building...\n{measured}\n{oom}\n")

    monkeypatch.setattr(gpu_check, "run_command", fake_run)
    context.gsplat_ok = False
    result = gpu_check.stage_preset_memory(context)
    assert seen["command"][-1] == "teacher.render_backend=torch"  # gsplat did not build: torch renderer
    assert result.status == "timed out"
    assert "| scannetpp_dinov2s | 1 | ok | 20.5 | 22.0 | 1.50 |" in result.output
    assert "| scannetpp_dinov2s | 2 | out of memory |" in result.output
    assert "| scannetpp_dinov2b | 4 | not reached (timed out) |" in result.output


def test_without_pip_the_wheels_are_unpacked(tmp_path):
    import zipfile

    wheels = tmp_path / "wheels"
    wheels.mkdir()
    with zipfile.ZipFile(wheels / "ninja-1.0-py3-none-manylinux2014_x86_64.whl", "w") as archive:
        archive.writestr("ninja/__init__.py", "VALUE = 1\n")
        archive.writestr("ninja-1.0.data/scripts/ninja", "#!/bin/sh\necho 1.0\n")
    with zipfile.ZipFile(wheels / "numpy-1.0-cp311-cp311-manylinux2014_x86_64.whl", "w") as archive:  # not pure: skipped
        archive.writestr("numpy/__init__.py", "")
    with zipfile.ZipFile(wheels / "gsplat-1.5.3-py3-none-any.whl", "w") as archive:
        archive.writestr("gsplat/__init__.py", "")
        archive.writestr("../escape.py", "")  # never written outside the site folder
    site = tmp_path / "site"
    assert sorted(gpu_check.extract_wheels(wheels, site, ["ninja", "gsplat", "numpy"])) == ["gsplat", "ninja"]
    assert (site / "ninja" / "__init__.py").read_text() == "VALUE = 1\n"
    assert subprocess.run([str(site / "bin" / "ninja")], capture_output=True, text=True).stdout.strip() == "1.0"
    assert not (site / "numpy").exists() and not (tmp_path / "escape.py").exists()

    context = _context(tmp_path)
    context.wheels, context.python = wheels, str(tmp_path / "no-such-python")  # pip cannot run
    result = gpu_check.stage_install(context)
    assert result.status == "failed" and "pip failed" in result.note and "missing" in result.note  # rich, pytest, ... absent
    assert "gsplat" in result.output and str(context.cache / "site" / "bin") in context.env["PATH"]
