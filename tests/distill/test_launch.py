"""What a run settles before its first step (snd.distill.launch): output folder refusal, config layering, trackers
by name, mixed precision from the launcher, quiet logs, the shipped accelerate configs, --push_to_hub preflight."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from snd.distill import ConfigError, load_config, run
from snd.distill.launch import check_output_dir, tracker_names
from tests.distill.helpers import REPO_ROOT, SCRIPT, TINY, TINY_CONFIG, TINY_OVERRIDES, script_env


def _fake_run(folder: Path) -> dict:
    (folder / "checkpoints" / "checkpoint-00000002").mkdir(parents=True)
    (folder / "checkpoints" / "checkpoint-00000002" / "model.safetensors").write_bytes(b"old")
    (folder / "loss_log.jsonl").write_text('{"step": 1, "loss": 5.0}\n')
    (folder / "config.yaml").write_text("training: {}\n")
    (folder / "notes.txt").write_text("the user's own file")
    (folder / "snd-distill").mkdir()
    (folder / "snd-distill" / "events.out.tfevents.1.host").write_bytes(b"old run")
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_an_output_dir_holding_a_run_is_refused_unless_resuming_or_overwriting(tmp_path):
    before = _fake_run(tmp_path)
    with pytest.raises(ConfigError, match=r"already holds a run .*--resume_from_checkpoint latest.*--overwrite_output_dir"):
        run(output_dir=str(tmp_path), max_steps=1, progress=False)  # refused before any work
    assert {p.relative_to(tmp_path).as_posix(): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    check_output_dir(tmp_path, resume_from_checkpoint="latest", overwrite_output_dir=False)  # resuming: fine
    check_output_dir(tmp_path / "fresh", resume_from_checkpoint=None, overwrite_output_dir=False)  # new folder: fine
    check_output_dir(tmp_path, resume_from_checkpoint=None, overwrite_output_dir=True)
    # the old run's checkpoints and log are gone (so `latest` cannot pick them up); other files stay
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "loss_log.jsonl").exists()
    assert not (tmp_path / "snd-distill").exists()  # the old run's TensorBoard events too
    assert (tmp_path / "notes.txt").read_text() == "the user's own file"


def test_a_users_partial_yaml_is_layered_over_the_embedded_default(tmp_path):
    default = load_config()
    mine = tmp_path / "my.yaml"
    mine.write_text("data:\n  image_height: 56\ntraining:\n  max_steps: 7\n")
    config = load_config(str(mine))
    assert config.data.image_height == 56 and config.training.max_steps == 7
    # every other field is the embedded default's (which runs), not the paper dataclass (which needs data.root)
    assert config.data.dataset == "synthetic" and config.data.image_width == default.data.image_width
    assert config.model.pretrained == default.model.pretrained == "nano-2d" and config.head.num_prototypes == default.head.num_prototypes
    # `base: tiny_synthetic`: the same two fields over the tiny random student instead
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text("base: tiny_synthetic\ndata:\n  image_height: 56\ntraining:\n  max_steps: 7\n")
    config = load_config(str(tiny))
    assert (config.data.image_height, config.training.max_steps) == (56, 7)
    assert config.model.pretrained is None and config.model.preset == "tiny"
    assert config.data.image_width == load_config("tiny_synthetic").data.image_width != default.data.image_width

    # `base:` picks another starting point: the README's 5-line example for one's own ScanNet++ copy
    scannetpp = tmp_path / "scannetpp.yaml"
    scannetpp.write_text(
        "base: scannetpp_dinov2s\ndata:\n  root: /data/scannetpp\nlifter:\n  checkpoint: checkpoints/re10k.ckpt\n"
    )
    config = load_config(str(scannetpp))
    preset = load_config("scannetpp_dinov2s", ["data.root=/x", "lifter.checkpoint=y"])
    assert config.data.root == "/data/scannetpp" and config.lifter.checkpoint == "checkpoints/re10k.ckpt"
    assert config.to_dict() | {"data": None, "lifter": None} == preset.to_dict() | {"data": None, "lifter": None}
    # a file based on another file, then overrides on top
    child = tmp_path / "child.yaml"
    child.write_text("base: my.yaml\ntraining:\n  lr: 0.001\n")
    config = load_config(str(child), ["training.seed=4"])
    assert (config.data.image_height, config.training.max_steps, config.training.lr, config.training.seed) == (56, 7, 1e-3, 4)
    # a shipped preset given by its path is not re-based on the default
    shipped = Path(load_config.__code__.co_filename).parents[1] / "configs" / "scannetpp_dinov2s.yaml"
    assert load_config(str(shipped), ["data.root=/x", "lifter.checkpoint=y"]).to_dict() == preset.to_dict()
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: no_such_preset\n")
    with pytest.raises(ConfigError, match="neither a shipped preset"):
        load_config(str(bad))


def test_trackers_by_name():
    import importlib.util

    installed = {name for name in ("tensorboard", "wandb", "trackio") if importlib.util.find_spec(name)}
    assert tracker_names("none") == []
    assert set(tracker_names("all")) == installed
    assert tracker_names("auto") == (["tensorboard"] if "tensorboard" in installed else [])
    for name in ("tensorboard", "wandb", "trackio"):
        if name in installed:
            assert tracker_names(name) == [name]
        else:
            with pytest.raises(ConfigError, match=f"pip install {name}"):
                tracker_names(name)
    with pytest.raises(ConfigError, match="unknown tracker"):
        tracker_names("tensorboard,neptune")
    with pytest.raises(ConfigError, match="training.report_to"):
        load_config(None, ["training.report_to=mlflow"])
    assert load_config(None, ["training.report_to=tensorboard,wandb"]).training.report_to == "tensorboard,wandb"


def test_accelerate_configs_are_valid_and_cover_cpu_and_multi_gpu():
    from accelerate.commands.config.config_args import load_config_from_file

    cpu = load_config_from_file(str(REPO_ROOT / "configs" / "accelerate" / "cpu.yaml"))
    assert cpu.num_processes == 1 and cpu.use_cpu and str(cpu.distributed_type) in ("NO", "DistributedType.NO")
    gpu = load_config_from_file(str(REPO_ROOT / "configs" / "accelerate" / "multi_gpu.yaml"))
    # fp32 by default, as the authors' release trained (bf16 is a launch-line choice)
    assert gpu.num_processes > 1 and "MULTI_GPU" in str(gpu.distributed_type) and gpu.mixed_precision == "no"


def _launch(args, out, extra=()):
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
    command = [accelerate, "launch", *extra, str(SCRIPT), *TINY, "--output_dir", str(out), *args]
    return subprocess.run(command, cwd=REPO_ROOT, env=script_env(), capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_launcher_mixed_precision_quiet_logs_and_images(tmp_path):
    """`accelerate launch --config_file configs/accelerate/cpu.yaml --mixed_precision bf16`: honoured (config.yaml,
    a loss different from fp32), no launcher warning, one log line per checkpoint, PCA images in TensorBoard."""
    pytest.importorskip("tensorboard")
    config_file = ["--config_file", str(REPO_ROOT / "configs" / "accelerate" / "cpu.yaml")]
    common = ["--max_steps", "4", "--training.checkpoint_every", "2", "--seed", "1"]
    bf16 = _launch([*common, "--training.report_to", "tensorboard", "--training.log_images_every", "2"], tmp_path / "bf16",
                   extra=[*config_file, "--mixed_precision", "bf16"])
    assert bf16.returncode == 0, bf16.stderr[-4000:]
    assert "num_processes" not in bf16.stderr  # the shipped config answers every launcher question
    assert yaml.safe_load((tmp_path / "bf16" / "config.yaml").read_text())["training"]["mixed_precision"] == "bf16"
    log_lines = [line for line in bf16.stderr.splitlines() if " INFO " in line or " WARNING " in line]
    assert len([line for line in log_lines if "checkpoint" in line]) == 1, log_lines  # step 2 (4 is the final one)
    assert not any("accelerate" in line for line in log_lines), log_lines  # no "Saving current state..." lines
    # every exported folder has its model card at save time (not only on push); safetensors say {"format": "pt"}
    from huggingface_hub import ModelCard
    from safetensors import safe_open

    for folder in ("student", "teacher"):
        card = ModelCard.load(tmp_path / "bf16" / folder / "README.md")
        assert card.data.library_name == "transformers" and "snd distill: 4 steps" in card.text
    for path in [tmp_path / "bf16" / "heads.safetensors", tmp_path / "bf16" / "student" / "model.safetensors"]:
        with safe_open(str(path), "pt") as handle:
            assert handle.metadata() == {"format": "pt"}, path

    # the before/after picture is made at >= 16 patches on the shorter side, though training ran at 28 x 42 (2 x 3)
    import torch

    before = torch.load(tmp_path / "bf16" / "pca_before_features.pt", weights_only=True)
    assert min(before.shape[-2:]) >= 16 and abs(before.shape[-1] / before.shape[-2] - 42 / 28) < 0.1
    assert (tmp_path / "bf16" / "pca_before_after.png").stat().st_size > 20_000

    # the config's own value wins over the launcher's
    fp32 = _launch([*common, "--training.mixed_precision", "no"], tmp_path / "fp32",
                   extra=[*config_file, "--mixed_precision", "bf16"])
    assert fp32.returncode == 0, fp32.stderr[-4000:]
    assert yaml.safe_load((tmp_path / "fp32" / "config.yaml").read_text())["training"]["mixed_precision"] == "no"
    losses = [[json.loads(line)["loss"] for line in (tmp_path / name / "loss_log.jsonl").read_text().splitlines()]
              for name in ("bf16", "fp32")]
    assert losses[0] != losses[1]  # bf16 autocast really ran

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next((tmp_path / "bf16").rglob("events.out.tfevents*")).parent)).Reload()
    tags = events.Tags()["images"]
    assert {"student/pca_held_out", "teacher/rendered_target_pca"} <= set(tags)
    image = events.Images("student/pca_held_out")
    assert [e.step for e in image] == [2, 4] and image[0].height >= 224

    # fp16 from an `accelerate config` file on the CPU: refused with the reason, before anything is written
    fp16_config = tmp_path / "fp16.yaml"
    fp16_config.write_text((REPO_ROOT / "configs" / "accelerate" / "cpu.yaml").read_text().replace('mixed_precision: "no"', "mixed_precision: fp16"))
    fp16 = _launch(["--max_steps", "1"], tmp_path / "fp16", extra=["--config_file", str(fp16_config)])
    assert fp16.returncode != 0 and "'fp16'" in fp16.stderr and "needs a GPU" in fp16.stderr
    assert not (tmp_path / "fp16" / "checkpoints").exists()


def test_mvsplat_lifter_refuses_image_sizes_it_cannot_take():
    from types import SimpleNamespace

    from snd.distill.launch import check_lifter_image_size
    from snd.models.mvsplat import MVSplatConfig, MVSplatLifter, MVSplatModel

    lifter = MVSplatLifter(MVSplatModel(MVSplatConfig.tiny()))
    multiple = lifter.model.config.size_multiple
    with pytest.raises(ConfigError, match=rf"42 x 56.*multiples of {multiple}.*--data.image_height"):
        check_lifter_image_size(lifter, 42, 56)  # tiny_synthetic's size
    check_lifter_image_size(lifter, 4 * multiple, 6 * multiple)
    assert MVSplatConfig().size_multiple == 16  # the released re10k/acid architecture (README)
    check_lifter_image_size(SimpleNamespace(), 42, 56)  # the depth lifter takes any size


def test_resume_without_a_checkpoint_restarts_the_loss_log(tmp_path):
    """`--resume_from_checkpoint latest` in a folder whose run died before its first checkpoint starts from scratch,
    and the dead run's loss-log lines do not stay in front of the new ones."""
    (tmp_path / "config.yaml").write_text("training: {}\n")
    (tmp_path / "loss_log.jsonl").write_text('{"step": 1, "loss": 99.0}\n{"step": 2, "loss": 98.0}\n')
    run(config=TINY_CONFIG, overrides=TINY_OVERRIDES, output_dir=str(tmp_path), max_steps=1, resume_from_checkpoint="latest",
        progress=False)
    records = [json.loads(line) for line in (tmp_path / "loss_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1] and records[0]["loss"] != 99.0


def test_a_start_that_fails_while_building_leaves_no_run_behind(tmp_path):
    """A run that fails while building its parts (a `model.pretrained` folder that does not exist) writes no
    config.yaml or other run file, so the retry with the config fixed is not refused as "already holds a run"."""
    from snd.distill.launch import RUN_MARKERS

    out = tmp_path / "run"
    missing = tmp_path / "no-such-checkpoint"
    with pytest.raises(FileNotFoundError, match="model.pretrained"):
        run(config=TINY_CONFIG, overrides=[*TINY_OVERRIDES, f"model.pretrained={missing}"], output_dir=str(out), max_steps=1,
            progress=False)
    assert not [name for name in RUN_MARKERS if (out / name).exists()]
    result = run(config=TINY_CONFIG, overrides=TINY_OVERRIDES, output_dir=str(out), max_steps=1, progress=False)  # no --overwrite_output_dir
    assert result.steps == 1 and result.steps_trained == 1
    assert yaml.safe_load((out / "config.yaml").read_text())["model"]["pretrained"] is None


def test_images_go_to_every_tracker_that_takes_them(monkeypatch):
    import types

    import numpy as np
    import torch

    from snd.distill.launch import log_images, step_images

    pictures = step_images(torch.rand(3, 28, 42), torch.randn(8, 2, 3), torch.randn(8, 2, 3),
                           torch.tensor([[True, False, True], [True, True, True]]), torch.rand(3, 28, 42), min_side=56)
    student = pictures["student/pca_held_out"]
    assert student.dtype == np.uint8 and student.shape == (56, 2 * 84, 3)  # image | PCA, upsampled to >= 56 px
    target = pictures["teacher/rendered_target_pca"]
    assert (target[:28, 84 + 28:84 + 56] == 0).all()  # the hole patch (row 0, column 1) is black

    calls = []
    writer = types.SimpleNamespace(add_image=lambda tag, image, global_step, dataformats: calls.append(("tb", tag, global_step, dataformats)),
                                   flush=lambda: None)
    run = types.SimpleNamespace(log=lambda values, step: calls.append(("wandb", sorted(values), step)))
    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(Image=lambda image: image.shape))
    accelerator = types.SimpleNamespace(is_main_process=True, trackers=[
        types.SimpleNamespace(name="tensorboard", writer=writer), types.SimpleNamespace(name="wandb", run=run),
        types.SimpleNamespace(name="mlflow")])  # one that takes no images here
    assert log_images(accelerator, pictures, step=7) == ["tensorboard", "wandb"]
    assert ("tb", "student/pca_held_out", 7, "HWC") in calls
    assert ("wandb", sorted(pictures), 7) in calls
    accelerator.is_main_process = False
    assert log_images(accelerator, pictures, step=8) == []


def test_rigid_camera_check_is_not_fooled_by_bf16_autocast():
    """Mixed-precision training runs the lifter inside `accelerator.autocast()`: the rigid-transform check must still
    pass exact float32 rotations (it ran its matmul in bf16 and refused them)."""
    import torch

    from snd.splatting.validate import check_viewmats

    # a synthetic-scene camera that `accelerate launch --mixed_precision bf16` refused (|R^T R - I| = 0 in float32)
    transform = torch.tensor([[-0.9985016584396362, 0.02427651919424534, -0.04904201999306679, 0.31902867555618286],
                              [0.05472174286842346, 0.44297099113464355, -0.8948643803596497, 2.1569628715515137],
                              [0.0, -0.8962072134017944, -0.4436357319355011, 1.3760043382644653],
                              [0.0, 0.0, 0.0, 1.0]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        check_viewmats(transform[None])  # raised "must be rigid transforms" before
    bad = transform.clone()
    bad[0, 0] += 0.05
    with torch.autocast("cpu", dtype=torch.bfloat16), pytest.raises(ValueError, match="rigid"):
        check_viewmats(bad[None])


def test_logging_is_quiet_unless_verbose():
    import logging

    from transformers.utils import logging as transformers_logging

    from snd.distill.launch import configure_logging

    try:
        configure_logging(verbose=False)
        assert logging.getLogger("snd.distill.trainer").getEffectiveLevel() == logging.INFO  # the checkpoint line
        assert not logging.getLogger("accelerate.checkpointing").isEnabledFor(logging.INFO)  # "Saving current state..."
        assert not transformers_logging.is_progress_bar_enabled()
        configure_logging(verbose=True)
        assert logging.getLogger("accelerate.checkpointing").isEnabledFor(logging.INFO)
    finally:
        transformers_logging.enable_progress_bar()
        transformers_logging.set_verbosity_warning()
        logging.getLogger().setLevel(logging.WARNING)
