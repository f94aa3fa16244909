"""The 3D-awareness experiment: SnD against a matched 2D control, on held-out synthetic scenes.

For each seed, the same distillation (the embedded default: the shipped ``nano-2d`` backbone) runs twice: with
``teacher.target=splat`` (SnD) and ``teacher.target=same_view`` (the control, identical except that the teacher's
target is its own features of the target view). The base model, a random initialisation of the same architecture,
and every student are then evaluated on scenes of a seed that no part of training or tuning saw
(:data:`snd.eval.multiview.HELD_OUT_SCENE_SEED`): multi-view correspondence recall by rotation bin and feature
consistency (:mod:`snd.eval.multiview`), and the depth, normals and segmentation probes (:mod:`snd.eval.runner`).

Outputs in ``output_dir``: ``runs/<arm>-seed<k>/`` (the distillation runs; an interrupted experiment resumes them),
``results.json`` (every number), ``results.md`` (mean ± std over seeds and the paired difference SnD − control with
its 95% t interval) and ``figure.png`` (matches on one held-out pair and PCA of the features, base / control / SnD).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .experiment import mean_and_spread
from .multiview import HELD_OUT_SCENE_SEED, MultiViewEvalConfig, build_pairs, evaluate_multiview

logger = logging.getLogger(__name__)

ARMS = {"snd": "splat", "control": "same_view"}

#: (metric key, label, higher is better) rows of results.md, in order; keys missing from the results are skipped.
TABLE_ROWS = [
    ("multiview/recall_6px", "correspondence recall@6px, all pairs (%)", True),
    ("multiview/recall_6px_rot_0-15", "recall@6px, 0-15 deg", True),
    ("multiview/recall_6px_rot_15-30", "recall@6px, 15-30 deg", True),
    ("multiview/recall_6px_rot_30-60", "recall@6px, 30-60 deg", True),
    ("multiview/recall_6px_rot_60-180", "recall@6px, 60-180 deg", True),
    ("multiview/recall_12px_rot_60-180", "recall@12px, 60-180 deg", True),
    ("multiview/consistency_auc", "feature consistency AUC, all pairs", True),
    ("multiview/consistency_auc_rot_60-180", "consistency AUC, 60-180 deg", True),
    ("multiview/consistency_margin", "consistency margin (cos same - cos different)", True),
    ("depth/rmse", "depth probe RMSE (m)", False),
    ("depth/d1", "depth probe delta1", True),
    ("normals/mean", "normals probe mean angle (deg)", False),
    ("normals/within_30", "normals probe within 30 deg (%)", True),
    ("segmentation/mean_iou", "segmentation probe mIoU", True),
]

# Two-sided 95% Student t quantiles by degrees of freedom (n - 1), for the paired intervals.
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        15: 2.131, 20: 2.086, 30: 2.042}


def t_quantile_95(degrees_of_freedom: int) -> float:
    """Two-sided 95% quantile of Student's t (table; the next smaller tabulated df above 10, 1.96 above 30)."""
    if degrees_of_freedom < 1:
        return float("nan")
    if degrees_of_freedom > 30:
        return 1.96
    return _T95[max(df for df in _T95 if df <= degrees_of_freedom)]


def paired_interval(differences: list[float]) -> dict:
    """Mean of paired differences with its 95% t interval (``low``/``high`` NaN for a single pair)."""
    n = sum(1 for v in differences if v is not None and math.isfinite(v))
    mean, std = mean_and_spread(differences)
    if n < 2:
        return {"mean": mean, "low": float("nan"), "high": float("nan"), "n": n}
    half = t_quantile_95(n - 1) * std / math.sqrt(n)
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": n}


