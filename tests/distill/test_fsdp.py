"""FSDP2 in the trainer (snd.distill.fsdp): two gloo processes on the CPU drive the trainer's own sharded path
(``training.distributed=fsdp2``; Accelerate would turn its FSDP plugin into DDP on the CPU) and must train what DDP
trains: same losses, same student, EMA teacher and heads, exports that load with AutoModel; its sharded checkpoints
hold no pickle and resume exactly.

Each two-process launch costs ~20-30 s here, so one shared set of five launches serves every test."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from tests.distill.helpers import TINY, run_distill

# clipping at 0.01 is active on every step (the trainable-parameter list must be the sharded one), the teacher moves
# every step, and LoRA dropout draws random numbers (the resume must restore each process's RNG)
COMMON = [*TINY, "--max_steps", "3", "--seed", "1", "--teacher.update_every", "1", "--teacher.momentum", "0.5",
          "--training.max_grad_norm", "0.01", "--training.checkpoint_every", "1", "--training.keep_checkpoints", "5",
          "--model.lora_dropout", "0.2"]

# ... and pictures of the sharded student sent to TensorBoard every 2 steps (a forward on every process at once): they
# must neither hang nor change the training (the DDP run it is compared with sends none)
LORA_FSDP2 = ["--model.finetune", "lora", "--training.distributed", "fsdp2", "--training.report_to", "tensorboard",
              "--training.log_images_every", "2"]
# ... with the gathered parameters kept from forward to backward (fsdp_reshard_after_forward: false, as Accelerate's
# launcher passes it); the full fine-tuning run keeps the default (true)
ZERO2 = {"FSDP_RESHARD_AFTER_FORWARD": "false"}


def _launch_with_config_file(args: list[str]) -> None:
    """``accelerate launch --config_file configs/accelerate/fsdp2.yaml --num_processes 2`` (as the README's GPU command)."""
    import os
    import shutil as shell
    import subprocess
    import sys
    from pathlib import Path

    from tests.distill.helpers import REPO_ROOT, SCRIPT, script_env

    accelerate = shell.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
    command = [accelerate, "launch", "--config_file", str(REPO_ROOT / "configs" / "accelerate" / "fsdp2.yaml"),
               "--num_processes", "2", "--main_process_port", str(30500 + os.getpid() % 1000), str(SCRIPT), *args]
    result = subprocess.run(command, cwd=REPO_ROOT, env=script_env(), capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise AssertionError(f"{command} failed ({result.returncode})\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from tests.shared import build_once

    def launch(tmp):
        for finetune in ("full", "lora"):
            run_distill([*COMMON, "--model.finetune", finetune, "--output_dir", str(tmp / f"{finetune}-ddp")], num_processes=2)
        # the two ways to ask for FSDP2: Accelerate's FSDP2 config file (the GPU recipe; on the CPU Accelerate itself
        # would run DDP, the trainer shards as the file asks), and training.distributed=fsdp2 under a --multi_gpu launch
        # (the config-file run also recomputes its blocks in the backward pass: gradient checkpointing inside FSDP2 units
        # must not change the result either, as in the DINOv3-7B recipe)
        _launch_with_config_file([*COMMON, "--model.finetune", "full", "--training.gradient_checkpointing", "true",
                                  "--output_dir", str(tmp / "full-fsdp2")])
        run_distill([*COMMON, *LORA_FSDP2, "--output_dir", str(tmp / "lora-fsdp2")], num_processes=2, env=ZERO2)
        # the LoRA FSDP2 run killed after its step-2 checkpoint, as it would be on disk, then resumed
        resumed = tmp / "lora-fsdp2-resumed"
        shutil.copytree(tmp / "lora-fsdp2", resumed)
        for name in ("checkpoints/checkpoint-00000003", "student", "teacher"):
            shutil.rmtree(resumed / name)
        for name in ("heads.safetensors", "train_summary.json"):
            (resumed / name).unlink()
        run_distill([*COMMON, *LORA_FSDP2, "--output_dir", str(resumed), "--resume_from_checkpoint", "latest"], num_processes=2, env=ZERO2)

    return build_once(tmp_path_factory, "fsdp2-runs", launch)


def _losses(out):
    return [json.loads(line)["loss"] for line in (out / "loss_log.jsonl").read_text().splitlines()]


def _assert_same_exports(a, b, atol):
    for name in ("student/model.safetensors", "teacher/model.safetensors", "heads.safetensors"):
        first, second = load_file(str(a / name)), load_file(str(b / name))
        assert first.keys() == second.keys(), name
        for key in first:
            assert (first[key].float() - second[key].float()).abs().max() <= atol, f"{name}: {key}"


@pytest.mark.slow
@pytest.mark.parametrize("finetune", ["full", "lora"])
def test_fsdp2_trains_what_ddp_trains(runs, finetune):
    ddp, sharded = runs / f"{finetune}-ddp", runs / f"{finetune}-fsdp2"
    assert len(_losses(sharded)) == 3
    assert max(abs(x - y) for x, y in zip(_losses(ddp), _losses(sharded))) <= 1e-6
    _assert_same_exports(ddp, sharded, atol=1e-6)
    summary = json.loads((sharded / "train_summary.json").read_text())
    assert summary["num_processes"] == 2
    fingerprints = summary["teacher_fingerprints"]  # the whole teacher's, summed over local shards
    assert fingerprints[0] == fingerprints[1]
    torch.testing.assert_close(torch.tensor(fingerprints[0]), torch.tensor(json.loads((ddp / "train_summary.json").read_text())
                                                                          ["teacher_fingerprints"][0]), rtol=1e-9, atol=0)

    # the exports load with AutoModel, equal DDP's, and training moved them (the comparison is not vacuous)
    import snd  # noqa: F401  (registers the Auto classes)
    from transformers import AutoModel

    student = AutoModel.from_pretrained(str(sharded / "student"))
    teacher = AutoModel.from_pretrained(str(sharded / "teacher"))
    reference = AutoModel.from_pretrained(str(ddp / "student"))
    for name, value in student.state_dict().items():
        torch.testing.assert_close(value, reference.state_dict()[name], rtol=0, atol=1e-6)
    assert any(not torch.equal(value, teacher.state_dict()[name]) for name, value in student.state_dict().items())
    assert (sharded / "pca_before_after.png").is_file()
    if finetune == "lora":
        assert list((sharded / "snd-distill").rglob("events.out.tfevents*"))


@pytest.mark.slow
def test_fsdp2_checkpoints_are_pickle_free_safetensors_and_resume_exactly(runs):
    sharded, resumed = runs / "lora-fsdp2", runs / "lora-fsdp2-resumed"
    checkpoint = sharded / "checkpoints" / "checkpoint-00000002"
    names = sorted(path.name for path in checkpoint.iterdir())
    assert names == ["fsdp-rank00000-of-00002.json", "fsdp-rank00000-of-00002.safetensors", "fsdp-rank00001-of-00002.json",
                     "fsdp-rank00001-of-00002.safetensors", "snd_checkpoint.json", "snd_state.json"]
    assert json.loads((checkpoint / "snd_checkpoint.json").read_text())["distributed"] == "fsdp2"
    shards = [load_file(str(checkpoint / f"fsdp-rank0000{rank}-of-00002.safetensors")) for rank in (0, 1)]
    assert any(key.startswith("optimizer.") for key in shards[0]) and any(key.startswith("teacher.") for key in shards[0])
    # each process holds its own part of a sharded parameter (dim 0 split over the two processes)
    key = next(k for k in shards[0] if k.startswith("student.") and shards[0][k].ndim == 2 and shards[0][k].shape[0] > 1)
    assert not torch.equal(shards[0][key], shards[1][key])

    # resumed from step 2 (after a simulated kill): the same losses and the same weights, bit for bit
    assert _losses(resumed) == _losses(sharded)
    _assert_same_exports(sharded, resumed, atol=0)


def test_fsdp2_is_a_config_choice():
    from snd.distill import load_config
    from snd.distill.config import ConfigError

    assert load_config().training.distributed == "auto"
    assert load_config(overrides=["training.distributed=fsdp2"]).training.distributed == "fsdp2"
    with pytest.raises(ConfigError, match="training.distributed"):
        load_config(overrides=["training.distributed=zero3"]).validate()


def test_fsdp2_from_the_environment_of_accelerates_fsdp_config(monkeypatch):
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from snd.distill.fsdp import use_fsdp2

    accelerator = SimpleNamespace(distributed_type=DistributedType.MULTI_CPU, num_processes=2)
    assert not use_fsdp2(accelerator, "auto") and use_fsdp2(accelerator, "fsdp2")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "2")
    assert use_fsdp2(accelerator, "auto")  # Accelerate ran DDP on the CPU; the trainer shards as the file asked
    from snd.distill.fsdp import reshard_after_forward

    assert reshard_after_forward(SimpleNamespace(state=SimpleNamespace()))
    monkeypatch.setenv("FSDP_RESHARD_AFTER_FORWARD", "false")
    assert not reshard_after_forward(SimpleNamespace(state=SimpleNamespace()))
    monkeypatch.setenv("FSDP_VERSION", "1")
    with pytest.raises(ValueError, match="fsdp_version: 2"):
        use_fsdp2(accelerator, "auto")


def test_fsdp2_checkpoint_refuses_another_distribution_or_process_count(tmp_path):
    from types import SimpleNamespace

    from snd.distill.checkpoints import CheckpointError, write_checkpoint_marker
    from snd.distill.fsdp import load_sharded_checkpoint

    accelerator = SimpleNamespace(process_index=0, num_processes=2)
    write_checkpoint_marker(tmp_path, 5, {"final": True})  # as a DDP checkpoint's marker
    with pytest.raises(CheckpointError, match="without FSDP2"):
        load_sharded_checkpoint(accelerator, tmp_path, None, None, None, None, None)
    write_checkpoint_marker(tmp_path, 5, {"distributed": "fsdp2", "world_size": 4})
    with pytest.raises(CheckpointError, match="written by 4 processes; this run has 2"):
        load_sharded_checkpoint(accelerator, tmp_path, None, None, None, None, None)
