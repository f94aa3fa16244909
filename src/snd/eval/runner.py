"""One evaluation run: several backbones x several tasks on one dataset, with a report.

Output layout (``output_dir``)::

    results.json                      {model: {task: metrics}}
    comparison.md                     one row per model
    <model>/<task>.json               metrics plus what produced them
    <model>/eval_results.json         headline metrics as model-card records (a distill run's card reads them)
    <model>/figures/*.png             predictions beside ground truth, matches, feature PCA
    feature_cache/<model>/<weights fingerprint>/<set>.safetensors   (when cache_features)
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from ..progress import progress_bar as tqdm

from . import report
from .correspondence import match_pair
from .datasets import (
    TASKS,
    SyntheticEvalConfig,
    build_dense_dataset,
    build_pairs_dataset,
    supported_tasks,
)
from .features import FeatureExtractor, extract_features, load_backbone, model_display_name
from .probes import DEPTH_PROBE, NORMALS_PROBE, SEGMENTATION_PROBE, ProbeTask, evaluate_probe, train_probe

DENSE_TASKS = ("depth", "normals", "segmentation")
DEFAULT_PROBES = {"depth": DEPTH_PROBE, "normals": NORMALS_PROBE, "segmentation": SEGMENTATION_PROBE}
# The synthetic benchmark is small (72 training images of 112 px, on a CPU): the protocols'
# optimisers and schedules, with larger batches and learning rates so the probes plateau in ~100 steps.
SYNTHETIC_PROBES = {
    "depth": DEPTH_PROBE.with_overrides(epochs=10, batch_size=4, lr=1e-3),
    "normals": NORMALS_PROBE.with_overrides(epochs=10, lr=2e-3),
    "segmentation": SEGMENTATION_PROBE.with_overrides(epochs=20, batch_size=8),
}


@dataclass
class EvaluationConfig:
    """What to evaluate and how.

    Args:
        tasks: any of depth, normals, segmentation, correspondence, or ["all"] (every task the
            dataset supports).
        dataset: synthetic, nyuv2, scannet_pairs or scannetpp.
        data_dir: dataset root (not needed for synthetic).
        output_dir: where results, table and pictures go.
        synthetic: the synthetic benchmark's size.
        probe_epochs / probe_max_steps: override every probe's epochs / cap its steps.
        num_correspondences, correspondence_scale: Probe3D's 1,000 matches at 1/4 scale. On the
            synthetic benchmark the default scale is 1: its 112 px images at 1/4 scale would leave
            28 x 28 points, fewer than 1,000, and make 5/10/20 px a fifth of the image or more.
        num_figures: test images (and pairs) drawn per task.
        feature_batch_size: images per backbone call.
        seed: probe initialisation and data order (the same for every model).
        cache_features: keep extracted features under output_dir/feature_cache.
        save_heads: save each trained depth / segmentation probe with its SnD backbone as a transformers task model
            (`SnDForDepthEstimation` / `SnDForSemanticSegmentation`) under output_dir/<model>/heads/<task>/
            (see `snd.eval.save_heads`).
    """

    tasks: list[str] = field(default_factory=lambda: ["all"])
    dataset: str = "synthetic"
    data_dir: str | None = None
    output_dir: str = "evaluation"
    synthetic: SyntheticEvalConfig = field(default_factory=SyntheticEvalConfig)
    probe_epochs: int | None = None
    probe_max_steps: int | None = None
    num_correspondences: int = 1000
    correspondence_scale: float | None = None
    num_figures: int = 3
    feature_batch_size: int = 8
    seed: int = 0
    device: str = "cpu"
    cache_features: bool = False
    progress: bool = True
    save_heads: bool = False

    def __post_init__(self) -> None:
        import math

        from .datasets import DATASETS, check_int_setting

        if isinstance(self.tasks, str) or not isinstance(self.tasks, (list, tuple)) or not self.tasks:
            raise ValueError(f"EvaluationConfig.tasks must be a non-empty list of task names ({', '.join(TASKS)} or all), "
                             f"got {self.tasks!r}")
        for task in self.tasks:
            if task not in TASKS and task != "all":
                raise ValueError(f"EvaluationConfig.tasks: unknown task {task!r}; choose from {', '.join(TASKS)} or all")
        self.tasks = list(self.tasks)
        if self.dataset not in DATASETS:
            raise ValueError(f"EvaluationConfig.dataset must be one of {', '.join(DATASETS)}, got {self.dataset!r}")
        check_int_setting("EvaluationConfig.feature_batch_size", self.feature_batch_size, 1)
        check_int_setting("EvaluationConfig.probe_epochs", self.probe_epochs, 1, optional=True)
        check_int_setting("EvaluationConfig.probe_max_steps", self.probe_max_steps, 1, optional=True)
        check_int_setting("EvaluationConfig.num_correspondences", self.num_correspondences, 1)
        check_int_setting("EvaluationConfig.num_figures", self.num_figures, 0)
        check_int_setting("EvaluationConfig.seed", self.seed)
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError) as error:
            raise ValueError(f"EvaluationConfig.device: {self.device!r} is not a torch device ({error})") from None
        scale = self.correspondence_scale
        if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float))
                                  or not math.isfinite(scale) or not 0 < scale <= 4):
            raise ValueError(f"EvaluationConfig.correspondence_scale must be in (0, 4] (the matching resolution as a fraction of the image size) or None, "
                             f"got {scale!r}")

    def resolved_tasks(self) -> list[str]:
        available = supported_tasks(self.dataset)
        if "all" in self.tasks:
            return [t for t in TASKS if t in available]
        for task in self.tasks:
            if task not in TASKS:
                raise ValueError(f"unknown task {task!r}; choose from {', '.join(TASKS)} or all")
            if task not in available:
                raise ValueError(f"dataset {self.dataset!r} has no {task} ground truth (it serves {', '.join(available)})")
        return list(self.tasks)

    def matching_scale(self) -> float:
        if self.correspondence_scale is not None:
            return self.correspondence_scale
        return 1.0 if self.dataset == "synthetic" else 0.25

    def probe_config(self, task: str):
        base = (SYNTHETIC_PROBES if self.dataset == "synthetic" else DEFAULT_PROBES)[task]
        return base.with_overrides(epochs=self.probe_epochs, max_steps=self.probe_max_steps)


def weights_fingerprint(model: torch.nn.Module, length: int = 16, extra: str = "") -> str:
    """A hex digest of a module's class, parameter/buffer names, shapes, dtypes and values, and ``extra`` (the feature
    extractor's settings): the feature cache key."""
    import hashlib

    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{type(model).__module__}.{type(model).__qualname__}|{extra}".encode())
    for key, tensor in model.state_dict().items():
        tensor = tensor.detach()
        digest.update(f"{key}|{tuple(tensor.shape)}|{tensor.dtype}".encode())
        if tensor.numel():
            digest.update(tensor.to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:length]