@dataclass
class AwarenessConfig:
    """The experiment.

    Args:
        output_dir: where runs, results and the figure go.
        seeds: distillation seeds; each runs SnD and the control (paired). Default (0, 1, 2).
        config: distillation preset or YAML (None: the embedded default, the nano-2d setting).
        overrides: ``section.key=value`` overrides applied to both arms (e.g. ``training.max_steps=2`` for a smoke test).
        multiview: pairs and scoring of the multi-view evaluation (held-out seed by default).
        dense_seed, dense_train_scenes, dense_test_scenes, dense_image_size: the probes' synthetic benchmark
            (scenes 0.. of ``dense_seed``; the multi-view pairs use scenes from 100 on). Defaults: the held-out seed,
            6 / 2 scenes, 96 px.
        probe_epochs: override the probes' epochs (None: the synthetic benchmark's).
        dense_tasks: which probes run. Default depth, normals, segmentation.
        include_random: also evaluate a random initialisation of the base architecture. Default True.
        progress: progress bars.
    """

    output_dir: str
    seeds: tuple[int, ...] = (0, 1, 2)
    config: str | None = None
    overrides: list[str] = field(default_factory=list)
    multiview: MultiViewEvalConfig = field(default_factory=MultiViewEvalConfig)
    dense_seed: int = HELD_OUT_SCENE_SEED
    dense_train_scenes: int = 6
    dense_test_scenes: int = 2
    dense_image_size: int = 96
    probe_epochs: int | None = None
    dense_tasks: tuple[str, ...] = ("depth", "normals", "segmentation")
    include_random: bool = True
    progress: bool = True


def _distill_config(config: AwarenessConfig, seed: int, target: str, run_dir: Path):
    from snd.distill.config import load_config

    overrides = [*config.overrides, f"training.seed={seed}", f"teacher.target={target}",
                 f"training.output_dir={run_dir}", "training.report_to=none"]
    return load_config(config.config, overrides)


def run_distillations(config: AwarenessConfig) -> dict[str, Path]:
    """Train (or resume, or reuse when finished) every ``<arm>-seed<k>`` run; returns ``{name: run_dir}``."""
    from snd.distill.trainer import train

    runs = {}
    for seed in config.seeds:
        for arm, target in ARMS.items():
            name = f"{arm}-seed{seed}"
            run_dir = Path(config.output_dir) / "runs" / name
            runs[name] = run_dir
            if (run_dir / "train_summary.json").is_file() and (run_dir / "student" / "config.json").is_file():
                logger.info("%s: finished earlier, reused", name)
                continue
            distill = _distill_config(config, seed, target, run_dir)
            resume = "latest" if (run_dir / "config.yaml").is_file() else None
            logger.info("%s: distilling (%s, %d steps)", name, target, distill.training.max_steps)
            train(distill, resume_from_checkpoint=resume, progress=config.progress)
    return runs


def _flatten(results: dict) -> dict[str, float]:
    flat = {}
    for task, metrics in results.items():
        for key, value in metrics.items():
            if isinstance(value, (int, float)):
                flat[f"{task}/{key}"] = float(value)
    return flat


def evaluate_models(config: AwarenessConfig, models: dict) -> tuple[dict, dict, list]:
    """Multi-view metrics and dense probes of every model; returns ``(results, constant baselines, pairs)``."""
    from .features import FeatureExtractor
    from .datasets import SyntheticEvalConfig
    from .runner import EvaluationConfig, Evaluator, constant_baseline

    pairs = build_pairs(config.multiview)
    evaluator = None
    if config.dense_tasks:
        dense = SyntheticEvalConfig(train_scenes=config.dense_train_scenes, test_scenes=config.dense_test_scenes,
                                    image_size=config.dense_image_size, seed=config.dense_seed)
        evaluator = Evaluator(EvaluationConfig(tasks=list(config.dense_tasks), dataset="synthetic", synthetic=dense,
                                               output_dir=str(Path(config.output_dir) / "probes"), num_figures=0,
                                               probe_epochs=config.probe_epochs, progress=config.progress))
    results, kept = {}, {}
    for name, model in models.items():
        started = time.perf_counter()
        model = model.eval()
        multiview, kept[name] = evaluate_multiview(FeatureExtractor(model), pairs, config.multiview, keep_matches=len(pairs))
        results[name] = {"multiview": multiview}
        if evaluator is not None:
            results[name].update(evaluator.evaluate_model(name, model))
        logger.info("%s evaluated in %.1f s", name, time.perf_counter() - started)
    constants = {}
    if evaluator is not None:
        for task in config.dense_tasks:
            constants[task] = constant_baseline(task, evaluator.dense_dataset(task, "train"), evaluator.dense_dataset(task, "test"))
    return results, constants, (pairs, kept)


