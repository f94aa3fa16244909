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
    num_labels (int): number of classes, as the Hub's `mean_iou` metric (`num_classes` is the same, kept for
        existing code); labels outside [0, num_labels) other than the ignore index are an error.
    ignore_index (int): ground-truth label to skip; default 255.
    reduce_labels (bool): as the Hub's `mean_iou`: reference label 0 becomes the ignore index (255) and every
        other reference label is decreased by one (ADE20K's "0 = unlabelled"). Default False.
    label_map (dict, optional): as the Hub's `mean_iou`: reference label ids replaced before reduce_labels.
    nan_to_num (float, optional): as the Hub's `mean_iou`: replaces NaN in the results.
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


#: Largest class count: the confusion matrix holds num_labels^2 int64 counts (11,585 classes = 1 GiB).
MAX_LABELS = 11_585


def _label_array(values, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.dtype.kind in "iub":
        return array
    if array.dtype.kind == "f":
        finite = np.isfinite(array)
        if not finite.all() or (array != np.round(array)).any():
            bad = ~finite | (array != np.round(np.nan_to_num(array)))
            index = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"mean_iou: `{name}` must hold integer class ids; first {float(array[index])!r} at index {index}")
        return array.astype(np.int64)
    raise ValueError(f"mean_iou: `{name}` must hold integer class ids, got dtype {array.dtype}")


def segmentation_metrics(predictions, references, num_classes: int | None = None, ignore_index: int = 255,
                         aggregation="pixel", num_labels: int | None = None, reduce_labels: bool = False,
                         label_map: dict | None = None, nan_to_num: float | None = None):
    """Pure-numpy implementation behind the `evaluate` module (usable without it). `num_labels`, `reduce_labels`,
    `label_map` and `nan_to_num` mean what they mean in the Hub's `mean_iou` metric; `num_classes` = `num_labels`."""
    if num_labels is not None and num_classes is not None and int(num_labels) != int(num_classes):
        raise ValueError(f"mean_iou: num_labels ({num_labels}) and num_classes ({num_classes}) disagree; pass one")
    num_classes = num_labels if num_labels is not None else num_classes
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer))
                                    or not 1 <= num_classes <= MAX_LABELS):
        raise ValueError(f"mean_iou: num_labels must be an integer in [1, {MAX_LABELS}], got {num_classes!r}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
        raise ValueError(f"mean_iou: ignore_index must be an integer label, got {ignore_index!r}")
    predictions = _label_array(predictions, "predictions")
    references = _label_array(references, "references")
    if label_map:
        mapped = references.copy()
        for old, new in label_map.items():
            mapped[references == old] = new
        references = mapped
    if reduce_labels:
        references = np.where(references == 0, 255, references - 1)
        references = np.where(references == 254, 255, references)
    if predictions.ndim == 2:
        predictions, references = predictions[None], references[None]
    if predictions.shape != references.shape or predictions.ndim != 3:
        raise ValueError(
            f"mean_iou: predictions {predictions.shape} and references {references.shape} must both be [N, H, W]"
        )
    if predictions.size == 0:
        raise ValueError(f"mean_iou: predictions {predictions.shape} and references {references.shape} hold no pixel")
    if num_classes is None or int(num_classes) < 1:
        raise ValueError("mean_iou: num_labels (a positive int) is required")
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
        raise ValueError(f"mean_iou: every reference pixel is the ignore index (ignore_index={ignore_index})")

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
    result = {
        "mean_iou": float(100.0 * mean_iou),
        "pixel_accuracy": float(100.0 * accuracy),
        "per_class_iou": [float(100.0 * v) for v in per_class],
        "num_images": float(sum(c.sum() > 0 for c in confusions)),
    }
    if nan_to_num is not None:
        result = {k: [nan_to_num if np.isnan(x) else x for x in v] if isinstance(v, list) else
                  (nan_to_num if np.isnan(v) else v) for k, v in result.items()}
    return result


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

    def _compute(self, predictions, references, num_labels=None, ignore_index=255, nan_to_num=None, label_map=None,
                 reduce_labels=False, num_classes=None, aggregation="pixel"):
        return segmentation_metrics(
            predictions, references, num_classes=num_classes, ignore_index=ignore_index, aggregation=aggregation,
            num_labels=num_labels, reduce_labels=reduce_labels, label_map=label_map, nan_to_num=nan_to_num,
        )
