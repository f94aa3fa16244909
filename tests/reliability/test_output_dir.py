"""The output folder is the user's (issue 21, issue 20 item 4): --overwrite_output_dir removes only what a run wrote,
a folder holding a user's own files under the run's output names is refused, a checkpoint of another folder does not
cut this folder's log, two runs cannot share a folder (lock file), only the global main process removes anything,
every machine must see one shared output folder, and scripts/evaluate.py does not replace earlier results silently."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from snd.distill import ConfigError, run
from snd.distill.launch import (
    LOCK_NAME,
    OutputDirLockedError,
    check_output_dir,
    is_snd_run,
    locks_output_dir,
    output_dir_lock,
    run_outputs_present,
)
from tests.distill.helpers import REPO_ROOT, TINY, TINY_CONFIG, TINY_OVERRIDES, distill_main, script_env


def _files(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _snd_run(folder: Path) -> None:
    """What an earlier run of ours left: config, log, checkpoints (one complete, one torn save), pictures."""
    checkpoint = folder / "checkpoints" / "checkpoint-00000002"
    checkpoint.mkdir(parents=True)
    (checkpoint / "model.safetensors").write_bytes(b"old")
    (checkpoint / "snd_checkpoint.json").write_text("{}")
    (folder / "checkpoints" / ".tmp-checkpoint-00000004").mkdir()
    (folder / "config.yaml").write_text("training:\n  max_steps: 2\n")
    (folder / "loss_log.jsonl").write_text('{"step": 1, "loss": 5.0}\n{"step": 2, "loss": 4.0}\n')
    (folder / "pca_before_after.png").write_bytes(b"png")


def _env(monkeypatch, rank: int, local_rank: int) -> None:
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("LOCAL_RANK", str(local_rank))


# ------------------------------------------------------------------------------------------ overwrite and refusals
def test_overwrite_keeps_a_users_files_under_checkpoints(tmp_path):
    _snd_run(tmp_path)
    (tmp_path / "checkpoints" / "re10k.ckpt").write_bytes(b"lifter weights")  # the README keeps them there
    (tmp_path / "checkpoints" / "mine").mkdir()
    (tmp_path / "checkpoints" / "mine" / "notes.txt").write_text("mine")
    (tmp_path / "notes.txt").write_text("mine too")
    (tmp_path / "teacher").mkdir()
    (tmp_path / "teacher" / "model.safetensors").write_bytes(b"the old run's export")
    check_output_dir(tmp_path, resume_from_checkpoint=None, overwrite_output_dir=True)
    assert _files(tmp_path) == {"checkpoints/re10k.ckpt": b"lifter weights", "checkpoints/mine/notes.txt": b"mine", "notes.txt": b"mine too",
                                "config.overwritten.yaml": b"training:\n  max_steps: 2\n"}  # renamed: it may be the user's
    # a run's own checkpoint folders only: with nothing else there, checkpoints/ goes too
    other = tmp_path / "other"
    other.mkdir()
    _snd_run(other)
    check_output_dir(other, resume_from_checkpoint=None, overwrite_output_dir=True)
    assert not (other / "checkpoints").exists()


def test_a_folder_holding_only_lifter_weights_is_not_a_run(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "re10k.ckpt").write_bytes(b"lifter weights")
    assert run_outputs_present(tmp_path) == [] and not is_snd_run(tmp_path)
    check_output_dir(tmp_path, resume_from_checkpoint=None, overwrite_output_dir=False)  # no refusal, nothing removed
    assert _files(tmp_path) == {"checkpoints/re10k.ckpt": b"lifter weights"}


@pytest.mark.parametrize("name", ["teacher", "heads.safetensors", "pca_before_after.png", "student"])
def test_a_users_files_under_the_runs_output_names_are_refused_even_with_overwrite(tmp_path, name):
    path = tmp_path / name
    if "." in name:
        path.write_bytes(b"the user's own")
    else:
        path.mkdir()
        (path / "model.safetensors").write_bytes(b"the user's own")
    before = _files(tmp_path)
    for overwrite in (False, True):
        with pytest.raises(ConfigError, match=rf"holds {name}.*not an snd run.*even with --overwrite_output_dir"):
            check_output_dir(tmp_path, resume_from_checkpoint=None, overwrite_output_dir=overwrite)
    with pytest.raises(ConfigError, match="not an snd run"):
        check_output_dir(tmp_path, resume_from_checkpoint="latest", overwrite_output_dir=False)
    assert _files(tmp_path) == before


def test_distill_script_refuses_a_folder_with_a_users_teacher(tmp_path, capsys):
    (tmp_path / "teacher").mkdir()
    (tmp_path / "teacher" / "config.json").write_text("{}")
    (tmp_path / "heads.safetensors").write_bytes(b"mine")
    before = _files(tmp_path)
    assert distill_main([*TINY, "--output_dir", str(tmp_path), "--max_steps", "1", "--overwrite_output_dir"]) == 2
    assert "not an snd run" in capsys.readouterr().err
    assert _files(tmp_path) == before


def test_resuming_another_folders_checkpoint_does_not_cut_this_folders_log(tmp_path):
    run_a, run_b = tmp_path / "runA", tmp_path / "runB"
    _snd_run(run_a)
    _snd_run(run_b)
    (run_b / "loss_log.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in range(1, 9)))
    before = _files(run_b)
    checkpoint = run_a / "checkpoints" / "checkpoint-00000002"
    with pytest.raises(ConfigError, match=r"checkpoint of another folder.*runB holds a run of its own.*cut its loss_log"):
        run(config=TINY_CONFIG, overrides=TINY_OVERRIDES, output_dir=str(run_b), max_steps=3, resume_from_checkpoint=str(checkpoint), progress=False)
    assert _files(run_b) == before
    # into a new folder (a branch of runA): fine; its own checkpoint (relative or not): fine
    check_output_dir(tmp_path / "runC", resume_from_checkpoint=str(checkpoint), overwrite_output_dir=False)
    check_output_dir(run_a, resume_from_checkpoint=str(checkpoint), overwrite_output_dir=False)
    # --overwrite_output_dir: runB's run is replaced (its log removed), runA untouched
    check_output_dir(run_b, resume_from_checkpoint=str(checkpoint), overwrite_output_dir=True)
    assert not (run_b / "loss_log.jsonl").exists() and (checkpoint / "model.safetensors").exists()


# ------------------------------------------------------------------------------------------ lock
def _live_process():
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def _write_lock(folder: Path, pid: int, host: str | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    record = {"pid": pid, "host": host or socket.gethostname(), "started": "2026-01-01T00:00:00", "command": "distill.py", "token": "x"}
    (folder / LOCK_NAME).write_text(json.dumps(record))


def test_lock_is_held_for_the_run_and_released_on_exit(tmp_path):
    with output_dir_lock(tmp_path, main_process=True) as path:
        record = json.loads(path.read_text())
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
        with pytest.raises(OutputDirLockedError, match="already locked by this process"):
            with output_dir_lock(tmp_path, main_process=True):
                pass
    assert not (tmp_path / LOCK_NAME).exists()
    with pytest.raises(ZeroDivisionError):  # released when the run fails too
        with output_dir_lock(tmp_path, main_process=True):
            1 / 0
    assert not (tmp_path / LOCK_NAME).exists()
    with output_dir_lock(tmp_path, main_process=False) as path:  # other ranks take nothing
        assert path is None and not (tmp_path / LOCK_NAME).exists()


def test_a_second_run_into_a_locked_folder_is_refused_naming_folder_and_holder(tmp_path):
    other = _live_process()
    try:
        _write_lock(tmp_path, other.pid)
        with pytest.raises(OutputDirLockedError, match=rf"{tmp_path}.* in use by another run: process {other.pid} on host"):
            with output_dir_lock(tmp_path, main_process=True):
                pass
        _snd_run(tmp_path)  # check_output_dir (what train calls) refuses too, before removing anything
        before = _files(tmp_path)
        with pytest.raises(OutputDirLockedError, match=str(other.pid)):
            check_output_dir(tmp_path, resume_from_checkpoint=None, overwrite_output_dir=True)
        assert _files(tmp_path) == before
    finally:
        other.kill()
        other.wait()


def test_a_stale_lock_of_a_dead_process_is_taken_over_and_another_hosts_is_not(tmp_path, caplog):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _write_lock(tmp_path, dead.pid)
    with caplog.at_level(logging.WARNING, logger="snd.distill"):
        with output_dir_lock(tmp_path, main_process=True) as path:
            assert json.loads(path.read_text())["pid"] == os.getpid()
    assert "stale lock" in caplog.text and str(dead.pid) in caplog.text
    _write_lock(tmp_path, dead.pid, host="another-machine")
    with pytest.raises(OutputDirLockedError, match=rf"another-machine.*delete {tmp_path / LOCK_NAME}"):
        with output_dir_lock(tmp_path, main_process=True):
            pass


def test_locks_output_dir_decorates_train(tmp_path):
    from types import SimpleNamespace

    seen = []

    @locks_output_dir
    def fake_train(config, value):
        seen.append(json.loads((tmp_path / LOCK_NAME).read_text())["pid"])
        return value

    config = SimpleNamespace(training=SimpleNamespace(output_dir=str(tmp_path)))
    assert fake_train(config, 7) == 7 and seen == [os.getpid()] and not (tmp_path / LOCK_NAME).exists()


# ------------------------------------------------------------------------------------------ several machines
def test_only_the_global_main_process_removes_an_old_run(tmp_path, monkeypatch):
    _snd_run(tmp_path)
    before = _files(tmp_path)
    _env(monkeypatch, rank=4, local_rank=0)  # the second machine's local main process
    check_output_dir(tmp_path, resume_from_checkpoint=None, overwrite_output_dir=True)
    assert _files(tmp_path) == before
    _env(monkeypatch, rank=0, local_rank=0)
    check_output_dir(tmp_path, resume_from_checkpoint=None, overwrite_output_dir=True)
    assert not (tmp_path / "loss_log.jsonl").exists() and not (tmp_path / "checkpoints").exists()


@pytest.mark.slow  # two launched processes (~18 s on a busy 2-core machine)
def test_two_machines_overwrite_one_folder_and_must_share_the_output_dir(tmp_path):
    """Two processes, global ranks 0 and 1, each the local main process of its "machine" (gloo): under
    --overwrite_output_dir both settle the same folder at once and only rank 0 removes (no FileNotFoundError);
    one shared output_dir passes the shared-filesystem check, two separate ones (two machines' own disks) are
    refused on both, naming the machine whose marker is missing."""
    import socket as sockets

    shared_run = tmp_path / "run"
    _snd_run(shared_run)
    (shared_run / "checkpoints" / "re10k.ckpt").write_bytes(b"lifter")
    shared = tmp_path / "shared"
    with sockets.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    reports = [tmp_path / f"report{rank}.json" for rank in (0, 1)]
    processes = [
        subprocess.Popen([sys.executable, "-m", "tests.reliability.two_nodes", str(rank), str(port), str(shared_run), str(shared),
                          str(tmp_path / f"disk{rank}"), str(reports[rank])],
                         cwd=REPO_ROOT, env=script_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for rank in (0, 1)
    ]
    outputs = [process.communicate(timeout=240)[0] for process in processes]
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-3000:]
    reports = [json.loads(report.read_text()) for report in reports]
    assert [r["overwrite"] for r in reports] == ["ok", "ok"] and [r["shared"] for r in reports] == ["ok", "ok"]
    assert _files(shared_run) == {"checkpoints/re10k.ckpt": b"lifter", "config.overwritten.yaml": b"training:\n  max_steps: 2\n"}
    assert not any(shared.rglob("node-*"))  # the markers are removed
    for report in reports:
        assert report["separate"].startswith("ConfigError: ") and "not one filesystem shared by all 2 machines" in report["separate"]
        assert "node-1" in report["separate"]


# ------------------------------------------------------------------------------------------ evaluate.py
def test_evaluate_script_refuses_to_replace_earlier_results(tmp_path):
    from tests.script_main import script_main

    (tmp_path / "results.json").write_text('{"old": {}}')
    (tmp_path / "comparison.md").write_text("| old |")
    with pytest.raises(SystemExit, match=r"already holds an earlier evaluation \(results.json, comparison.md\).*--overwrite"):
        script_main("evaluate", ["--model", "nonexistent-model", "--output-dir", str(tmp_path)])
    assert (tmp_path / "results.json").read_text() == '{"old": {}}' and (tmp_path / "comparison.md").read_text() == "| old |"
    from snd.eval.report import check_results_dir

    check_results_dir(tmp_path, overwrite=True)
    check_results_dir(tmp_path / "new")


def test_a_real_run_holding_the_lock_is_not_refused_by_its_own_check(tmp_path):
    """The wiring the trainer needs (`@launch.locks_output_dir` on train): a real tiny run takes the lock, its own
    check_output_dir accepts it, it is held during the run and released at the end; a locked folder is refused
    before any work."""
    from snd.distill import load_config, trainer

    config = load_config(TINY_CONFIG, TINY_OVERRIDES + [f"training.output_dir={tmp_path / 'run'}", "training.max_steps=1"])
    held = []
    build = trainer.build_optimizer

    def spying_build(*args, **kwargs):
        held.append(json.loads((tmp_path / "run" / LOCK_NAME).read_text())["pid"])
        return build(*args, **kwargs)

    locked_train = trainer.train  # wrapped by @launch.locks_output_dir
    assert locked_train.__wrapped__ is not None and locks_output_dir is not None
    import unittest.mock

    with unittest.mock.patch.object(trainer, "build_optimizer", spying_build):
        result = locked_train(config, progress=False)
    assert result.steps == 1 and held == [os.getpid()] and not (tmp_path / "run" / LOCK_NAME).exists()
    other = _live_process()
    try:
        _write_lock(tmp_path / "run", other.pid)
        with pytest.raises(OutputDirLockedError, match=str(other.pid)):
            locked_train(config, resume_from_checkpoint="latest", progress=False)
    finally:
        other.kill()
        other.wait()
