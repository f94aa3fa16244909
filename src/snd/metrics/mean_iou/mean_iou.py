"""Semantic segmentation metrics (mIoU, per-class IoU, pixel accuracy) as a local `evaluate` module.

Load it offline with ``evaluate.load("<path to this folder>")`` or ``snd.metrics.load("mean_iou")``.

Default aggregation is ``"pixel"``: intersections and unions are summed over the whole set before
dividing, as mmsegmentation (and therefore FiT3D/SnD's published mIoU) does. ``aggregation="image"``
computes mIoU and accuracy per image (over the classes present in its prediction or ground truth)
and averages over images, like the other Probe3D-style metrics. Classes with an empty union are
left out of the mean (reported as NaN in ``per_class_iou``).
"""

from __future__ import annotations

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Segmentation metrics: mean IoU, per-class IoU and pixel accuracy, with an ignore index."

_KWARGS_DESCRIPTION = """
Args:
    predictions: class maps shaped [N, H, W] (ints).
    references: ground-truth class maps shaped [N, H, W] (ints).
    num_classes (int): number of classes; labels outside [0, num_classes) other than the ignore
        index are an error.
    ignore_index (int): ground-truth label to skip; default 255.
    aggregation (str): "pixel" (dataset-level sums, mmseg convention; default) or "image".
Returns:
    dict: mean_iou (percent), pixel_accuracy (percent), per_class_iou (list of percents, NaN for
    classes absent from both prediction and ground truth), num_images.
"""

_CITATION = ""


def _confusion(prediction: np.ndarray, reference: np.ndarray, num_classes: int) -> np.ndarray:
    index = reference.astype(np.int64) * num_classes + prediction.astype(np.int64)
    return np.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _iou_from_confusion(confusion: np.ndarray) -> np.ndarray:
    intersection = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - intersection
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, intersection / union, np.nan)


def segmentation_metrics(predictions, references, num_classes: int, ignore_index: int = 255, aggregation="pixel"):
    """Pure-numpy implementation behind the `evaluate` module (usable without it)."""
    predictions = np.asarray(predictions)
    references = np.asarray(references)
    if predictions.ndim == 2:
        predictions, references = predictions[None], references[None]
    if predictions.shape != references.shape or predictions.ndim != 3:
        raise ValueError(
            f"mean_iou: predictions {predictions.shape} and references {references.shape} must both be [N, H, W]"
        )
    if num_classes is None or int(num_classes) < 1:
        raise ValueError("mean_iou: num_classes (a positive int) is required")
    num_classes = int(num_classes)
    if aggregation not in ("image", "pixel"):
        raise ValueError(f"mean_iou: aggregation must be 'image' or 'pixel', got {aggregation!r}")
    valid = references != ignore_index
    bad_reference = valid & ((references < 0) | (references >= num_classes))
    if bad_reference.any():
        raise ValueError(
            f"mean_iou: reference label {references[bad_reference][0]} outside [0, {num_classes}) "
            f"and not the ignore index {ignore_index}"
        )
    bad_prediction = valid & ((predictions < 0) | (predictions >= num_classes))
    if bad_prediction.any():
        raise ValueError(f"mean_iou: predicted label {predictions[bad_prediction][0]} outside [0, {num_classes})")
    if not valid.any():
        raise ValueError("mean_iou: every reference pixel is the ignore index")

    confusions = [_confusion(predictions[i][valid[i]], references[i][valid[i]], num_classes) for i in range(len(predictions))]
    total = np.sum(confusions, axis=0)
    per_class = _iou_from_confusion(total)
    if aggregation == "pixel":
        mean_iou = np.nanmean(per_class)
        accuracy = np.trace(total) / total.sum()
    else:
        kept = [c for c in confusions if c.sum() > 0]
        mean_iou = np.mean([np.nanmean(_iou_from_confusion(c)) for c in kept])
        accuracy = np.mean([np.trace(c) / c.sum() for c in kept])
    return {
        "mean_iou": float(100.0 * mean_iou),
        "pixel_accuracy": float(100.0 * accuracy),
        "per_class_iou": [float(100.0 * v) for v in per_class],
        "num_images": float(sum(c.sum() > 0 for c in confusions)),
    }


class MeanIoU(evaluate.Metric):
    __doc__ = _DESCRIPTION + _KWARGS_DESCRIPTION

    def _info(self):
        nested = datasets.Sequence(datasets.Sequence(datasets.Value("int64")))
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": nested, "references": nested}),
        )

    def _compute(self, predictions, references, num_classes=None, ignore_index=255, aggregation="pixel"):
        return segmentation_metrics(
            predictions, references, num_classes=num_classes, ignore_index=ignore_index, aggregation=aggregation
        )
