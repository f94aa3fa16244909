"""Checkpoints: nothing is unpickled with code on resume, "latest" is verified and falls back, pruning and
start-up cleanup leave no half checkpoint, torn logs, full disks, empty targets and changed run definitions.

Real in-process training runs on the tiny synthetic setting (about a second each) and real Accelerate files.
"""

from __future__ import annotations

import errno
import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from snd.distill import load_config
from snd.distill.checkpoints import (
    CheckpointError,
    _check_weights_only,
    ConfigChangeError,
    DiskFullError,
    checkpoint_dir,
    list_checkpoints,
    prune_checkpoints,
    resolve_resume,
    save_checkpoint,
    truncate_log,
    write_checkpoint_marker,
)
from snd.distill.trainer import EmptyTargetError, NonFiniteLossError, train
from tests.distill.helpers import TINY, TINY_CONFIG, TINY_OVERRIDES, distill_main


def _config(output_dir, *overrides):
    return load_config(TINY_CONFIG, [*TINY_OVERRIDES, f"training.output_dir={output_dir}", *overrides])


def _run(output_dir, *overrides, resume=None, allow_config_change=False):
    config = _config(output_dir, "training.max_steps=4", "training.checkpoint_every=2", *overrides)
    return train(config, resume_from_checkpoint=resume, progress=False, allow_config_change=allow_config_change)


class _Payload:
    """Pickles to a call of ``pathlib.Path.touch(marker)``: unpickling it with full pickle creates the file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def _malicious_pickle(path, marker):
    torch.save({"step": 1, "skipped": 0, "payload": _Payload(marker)}, path)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One 4-step run with checkpoints at steps 2 and 4, kept read-only by the tests (they copy it)."""
    out = tmp_path_factory.mktemp("run") / "run"
    _run(out)
    return out


def _copy(run, tmp_path):
    target = tmp_path / "run"
    shutil.copytree(run, target)
    return target


# --------------------------------------------------------------------------------------------
# 1. No code runs from a checkpoint


def test_checkpoint_holds_no_custom_pickles_and_a_manifest(finished_run):
    last = checkpoint_dir(finished_run, 4)
    names = {path.name for path in last.iterdir()}
    assert not any(name.startswith("custom_checkpoint_") for name in names), names
    assert {"snd_state.safetensors", "snd_state.json", "snd_checkpoint.json"} <= names
    counters = json.loads((last / "snd_state.json").read_text())
    assert counters["step"] == 4 and counters["skipped"] == 0
    marker = json.loads((last / "snd_checkpoint.json").read_text())
    assert set(marker["files"]) == names - {"snd_checkpoint.json"}
    assert marker["files"]["model.safetensors"]["size"] == (last / "model.safetensors").stat().st_size
    # the EMA teacher is stored as safetensors and equals the exported teacher
    teacher = load_file(str(last / "snd_state.safetensors"))
    exported = load_file(str(finished_run / "teacher" / "model.safetensors"))
    for name, value in exported.items():
        assert torch.equal(teacher[f"backbone.{name}"], value)


@pytest.mark.parametrize("victim", ["custom_checkpoint_1.pkl", "random_states_0.pkl", "optimizer.bin", "scheduler.bin"])
def test_tampered_checkpoint_is_refused_and_runs_nothing(finished_run, tmp_path, victim):
    out = _copy(finished_run, tmp_path)
    last = checkpoint_dir(out, 4)
    marker = tmp_path / "pwned"
    _malicious_pickle(last / victim, marker)
    write_checkpoint_marker(last, 4, {"run": json.loads((last / "snd_checkpoint.json").read_text())["run"]})  # a careful attacker
    with pytest.raises(CheckpointError, match=victim.replace(".", r"\.")):
        _run(out, resume=str(last))
    assert not marker.exists(), "unpickling the checkpoint ran code"


class _StorageBomb:
    def __reduce__(self):
        return (torch.UntypedStorage, (2**40,))


def test_storage_bomb_in_an_accelerate_pickle_is_refused_before_allocating(finished_run, tmp_path):
    out = _copy(finished_run, tmp_path)
    last = checkpoint_dir(out, 4)
    torch.save({"state": {}, "param_groups": [], "x": _StorageBomb()}, last / "optimizer.bin")
    write_checkpoint_marker(last, 4, {"run": json.loads((last / "snd_checkpoint.json").read_text())["run"]})
    with pytest.raises(CheckpointError, match=r"optimizer\.bin.*UntypedStorage\(1099511627776,\).*allocate"):
        _run(out, resume=str(last))


