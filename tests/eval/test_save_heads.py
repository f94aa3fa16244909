"""scripts/evaluate.py --save-heads: trained probes saved as transformers task models that pipelines load."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import torch
from huggingface_hub import ModelCard
from PIL import Image
from transformers import AutoModelForDepthEstimation, AutoModelForSemanticSegmentation, pipeline

import snd
from snd.eval.datasets import SyntheticEvalConfig, build_dense_dataset
from snd.eval.features import FeatureExtractor
from snd.eval.probes import DepthBinsHead

ROOT = Path(__file__).resolve().parents[2]


def _run_script(argv):
    spec = importlib.util.spec_from_file_location("snd_evaluate_script", ROOT / "scripts" / "evaluate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(argv)


def test_save_heads_writes_task_models_that_pipelines_run(tmp_path):
    torch.manual_seed(0)
    backbone = snd.SnDModel(snd.SnDConfig.tiny()).eval()
    backbone.save_pretrained(tmp_path / "tiny-snd")
    output = tmp_path / "report"
    _run_script([
        "--model", str(tmp_path / "tiny-snd"), "--task", "depth", "--task", "segmentation", "--task", "normals",
        "--dataset", "synthetic", "--output-dir", str(output), "--probe-max-steps", "3",
        "--synthetic-train-scenes", "1", "--synthetic-test-scenes", "1", "--synthetic-image-size", "56",
        "--synthetic-frame-stride", "3", "--num-figures", "0", "--no-progress", "--save-heads",
    ])
    results = json.loads((output / "results.json").read_text())["tiny-snd"]
    heads = output / "tiny-snd" / "heads"
    assert sorted(p.name for p in heads.iterdir()) == ["depth", "segmentation"]  # normals: no transformers task

    # the saved depth model is the backbone followed by the probe: equal to re-running the probe on the features
    config = SyntheticEvalConfig(train_scenes=1, test_scenes=1, image_size=56, frame_stride=3)
    test = build_dense_dataset("synthetic", "depth", "test", None, config)
    images = torch.stack([test[i]["image"] for i in range(2)])  # [2, 3, 56, 56], already patch multiples
    depth_model = AutoModelForDepthEstimation.from_pretrained(heads / "depth").eval()
    assert isinstance(depth_model, snd.SnDForDepthEstimation)
    assert depth_model.config.depth_max == test.max_depth
    for name, value in backbone.state_dict().items():  # backbone weights included, unchanged
        assert torch.equal(depth_model.snd.state_dict()[name], value), name
    features = FeatureExtractor(backbone)(images)
    probe = DepthBinsHead(32, min_depth=test.min_depth, max_depth=test.max_depth)
    probe.conv.load_state_dict(depth_model.head.conv.state_dict())
    with torch.no_grad():
        expected = probe(features.patches, features.cls, (56, 56))
        got = depth_model(snd.normalize_images(images)).predicted_depth
    assert torch.allclose(got, expected, atol=1e-5)

    card = ModelCard.load(heads / "depth" / "README.md")
    assert card.data.pipeline_tag == "depth-estimation"
    assert card.data.eval_results[0].metric_type == "rmse"
    assert abs(card.data.eval_results[0].metric_value - results["depth"]["rmse"]) < 1e-9
    seg_card = ModelCard.load(heads / "segmentation" / "README.md")
    assert abs(seg_card.data.eval_results[0].metric_value - results["segmentation"]["mean_iou"]) < 1e-9

    processor = json.loads((heads / "depth" / "preprocessor_config.json").read_text())
    assert processor["size"] == {"height": 56, "width": 56} and not processor["do_center_crop"]
    image = Image.fromarray((images[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    depth = pipeline("depth-estimation", model=str(heads / "depth"))(image)
    assert tuple(depth["predicted_depth"].shape) == (56, 56)
    assert torch.allclose(depth["predicted_depth"], expected[0], atol=0.05 * test.max_depth)
    segmentation = AutoModelForSemanticSegmentation.from_pretrained(heads / "segmentation")
    assert list(segmentation.config.id2label.values()) == list(test.class_names)
    segments = pipeline("image-segmentation", model=str(heads / "segmentation"))(image)
    assert segments and {s["label"] for s in segments} <= set(test.class_names)

    # eval_results.json: the headline metrics as card records, which a distill run's card turns into model-index
    records = json.loads((output / "tiny-snd" / "eval_results.json").read_text())
    assert {(r["task"], r["metric"]) for r in records} == {("depth", "rmse"), ("segmentation", "mean_iou"),
                                                           ("normals", "angular_rmse")}
    assert next(r for r in records if r["task"] == "normals")["value"] == results["normals"]["rmse"]
    from snd.distill import load_config
    from snd.distill.trainer import card_info
    from snd.hub import render_model_card

    run = tmp_path / "run"
    run.mkdir()
    (run / "eval_results.json").write_text(json.dumps(records))
    card = render_model_card(card_info(load_config("tiny_synthetic"), "me/run-student", run), config=backbone.config)
    assert sorted((r.task_type, r.metric_value) for r in card.data.eval_results) == sorted(
        (t, v) for t, v in [("depth-estimation", results["depth"]["rmse"]),
                            ("image-segmentation", results["segmentation"]["mean_iou"]),
                            ("surface-normal-estimation", results["normals"]["rmse"])])
