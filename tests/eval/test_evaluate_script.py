"""scripts/evaluate.py end to end in a subprocess: two saved tiny models (SnD and transformers
Dinov2Model), every task on a tiny synthetic benchmark; checks the report files."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from transformers import Dinov2Config, Dinov2Model

import snd

ROOT = Path(__file__).resolve().parents[2]


def test_evaluate_script_writes_report(tmp_path):
    torch.manual_seed(0)
    snd.SnDModel(snd.SnDConfig.tiny()).save_pretrained(tmp_path / "tiny-snd")
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                             image_size=28, patch_size=14)).save_pretrained(tmp_path / "tiny-dinov2")
    output = tmp_path / "report"
    command = [
        sys.executable, str(ROOT / "scripts" / "evaluate.py"),
        "--model", str(tmp_path / "tiny-snd"), "--model", str(tmp_path / "tiny-dinov2"),
        "--task", "all", "--dataset", "synthetic", "--output-dir", str(output),
        "--probe-epochs", "1", "--synthetic-train-scenes", "1", "--synthetic-test-scenes", "1",
        "--synthetic-image-size", "56", "--synthetic-frame-stride", "3", "--num-figures", "1",
        "--num-threads", "1", "--no-progress",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT / "src")}  # this checkout's snd
    completed = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]

    results = json.loads((output / "results.json").read_text())
    assert set(results) == {"tiny-snd", "tiny-dinov2"}
    for model, per_task in results.items():
        assert set(per_task) == {"depth", "normals", "segmentation", "correspondence"}
        assert per_task["depth"]["rmse"] > 0
        assert 0 <= per_task["segmentation"]["mean_iou"] <= 100
        assert 0 <= per_task["correspondence"]["recall_10px"] <= 100
        task_file = json.loads((output / model / "depth.json").read_text())
        assert task_file["metrics"]["rmse"] == per_task["depth"]["rmse"]
        assert task_file["info"]["train_images"] == 8 and task_file["info"]["test_images"] == 8
        assert task_file["info"]["constant_baseline"]["rmse"] > 0  # feature-free reference point
        figures = {p.name for p in (output / model / "figures").iterdir()}
        assert {"pca.png", "correspondence_0000.png", "depth_0000.png", "normals_0000.png",
                "segmentation_0000.png"} <= figures
    table = (output / "comparison.md").read_text()
    assert "| tiny-snd |" in table and "| tiny-dinov2 |" in table and "depth RMSE" in table
    assert "NOT comparable with published numbers" in table  # --protocol quick (the synthetic default)
    assert "tiny-dinov2" in completed.stdout  # the table is printed
