"""Surface-normal metrics (angular error statistics) as a local `evaluate` module.

Load it offline with ``evaluate.load("<path to this folder>")`` or ``snd.metrics.load("normals")``.

The angular error of a pixel is ``acos(cos_sim(pred, gt))`` in degrees (predictions need not be
unit length). Aggregation follows Probe3D: per image over its valid pixels, then the mean over
images; ``aggregation="pixel"`` pools all valid pixels instead (the median is then the global one).
"""

from __future__ import annotations

from functools import partial

import datasets
import evaluate
import numpy as np

from snd.metrics._checks import as_float_array, check_finite, check_thresholds

_DESCRIPTION = """Surface-normal metrics: angular rmse, mean and median (degrees) and the
percentage of pixels within 11.25, 22.5 and 30 degrees."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: normal maps shaped [N, 3, H, W] (any length; compared by angle).
    references: ground-truth normal maps shaped [N, 3, H, W].
    valid (optional): boolean masks [N, H, W]; default all pixels. Pixels whose ground truth is
        not finite are always invalid; zero-length ones too unless ``zero_normals="count_90"``.
    thresholds: angles in degrees for the "within" percentages; default (11.25, 22.5, 30).
    aggregation (str): "image" (default) or "pixel".
    zero_normals (str): "exclude" (default) drops pixels whose ground truth has zero length;
        "count_90" keeps those inside ``valid`` with an error of 90 degrees, as Probe3D's
        ``evaluate_surface_norm`` does (cosine similarity 0 against a zero vector) and as the
        published Probe3D / SnD normals numbers were computed.
Returns:
    dict of floats: rmse, mean, median, within_11.25, within_22.5, within_30 (percent), num_images.
"""

_CITATION = """@inproceedings{elbanani2024probing, title={Probing the 3D Awareness of Visual Foundation Models},
author={El Banani, Mohamed and others}, booktitle={CVPR}, year={2024}}"""

DEFAULT_THRESHOLDS = (11.25, 22.5, 30.0)


_as_float_array = partial(as_float_array, metric="normals")
_check_finite = partial(check_finite, metric="normals")
_check_thresholds = partial(check_thresholds, metric="normals")


def angular_error_degrees(predictions: np.ndarray, references: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """[N, 3, H, W] x [N, 3, H, W] -> [N, H, W] angle between the vectors, in degrees."""
    dot = (predictions * references).sum(axis=1)
    norms = np.linalg.norm(predictions, axis=1) * np.linalg.norm(references, axis=1)
    cosine = np.clip(dot / np.maximum(norms, eps), -1.0, 1.0)
    return np.degrees(np.arccos(cosine))


def _format_threshold(threshold: float) -> str:
    return f"{threshold:g}"


ZERO_NORMALS = ("exclude", "count_90")


def normal_metrics(predictions, references, valid=None, thresholds=DEFAULT_THRESHOLDS, aggregation="image",
                   zero_normals="exclude"):
    """Pure-numpy implementation behind the `evaluate` module (usable without it)."""
    predictions = _as_float_array(predictions, "predictions")
    references = _as_float_array(references, "references")
    if predictions.ndim == 3:
        predictions, references = predictions[None], references[None]
    if predictions.shape != references.shape or predictions.ndim != 4 or predictions.shape[1] != 3:
        raise ValueError(
            f"normals: predictions {predictions.shape} and references {references.shape} must both be [N, 3, H, W]"
        )
    if aggregation not in ("image", "pixel"):
        raise ValueError(f"normals: aggregation must be 'image' or 'pixel', got {aggregation!r}")
    if zero_normals not in ZERO_NORMALS:
        raise ValueError(f"normals: zero_normals must be one of {ZERO_NORMALS}, got {zero_normals!r}")
    if predictions.size == 0:
        raise ValueError(f"normals: predictions {predictions.shape} and references {references.shape} hold no pixel")
    _check_thresholds(thresholds)
    _check_finite(predictions, "predictions")
    mask = np.isfinite(references).all(axis=1)
    zero_length = np.linalg.norm(np.nan_to_num(references), axis=1) == 0  # [N, H, W]
    if zero_normals == "exclude":
        mask &= ~zero_length
    if valid is not None:
        valid = np.asarray(valid).astype(bool)
        if valid.ndim == 2:
            valid = valid[None]
        if valid.shape != mask.shape:
            raise ValueError(f"normals: valid mask has shape {valid.shape}, expected {mask.shape} ([N, H, W])")
        mask &= valid
    if not mask.any():
        raise ValueError("normals: no valid pixel: every one of the `references` normals is non-finite or zero-length, or masked by `valid`")
    errors = angular_error_degrees(np.nan_to_num(predictions), np.nan_to_num(references))
    if zero_normals == "count_90":
        errors = np.where(zero_length, 90.0, errors)  # Probe3D: cos_sim(x, 0) = 0 -> 90 degrees

    if aggregation == "pixel":
        groups = [errors[mask]]
    else:
        groups = [errors[i][mask[i]] for i in range(len(errors)) if mask[i].any()]
    results = {
        "rmse": float(np.mean([np.sqrt(np.mean(g**2)) for g in groups])),
        "mean": float(np.mean([g.mean() for g in groups])),
        "median": float(np.mean([np.median(g) for g in groups])),
    }
    for threshold in thresholds:
        results[f"within_{_format_threshold(threshold)}"] = float(
            100.0 * np.mean([(g < threshold).mean() for g in groups])
        )
    results["num_images"] = float(mask.reshape(len(mask), -1).any(axis=1).sum())
    return results


class Normals(evaluate.Metric):
    __doc__ = _DESCRIPTION + _KWARGS_DESCRIPTION

    def _info(self):
        nested = datasets.Sequence(datasets.Sequence(datasets.Sequence(datasets.Value("float32"))))
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": nested, "references": nested}),
        )

    def _compute(self, predictions, references, valid=None, thresholds=DEFAULT_THRESHOLDS, aggregation="image",
                 zero_normals="exclude"):
        return normal_metrics(predictions, references, valid=valid, thresholds=thresholds, aggregation=aggregation,
                              zero_normals=zero_normals)
