"""scripts/experiment_3d_awareness.py end to end on a tiny setting (1 seed, 2 steps, one held-out scene)."""

from __future__ import annotations

import json
import math

from tests.script_main import script_main


def test_experiment_runs_end_to_end_and_reuses_finished_runs(tmp_path):
    from transformers import AutoModel

    import snd

    base = tmp_path / "base"
    torch_model = snd.SnDModel(snd.SnDConfig.tiny(patch_size=8, image_size=32))
    torch_model.save_pretrained(base)
    output = tmp_path / "experiment"
    argv = ["--output-dir", output, "--seeds", "0", "--config", "tiny_synthetic",
            "--set", f"model.pretrained={base}", "--set", "training.max_steps=2", "--set", "training.checkpoint_every=0",
            "--set", "data.num_scenes=1", "--set", "data.image_height=32", "--set", "data.image_width=40",
            "--eval-scenes", "1", "--eval-size", "32", "--probe-epochs", "1", "--dense-scenes", "1", "1", "--no-progress"]
    assert script_main("experiment_3d_awareness", argv) == 0
    results = json.loads((output / "results.json").read_text())
    assert set(results["models"]) == {"base", "random", "snd-seed0", "control-seed0"}
    for name, metrics in results["models"].items():
        assert set(metrics) == {"multiview", "depth", "normals", "segmentation"}, name
        assert metrics["multiview"]["num_pairs"] == 8
    # the runs really are SnD and the control, with the same seed
    for arm, target in (("snd", "splat"), ("control", "same_view")):
        config = (output / "runs" / f"{arm}-seed0" / "config.yaml").read_text()
        assert f"target: {target}" in config and "seed: 0" in config
    entry = results["summary"]["multiview/recall_6px"]
    expected = entry["snd"]["per_seed"][0] - entry["control"]["per_seed"][0]
    assert math.isclose(entry["snd_minus_control"]["mean"], expected, abs_tol=1e-9)
    assert entry["base"] == results["models"]["base"]["multiview"]["recall_6px"]
    table = (output / "results.md").read_text()
    assert "| correspondence recall@6px, all pairs (%) ↑ |" in table and "SnD − control" in table
    assert (output / "figure.png").stat().st_size > 10_000
    assert results["constant_baseline"]["segmentation"]["mean_iou"] >= 0
    # the students load with AutoModel
    AutoModel.from_pretrained(output / "runs" / "snd-seed0" / "student")
    # a second call reuses the finished runs (no retraining: their summaries are untouched)
    stamp = (output / "runs" / "snd-seed0" / "train_summary.json").stat().st_mtime_ns
    assert script_main("experiment_3d_awareness", argv + ["--no-dense", "--no-random"]) == 0
    assert (output / "runs" / "snd-seed0" / "train_summary.json").stat().st_mtime_ns == stamp