def test_tampered_file_without_a_new_manifest_fails_verification(finished_run, tmp_path):
    out = _copy(finished_run, tmp_path)
    marker = tmp_path / "pwned"
    _malicious_pickle(checkpoint_dir(out, 4) / "custom_checkpoint_1.pkl", marker)
    with pytest.raises(CheckpointError, match="custom_checkpoint_1.pkl"):
        _run(out, resume=str(checkpoint_dir(out, 4)))
    assert not marker.exists()


# --------------------------------------------------------------------------------------------
# 2. Verified "latest", fall-back, clean-up, pruning, torn logs, full disks


def test_resume_is_bit_identical_and_drops_a_torn_log_line(finished_run, tmp_path, caplog):
    out = _copy(finished_run, tmp_path)
    shutil.rmtree(checkpoint_dir(out, 4))  # as if killed between step 2 and the end
    for name in ("student", "teacher"):
        shutil.rmtree(out / name)
    with (out / "loss_log.jsonl").open("a") as handle:
        handle.write('{"step": 5, "loss": 0.1')  # torn by a kill mid-write
    with caplog.at_level(logging.WARNING):
        result = _run(out, resume="latest")
    assert result.steps == 4
    assert "torn final line" in caplog.text
    for name in ("student", "teacher"):
        expected = load_file(str(finished_run / name / "model.safetensors"))
        actual = load_file(str(out / name / "model.safetensors"))
        assert expected.keys() == actual.keys()
        assert all(torch.equal(expected[k], actual[k]) for k in expected), name
    reference = [json.loads(line) for line in (finished_run / "loss_log.jsonl").read_text().splitlines()]
    resumed = [json.loads(line) for line in (out / "loss_log.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in resumed] == [r["loss"] for r in reference]


def test_latest_falls_back_past_a_corrupt_newest_checkpoint(finished_run, tmp_path, caplog):
    out = _copy(finished_run, tmp_path)
    newest = checkpoint_dir(out, 4) / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated
    with caplog.at_level(logging.WARNING):
        assert resolve_resume(out, "latest") == checkpoint_dir(out, 2)
    assert "model.safetensors" in caplog.text and "truncated" in caplog.text
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*truncated"):
        resolve_resume(out, str(checkpoint_dir(out, 4)))
    # same size, one byte flipped: the hash catches it
    optimizer = checkpoint_dir(out, 2) / "optimizer.bin"
    data = bytearray(optimizer.read_bytes())
    data[len(data) // 2] ^= 0xFF
    optimizer.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"no checkpoint .* verifies.*optimizer\.bin.*SHA-256"):
        resolve_resume(out, "latest")


def test_stale_folders_are_cleaned_at_start(finished_run, tmp_path, caplog):
    out = _copy(finished_run, tmp_path)
    root = out / "checkpoints"
    (root / ".tmp-checkpoint-00000006").mkdir()
    (root / ".tmp-checkpoint-00000006" / "model.safetensors").write_bytes(b"half")
    (root / ".pruned-checkpoint-00000001").mkdir()
    half = root / "checkpoint-00000003"  # pruned in place by an older snd and killed: the marker went first
    half.mkdir()
    (half / "optimizer.bin").write_bytes(b"x")
    user_file = root / "notes.txt"
    user_file.write_text("mine")
    with caplog.at_level(logging.WARNING):
        _run(out, resume="latest")
    assert sorted(p.name for p in root.iterdir()) == ["checkpoint-00000002", "checkpoint-00000004", "notes.txt"]
    assert user_file.read_text() == "mine"
    assert ".tmp-checkpoint-00000006" in caplog.text and "checkpoint-00000003" in caplog.text


def test_pruning_renames_before_deleting(finished_run, tmp_path, monkeypatch):
    out = _copy(finished_run, tmp_path)
    import snd.distill.checkpoints as checkpoints

    def killed(path, *args, **kwargs):
        raise KeyboardInterrupt  # the process dies inside the delete

    monkeypatch.setattr(checkpoints.shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        prune_checkpoints(out, keep=1)
    monkeypatch.undo()
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == [".pruned-checkpoint-00000002", "checkpoint-00000004"]  # never a half "checkpoint-2"
    assert [step for step, _ in list_checkpoints(out)] == [4]


class _StubAccelerator:
    """The three members ``save_checkpoint`` uses, with ``save_state`` failing like a full disk does."""

    is_main_process = True
    num_processes = 1

    def __init__(self, error):
        self.error = error

    def wait_for_everyone(self):
        pass

    def save_state(self, directory, safe_serialization=True):
        (Path(directory) / "optimizer.bin").write_bytes(b"partial")
        raise self.error


@pytest.mark.parametrize(
    "error",
    [OSError(errno.ENOSPC, "No space left on device"), RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")],
)
def test_disk_full_says_so_and_names_the_path(tmp_path, monkeypatch, error):
    import snd.distill.checkpoints as checkpoints

    real_usage = shutil.disk_usage
    monkeypatch.setattr(checkpoints.shutil, "disk_usage", lambda path: real_usage(path)._replace(free=1024))
    with pytest.raises(DiskFullError, match=r"disk full.*\.tmp-checkpoint-00000007") as caught:
        save_checkpoint(_StubAccelerator(error), tmp_path, 7, {}, keep=2)
    assert caught.value.errno == errno.ENOSPC
    assert not (tmp_path / "checkpoints" / ".tmp-checkpoint-00000007").exists(), "the partial save was left behind"


def test_other_write_errors_are_not_called_disk_full(tmp_path):
    with pytest.raises(PermissionError):
        save_checkpoint(_StubAccelerator(PermissionError(errno.EACCES, "Permission denied")), tmp_path, 7, {}, keep=2)


def test_torn_log_line_in_the_middle_is_an_error_naming_the_line(tmp_path):
    log = tmp_path / "loss_log.jsonl"
    log.write_text('{"step": 1}\n{"step": 2, "lo\n{"step": 3}\n')
    with pytest.raises(ValueError, match=r"loss_log\.jsonl: line 2"):
        truncate_log(log, 3)


# --------------------------------------------------------------------------------------------
# 5. Empty targets and changed run definitions


def test_empty_teacher_target_stops_training(tmp_path):
    # a near plane beyond every synthetic scene culls every Gaussian: the target is all holes
    with pytest.raises(EmptyTargetError, match=r"valid_fraction 0.*3 consecutive steps.*training\.max_empty_steps"):
        _run(tmp_path / "run", "teacher.near_plane=1000", "teacher.far_plane=2000", "training.max_empty_steps=3", "training.max_steps=6")


def test_resume_with_a_changed_schedule_is_refused_and_keeps_config_yaml(finished_run, tmp_path):
    out = _copy(finished_run, tmp_path)
    original = (out / "config.yaml").read_text()
    with pytest.raises(ConfigChangeError, match=r"max_steps: 4 -> 6.*--allow_config_change"):
        _run(out, "training.max_steps=6", resume="latest")
    with pytest.raises(ConfigChangeError, match=r"lr: 0\.0005 -> 0\.001"):
        _run(out, "training.lr=1e-3", resume="latest")
    with pytest.raises(ConfigChangeError, match=r"batch_size: 1 -> 2"):
        _run(out, "training.batch_size=2", resume="latest")
    assert (out / "config.yaml").read_text() == original
    result = _run(out, "training.max_steps=6", resume="latest", allow_config_change=True)
    assert result.steps == 6
    assert (out / "config.yaml").read_text() == original, "the original config.yaml was overwritten"
    resumed = load_config(str(out / "config.resume-00000004.yaml"))
    assert resumed.training.max_steps == 6


def _make_legacy(checkpoint, payload_marker=None):
    """Rewrite a checkpoint the way snd wrote them before: teacher and counters as Accelerate custom pickles
    (torch.save of their state dicts), a marker without manifest."""
    teacher = load_file(str(checkpoint / "snd_state.safetensors"))
    counters = json.loads((checkpoint / "snd_state.json").read_text())
    torch.save(teacher, checkpoint / "custom_checkpoint_0.pkl")
    if payload_marker is not None:
        counters = {**counters, "payload": _Payload(payload_marker)}
    torch.save(counters, checkpoint / "custom_checkpoint_1.pkl")
    for name in ("snd_state.safetensors", "snd_state.json"):
        (checkpoint / name).unlink()
    marker = json.loads((checkpoint / "snd_checkpoint.json").read_text())
    (checkpoint / "snd_checkpoint.json").write_text(json.dumps({"step": marker["step"], "epoch": marker.get("epoch", 0)}))


def test_legacy_checkpoint_is_refused_then_upgraded_without_running_code(finished_run, tmp_path):
    from snd.distill.checkpoints import upgrade_legacy_checkpoint

    out = _copy(finished_run, tmp_path)
    shutil.rmtree(checkpoint_dir(out, 4))
    for name in ("student", "teacher"):
        shutil.rmtree(out / name)
    legacy = checkpoint_dir(out, 2)
    _make_legacy(legacy)
    with pytest.raises(CheckpointError, match="older snd.*upgrade_legacy_checkpoint"):
        _run(out, resume="latest")
    upgrade_legacy_checkpoint(legacy)
    assert (legacy / "custom_checkpoint_0.pkl.legacy").is_file() and not (legacy / "custom_checkpoint_0.pkl").exists()
    _run(out, resume="latest")
    for name in ("student", "teacher"):
        expected = load_file(str(finished_run / name / "model.safetensors"))
        actual = load_file(str(out / name / "model.safetensors"))
        assert all(torch.equal(expected[k], actual[k]) for k in expected), name


def test_tampered_legacy_checkpoint_is_not_upgraded(finished_run, tmp_path):
    from snd.distill.checkpoints import upgrade_legacy_checkpoint

    out = _copy(finished_run, tmp_path)
    marker = tmp_path / "pwned"
    _make_legacy(checkpoint_dir(out, 4), payload_marker=marker)
    with pytest.raises(CheckpointError, match=r"custom_checkpoint_1\.pkl: refused"):
        upgrade_legacy_checkpoint(checkpoint_dir(out, 4))
    assert not marker.exists()
    assert (checkpoint_dir(out, 4) / "custom_checkpoint_1.pkl").is_file()  # left as it was


def test_train_restores_the_callers_thread_count(tmp_path, monkeypatch):
    """A CPU run uses 1 torch thread (snd.runtime.default_cpu_threads); a notebook gets its own setting back."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        _run(tmp_path / "run", "training.max_steps=1", "training.checkpoint_every=0")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)


def test_a_run_that_fails_mid_way_restores_the_callers_settings(tmp_path, monkeypatch):
    """The matmul precision and thread count a run sets are process-wide: a run that raises mid-way (a non-finite
    loss at step 2, after both were set) puts back the caller's values too, not only a run that returns."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # so a CPU run sets 1 thread (snd.runtime.default_cpu_threads)
    calls = []
    set_threads, set_precision = torch.set_num_threads, torch.set_float32_matmul_precision
    previous = (torch.get_num_threads(), torch.get_float32_matmul_precision())
    set_threads(2)
    set_precision("medium")
    monkeypatch.setattr(torch, "set_num_threads", lambda value: (calls.append(("threads", value)), set_threads(value)))
    monkeypatch.setattr(torch, "set_float32_matmul_precision", lambda value: (calls.append(("precision", value)), set_precision(value)))
    try:
        # lr 1e30 turns the weights into +-1e30 after the first Adam step, so the second loss is not finite
        with pytest.raises(NonFiniteLossError, match="at step 2"):
            _run(tmp_path / "run", "training.lr=1e30", "training.max_grad_norm=0", "training.warmup_fraction=0",
                 "training.float32_matmul_precision=high")
        assert ("threads", 1) in calls and ("precision", "high") in calls, calls  # the run really changed both
        assert torch.get_num_threads() == 2 and torch.get_float32_matmul_precision() == "medium"
    finally:
        set_threads(previous[0])
        set_precision(previous[1])


def test_resuming_a_finished_run_trains_nothing_and_keeps_its_summary(finished_run, tmp_path, caplog, capsys):
    out = _copy(finished_run, tmp_path)
    summary = (out / "train_summary.json").read_text()
    final_loss = json.loads(summary)["final_loss"]
    log = (out / "loss_log.jsonl").read_text()
    assert final_loss is not None and final_loss == json.loads(log.splitlines()[-1])["loss"]
    marker = (checkpoint_dir(out, 4) / "snd_checkpoint.json").read_bytes()
    with caplog.at_level(logging.WARNING):
        result = _run(out, resume="latest")
    assert (result.steps, result.steps_trained, result.final_loss) == (4, 0, final_loss)
    assert "nothing left to train" in caplog.text
    assert (out / "train_summary.json").read_text() == summary  # not rewritten with final_loss null
    assert (out / "loss_log.jsonl").read_text() == log
    assert (checkpoint_dir(out, 4) / "snd_checkpoint.json").read_bytes() == marker  # the final checkpoint is kept as it was

    # a run killed while exporting (final checkpoint written, no student/ or summary yet): the resume finishes the
    # export and writes the summary, with the final loss from the loss log
    (out / "train_summary.json").unlink()
    shutil.rmtree(out / "student")
    result = _run(out, resume="latest")
    assert result.steps_trained == 0 and result.final_loss == final_loss
    written = json.loads((out / "train_summary.json").read_text())
    assert written["steps"] == 4 and written["final_loss"] == final_loss
    expected = load_file(str(finished_run / "student" / "model.safetensors"))
    actual = load_file(str(out / "student" / "model.safetensors"))
    assert expected.keys() == actual.keys() and all(torch.equal(expected[k], actual[k]) for k in expected)

    # the script says so instead of "done: 4 steps"
    capsys.readouterr()
    assert distill_main([*TINY, "--output_dir", str(out), "--max_steps", "4", "--training.checkpoint_every", "2",
                         "--resume_from_checkpoint", "latest"]) == 0
    printed = capsys.readouterr().out
    assert "nothing left to train" in printed and "done:" not in printed


# --------------------------------------------------------------------------------------------
# 4. Loaded optimizer / scheduler / RNG states must fit what they are loaded into (issue 21)


def _replace_state(out, name, edit):
    """Rewrite ``name`` of the last checkpoint as plain tensors/numbers (``edit`` changes the loaded object in
    place) and re-write the manifest, as a careful attacker or a checkpoint of another model would have it."""
    last = checkpoint_dir(out, 4)
    value = _check_weights_only(last / name)  # the project's own weights_only=True loader (Accelerate's numpy RNG globals allowed)
    edit(value)
    torch.save(value, last / name)
    write_checkpoint_marker(last, 4, {"run": json.loads((last / "snd_checkpoint.json").read_text())["run"]})
    return last


def _first_moment(state):
    return next(iter(state["state"].values()))


@pytest.mark.parametrize("field, edit, message", [
    # plain tensors of the wrong shape: weights_only and the size dry run accept them, the fused Adam step wrote out of bounds
    ("exp_avg", lambda s: _first_moment(s).update(exp_avg=torch.zeros(3, 5)), r"optimizer\.bin: field state\[\d+\]\.exp_avg is tensor \(3, 5\).*its parameter is tensor"),
    ("exp_avg_sq", lambda s: _first_moment(s).update(exp_avg_sq=torch.zeros(7)), r"optimizer\.bin: field state\[\d+\]\.exp_avg_sq is tensor \(7,\)"),
    ("step", lambda s: _first_moment(s).update(step=torch.zeros(1000)), r"optimizer\.bin: field state\[\d+\]\.step is tensor \(1000,\).*one number"),
    ("dtype", lambda s: _first_moment(s).update(exp_avg=_first_moment(s)["exp_avg"].to(torch.int64)), r"optimizer\.bin: field state\[\d+\]\.exp_avg is tensor .* torch\.int64"),
    ("unknown id", lambda s: s["state"].update({10_000: {}}), r"optimizer\.bin: field state\[10000\] is the state of no parameter"),
    ("group size", lambda s: s["param_groups"][0]["params"].pop(), r"optimizer\.bin: field param_groups\[0\]\.params does not list"),
    ("betas", lambda s: s["param_groups"][0].update(betas="0.9"), r"optimizer\.bin: field param_groups\[0\]\.betas is str"),
])
def test_optimizer_state_that_does_not_fit_the_model_is_refused_naming_file_and_field(finished_run, tmp_path, field, edit, message):
    out = _copy(finished_run, tmp_path)
    last = _replace_state(out, "optimizer.bin", edit)
    with pytest.raises(CheckpointError, match=message):
        _run(out, resume=str(last))


@pytest.mark.parametrize("name, edit, message", [
    ("scheduler.bin", lambda s: s.update(base_lrs=[1.0, 2.0, 3.0]), r"scheduler\.bin: field base_lrs is list of 3"),
    ("scheduler.bin", lambda s: s.update(last_epoch="4"), r"scheduler\.bin: field last_epoch is str, but this run needs an int"),
    ("scheduler.bin", lambda s: s.update(optimizer={}), r"scheduler\.bin: field optimizer is not part of this run's scheduler state"),
    ("scheduler.bin", lambda s: s.update(lr_lambdas=[{"x": 1}]), r"scheduler\.bin: field lr_lambdas\[0\] is dict, but this run needs NoneType"),
    ("random_states_0.pkl", lambda s: s.update(torch_manual_seed=torch.zeros(3, dtype=torch.uint8)), r"random_states_0\.pkl: field torch_manual_seed is tensor \(3,\)"),
    ("random_states_0.pkl", lambda s: s.update(random_state=(3, (1, 2), None)), r"random_states_0\.pkl: field random_state\[1\] is tuple of 2"),
    ("random_states_0.pkl", lambda s: s.pop("numpy_random_seed"), r"random_states_0\.pkl: field numpy_random_seed is missing"),
])
def test_scheduler_and_rng_states_that_do_not_fit_are_refused_naming_file_and_field(finished_run, tmp_path, name, edit, message):
    out = _copy(finished_run, tmp_path)
    last = _replace_state(out, name, edit)
    with pytest.raises(CheckpointError, match=message):
        _run(out, resume=str(last))


class _BuildBomb:
    """Pickles to a 1-element tensor and then a BUILD step ``tensor.set_(storage, 0, (2**40,), (0,))``: a
    1.6 kB file that ``torch.load(weights_only=True)`` turns into a 2**40-element view."""

    def __reduce_ex__(self, protocol):
        import collections
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            storage = torch.zeros(1).storage()
        return (torch._utils._rebuild_tensor_v2, (storage, 0, (1,), (1,), False, collections.OrderedDict()), (storage, 0, (2**40,), (0,)))


def test_a_build_step_that_inflates_a_tensor_is_refused_before_allocating(finished_run, tmp_path):
    from snd.convert.pickles import check_sizes

    bomb = tmp_path / "bomb.bin"
    torch.save({"w": _BuildBomb()}, bomb)
    assert torch.load(bomb, weights_only=True)["w"].shape == (2**40,)  # what the dry run must catch
    with pytest.raises(Exception, match=r"re-shaped by a BUILD \(set_\) step of shape \(1099511627776,\).*larger than the whole file"):
        check_sizes(bomb)
    out = _copy(finished_run, tmp_path)
    last = _replace_state(out, "optimizer.bin", lambda s: _first_moment(s).update(exp_avg=_BuildBomb()))
    with pytest.raises(CheckpointError, match=r"optimizer\.bin: refused.*BUILD \(set_\) step of shape \(1099511627776,\)"):
        _run(out, resume=str(last))


# Each refusal on its own (issue 21 part 4): with the check behind it disabled, the first check still refuses a pickled
# object that is not plain tensors / numbers / containers (an argparse Namespace: harmless, so a mutant that let it
# through would load it rather than run code, and only the refusal itself can tell).
def test_a_state_file_holding_a_pickled_object_is_refused_by_the_weights_only_load_alone(finished_run, tmp_path, monkeypatch):
    import argparse

    from snd.distill import checkpoints

    out = _copy(finished_run, tmp_path)
    last = _replace_state(out, "optimizer.bin", lambda s: s["param_groups"][0].update(extra=argparse.Namespace(lr=1.0)))
    monkeypatch.setattr(checkpoints, "check_accelerate_states", lambda *args, **kwargs: None)  # the structure check, off
    with pytest.raises(CheckpointError, match=r"optimizer\.bin: refused; it does not load as plain tensors and numbers"):
        _run(out, resume=str(last))


def test_an_accelerate_custom_pickle_is_refused_before_any_file_is_loaded(finished_run, tmp_path, monkeypatch):
    import argparse

    from snd.distill import checkpoints

    out = _copy(finished_run, tmp_path)
    last = checkpoint_dir(out, 4)
    torch.save({"step": 4, "skipped": 0, "args": argparse.Namespace(lr=1.0)}, last / "custom_checkpoint_0.pkl")
    write_checkpoint_marker(last, 4, {"run": json.loads((last / "snd_checkpoint.json").read_text())["run"]})  # in the manifest
    loaded = []

    def weights_only_check_off(file):  # the second check, off: it only records that it was reached
        loaded.append(Path(file).name)
        return torch.load(file, map_location="cpu", weights_only=True) if Path(file).name != "custom_checkpoint_0.pkl" else {}

    monkeypatch.setattr(checkpoints, "_check_weights_only", weights_only_check_off)
    with pytest.raises(CheckpointError, match=r"custom_checkpoint_0\.pkl: refused; Accelerate would unpickle it with weights_only=False"):
        _run(out, resume=str(last))
    assert loaded == []
