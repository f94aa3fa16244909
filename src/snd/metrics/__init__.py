"""Metrics as local Hugging Face `evaluate` modules, shipped inside the package.

Each metric lives at ``snd/metrics/<name>/<name>.py`` and loads offline::

    import snd.metrics
    depth = snd.metrics.load("depth")          # == evaluate.load(snd.metrics.metric_path("depth"))
    depth.compute(predictions=pred, references=gt)   # [N, H, W] arrays -> dict of floats

The same computations are importable as plain functions (no `evaluate` round trip), which is
what :mod:`snd.eval` uses on large arrays: :func:`depth_metrics`, :func:`normal_metrics`,
:func:`segmentation_metrics`, :func:`correspondence_metrics`.
"""

from __future__ import annotations

from pathlib import Path

from .correspondence.correspondence import correspondence_metrics
from .depth.depth import depth_metrics
from .mean_iou.mean_iou import segmentation_metrics
from .normals.normals import normal_metrics

METRIC_NAMES = ("depth", "normals", "mean_iou", "correspondence")

__all__ = [
    "METRIC_NAMES",
    "correspondence_metrics",
    "depth_metrics",
    "load",
    "metric_path",
    "normal_metrics",
    "segmentation_metrics",
]


def metric_path(name: str) -> str:
    """Folder of the packaged `evaluate` module ``name`` (pass it to ``evaluate.load``)."""
    if name not in METRIC_NAMES:
        raise ValueError(f"unknown snd metric {name!r}; available: {', '.join(METRIC_NAMES)}")
    return str(Path(__file__).resolve().parent / name)


def load(name: str, **kwargs):
    """``evaluate.load`` of a packaged metric, offline (no hub lookup)."""
    import evaluate

    return evaluate.load(metric_path(name), **kwargs)
