"""The real training script for a few steps: outputs, export, --push_to_hub, resume after kill -9, non-finite losses,
two DDP processes.

Real launches where the process boundary is the point: one run that writes checkpoints/exports/logs AND pushes to the
loopback Hub (configured through the environment), the run killed with SIGKILL, and `accelerate launch` with two
processes. The other runs call the script's `main(argv)` in-process (same parsing and code path; bit-identical to a
launch, since both use one intra-op thread), which saves ~7 s of interpreter start and imports per run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
import torch
from safetensors.torch import load_file

from snd.distill import load_config
from snd.distill.checkpoints import list_checkpoints
from tests.distill.helpers import REPO_ROOT, TINY, distill_main, launch_command, run_distill, script_env

pytestmark = pytest.mark.slow


def _state(path):
    return {k: v.clone() for k, v in load_file(str(path)).items()}


@pytest.fixture(scope="module")
def pushed_run(tmp_path_factory):
    """ONE real launch per test run (shared by the xdist workers, tests/shared.py): 3 steps, a checkpoint every step
    (2 kept), TensorBoard, and --push_to_hub to the loopback Hub-compatible test server (tests/hub/hub_server.py; no
    network), which the script reaches through its environment. The server's storage stays on disk for the tests."""
    from tests.hub.hub_server import HubServer
    from tests.hub.hub_storage import HubStore
    from tests.shared import build_once

    def launch(tmp):
        with HubServer(tmp / "hub-storage") as server:
            env = server.client_env()
            env["HF_HUB_OFFLINE"] = "0"
            env["HF_HOME"] = str(tmp / "hf-home")
            args = [*TINY, "--output_dir", str(tmp / "run"), "--max_steps", "3", "--training.checkpoint_every", "1",
                    "--training.keep_checkpoints", "2", "--seed", "3", "--training.report_to", "tensorboard",
                    "--push_to_hub", "snd-test/distilled"]
            run_distill(args, env=env)

    tmp = build_once(tmp_path_factory, "distill-script-pushed-run", launch)
    return tmp / "run", HubStore(tmp / "hub-storage"), tmp_path_factory.mktemp("pushed_run_reads")


