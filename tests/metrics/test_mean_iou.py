import math

import numpy as np
import pytest

import snd.metrics
from snd.metrics import segmentation_metrics


def _maps():
    reference = np.array([[[0, 0, 1, 1], [2, 2, 255, 1]]])
    prediction = np.array([[[0, 1, 1, 1], [2, 0, 2, 1]]])
    return prediction, reference


def test_mean_iou_hand_computed():
    prediction, reference = _maps()
    # Valid pixels (7): gt 0 0 1 1 2 2 1, pred 0 1 1 1 2 0 1.
    # class 0: inter 1, union |{gt0}|=2 + |{pred0}|=2 - 1 = 3 -> 1/3
    # class 1: inter 3, union 3 + 4 - 3 = 4 -> 3/4
    # class 2: inter 1, union 2 + 1 - 1 = 2 -> 1/2 ; class 3 absent -> NaN
    result = segmentation_metrics(prediction, reference, num_classes=4)
    expected = [100 / 3, 75.0, 50.0]
    assert result["per_class_iou"][:3] == pytest.approx(expected)
    assert math.isnan(result["per_class_iou"][3])
    assert result["mean_iou"] == pytest.approx(np.mean(expected))
    assert result["pixel_accuracy"] == pytest.approx(100 * 5 / 7)


def test_mean_iou_image_vs_pixel_aggregation():
    reference = np.array([[[0, 0]], [[1, 1]]])
    prediction = np.array([[[0, 1]], [[1, 1]]])
    # pooled: class0 1/1... inter 1, union 2+1-1=2 -> 0.5 ; class1 inter 2, union 2+3-2=3 -> 2/3
    pooled = segmentation_metrics(prediction, reference, num_classes=2)
    assert pooled["mean_iou"] == pytest.approx(100 * (0.5 + 2 / 3) / 2)
    # per image: image0 classes {0: 1/2, 1: 0/1} -> 0.25; image1 {1: 1} -> 1 -> mean 0.625
    per_image = segmentation_metrics(prediction, reference, num_classes=2, aggregation="image")
    assert per_image["mean_iou"] == pytest.approx(62.5)
    assert per_image["pixel_accuracy"] == pytest.approx(75.0)


def test_mean_iou_bad_labels():
    with pytest.raises(ValueError, match="outside"):
        segmentation_metrics(np.zeros((1, 2, 2), int), np.full((1, 2, 2), 7), num_classes=3)
    with pytest.raises(ValueError, match="ignore index"):
        segmentation_metrics(np.zeros((1, 2, 2), int), np.full((1, 2, 2), 255), num_classes=3)


def test_mean_iou_evaluate_module_matches():
    prediction, reference = _maps()
    result = snd.metrics.load("mean_iou").compute(
        predictions=prediction, references=reference, num_classes=4, ignore_index=255
    )
    assert result["mean_iou"] == pytest.approx(segmentation_metrics(prediction, reference, 4)["mean_iou"])
