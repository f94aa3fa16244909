"""Regression tests for what the hostile-input probe (tests/hostile/cases/config_cli.py) found in the training config,
the scripts' command lines and the output folder (issue 21): values accepted without a word, a lock file that hung the
run, a user's folder deleted by --overwrite_output_dir, raw library errors instead of one line naming the field."""

from __future__ import annotations

import os
import threading

import pytest

from snd.distill.config import ConfigError, dotted_flags_to_overrides, load_config
from tests.distill.helpers import TINY_CONFIG


# ------------------------------------------------------------------------------------------ config values
@pytest.mark.parametrize(
    "override, field",
    [
        ("model.lora_alpha=0", "model.lora_alpha"),
        ("model.lora_alpha=-1", "model.lora_alpha"),
        ("lifter.opacity=0", "lifter.opacity"),
        ("lifter.opacity=-1", "lifter.opacity"),
        ("lifter.footprint_scale=0", "lifter.footprint_scale"),
        ("training.adam_eps=0", "training.adam_eps"),
        ("training.adam_eps=-1e-8", "training.adam_eps"),
        ("teacher.far_plane=0", "teacher.far_plane"),
        ("teacher.far_plane=0.005", "teacher.far_plane"),  # in front of the default near plane 0.01
        ("training.seed=-1", "training.seed"),
        (f"training.seed={2**32}", "training.seed"),
    ],
)
def test_values_the_run_cannot_use_are_refused_naming_the_field(override, field):
    with pytest.raises(ConfigError, match=rf"{field.replace('.', r'[.]')} must"):
        load_config(TINY_CONFIG, [override])


def test_the_edges_that_are_valid_still_load():
    config = load_config(TINY_CONFIG, ["training.seed=0", f"training.seed={2**32 - 1}", "lifter.opacity=1.0",
                                       "teacher.far_plane=1e10", "training.adam_eps=1e-12"])
    assert config.training.seed == 2**32 - 1


def test_architecture_overrides_with_a_pretrained_model_are_refused_not_ignored():
    with pytest.raises(ConfigError, match=r"model\.config_overrides .*only applies to a random init.*ignored"):
        load_config(TINY_CONFIG, ["model.pretrained=facebook/dinov2-small", "model.config_overrides={num_hidden_layers: 2}"])
    load_config(TINY_CONFIG, ["model.config_overrides={num_hidden_layers: 2}"])  # random init: used


@pytest.mark.parametrize(
    "text, key, lines",
    [
        ("training:\n  lr: 0.001\n  batch_size: 2\n  lr: 0.1\n", "training.lr", "2 and 4"),
        ("training:\n  lr: 0.001\ndata:\n  num_scenes: 2\ntraining:\n  batch_size: 2\n", "training", "1 and 5"),
    ],
)
def test_a_key_given_twice_in_a_config_file_is_refused(tmp_path, text, key, lines):
    path = tmp_path / "my.yaml"
    path.write_text("base: tiny_synthetic\n" + text)
    with pytest.raises(ConfigError, match=rf"my\.yaml: key '{key}' is given twice \(lines {int(lines[0]) + 1} and {int(lines[-1]) + 1}\)"):
        load_config(path)


def test_equal_keys_in_different_sections_and_aliases_are_fine(tmp_path):
    path = tmp_path / "my.yaml"
    path.write_text("base: tiny_synthetic\nshared: &s {}\ndata:\n  near: 1.0\nteacher:\n  near_plane: 0.01\n")
    with pytest.raises(ConfigError, match="unknown key"):  # `shared` is no section; but no duplicate-key complaint
        load_config(path)
    path.write_text("base: tiny_synthetic\ndata:\n  near: 1.0\n  far: 50.0\nlifter:\n  opacity: 1.0\n")
    assert load_config(path).data.far == 50.0


def test_a_dotted_flag_followed_by_another_flag_names_the_flag_missing_its_value():
    with pytest.raises(ConfigError, match=r"--training\.output_dir needs a value, got the next flag '--training\.lr'"):
        dotted_flags_to_overrides(["--training.output_dir", "--training.lr", "1e-3"])
    assert dotted_flags_to_overrides(["--training.lr", "-1e-3"]) == ["training.lr=-1e-3"]