def summarise(config: AwarenessConfig, results: dict, constants: dict) -> dict:
    """Per metric: base, random, constant, control and SnD per seed (mean, std) and the paired SnD − control interval."""
    flat = {name: _flatten(values) for name, values in results.items()}
    constant_flat = _flatten(constants)
    keys = sorted({key for values in flat.values() for key in values})
    summary = {}
    for key in keys:
        entry = {"base": flat.get("base", {}).get(key), "random": flat.get("random", {}).get(key),
                 "constant": constant_flat.get(key)}
        for arm in ARMS:
            values = [flat.get(f"{arm}-seed{seed}", {}).get(key) for seed in config.seeds]
            mean, std = mean_and_spread(values)
            entry[arm] = {"per_seed": values, "mean": mean, "std": std}
        differences = [None if s is None or c is None else s - c
                       for s, c in zip(entry["snd"]["per_seed"], entry["control"]["per_seed"])]
        entry["snd_minus_control"] = paired_interval(differences)
        base = entry["base"]
        entry["snd_minus_base"] = paired_interval([None if s is None or base is None else s - base for s in entry["snd"]["per_seed"]])
        summary[key] = entry
    return summary


def _cell(value) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.3f}" if abs(value) < 10 else f"{value:.2f}"


def results_table(config: AwarenessConfig, summary: dict) -> str:
    """``results.md``: one row per headline metric."""
    lines = [
        f"SnD vs the matched same-view control, {len(config.seeds)} seed(s) ({', '.join(map(str, config.seeds))}); held-out "
        f"scene seed {config.multiview.seed} (multi-view pairs) / {config.dense_seed} (probes). Cells: mean ± std over "
        "seeds; last column: paired difference SnD − control, mean [95% t interval]; **bold** where the interval excludes 0.",
        "",
        "| metric | random init | base (nano-2d) | control (same view) | SnD | SnD − control |",
        "|---|---|---|---|---|---|",
    ]
    for key, label, higher in TABLE_ROWS:
        if key not in summary:
            continue
        entry = summary[key]
        difference = entry["snd_minus_control"]
        interval = f"{_cell(difference['mean'])} [{_cell(difference['low'])}, {_cell(difference['high'])}]"
        if math.isfinite(difference["low"]) and (difference["low"] > 0 or difference["high"] < 0):
            interval = f"**{interval}**"
        arrow = "↑" if higher else "↓"
        constant = entry.get("constant")
        random_cell = _cell(entry.get("random")) + (f" (constant {_cell(constant)})" if constant is not None else "")
        lines.append(f"| {label} {arrow} | {random_cell} | {_cell(entry['base'])} | "
                     f"{_cell(entry['control']['mean'])} ± {_cell(entry['control']['std'])} | "
                     f"{_cell(entry['snd']['mean'])} ± {_cell(entry['snd']['std'])} | {interval} |")
    return "\n".join(lines) + "\n"


