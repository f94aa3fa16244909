"""Regressions found by the hostile-input probe (tests/hostile/cases/checkpoints_models.py, issue 21): checkpoint
markers, train counters, optimizer/scheduler/RNG states and loss logs that were accepted silently, hung or were refused
without naming the file or field; model folders and preprocessor configs loaded silently with NaN, missing or integer
weights or broken fields; converters that deleted their own input or did not name it."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import snd
from snd.backbones import read_preprocessor_config
from snd.convert import ConversionError
from snd.distill.build import load_backbone
from snd.distill.checkpoints import (
    CheckpointError,
    check_optimizer_state,
    check_rng_state,
    check_scheduler_state,
    checkpoint_dir,
    checkpoint_problems,
    truncate_log,
    write_checkpoint_marker,
)
from snd.distill import checkpoints
from snd.distill.config import ModelConfig
from tests.reliability.test_checkpoints import _copy, _run


@pytest.fixture()
def alarm():
    """A read that blocks (a named pipe without writer) fails the test after 10 s instead of hanging the suite."""
    import signal

    def expired(signum, frame):
        raise TimeoutError("blocked for 10 s (reading a named pipe?)")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(10)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    _run(out)
    return out


# --------------------------------------------------------------------------------------------------- checkpoint marker


def _sign(record, name, data):
    record["files"][name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


@pytest.mark.parametrize("edit, message", [
    (lambda last, m: (last.parent.parent.joinpath("outside.txt").write_bytes(b"s"), _sign(m, "../../outside.txt", b"s")),
     r"snd_checkpoint\.json: field 'files' lists '\.\./\.\./outside\.txt', a path outside"),
    (lambda last, m: _sign(m, "/etc/hostname", open("/etc/hostname", "rb").read()), r"snd_checkpoint\.json: field 'files' lists '/etc/hostname'"),
    (lambda last, m: m["files"].update({"model.safetensors": 7}), r"snd_checkpoint\.json: field 'files' entry 'model\.safetensors' is 7"),
    (lambda last, m: m.update(step="four"), r"snd_checkpoint\.json: field 'step' is 'four'"),
    (lambda last, m: m.update(step=999), r"snd_checkpoint\.json: field 'step' is 999, but the folder checkpoint-00000004"),
    (lambda last, m: m.update(run="x"), r"snd_checkpoint\.json: field 'run' is str"),
    (lambda last, m: m["files"].pop("scheduler.bin"), r"scheduler\.bin: a file that is not in the manifest"),
])
def test_a_malformed_manifest_is_a_problem_naming_the_marker_and_field(finished_run, tmp_path, edit, message):
    out = _copy(finished_run, tmp_path)
    last = checkpoint_dir(out, 4)
    record = json.loads((last / "snd_checkpoint.json").read_text())
    edit(last, record)
    (last / "snd_checkpoint.json").write_text(json.dumps(record))
    problems = checkpoint_problems(last)
    assert problems and any(re.search(message, problem) for problem in problems), problems


@pytest.mark.parametrize("content, message", [
    (b"[" * 200_000, r"snd_state\.json: JSON nested too deeply"),
    (b'{"step": -3, "skipped": 0}', r"snd_state\.json: field 'step' is -3"),
    (b'{"step": 4.5, "skipped": 0}', r"snd_state\.json: field 'step' is 4\.5"),
    (b'{"step": 7, "skipped": 0}', r"snd_state\.json: field 'step' is 7, but the checkpoint is of step 4"),
    (b'{"step": 4, "skipped": -1}', r"snd_state\.json: field 'skipped' is -1"),
    (b"[4, 0]", r"snd_state\.json: holds a JSON list"),
])
def test_bad_train_counters_name_the_file_and_field(tmp_path, content, message):
    (tmp_path / "snd_state.json").write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        checkpoints._read_counters(tmp_path / "snd_state.json", 4)


# --------------------------------------------------------------------------------------------------- loss log


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_loss_log_that_is_a_named_pipe_is_refused_not_read_forever(tmp_path, alarm):
    os.mkfifo(tmp_path / "loss_log.jsonl")
    with pytest.raises(ValueError, match=r"loss_log\.jsonl: is a named pipe"):
        truncate_log(tmp_path / "loss_log.jsonl", 2)


@pytest.mark.parametrize("content, message", [
    (b'{"step": 1}\n{"step": "\xff"}\n{"step": 3}\n', r"loss_log\.jsonl: not UTF-8"),
    (b'{"step": "two", "loss": 1}\n{"step": 3}\n', r"loss_log\.jsonl: line 1: field 'step' is 'two'"),
])
def test_a_loss_log_with_bad_bytes_or_steps_names_the_file(tmp_path, content, message):
    (tmp_path / "loss_log.jsonl").write_bytes(content)
    with pytest.raises(ValueError, match=message):
        truncate_log(tmp_path / "loss_log.jsonl", 2)


# --------------------------------------------------------------------------------------------------- optimizer / scheduler / RNG


def _optimizer_and_scheduler():
    parameter = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.AdamW([parameter], lr=1e-3)
    parameter.grad = torch.ones(3)
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return optimizer, scheduler


@pytest.mark.parametrize("edit, message", [
    (lambda s: s["state"][0].update(exp_avg_sq=torch.full((3,), math.nan)), r"optimizer\.bin: field state\[0\]\.exp_avg_sq holds 3 NaN/Inf"),
    (lambda s: s["param_groups"][0].update(lr=math.nan), r"optimizer\.bin: field param_groups\[0\]\.lr is nan"),
])
def test_non_finite_optimizer_state_is_refused(edit, message):
    optimizer, _ = _optimizer_and_scheduler()
    saved = optimizer.state_dict()
    saved = {"state": {k: dict(v) for k, v in saved["state"].items()}, "param_groups": [dict(g) for g in saved["param_groups"]]}
    edit(saved)
    with pytest.raises(CheckpointError, match=message):
        check_optimizer_state(saved, optimizer, Path("optimizer.bin"))


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.update(last_epoch=10**18), r"scheduler\.bin: field last_epoch is 1000000000000000000"),
    (lambda s: s.update(last_epoch=-50), r"scheduler\.bin: field last_epoch is -50"),
    (lambda s: s.update(base_lrs=[math.nan]), r"scheduler\.bin: field base_lrs\[0\] is nan"),
    (lambda s: s.update(_last_lr=[math.inf]), r"scheduler\.bin: field _last_lr\[0\] is inf"),
])
def test_out_of_range_or_non_finite_scheduler_state_is_refused(edit, message):
    _, scheduler = _optimizer_and_scheduler()
    saved = dict(scheduler.state_dict())
    edit(saved)
    with pytest.raises(CheckpointError, match=message):
        check_scheduler_state(saved, scheduler, Path("scheduler.bin"))


def test_a_python_random_state_of_another_version_is_refused():
    import random

    import numpy as np

    state = {"random_state": (99, *random.getstate()[1:]), "numpy_random_seed": np.random.get_state(), "torch_manual_seed": torch.get_rng_state()}
    with pytest.raises(CheckpointError, match=r"random_states_0\.pkl: field random_state\[0\] is 99"):
        check_rng_state(state, Path("random_states_0.pkl"))


# --------------------------------------------------------------------------------------------------- checkpoint tensors (a real resume)


def _resign(last):
    record = json.loads((last / "snd_checkpoint.json").read_text())
    write_checkpoint_marker(last, 4, {"run": record["run"]})


@pytest.mark.parametrize("name", ["model.safetensors", "snd_state.safetensors"])
def test_nan_weights_in_a_checkpoint_are_refused_naming_the_file(finished_run, tmp_path, name):
    out = _copy(finished_run, tmp_path)
    last = checkpoint_dir(out, 4)
    tensors = load_file(str(last / name))
    key = sorted(tensors)[0]
    tensors[key] = tensors[key].clone().fill_(math.nan)
    save_file(tensors, str(last / name))
    _resign(last)
    with pytest.raises(CheckpointError, match=rf"{name.replace('.', '[.]')}: tensor '{key}' holds \d+ NaN/Inf"):
        _run(out, resume=str(last))


def test_a_model_state_that_does_not_fit_names_model_safetensors(finished_run, tmp_path):
    out = _copy(finished_run, tmp_path)
    last = checkpoint_dir(out, 4)
    tensors = load_file(str(last / "model.safetensors"))
    tensors["backbone.unexpected.weight"] = torch.zeros(2)
    save_file(tensors, str(last / "model.safetensors"))
    _resign(last)
    with pytest.raises(CheckpointError, match=r"(?s)model\.safetensors: does not fit this run.s model.*Unexpected key"):
        _run(out, resume=str(last))


# --------------------------------------------------------------------------------------------------- model folders


@pytest.mark.parametrize("field, value", [
    ("mlp_ratio", math.nan), ("mlp_ratio", -1), ("mlp_ratio", 0), ("mlp_ratio", "big"), ("layer_norm_eps", math.nan),
    ("layer_norm_eps", 0), ("layer_norm_eps", "big"), ("layer_norm_eps", [1e-6]), ("num_register_tokens", math.nan),
    ("num_register_tokens", "big"), ("hidden_act", "swishy"), ("use_swiglu_ffn", "yes"), ("qkv_bias", "no"),
])
def test_config_fields_of_the_wrong_kind_name_the_field(field, value):
    with pytest.raises(ValueError, match=rf"SnDConfig\.{field}"):
        snd.SnDConfig.tiny(**{field: value})


@pytest.fixture()
def folder(tmp_path):
    torch.manual_seed(0)
    snd.SnDModel(snd.SnDConfig.tiny()).save_pretrained(tmp_path / "student")
    return tmp_path / "student"


def _edit_weights(folder, edit):
    tensors = load_file(str(folder / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.pop(sorted(t)[0]), r"student/model\.safetensors: lacks 1 tensor"),
    (lambda t: t.update({k: v.clone().fill_(math.nan) for k, v in list(t.items())[:1]}), r"student/model\.safetensors: 1 weight tensor\(s\) hold NaN"),
    (lambda t: t.update({k: v.to(torch.int64) for k, v in t.items()}), r"student/model\.safetensors: \d+ tensor\(s\) are not floating point"),
])
def test_weights_that_would_load_silently_are_refused(folder, edit, message):
    _edit_weights(folder, edit)
    with pytest.raises(ConversionError, match=message):
        load_backbone(ModelConfig(pretrained=str(folder)))


def test_a_config_that_does_not_fit_the_weights_lists_the_mismatches(folder):
    config = json.loads((folder / "config.json").read_text())
    config["hidden_size"] = 64
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConversionError, match=r"student/model\.safetensors: its tensors do not fit the model .*student/config\.json.*file \(1, 1, 32\) vs config \(1, 1, 64\)"):
        load_backbone(ModelConfig(pretrained=str(folder)))


@pytest.mark.parametrize("damage, message", [
    ("unknown_type", r"student/config\.json: field 'model_type' is 'no_such_model'"),
    ("deleted", r"student/model\.safetensors: missing"),
    ("fifo", r"student/model\.safetensors: is a named pipe"),
])
def test_unknown_model_type_and_missing_weights_name_the_file(folder, damage, message, alarm):
    if damage == "unknown_type":
        config = json.loads((folder / "config.json").read_text())
        config["model_type"] = "no_such_model"
        (folder / "config.json").write_text(json.dumps(config))
    else:
        (folder / "model.safetensors").unlink()
        if damage == "fifo":
            os.mkfifo(folder / "model.safetensors")
    with pytest.raises(ConversionError, match=message):
        load_backbone(ModelConfig(pretrained=str(folder)))


@pytest.mark.parametrize("field, value", [
    ("rescale_factor", math.nan), ("rescale_factor", "1/255"), ("rescale_factor", 0), ("resample", 99), ("resample", "bicubic"),
    ("do_normalize", "yes"), ("image_processor_type", 5),
])
def test_bad_image_processor_fields_are_named(tmp_path, field, value):
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({field: value}))
    with pytest.raises(ConversionError, match=rf"preprocessor_config\.json: field '{field}'"):
        read_preprocessor_config(tmp_path / "preprocessor_config.json")


def test_a_single_mean_applies_to_every_channel(tmp_path):
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"image_mean": 0.5, "image_std": [0.2, 0.2, 0.2], "do_pad": None}))
    assert read_preprocessor_config(tmp_path / "preprocessor_config.json")["image_mean"] == 0.5


# --------------------------------------------------------------------------------------------------- converters


def test_overwrite_never_replaces_the_folder_holding_the_input(tmp_path, capsys):
    from tests.convert.test_convert_backbone import to_torchhub_layout, transformers_reference
    from tests.script_main import script_main

    models = tmp_path / "models"
    models.mkdir()
    source = models / "dinov2_tiny.pth"
    torch.save(to_torchhub_layout(transformers_reference(0)), source)
    data = source.read_bytes()
    argv = ["--input", source, "--format", "torchhub", "--preset", "tiny", "--output", models, "--overwrite"]
    assert script_main("convert_checkpoint", argv) == 2
    assert "holds the input" in capsys.readouterr().err
    assert source.read_bytes() == data


def test_an_mvsplat_checkpoint_that_does_not_fit_names_the_file(tmp_path):
    from snd.convert.mvsplat import convert_checkpoint
    from snd.models.mvsplat import MVSplatConfig, MVSplatModel
    from tests.models.test_mvsplat_convert import lightning_checkpoint

    torch.manual_seed(0)
    path = lightning_checkpoint(MVSplatModel(MVSplatConfig.tiny(num_depth_candidates=12)), tmp_path / "re10k.ckpt",
                                drop="encoder.backbone.backbone.conv1.weight")
    with pytest.raises(ConversionError, match=r"re10k\.ckpt: MVSplat checkpoint does not match the model"):
        convert_checkpoint(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.mark.parametrize("damage, message", [
    ("truncated", r"student/model\.safetensors: corrupt or truncated safetensors file"),
    ("missing", r"student/model\.safetensors: lacks 1 tensor"),
    ("nan", r"student/model\.safetensors: 1 weight tensor\(s\) hold NaN/Inf"),
])
def test_automodel_from_pretrained_names_the_weights_file(folder, damage, message):
    from transformers import AutoModel

    if damage == "truncated":
        data = (folder / "model.safetensors").read_bytes()
        (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif damage == "missing":
        _edit_weights(folder, lambda t: t.pop(sorted(t)[0]))
    else:
        _edit_weights(folder, lambda t: t.update({k: v.clone().fill_(math.nan) for k, v in list(t.items())[:1]}))
    with pytest.raises(OSError, match=message):
        AutoModel.from_pretrained(str(folder))


def test_a_task_model_from_a_backbone_checkpoint_still_loads_with_a_new_head(folder):
    model = snd.SnDForDepthEstimation.from_pretrained(str(folder))  # the head is missing from the checkpoint: new, not refused
    assert isinstance(model, snd.SnDForDepthEstimation)
