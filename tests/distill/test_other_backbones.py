"""Distil students that are not SnD/DINOv2: a tiny DINOv3 through the real ``scripts/distill.py``
(one subprocess) and a tiny DINOv2-with-registers through the same script's ``main`` in-process;
both export in their own class, LoRA merged, with an image processor and a model card, and give the
trained module's features. Both are then evaluated with ``scripts/evaluate.py --protocol quick``, and the
DINOv3 student also with ``--protocol snd`` (depth, normals; two iterations)."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from safetensors.torch import load_file

from snd.backbones import backbone_spec, random_backbone
from snd.distill import load_config
from snd.distill.build import build_student
from snd.distill.checkpoints import list_checkpoints
from snd.distill.teacher import backbone_patch_features
from tests.distill.helpers import REPO_ROOT, run_distill

pytestmark = pytest.mark.slow

SMALL = [
    "--data.num_scenes", "2", "--data.num_frames", "10", "--data.max_gap", "9", "--data.samples_per_scene", "2",
    "--head.num_prototypes", "64", "--head.hidden_dim", "32", "--head.bottleneck_dim", "16",
    "--training.report_to", "none", "--training.log_every", "1", "--no_progress",
    "--model.finetune", "lora", "--model.lora_rank", "4", "--model.lora_dropout", "0.0", "--training.lr", "1e-2",
]


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"snd_script_{name}", REPO_ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dinov3_run(tmp_path_factory):
    """A tiny random DINOv3ViTModel saved as a transformers folder, distilled 3 steps with LoRA by the script
    (launched once per test run, shared by the xdist workers: tests/shared.py)."""
    from tests.shared import build_once

    def launch(root):
        torch.manual_seed(0)
        base = random_backbone("dinov3-tiny")
        base.save_pretrained(root / "base")
        run_distill(["--config", "tiny_dinov3", "--model.pretrained", str(root / "base"), "--output_dir", str(root / "run"),
                     "--max_steps", "3", *SMALL])

    root = build_once(tmp_path_factory, "other-backbones-dinov3-run", launch)
    return root, root / "run"


def _trained_student(out):
    """The trained DistillStudent (LoRA unmerged) rebuilt from the run's config and last checkpoint."""
    config = load_config(str(out / "config.yaml"))
    student = build_student(config)
    state = load_file(str(list_checkpoints(out)[-1][1] / "model.safetensors"))
    student.load_state_dict(state, strict=True)
    return student.eval(), state


def _check_export(out, class_name: str, lora_leaves: set[str], image_size: tuple[int, int]):
    from transformers import AutoModel

    exported = AutoModel.from_pretrained(str(out / "student")).eval()
    assert type(exported).__name__ == class_name
    assert not any("lora" in key for key in exported.state_dict())  # merged, plain class
    student, state = _trained_student(out)
    # LoRA wrapped exactly the architecture's default targets, and training moved them
    wrapped = {key.split(".lora_A")[0].rsplit(".", 1)[-1] for key in state if ".lora_A" in key}
    assert wrapped == lora_leaves
    assert any(state[key].abs().max() > 0 for key in state if ".lora_B" in key)
    images = torch.rand(2, 3, *image_size)
    with torch.no_grad():
        trained = backbone_patch_features(student.backbone, images)
        saved = backbone_patch_features(exported, images)
    torch.testing.assert_close(saved, trained, rtol=1e-4, atol=1e-5)
    # the merged weights are not the base weights: the export carries the adaptation
    base_keys = [key for key in state if key.endswith("base_layer.weight")]
    merged = exported.state_dict()
    name = base_keys[0].split("base_model.model.", 1)[1].replace(".base_layer", "")
    assert not torch.allclose(merged[name], state[base_keys[0]])
    card = (out / "student" / "README.md").read_text()
    assert "image-feature-extraction" in card and f"{class_name} (model_type" in card
    return exported, card