def test_script_writes_checkpoints_exports_logs_and_picture(pushed_run):
    out, _, _ = pushed_run

    # checkpoints: only the last two survive, each complete
    steps = [step for step, _ in list_checkpoints(out)]
    assert steps == [2, 3]
    last = list_checkpoints(out)[-1][1]
    assert (last / "model.safetensors").exists() and (last / "optimizer.bin").exists()
    assert not list((out / "checkpoints").glob(".tmp-*"))

    # the resolved config round-trips and carries the command-line values
    config = load_config(str(out / "config.yaml"))
    assert config.training.max_steps == 3 and config.training.seed == 3 and config.data.image_width == 42

    # loss log: one finite line per step
    records = [json.loads(line) for line in (out / "loss_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(torch.isfinite(torch.tensor(r["loss"])) and r["samples_per_s"] > 0 for r in records)
    assert list((out / "snd-distill").rglob("events.out.tfevents*")), "TensorBoard tracker wrote no event file"

    # exported student/teacher load with AutoModel and hold exactly the trained / EMA weights
    import snd  # noqa: F401  (registers the Auto classes)
    from transformers import AutoImageProcessor, AutoModel

    student = AutoModel.from_pretrained(str(out / "student"))
    teacher = AutoModel.from_pretrained(str(out / "teacher"))
    assert type(student).__name__ == "SnDModel"
    AutoImageProcessor.from_pretrained(str(out / "student"))
    trained = _state(last / "model.safetensors")
    for name, value in student.state_dict().items():
        torch.testing.assert_close(value, trained[f"backbone.{name}"], rtol=0, atol=0)
    assert any(not torch.equal(student.state_dict()[k], teacher.state_dict()[k]) for k in student.state_dict())
    heads = load_file(str(out / "heads.safetensors"))
    assert any(k.startswith("student.") for k in heads) and any(k.startswith("teacher.") for k in heads)

    # PCA picture and summary
    assert (out / "pca_before_after.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 3 and summary["num_processes"] == 1


def test_kill_and_resume_matches_uninterrupted_run(tmp_path):
    # LoRA dropout draws random numbers every step, so a wrong RNG restore would change the weights.
    common = [*TINY, "--max_steps", "10", "--training.checkpoint_every", "3", "--seed", "5",
              "--model.finetune", "lora", "--model.lora_dropout", "0.2", "--teacher.update_every", "2"]
    reference = tmp_path / "uninterrupted"
    assert distill_main(common + ["--output_dir", str(reference)]) == 0

    interrupted = tmp_path / "interrupted"
    process = subprocess.Popen(launch_command(common + ["--output_dir", str(interrupted)]), cwd=REPO_ROOT, env=script_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 300
    while not any(step >= 3 for step, _ in list_checkpoints(interrupted)):
        assert process.poll() is None, f"run ended before it could be killed: {process.stderr.read().decode()[-3000:]}"
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (interrupted / "student").exists(), "the run finished before the kill; the test proves nothing"
    killed_at = max(step for step, _ in list_checkpoints(interrupted))
    assert killed_at < 10

    # resumed in-process from what the killed process left on disk (bit-identical to a launch: one thread in both)
    assert distill_main(common + ["--output_dir", str(interrupted), "--resume_from_checkpoint", "latest"]) == 0
    for name in ("student", "teacher"):
        expected, actual = _state(reference / name / "model.safetensors"), _state(interrupted / name / "model.safetensors")
        assert expected.keys() == actual.keys()
        for key in expected:
            assert torch.equal(expected[key], actual[key]), f"{name}.{key} differs after resume from step {killed_at}"
    expected, actual = load_file(str(reference / "heads.safetensors")), load_file(str(interrupted / "heads.safetensors"))
    assert all(torch.equal(expected[k], actual[k]) for k in expected)
    steps = [json.loads(line)["step"] for line in (interrupted / "loss_log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 11))
    reference_losses = [json.loads(line)["loss"] for line in (reference / "loss_log.jsonl").read_text().splitlines()]
    resumed_losses = [json.loads(line)["loss"] for line in (interrupted / "loss_log.jsonl").read_text().splitlines()]
    assert resumed_losses == reference_losses


def test_nonfinite_loss_stops_naming_the_step_or_is_skipped(tmp_path):
    # lr 1e30 turns the weights into +-1e30 after the first Adam step, so the second loss is not finite
    broken = [*TINY, "--max_steps", "3", "--training.lr", "1e30", "--training.max_grad_norm", "0", "--training.warmup_fraction", "0"]
    from snd.distill import NonFiniteLossError

    with pytest.raises(NonFiniteLossError) as raised:  # uncaught by main: a traceback and exit status 1 when launched
        distill_main(broken + ["--output_dir", str(tmp_path / "raise")])
    assert "non-finite loss" in str(raised.value) and "at step 2" in str(raised.value)
    assert distill_main(broken + ["--output_dir", str(tmp_path / "skip"), "--training.nonfinite_loss", "skip"]) == 0
    summary = json.loads((tmp_path / "skip" / "train_summary.json").read_text())
    assert summary["steps"] == 3 and summary["skipped_nonfinite_steps"] == 2, summary


def test_bad_config_value_fails_with_a_clear_message(tmp_path, capsys):
    assert distill_main(["--output_dir", str(tmp_path), "--teacher.blend_alpha", "2"]) == 2
    stderr = capsys.readouterr().err
    assert "teacher.blend_alpha" in stderr and "[0, 1]" in stderr
    # (unknown keys and other validation errors are covered in-process by test_config_and_parts.py)


def test_two_processes_match_one_process_and_share_the_teacher(tmp_path):
    """DDP over gloo (accelerate launch --multi_gpu --num_processes 2, Accelerator(cpu=True)): 2 x batch 1 == 1 x batch 2."""
    common = [*TINY, "--max_steps", "1", "--seed", "7", "--teacher.update_every", "1", "--teacher.momentum", "0.5",
              "--training.lr", "1e-3", "--training.checkpoint_every", "0"]
    single, double = tmp_path / "one", tmp_path / "two"
    assert distill_main(common + ["--output_dir", str(single), "--training.batch_size", "2"]) == 0
    launched = run_distill(common + ["--output_dir", str(double), "--training.batch_size", "1"], num_processes=2)  # real accelerate launch
    # output a person can read (issue 21): one "done" line (rank 0), no per-rank DDP grad-strides warning
    assert launched.stdout.count("done: ") == 1, launched.stdout
    assert "Grad strides do not match" not in launched.stderr, launched.stderr[-3000:]

    summary = json.loads((double / "train_summary.json").read_text())
    assert summary["num_processes"] == 2 and summary["global_batch_size"] == 2
    fingerprints = summary["teacher_fingerprints"]
    assert len(fingerprints) == 2 and fingerprints[0] == fingerprints[1]

    def checkpoint_state(out):
        return _state(list_checkpoints(out)[-1][1] / "model.safetensors")

    one, two = checkpoint_state(single), checkpoint_state(double)
    initial = _state_after_zero_steps(tmp_path, common)
    moved = 0
    for key in one:
        torch.testing.assert_close(two[key], one[key], atol=1e-5, rtol=0)
        moved += int(not torch.equal(one[key], initial[key]))
    assert moved > 0, "the optimiser step changed nothing; the comparison would be vacuous"
    for name in ("teacher",):
        a, b = _state(single / name / "model.safetensors"), _state(double / name / "model.safetensors")
        for key in a:
            torch.testing.assert_close(b[key], a[key], atol=1e-5, rtol=0)
    loss_one = json.loads((single / "loss_log.jsonl").read_text().splitlines()[0])["loss"]
    loss_two = json.loads((double / "loss_log.jsonl").read_text().splitlines()[0])["loss"]
    assert loss_one == pytest.approx(loss_two, abs=1e-5)


def _state_after_zero_steps(tmp_path, common):
    """The student weights at initialisation (same seed), built in-process from the same config."""
    from snd.distill.build import build_student
    from snd.distill.cli import resolve_config
    from snd.distill.config import dotted_flags_to_overrides

    flags = [a for a in common if a != "--no_progress"]
    config_at = flags.index("--config")
    config_name = flags[config_at + 1]
    flags = flags[:config_at] + flags[config_at + 2 :]
    max_steps_at = flags.index("--max_steps")
    flags = flags[:max_steps_at] + flags[max_steps_at + 2 :]
    seed_at = flags.index("--seed")
    seed = int(flags[seed_at + 1])
    flags = flags[:seed_at] + flags[seed_at + 2 :]
    config = resolve_config(config_name, dotted_flags_to_overrides(flags), output_dir=str(tmp_path / "unused"), seed=seed)
    from accelerate.utils import set_seed

    set_seed(seed)
    student = build_student(config)
    return {k: v.detach().clone() for k, v in student.state_dict().items()}


def test_push_to_hub_uploads_the_student_with_card(pushed_run):
    """--push_to_hub against the loopback Hub-compatible test server (tests/hub/hub_server.py): no network."""
    from huggingface_hub import ModelCard

    out, store, tmp_path = pushed_run
    for name in ("model.safetensors", "config.json", "preprocessor_config.json", "README.md"):
        assert store.exists("model", "snd-test/distilled") and store.read("model", "snd-test/distilled", name)
    weights_path = tmp_path / "pushed.safetensors"
    weights_path.write_bytes(store.read("model", "snd-test/distilled", "model.safetensors"))
    pushed = load_file(str(weights_path))
    exported = load_file(str(out / "student" / "model.safetensors"))
    assert pushed.keys() == exported.keys() and all(torch.equal(pushed[k], exported[k]) for k in pushed)
    card = ModelCard(store.read("model", "snd-test/distilled", "README.md").decode())
    assert "snd distill: 3 steps" in card.text and "synthetic" in card.text and "depth" in card.text


def test_paper_preset_runs_on_scannetpp_files(tmp_path):
    """The ScanNet++ preset end to end on a tiny dataset written in the real ScanNet++ layout (JPEGs, 16-bit masks
    and depth PNGs, nerfstudio transforms_train.json, split lists), with a tiny student and the depth lifter."""
    from snd.data import SyntheticSceneConfig
    from tests.data.fixtures import write_scannetpp_scene, write_split

    root = tmp_path / "scannetpp"
    scenes = SyntheticSceneConfig(num_scenes=2, num_frames=12, height=28, width=42, seed=3)
    names = [write_scannetpp_scene(root, scenes, index)[2] for index in range(2)]
    write_split(root, "train", names)
    write_split(root, "val", names[:1])
    out = tmp_path / "run"
    assert distill_main([
        "--config", "scannetpp_dinov2s", "--output_dir", str(out), "--max_steps", "2",
        "--model.pretrained", "null", "--model.preset", "tiny", "--lifter.kind", "depth", "--lifter.checkpoint", "null",
        "--data.root", str(root), "--data.image_height", "28", "--data.image_width", "42", "--data.num_workers", "0",
        "--data.max_gap", "9", "--training.batch_size", "2", "--head.num_prototypes", "64", "--head.hidden_dim", "32",
        "--head.bottleneck_dim", "16", "--training.report_to", "none", "--no_progress",
    ]) == 0
    config = load_config(str(out / "config.yaml"))
    assert config.model.finetune == "lora" and config.data.dataset == "scannetpp" and config.teacher.blend_alpha == 0.5
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 2 and summary["global_batch_size"] == 2
    import snd  # noqa: F401
    from transformers import AutoModel

    student = AutoModel.from_pretrained(str(out / "student"))
    assert not any("lora" in name for name in student.state_dict())
    record = json.loads((out / "loss_log.jsonl").read_text().splitlines()[-1])
    assert 0 < record["valid_fraction"] <= 1 and torch.isfinite(torch.tensor(record["loss"]))
