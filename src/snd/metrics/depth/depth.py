"""Monocular depth metrics (RMSE, AbsRel, delta thresholds) as a local `evaluate` module.

Load it offline with ``evaluate.load("<path to this folder>")`` or ``snd.metrics.load("depth")``.

Aggregation follows Probe3D: each metric is computed per image over the pixels whose ground
truth is valid (``> 0``, optionally inside ``[min_depth, max_depth]`` and the NYU/Eigen crop),
then averaged over images. ``aggregation="pixel"`` pools all valid pixels of all images instead.
Images without a single valid pixel are skipped (Probe3D would count them as RMSE 0).
"""

from __future__ import annotations

from functools import partial

import datasets
import evaluate
import numpy as np

from snd.metrics._checks import as_float_array, check_finite, check_thresholds

_DESCRIPTION = """Depth metrics: rmse, abs_rel, d1/d2/d3 (fraction of valid pixels with
max(pred/gt, gt/pred) < 1.25, 1.25^2, 1.25^3). Invalid ground truth (<= 0) is ignored."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: depth maps shaped [N, H, W] (metres).
    references: ground-truth depth maps shaped [N, H, W]; values <= 0 are invalid.
    min_depth (float, optional): ground truth below this is invalid too.
    max_depth (float, optional): ground truth above this is invalid too.
    nyu_crop (bool): evaluate only inside the Eigen crop rows 45:471, cols 41:601 (needs 480 x 640).
    aggregation (str): "image" (per image, then mean over images; default) or "pixel" (pooled).
Returns:
    dict of floats: rmse, abs_rel, d1, d2, d3, num_images.
"""

_CITATION = """@inproceedings{elbanani2024probing, title={Probing the 3D Awareness of Visual Foundation Models},
author={El Banani, Mohamed and others}, booktitle={CVPR}, year={2024}}"""

# Eigen et al. crop used by most NYUv2 depth benchmarks (rows, cols) on 480 x 640 images.
NYU_CROP = (slice(45, 471), slice(41, 601))


_as_float_array = partial(as_float_array, metric="depth")
_check_finite = partial(check_finite, metric="depth")
_check_thresholds = partial(check_thresholds, metric="depth")


def depth_metrics(
    predictions,
    references,
    min_depth: float | None = None,
    max_depth: float | None = None,
    nyu_crop: bool = False,
    aggregation: str = "image",
) -> dict[str, float]:
    """Pure-numpy implementation behind the `evaluate` module (usable without it)."""
    predictions = _as_float_array(predictions, "predictions")
    references = _as_float_array(references, "references")
    if predictions.ndim == 2:
        predictions, references = predictions[None], references[None]
    if predictions.shape != references.shape or predictions.ndim != 3:
        raise ValueError(
            f"depth: predictions {predictions.shape} and references {references.shape} must both be [N, H, W]"
        )
    if predictions.size == 0:
        raise ValueError(f"depth: predictions {predictions.shape} and references {references.shape} hold no pixel")
    if aggregation not in ("image", "pixel"):
        raise ValueError(f"depth: aggregation must be 'image' or 'pixel', got {aggregation!r}")
    for name, value in (("min_depth", min_depth), ("max_depth", max_depth)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float, np.number))
                                  or not np.isfinite(value) or value < 0):
            raise ValueError(f"depth: `{name}` must be a finite number >= 0 (metres) or None, got {value!r}")
    if min_depth is not None and max_depth is not None and not min_depth < max_depth:
        raise ValueError(f"depth: `min_depth` ({min_depth}) must be below `max_depth` ({max_depth})")
    _check_finite(predictions, "predictions")
    if nyu_crop:
        if predictions.shape[-2:] != (480, 640):
            raise ValueError(f"depth: nyu_crop needs 480 x 640 maps, got {predictions.shape[-2:]}")
        predictions = predictions[(slice(None),) + NYU_CROP]
        references = references[(slice(None),) + NYU_CROP]

    valid = np.isfinite(references) & (references > 0)
    if min_depth is not None:
        valid &= references >= min_depth
    if max_depth is not None:
        valid &= references <= max_depth

    with np.errstate(divide="ignore", invalid="ignore"):
        squared_error = (predictions - references) ** 2
        relative_error = np.abs(predictions - references) / references
        # A non-positive prediction can never be within a ratio threshold.
        ratio = np.where(
            predictions > 0, np.maximum(predictions / references, references / predictions), np.inf
        )

    def reduce(values: np.ndarray) -> np.ndarray:
        if aggregation == "pixel":
            return values[valid].mean(keepdims=True)
        per_image = [values[i][valid[i]].mean() for i in range(len(values)) if valid[i].any()]
        return np.asarray(per_image)

    if not valid.any():
        raise ValueError("depth: no valid ground-truth pixel (all references <= 0 or outside the range)")
    # Root taken per image (Probe3D), or once over the pooled pixels.
    rmse = np.sqrt(reduce(squared_error))
    results = {
        "rmse": float(rmse.mean()),
        "abs_rel": float(reduce(relative_error).mean()),
        "d1": float(reduce((ratio < 1.25).astype(np.float64)).mean()),
        "d2": float(reduce((ratio < 1.25**2).astype(np.float64)).mean()),
        "d3": float(reduce((ratio < 1.25**3).astype(np.float64)).mean()),
        "num_images": float(valid.reshape(len(valid), -1).any(axis=1).sum()),
    }
    return results


class Depth(evaluate.Metric):
    __doc__ = _DESCRIPTION + _KWARGS_DESCRIPTION

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Sequence(datasets.Value("float32"))),
                    "references": datasets.Sequence(datasets.Sequence(datasets.Value("float32"))),
                }
            ),
        )

    def _compute(self, predictions, references, min_depth=None, max_depth=None, nyu_crop=False, aggregation="image"):
        return depth_metrics(
            predictions, references, min_depth=min_depth, max_depth=max_depth, nyu_crop=nyu_crop, aggregation=aggregation
        )