class Evaluator:
    """Runs :class:`EvaluationConfig` for any number of backbones, sharing datasets between them."""

    def __init__(self, config: EvaluationConfig):
        self.config = config
        self.tasks = config.resolved_tasks()
        self.output_dir = Path(config.output_dir)
        self._datasets: dict[tuple, object] = {}
        self.results: dict[str, dict[str, dict]] = {}

    # ------------------------------------------------------------------ data
    def dense_dataset(self, task: str, split: str):
        c = self.config
        key = (task if c.dataset == "scannetpp" else "dense", split)
        if key not in self._datasets:
            self._datasets[key] = build_dense_dataset(c.dataset, task, split, c.data_dir, c.synthetic)
        return self._datasets[key]

    def pairs_dataset(self):
        if "pairs" not in self._datasets:
            self._datasets["pairs"] = build_pairs_dataset(self.config.dataset, self.config.data_dir, self.config.synthetic)
        return self._datasets["pairs"]

    def _features(self, name: str, extractor: FeatureExtractor, dataset, cache: dict):
        if dataset.cache_key not in cache:
            path = None
            if self.config.cache_features:
                # keyed by the weights too: a model retrained (or replaced) under the same name never reuses stale features
                if "__weights__" not in cache:
                    settings = sorted((k, repr(v)) for k, v in vars(extractor).items() if not isinstance(v, torch.nn.Module))
                    cache["__weights__"] = weights_fingerprint(extractor.model, extra=repr(settings))
                path = self.output_dir / "feature_cache" / name / cache["__weights__"] / f"{dataset.cache_key}.safetensors"
            images = _ImageView(dataset)
            cache[dataset.cache_key] = extract_features(
                extractor, images, self.config.feature_batch_size, f"{name} {dataset.cache_key}", path,
                progress=self.config.progress,
            )
        return cache[dataset.cache_key]

    # ------------------------------------------------------------------ run
    def evaluate_model(self, name: str, model: torch.nn.Module | str) -> dict[str, dict]:
        """All configured tasks for one backbone (a module or a folder / hub id)."""
        source = model if isinstance(model, str) else type(model).__name__
        if isinstance(model, str):
            model = load_backbone(model, self.config.device)
        extractor = FeatureExtractor(model.to(self.config.device).eval())
        model_dir = self.output_dir / name
        feature_cache: dict = {}
        results = {}
        for task in self.tasks:
            started = time.perf_counter()
            if task in DENSE_TASKS:
                metrics, info = self._dense_task(name, task, extractor, feature_cache, model_dir)
            else:
                metrics, info = self._correspondence_task(name, extractor, model_dir)
            info.update(model=name, source=str(source), task=task, dataset=self.config.dataset,
                        seconds=round(time.perf_counter() - started, 2))
            report.write_json({"metrics": metrics, "info": info}, model_dir / f"{task}.json")
            results[task] = metrics
        if self.config.num_figures > 0:
            self._pca_figure(name, extractor, feature_cache, model_dir)
        self.results[name] = results
        from .save_heads import card_results  # model-card records: copy next to a distill run for its model-index

        report.write_json(card_results(results, self.config.dataset), model_dir / "eval_results.json")
        return results

    def _dense_task(self, name, task, extractor, feature_cache, model_dir):
        train, test = self.dense_dataset(task, "train"), self.dense_dataset(task, "test")
        probe = ProbeTask(task, self.config.probe_config(task))
        train_features = self._features(name, extractor, train, feature_cache)
        test_features = self._features(name, extractor, test, feature_cache)
        head = train_probe(probe, train_features, train, seed=self.config.seed, progress=self.config.progress)
        metrics, kept = evaluate_probe(head, test_features, test, task, keep=self.config.num_figures,
                                       progress=self.config.progress)
        if kept:
            report.save_dense_figures(task, test, kept, model_dir / "figures")
        if self.config.save_heads:
            from .save_heads import save_probe_model

            save_probe_model(task, head, extractor, test, metrics, model_dir / "heads" / task, model_name=name,
                             dataset_name=self.config.dataset)
        info = {"probe": asdict(probe.config), "train_images": len(train), "test_images": len(test),
                "feature_shape": list(train_features.patches.shape[1:]),
                "constant_baseline": constant_baseline(task, train, test)}
        return metrics, info

    def _correspondence_task(self, name, extractor, model_dir):
        from snd.metrics import correspondence_metrics

        pairs = self.pairs_dataset()
        predicted, reference, rotations = [], [], []
        for index in tqdm(range(len(pairs)), desc=f"{name} correspondence", leave=False, disable=not self.config.progress):
            item = pairs[index]
            features = extractor(torch.stack([item["image0"], item["image1"]]))
            matches = match_pair(
                features.patches[0], features.patches[1], item["depth0"], item["depth1"], item["intrinsics"],
                item["pose0"], item["pose1"], self.config.num_correspondences, self.config.matching_scale(),
            )
            predicted.append(matches.predicted.numpy())
            reference.append(matches.reference.numpy())
            rotations.append(matches.rotation_degrees)
            if index < self.config.num_figures:
                report.save_match_figure(item["image0"], item["image1"], matches,
                                         model_dir / "figures" / f"correspondence_{index:04d}.png")
        metrics = correspondence_metrics(predicted, reference, relative_rotations=rotations)
        info = {"pairs": len(pairs), "num_correspondences": self.config.num_correspondences,
                "scale": self.config.matching_scale(),
                "rotations_degrees": [round(r, 2) for r in rotations]}
        return metrics, info

    def _pca_figure(self, name, extractor, feature_cache, model_dir):
        if any(t in DENSE_TASKS for t in self.tasks):
            dataset = self.dense_dataset(next(t for t in self.tasks if t in DENSE_TASKS), "test")
            count = min(self.config.num_figures, len(dataset))
            images = torch.stack([dataset[i]["image"] for i in range(count)])
            patches = self._features(name, extractor, dataset, feature_cache).patches[:count]
        else:
            pairs = self.pairs_dataset()
            images = torch.stack([pairs[0]["image0"], pairs[0]["image1"]])
            patches = extractor(images).patches
        report.save_pca_figure(images, patches, model_dir / "figures" / "pca.png")

    def write_summary(self) -> dict[str, Path]:
        """results.json and comparison.md for every model evaluated so far."""
        results_path = report.write_json(self.results, self.output_dir / "results.json")
        from .protocols import PROTOCOL_VERSION, QUICK_LABEL

        header = (f"**{QUICK_LABEL}** (protocol `quick` version {PROTOCOL_VERSION}; `--protocol snd` reproduces "
                  "the published protocols).\n\n"
                  f"Dataset: {self.config.dataset}; tasks: {', '.join(self.tasks)}. "
                  "Probes on frozen features (see snd.eval.probes for the protocols).\n\n")
        table_path = report.write_text(header + report.comparison_table(self.results), self.output_dir / "comparison.md")
        return {"results": results_path, "table": table_path}


