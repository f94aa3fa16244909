"""Before/after-distillation experiment: evaluate the student at initialisation and after training.

A distillation run (``scripts/distill.py``) writes ``config.yaml`` and the trained ``student/``.
The student at initialisation is rebuilt exactly as the trainer builds it (``set_seed(seed)``
then ``build_student(config)``) and checked against the "before" features the trainer saved
(``pca_before_features.pt``), so "before" is the very model the run started from.
Several runs (seeds) are summarised as mean and sample standard deviation.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from . import report
from .runner import EvaluationConfig, Evaluator


def initial_student(run_dir: str | Path) -> torch.nn.Module:
    """The student backbone of a distillation run at step 0 (LoRA merged), verified against the run."""
    from accelerate.utils import set_seed

    from snd.distill import load_config
    from snd.distill.build import backbone_config, build_student, merged_backbone
    from snd.distill.trainer import _held_out_image, _student_features

    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} not found: not a distillation output folder")
    config = load_config(config_path)
    set_seed(config.training.seed)
    student = build_student(config)
    backbone = merged_backbone(student.backbone)
    saved = run_dir / "pca_before_features.pt"
    if saved.is_file():
        expected = torch.load(saved, weights_only=True)
        patch_size = backbone_config(student.backbone).patch_size
        actual = _student_features(student.backbone, _held_out_image(config, patch_size), patch_size, "cpu")
        if actual.shape != expected.shape or not torch.allclose(actual, expected, atol=1e-5):
            raise RuntimeError(f"rebuilt initial student of {run_dir} does not reproduce {saved}")
    return backbone


def trained_student(run_dir: str | Path) -> torch.nn.Module:
    """The distilled student saved by the run (``student/``)."""
    from .features import load_backbone

    path = Path(run_dir) / "student"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} has no saved student: did the distillation finish?")
    return load_backbone(str(path))


def mean_and_spread(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value), ignoring NaN."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return float("nan"), float("nan")
    mean = sum(finite) / len(finite)
    spread = math.sqrt(sum((v - mean) ** 2 for v in finite) / (len(finite) - 1)) if len(finite) > 1 else 0.0
    return mean, spread


def before_after(run_dirs: list[str | Path], config: EvaluationConfig) -> dict:
    """Evaluate every run's student before and after distillation; write per-run results and a summary.

    Writes ``output_dir/<run>/{before,after}/...`` (full reports), ``output_dir/before_after.json``
    (every number plus mean and std per metric) and ``output_dir/before_after.md`` (table: rows
    before / after / after - before, cells mean ± std over runs, plus a feature-free constant
    predictor for reference).
    """
    output_dir = Path(config.output_dir)
    per_run: dict[str, dict] = {}
    for run_dir in run_dirs:
        name = Path(run_dir).name
        run_config = EvaluationConfig(**{**config.__dict__, "output_dir": str(output_dir / name)})
        evaluator = Evaluator(run_config)
        evaluator.evaluate_model("before", initial_student(run_dir))
        evaluator.evaluate_model("after", trained_student(run_dir))
        evaluator.write_summary()
        per_run[name] = evaluator.results

    summary: dict[str, dict[str, dict]] = {"before": {}, "after": {}, "after - before": {}}
    spread: dict[str, dict[str, dict]] = {"before": {}, "after": {}, "after - before": {}}
    first = next(iter(per_run.values()))
    for task, metrics in first["before"].items():
        for key, value in metrics.items():
            if not isinstance(value, (int, float)) or key.startswith("num_"):
                continue
            before = [run["before"][task][key] for run in per_run.values()]
            after = [run["after"][task][key] for run in per_run.values()]
            delta = [a - b for a, b in zip(after, before)]
            for row, values in (("before", before), ("after", after), ("after - before", delta)):
                mean, std = mean_and_spread(values)
                summary[row].setdefault(task, {})[key] = mean
                spread[row].setdefault(task, {})[key] = std
    # The feature-free baseline is the same for every run (same benchmark): read it from the first run.
    import json

    first_dir = output_dir / Path(run_dirs[0]).name / "before"
    baseline = {}
    for task in first["before"]:
        info = json.loads((first_dir / f"{task}.json").read_text()).get("info", {})
        if info.get("constant_baseline"):
            baseline[task] = info["constant_baseline"]
    if baseline:
        summary["constant baseline (no features)"] = baseline
    report.write_json({"runs": per_run, "mean": summary, "std": spread}, output_dir / "before_after.json")
    header = (f"Before vs after distillation, {len(per_run)} runs ({', '.join(per_run)}); "
              f"cells: mean ± sample std over runs. Dataset: {config.dataset}. "
              "**quick protocol: NOT comparable with published numbers.**\n\n")
    report.write_text(header + report.comparison_table(summary, spread), output_dir / "before_after.md")
    return {"runs": per_run, "mean": summary, "std": spread}
