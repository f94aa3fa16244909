"""Before/after experiment on a real (2-step) distillation run of the embedded default."""

import json
import math

import pytest
import torch
import yaml

from snd.eval import EvaluationConfig, SyntheticEvalConfig
from snd.eval.experiment import before_after, initial_student, mean_and_spread, trained_student


def test_mean_and_spread():
    mean, spread = mean_and_spread([1.0, 2.0, 3.0])
    assert mean == pytest.approx(2.0) and spread == pytest.approx(1.0)
    assert mean_and_spread([4.0]) == (4.0, 0.0)
    assert math.isnan(mean_and_spread([float("nan")])[0])


@pytest.mark.slow
def test_initial_student_is_the_run_start_and_before_after_report(tmp_path):
    from snd.distill import load_config, train

    run = tmp_path / "run"
    config = load_config(None, [f"training.output_dir={run}", "training.max_steps=2", "training.checkpoint_every=100",
                                "training.log_every=1", "training.report_to=none", "data.num_scenes=2",
                                "data.samples_per_scene=1"])
    train(config, progress=False)

    before, after = initial_student(run), trained_student(run)
    changed = [not torch.equal(a, b) for a, b in zip(before.state_dict().values(), after.state_dict().values())]
    assert any(changed)  # two optimiser steps moved the weights

    # A different seed in config.yaml rebuilds a different model: the check against the run catches it.
    values = yaml.safe_load((run / "config.yaml").read_text())
    values["training"]["seed"] = 123
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.yaml").write_text(yaml.safe_dump(values))
    (bad / "pca_before_features.pt").write_bytes((run / "pca_before_features.pt").read_bytes())
    with pytest.raises(RuntimeError, match="does not reproduce"):
        initial_student(bad)

    evaluation = EvaluationConfig(dataset="synthetic", output_dir=str(tmp_path / "eval"), probe_epochs=1,
                                  num_figures=0, progress=False,
                                  synthetic=SyntheticEvalConfig(train_scenes=1, test_scenes=1, image_size=56, frame_stride=4))
    result = before_after([run], evaluation)
    summary = json.loads((tmp_path / "eval" / "before_after.json").read_text())
    delta = summary["mean"]["after - before"]["depth"]["rmse"]
    assert delta == pytest.approx(result["runs"]["run"]["after"]["depth"]["rmse"] - result["runs"]["run"]["before"]["depth"]["rmse"])
    table = (tmp_path / "eval" / "before_after.md").read_text()
    assert "| before |" in table and "| after |" in table and "| after - before |" in table
    assert "| constant baseline (no features) |" in table
    assert "quick protocol: NOT comparable with published numbers" in table
