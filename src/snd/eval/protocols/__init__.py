"""Evaluation protocols: ``snd`` (the authors' published protocols, exactly) and ``quick``.

* ``snd`` (default for real datasets): each task as the SnD authors ran it, from their released
  evaluation code (``evaluation1/``: FiT3D-style depth and segmentation linear probes;
  ``evaluation2/``: Probe3D surface normals and ScanNet correspondence). Iteration-based mmcv
  schedules, augmentation on images every iteration, features from the frozen backbone computed
  per iteration. Task modules: :mod:`.depth`, :mod:`.segmentation`, :mod:`.normals`,
  :mod:`.correspondence`; each exposes ``run(backbone, data_dir, *, dataset, max_iters,
  output_dir, device, seed=0, batch_size=None) -> dict`` returning ``metrics`` and ``settings``.
* ``quick``: the cached-feature probes of :mod:`snd.eval.runner` (short schedules on cached,
  un-augmented features); for the synthetic benchmark and CPU smoke runs. Its numbers are **not
  comparable with published numbers**, and every table it writes says so.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

# 1.1: timm position-embedding resampling (depth, segmentation), torch-default segmentation head init,
# NYUv2 segmentation test set per model size, OpenCV nearest-neighbour label rescale (issue 19).
PROTOCOL_VERSION = "1.1"
PROTOCOLS = ("snd", "quick")
TASKS = ("depth", "segmentation", "normals", "correspondence")
QUICK_LABEL = "quick protocol: NOT comparable with published numbers"

# task -> module under snd.eval.protocols
TASK_MODULES = {
    "depth": "depth",
    "segmentation": "segmentation",
    "normals": "normals",
    "correspondence": "correspondence",
}

# datasets each task accepts under --protocol snd
TASK_DATASETS = {
    "depth": ("nyuv2", "scannet", "scannetpp"),
    "segmentation": ("nyuv2", "scannet", "scannetpp"),
    "normals": ("nyuv2",),
    "correspondence": ("scannet_pairs",),
}


def task_module(task: str):
    """The module implementing ``task`` under the snd protocol (imported on first use)."""
    if task not in TASK_MODULES:
        raise ValueError(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")
    try:
        return importlib.import_module(f"{__name__}.{TASK_MODULES[task]}")
    except ModuleNotFoundError as error:
        if error.name == f"{__name__}.{TASK_MODULES[task]}":
            raise NotImplementedError(f"--protocol snd has no implementation of task {task!r} yet") from error
        raise


def resolve_tasks(tasks, dataset: str) -> list[str]:
    """``all`` -> every task the dataset serves under the snd protocol, in a fixed order."""
    tasks = list(tasks or ["all"])
    if "all" in tasks:
        return [task for task in TASKS if dataset in TASK_DATASETS[task]]
    for task in tasks:
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")
        if dataset not in TASK_DATASETS[task]:
            raise ValueError(f"--protocol snd: task {task!r} runs on {', '.join(TASK_DATASETS[task])}, not {dataset!r}")
    return tasks


def interpolation_warning(backbone, name: str) -> str | None:
    """A warning for transformers' Dinov2 models: they resize position embeddings their own way, while the authors'
    depth and segmentation probes ran a timm DINOv2 (bicubic, antialiased, to the exact grid) and their normals and
    correspondence probes the original DINOv2 code; at 35 x 46 patches the features differ. An SnD model
    (e.g. converted from the torch.hub checkpoint) is switched to each task's resampling by ``--protocol snd``."""
    if type(backbone).__name__ in ("Dinov2Model", "Dinov2WithRegistersModel"):
        return (f"{name} is a transformers {type(backbone).__name__}: it resizes position embeddings differently from "
                "the timm (depth, segmentation) and original DINOv2 (normals, correspondence) code the authors evaluated; "
                "to reproduce the published DINOv2 row, load the torch.hub checkpoint (e.g. dinov2_vits14_pretrain.pth) "
                "so it is converted to an SnD model, whose resampling --protocol snd sets per task")
    return None


def run_task(task: str, backbone, data_dir, *, dataset: str, max_iters: int | None = None, output_dir=None,
             device=None, seed: int = 0, batch_size: int | None = None, **kwargs) -> dict:
    """Run one task of the snd protocol (see the task modules) and return its result dict."""
    if dataset not in TASK_DATASETS.get(task, ()):
        raise ValueError(f"--protocol snd: task {task!r} runs on {', '.join(TASK_DATASETS.get(task, ()))}, "
                         f"not {dataset!r}")
    module = task_module(task)
    return module.run(backbone, data_dir, dataset=dataset, max_iters=max_iters, output_dir=output_dir, device=device,
                      seed=seed, batch_size=batch_size, **kwargs)


def evaluate_snd(models, *, tasks, dataset: str, data_dir, output_dir, max_iters: int | None = None, device=None,
                 seed: int = 0, batch_size: int | None = None, max_test_images: int | None = None,
                 num_workers: int | None = None, warn=print, progress: bool = True,
                 nyu_test_set: str | None = None) -> dict:
    """Every model x task under the snd protocol; writes ``results.json`` and ``comparison.md``.

    ``models``: names or paths (loaded with :func:`snd.eval.features.load_backbone`) or a dict
    ``name -> nn.Module``. Returns ``{model: {task: result}}``.
    """
    from ..features import load_backbone, model_display_name
    from ..report import protocol_table, write_json, write_text
    from .common import resolve_device
    from .models import model_choice_warning

    device = resolve_device(device)
    output_dir = Path(output_dir)
    tasks = resolve_tasks(tasks, dataset)
    items = models.items() if isinstance(models, dict) else [(m, m) for m in models]
    results: dict[str, dict] = {}
    for source_name, model in items:
        name = model_display_name(source_name) if isinstance(source_name, str) else str(source_name)
        backbone = load_backbone(model, device=device) if isinstance(model, str) else model
        results[name] = {}
        message = interpolation_warning(backbone, name)
        if message:
            warn(f"warning: {message}")
        for task in tasks:
            message = model_choice_warning(str(source_name), task)
            if message:
                warn(f"warning: {message}")
            extra = {"progress": progress}
            if max_test_images is not None and task in ("depth", "segmentation"):
                extra["max_test_images"] = max_test_images
            if num_workers is not None and task in ("depth", "segmentation", "normals"):
                extra["num_workers"] = num_workers
            if nyu_test_set is not None and task == "segmentation":
                extra["nyu_test_set"] = nyu_test_set
            results[name][task] = run_task(task, backbone, data_dir, dataset=dataset, max_iters=max_iters,
                                           output_dir=output_dir / name, device=device, seed=seed,
                                           batch_size=batch_size, **extra)
    write_json({"protocol": "snd", "protocol_version": PROTOCOL_VERSION, "dataset": dataset, "results": results},
               output_dir / "results.json")
    write_text(protocol_table(results, protocol="snd", version=PROTOCOL_VERSION, dataset=dataset),
               output_dir / "comparison.md")
    return results


def dump_settings(result: dict) -> str:
    return json.dumps(result.get("settings", {}), indent=2, default=str)