def save_figure(path: Path, kept: dict, names: dict[str, str], pair_index: int, models: dict, threshold: float = 6.0) -> Path:
    """Matches on one pair (green: within ``threshold`` px of the truth, red: not) and PCA of the features, one row
    per model in ``names`` (``{model key: row title}``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ..viz import pca_image
    from .features import FeatureExtractor

    rows = [key for key in names if key in kept]
    figure = Figure(figsize=(10, 3.1 * len(rows)))
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(rows), 3, squeeze=False, gridspec_kw={"width_ratios": [2, 1, 1]})
    for row, key in enumerate(rows):
        item = kept[key][pair_index]
        pair = item["pair"]
        size = pair.image_a.shape[-1]
        canvas = torch.cat([pair.image_a, pair.image_b], dim=-1).permute(1, 2, 0).numpy()
        axis = axes[row][0]
        axis.imshow(canvas, interpolation="nearest")
        step = max(1, len(pair.sources) // 40)
        correct = (item["errors"] < threshold)
        for index in range(0, len(pair.sources), step):
            (x0, y0), (x1, y1) = pair.sources[index].tolist(), item["matches"][index].tolist()
            axis.plot([x0, x1 + size], [y0, y1], color="lime" if bool(correct[index]) else "red", linewidth=0.7)
        axis.set_title(f"{names[key]}: {100 * float(correct.float().mean()):.0f}% of matches within {threshold:g} px "
                       f"({pair.rotation:.0f} deg apart)", fontsize=9)
        axis.axis("off")
        with torch.no_grad():
            patches = FeatureExtractor(models[key].eval())(torch.stack([pair.image_a, pair.image_b])).patches
        pictures = pca_image(patches, size=(size, size))  # one PCA basis for both views
        for column in (1, 2):
            axes[row][column].imshow(pictures[column - 1], interpolation="nearest")
            axes[row][column].set_title(f"{names[key]}: PCA, view {'ab'[column - 1]}", fontsize=9)
            axes[row][column].axis("off")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(temporary, dpi=100)
    temporary.replace(path)
    return path


def run_experiment(config: AwarenessConfig) -> dict:
    """Distil, evaluate, summarise; writes results.json, results.md and figure.png. Returns the results dict."""
    from snd.distill.build import build_student

    from .features import load_backbone

    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    runs = run_distillations(config)
    distill_seconds = time.perf_counter() - started

    base_config = _distill_config(config, config.seeds[0], "splat", output_dir / "unused")
    models = {}
    if base_config.model.pretrained:
        models["base"] = load_backbone(base_config.model.pretrained)
    if config.include_random:
        torch.manual_seed(0)
        if base_config.model.pretrained:
            from transformers import AutoConfig, AutoModel

            from snd.assets import resolve

            models["random"] = AutoModel.from_config(AutoConfig.from_pretrained(resolve(base_config.model.pretrained)))
        else:
            models["random"] = build_student(base_config).backbone
    for name, run_dir in runs.items():
        models[name] = load_backbone(str(run_dir / "student"))
    evaluation_started = time.perf_counter()
    results, constants, (pairs, kept) = evaluate_models(config, models)
    summary = summarise(config, results, constants)
    timings = {"distill_seconds": round(distill_seconds, 1), "evaluation_seconds": round(time.perf_counter() - evaluation_started, 1)}
    for name, run_dir in runs.items():
        summary_file = run_dir / "train_summary.json"
        if summary_file.is_file():
            timings[f"{name}_train_seconds"] = json.loads(summary_file.read_text()).get("wall_time_s")

    from . import report as writers

    writers.write_text(results_table(config, summary), output_dir / "results.md")
    # the figure: the first scene's pair closest to 40 degrees apart (a clear wide-baseline case, not a hopeless one)
    first_scene = [index for index, pair in enumerate(pairs) if pair.scene == pairs[0].scene]
    pair_index = min(first_scene, key=lambda index: abs(pairs[index].rotation - 40.0))
    seed = config.seeds[0]
    names = {"base": "base (nano-2d)", f"control-seed{seed}": f"control, seed {seed}", f"snd-seed{seed}": f"SnD, seed {seed}"}
    save_figure(output_dir / "figure.png", kept, names, pair_index, models)
    timings["total_seconds"] = round(time.perf_counter() - started, 1)
    report = {"config": asdict(config), "distill_config": base_config.to_dict(), "models": results,
              "constant_baseline": constants, "summary": summary, "timings": timings}
    writers.write_json(report, output_dir / "results.json")
    return report


__all__ = ["AwarenessConfig", "paired_interval", "results_table", "run_experiment", "summarise", "t_quantile_95"]
