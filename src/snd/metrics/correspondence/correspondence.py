"""Correspondence recall (Probe3D ScanNet protocol) as a local `evaluate` module.

Load it offline with ``evaluate.load("<path to this folder>")`` or ``snd.metrics.load("correspondence")``.

Each example is one image pair: ``predictions`` are the matched pixel positions in the second
image ``[K, 2]`` and ``references`` the true positions of the same source points ``[K, 2]``
(both in the evaluation resolution, e.g. 1/4 scale). A match is correct when the 2D error is
below a threshold. Aggregation follows Probe3D: recall per pair, then the mean over pairs
(identical to pooling when every pair has the same number of matches); ``aggregation="pixel"``
pools all matches. With ``relative_rotations`` (degrees per pair), the per-pair recall at
``binned_threshold`` is averaged inside each rotation bin, as Probe3D's binned table does.
"""

from __future__ import annotations

from functools import partial

import datasets
import evaluate
import numpy as np

from snd.metrics._checks import as_float_array, check_finite, check_thresholds

_DESCRIPTION = "Correspondence recall at pixel thresholds, optionally binned by relative camera rotation."

_KWARGS_DESCRIPTION = """
Args:
    predictions: per pair, matched positions [K, 2] (x, y pixels).
    references: per pair, true positions [K, 2].
    thresholds: pixel thresholds; default (5, 10, 20).
    relative_rotations (optional): per pair relative rotation angle in degrees [N].
    rotation_bins: bin edges in degrees; default (0, 15, 30, 60, 180).
    binned_threshold: threshold used for the binned recall; default 10.
    aggregation: "image" (per pair, then mean; default) or "pixel" (pooled).
Returns:
    dict of floats (percent): recall_5px, recall_10px, recall_20px and, with rotations,
    recall_10px_rot_0_15, ... (NaN for an empty bin), plus num_pairs.
"""

_CITATION = """@inproceedings{elbanani2024probing, title={Probing the 3D Awareness of Visual Foundation Models},
author={El Banani, Mohamed and others}, booktitle={CVPR}, year={2024}}"""

DEFAULT_THRESHOLDS = (5, 10, 20)
DEFAULT_ROTATION_BINS = (0, 15, 30, 60, 180)


_as_float_array = partial(as_float_array, metric="correspondence")
_check_finite = partial(check_finite, metric="correspondence")
_check_thresholds = partial(check_thresholds, metric="correspondence")


def _name(value: float) -> str:
    return f"{value:g}"


def correspondence_metrics(
    predictions,
    references,
    thresholds=DEFAULT_THRESHOLDS,
    relative_rotations=None,
    rotation_bins=DEFAULT_ROTATION_BINS,
    binned_threshold: float = 10,
    aggregation: str = "image",
):
    """Pure-numpy implementation behind the `evaluate` module (usable without it)."""
    if aggregation not in ("image", "pixel"):
        raise ValueError(f"correspondence: aggregation must be 'image' or 'pixel', got {aggregation!r}")
    if len(predictions) != len(references):
        raise ValueError(f"correspondence: {len(predictions)} predicted pairs but {len(references)} references")
    _check_thresholds(thresholds)
    _check_thresholds(binned_threshold, "binned_threshold")
    errors = []
    for index, (predicted, reference) in enumerate(zip(predictions, references)):
        predicted = _as_float_array(predicted, f"predictions[{index}]")
        reference = _as_float_array(reference, f"references[{index}]")
        for name, points in (("predictions", predicted), ("references", reference)):
            if points.size % 2 or (points.ndim > 1 and points.shape[-1] != 2):
                raise ValueError(f"correspondence: pair {index}: `{name}` has shape {points.shape}; expected [K, 2] pixel positions")
            _check_finite(points, f"{name}[{index}] (pair {index})")
        predicted, reference = predicted.reshape(-1, 2), reference.reshape(-1, 2)
        if predicted.shape != reference.shape:
            raise ValueError(
                f"correspondence: pair {index} has {predicted.shape} predicted but {reference.shape} true positions"
            )
        errors.append(np.linalg.norm(predicted - reference, axis=-1))
    kept = [e for e in errors if len(e) > 0]
    if not kept:
        raise ValueError("correspondence: no pair has any correspondence")

    def recall(threshold: float, pairs) -> float:
        if aggregation == "pixel":
            return float(100.0 * (np.concatenate(pairs) < threshold).mean())
        return float(100.0 * np.mean([(e < threshold).mean() for e in pairs]))

    results = {f"recall_{_name(t)}px": recall(t, kept) for t in thresholds}
    if relative_rotations is not None:
        rotations = np.asarray(relative_rotations, dtype=np.float64).reshape(-1)
        if len(rotations) != len(errors):
            raise ValueError(f"correspondence: {len(rotations)} rotations for {len(errors)} pairs")
        _check_finite(rotations, "relative_rotations")
        bins = np.asarray(rotation_bins, dtype=np.float64).reshape(-1)
        if bins.size < 2 or not np.isfinite(bins).all() or not (np.diff(bins) > 0).all():
            raise ValueError(f"correspondence: `rotation_bins` must be at least two increasing finite edges, got {rotation_bins!r}")
        per_pair = np.array([(e < binned_threshold).mean() if len(e) else np.nan for e in errors])
        for low, high in zip(rotation_bins[:-1], rotation_bins[1:]):
            inside = (rotations >= low) & (rotations < high) & np.isfinite(per_pair)
            key = f"recall_{_name(binned_threshold)}px_rot_{_name(low)}_{_name(high)}"
            results[key] = float(100.0 * per_pair[inside].mean()) if inside.any() else float("nan")
    results["num_pairs"] = float(len(kept))
    return results


class Correspondence(evaluate.Metric):
    __doc__ = _DESCRIPTION + _KWARGS_DESCRIPTION

    def _info(self):
        nested = datasets.Sequence(datasets.Sequence(datasets.Value("float32")))
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": nested, "references": nested}),
        )

    def _compute(
        self,
        predictions,
        references,
        thresholds=DEFAULT_THRESHOLDS,
        relative_rotations=None,
        rotation_bins=DEFAULT_ROTATION_BINS,
        binned_threshold=10,
        aggregation="image",
    ):
        return correspondence_metrics(
            predictions,
            references,
            thresholds=thresholds,
            relative_rotations=relative_rotations,
            rotation_bins=rotation_bins,
            binned_threshold=binned_threshold,
            aggregation=aggregation,
        )