def constant_baseline(task: str, train, test) -> dict:
    """Metrics of a feature-free predictor fitted on the training set (mean depth, mean normal,
    most frequent class), to tell whether a probe learned anything from the features."""
    from snd.metrics import depth_metrics, normal_metrics, segmentation_metrics

    if len(train) * len(test) > 100_000 or len(test) > 2000:
        return {}
    if task == "depth":
        depths = torch.stack([train[i]["depth"] for i in range(len(train))])
        value = depths[(depths > 0) & (depths <= train.max_depth)].mean()
        truth = torch.stack([test[i]["depth"] for i in range(len(test))])
        truth = torch.where(truth <= test.max_depth, truth, torch.zeros_like(truth))
        keep = (truth > 0).flatten(1).any(1)
        return depth_metrics(torch.full_like(truth[keep], float(value)).numpy(), truth[keep].numpy(),
                             nyu_crop=test.nyu_crop)
    if task == "normals":
        total = sum((train[i]["normals"] * train[i]["normal_valid"]).sum((1, 2)) for i in range(len(train)))
        direction = torch.nn.functional.normalize(total, dim=0)
        truth = torch.stack([test[i]["normals"] for i in range(len(test))])
        valid = torch.stack([test[i]["normal_valid"] for i in range(len(test))])
        return normal_metrics(direction[None, :, None, None].expand_as(truth).numpy(), truth.numpy(), valid=valid.numpy())
    labels = torch.cat([train[i]["semantics"].flatten() for i in range(len(train))])
    labels = labels[labels != 255]
    majority = int(torch.bincount(labels, minlength=train.num_classes).argmax())
    truth = torch.stack([test[i]["semantics"] for i in range(len(test))])
    result = segmentation_metrics(torch.full_like(truth, majority).numpy(), truth.numpy(), num_classes=test.num_classes)
    result.pop("per_class_iou")
    return result


class _ImageView:
    """``dataset[i]["image"]`` as a sequence, for feature extraction."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        return self.dataset[index]["image"]


def evaluate_backbones(models, config: EvaluationConfig) -> dict[str, dict[str, dict]]:
    """Evaluate backbones and write the report.

    Args:
        models: a list of folders / hub ids, or a dict ``{display name: module or folder / hub id}``.
        config: the :class:`EvaluationConfig`.
    Returns:
        ``{model: {task: metrics}}`` (also in ``output_dir/results.json``).
    """
    if not isinstance(models, dict):
        models = {model_display_name(m): m for m in models}
    if not models:
        raise ValueError("no model to evaluate")
    evaluator = Evaluator(config)
    for name, model in models.items():
        evaluator.evaluate_model(name, model)
        evaluator.write_summary()  # after every model, so a long run leaves partial results
    return evaluator.results