def test_dinov3_student_exports_as_dinov3_and_matches_the_trained_module(dinov3_run):
    from transformers import pipeline

    root, out = dinov3_run
    exported, card = _check_export(out, "DINOv3ViTModel", {"q_proj", "k_proj", "v_proj", "o_proj"}, (48, 64))
    assert str(root / "base") in card  # the card names the model it started from
    assert backbone_spec(exported).patch_size == 16 and backbone_spec(exported).num_prefix_tokens == 5
    # the saved config is the base's: RoPE augmentation was switched off only inside the training run
    assert json.loads((out / "student" / "config.json").read_text())["pos_embed_rescale"] == 2.0
    records = [json.loads(line) for line in (out / "loss_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3] and all(torch.isfinite(torch.tensor(r["loss"])) for r in records)
    # transformers' pipeline on the export: its image processor resizes to 224 x 224 -> 14 x 14 patches + 5 prefix
    import numpy as np
    from PIL import Image

    extractor = pipeline("image-feature-extraction", model=str(out / "student"))
    features = np.asarray(extractor(Image.fromarray((np.random.rand(40, 60, 3) * 255).astype("uint8"))))
    assert features.shape == (1, 5 + 14 * 14, 32)


def test_dinov2_with_registers_student_exports_in_its_own_class(tmp_path):
    out = tmp_path / "run"
    script = _load_script("distill")
    torch.manual_seed(0)
    code = script.main(["--config", "tiny_dinov3", "--model.preset", "dinov2reg-tiny", "--data.image_height", "42",
                        "--data.image_width", "56", "--output_dir", str(out), "--max_steps", "3", *SMALL])
    assert code == 0
    exported, card = _check_export(out, "Dinov2WithRegistersModel", {"q_proj", "k_proj", "v_proj", "o_proj", "projection"}, (42, 56))
    assert "dinov2reg-tiny" in card
    assert backbone_spec(exported).num_prefix_tokens == 5 and backbone_spec(exported).patch_size == 14
    _evaluate(out / "student", tmp_path / "report", tasks=["depth"])


def _evaluate(model, report, tasks):
    script = _load_script("evaluate")
    task_args = [arg for task in tasks for arg in ("--task", task)]
    script.main([
        "--protocol", "quick", "--model", str(model), *task_args, "--dataset", "synthetic",
        "--output-dir", str(report), "--probe-epochs", "1", "--synthetic-train-scenes", "1", "--synthetic-test-scenes", "1",
        "--synthetic-image-size", "64", "--synthetic-frame-stride", "3", "--num-figures", "1", "--no-progress",
    ])
    (name, per_task), = json.loads((report / "results.json").read_text()).items()
    assert set(per_task) == set(tasks) and per_task["depth"]["rmse"] > 0
    return per_task


def test_evaluate_script_runs_on_the_dinov3_student(dinov3_run, tmp_path, monkeypatch):
    """The reported recalls are those of the matches the run made: restated per pair (share of matches within the
    threshold), then averaged over pairs, in percent."""
    import numpy as np

    from snd.eval import runner

    _, out = dinov3_run
    matched = []
    real_match_pair = runner.match_pair

    def recording_match_pair(*args, **kwargs):
        matches = real_match_pair(*args, **kwargs)
        matched.append((matches.predicted.numpy().copy(), matches.reference.numpy().copy()))
        return matches

    monkeypatch.setattr(runner, "match_pair", recording_match_pair)
    per_task = _evaluate(out / "student", tmp_path / "report", tasks=["depth", "correspondence"])
    metrics = per_task["correspondence"]
    assert matched and metrics["num_pairs"] == len(matched)
    errors = [np.sqrt(((predicted - reference) ** 2).sum(-1)) for predicted, reference in matched]
    for threshold in (5, 10, 20):
        expected = 100.0 * np.mean([(e < threshold).mean() for e in errors])
        assert metrics[f"recall_{threshold}px"] == pytest.approx(expected, abs=1e-9), threshold


def test_snd_protocol_depth_and_normals_run_on_the_dinov3_student(dinov3_run, tmp_path):
    """--protocol snd (FiT3D depth, Probe3D normals: pre-norm tokens, zero padding to 16-pixel multiples) on the
    NYUv2 fixtures of the protocol tests, two iterations each."""
    from tests.eval.protocols.fixtures import write_nyuv2
    from tests.eval.protocols.probe3d_fixtures import write_geonet, write_nyu_pickle

    _, out = dinov3_run
    data_dir = write_nyuv2(tmp_path / "eval_data" / "nyuv2")
    write_geonet(data_dir, count=2)
    write_nyu_pickle(data_dir / "nyuv2" / "nyuv2_snorm_all.pkl")
    report = tmp_path / "report"
    _load_script("evaluate").main([
        "--protocol", "snd", "--model", str(out / "student"), "--task", "depth", "--task", "normals", "--dataset", "nyuv2",
        "--data-dir", str(data_dir), "--max-iters", "2", "--max-test-images", "1", "--output-dir", str(report), "--device", "cpu",
    ])
    results = json.loads((report / "results.json").read_text())
    (per_task,) = results["results"].values()
    for task in ("depth", "normals"):
        assert per_task[task]["iterations_run"] == 2 and per_task[task]["metrics"]["rmse"] > 0
    depth, normals = per_task["depth"]["settings"], per_task["normals"]["settings"]
    assert depth["features_patch_size"] == 16 and depth["features_final_norm"] is False and normals["patch_size"] == 16