# ------------------------------------------------------------------------------------------ output folder
def _in_thread(function, timeout=10.0):
    """Run ``function`` in a daemon thread; returns its exception (None when it returned), or fails if it blocks."""
    box = {}

    def target():
        try:
            function()
        except BaseException as error:  # noqa: BLE001
            box["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "blocked (reading a FIFO?)"
    return box.get("error")


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_a_lock_path_that_is_not_a_file_is_refused_without_blocking_or_deleting(tmp_path, kind):
    from snd.distill.launch import LOCK_NAME, OutputDirLockedError, check_output_dir, output_dir_lock

    lock = tmp_path / LOCK_NAME
    if kind == "fifo":
        os.mkfifo(lock)
    else:
        lock.mkdir()
        (lock / "mine.txt").write_text("mine")
        os.utime(lock, (1, 1))  # old: would be judged a stale lock

    def take():
        with output_dir_lock(tmp_path, main_process=True):
            pass

    for attempt in (lambda: check_output_dir(tmp_path, None, False), take):
        error = _in_thread(attempt)
        assert isinstance(error, OutputDirLockedError) and f"{LOCK_NAME} is a" in str(error), error
    assert kind == "fifo" or (lock / "mine.txt").read_text() == "mine"


def test_an_output_dir_that_is_a_file_is_refused_naming_it(tmp_path):
    from snd.distill.launch import check_output_dir, output_dir_lock

    path = tmp_path / "out.txt"
    path.write_text("mine")
    with pytest.raises(ConfigError, match=r"out\.txt is a file, not a folder"):
        check_output_dir(path, None, False)
    with pytest.raises(ConfigError, match=r"out\.txt is a file, not a folder"):
        with output_dir_lock(path / "sub", main_process=True):
            pass
    assert path.read_text() == "mine"


def test_overwrite_refuses_a_users_folder_named_like_a_checkpoint(tmp_path):
    from snd.distill.launch import check_output_dir

    (tmp_path / "config.yaml").write_text("training:\n  max_steps: 2\n")
    ours = tmp_path / "checkpoints" / "checkpoint-00000002"
    ours.mkdir(parents=True)
    (ours / "snd_checkpoint.json").write_text("{}")
    torn = tmp_path / "checkpoints" / "checkpoint-00000004"  # a save cut short: only what a save writes
    torn.mkdir()
    (torn / "model.safetensors").write_bytes(b"partial")
    theirs = tmp_path / "checkpoints" / "checkpoint-00000100"
    theirs.mkdir()
    (theirs / "my_model.pt").write_bytes(b"from another tool")
    with pytest.raises(ConfigError, match=r"checkpoints/checkpoint-00000100 is named like one of the run's checkpoints"):
        check_output_dir(tmp_path, None, overwrite_output_dir=True)
    assert (theirs / "my_model.pt").read_bytes() == b"from another tool" and ours.is_dir()
    (theirs / "my_model.pt").unlink()
    check_output_dir(tmp_path, None, overwrite_output_dir=True)
    assert not ours.exists() and not torn.exists() and not theirs.exists()


# ------------------------------------------------------------------------------------------ scripts
def test_resuming_from_something_that_is_no_checkpoint_is_a_checkpoint_error(tmp_path):
    from snd.distill.checkpoints import CheckpointError, resolve_resume

    (tmp_path / "ckpt.pt").write_bytes(b"x")
    for target in (tmp_path / "ckpt.pt", tmp_path / "gone"):
        with pytest.raises(CheckpointError, match=r"not a complete checkpoint directory") as raised:
            resolve_resume(tmp_path, str(target))
        assert isinstance(raised.value, FileNotFoundError)  # what it was before: callers catching that still do


def test_distill_script_reports_a_data_error_in_one_line_with_status_2(tmp_path, capsys):
    from tests.distill.helpers import TINY, distill_main

    (tmp_path / "scans").mkdir()
    status = distill_main([*TINY, "--data.dataset", "nerfstudio", "--data.root", str(tmp_path / "scans"),
                           "--output_dir", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and err[-1].startswith("error: ") and "scans" in err[-1] and "transforms.json" in err[-1]


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--batch-size", "0"], r"--batch-size: expected an integer >= 1, got '0'"),
        (["--num-correspondences", "-1"], r"--num-correspondences: expected an integer >= 1"),
        (["--correspondence-scale", "nan"], r"--correspondence-scale: expected a finite number > 0"),
        (["--synthetic-frame-stride", "0"], r"--synthetic-frame-stride: expected an integer >= 1"),
        (["--seed", "-1"], r"--seed: expected an integer >= 0"),
        (["--device", "tpu"], r"--device: expected a torch device"),
    ],
)
def test_evaluate_script_refuses_bad_numbers_naming_the_flag(tmp_path, capsys, flags, expected):
    from tests.script_main import script_main

    with pytest.raises(SystemExit) as raised:
        script_main("evaluate", ["--model", "m", "--output-dir", str(tmp_path / "eval"), *flags])
    assert raised.value.code == 2
    assert __import__("re").search(expected, capsys.readouterr().err)


def test_evaluate_script_refuses_an_output_dir_that_is_a_file_and_a_task_the_dataset_lacks(tmp_path):
    from tests.script_main import script_main

    model = tmp_path / "model"
    from snd import SnDConfig, SnDModel

    SnDModel(SnDConfig.tiny()).save_pretrained(model)
    (tmp_path / "eval.txt").write_text("mine")
    with pytest.raises(SystemExit, match=r"--output-dir .*eval\.txt is a file"):
        script_main("evaluate", ["--model", str(model), "--output-dir", str(tmp_path / "eval.txt")])
    assert (tmp_path / "eval.txt").read_text() == "mine"
    with pytest.raises(SystemExit, match=r"--task: dataset 'scannet_pairs' has no depth ground truth"):
        script_main("evaluate", ["--model", str(model), "--dataset", "scannet_pairs", "--data-dir", str(tmp_path),
                                 "--protocol", "quick", "--task", "depth", "--output-dir", str(tmp_path / "eval")])


def test_converting_a_checkpoint_of_another_layout_names_it_and_the_format(tmp_path):
    from snd import SnDConfig, SnDModel
    from snd.convert import ConversionError, convert_backbone

    SnDModel(SnDConfig.tiny()).save_pretrained(tmp_path / "snd_folder")
    with pytest.raises(ConversionError, match=r"snd_folder: not a 'transformers'-layout DINOv2 checkpoint .*--format"):
        convert_backbone(str(tmp_path / "snd_folder"), "transformers")
