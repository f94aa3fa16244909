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


def test_mean_iou_takes_the_hub_metrics_arguments():
    """`num_labels`, `ignore_index`, `reduce_labels`, `label_map`, `nan_to_num` as in the Hub's `evaluate` mean_iou."""
    rng = np.random.default_rng(3)
    predictions = rng.integers(0, 3, size=(2, 5, 6))
    references = rng.integers(0, 4, size=(2, 5, 6))  # 0 = unlabelled, 1..3 = classes 0..2 once reduced
    # brute force: reduce the references by hand, then count pixel by pixel
    reduced = [[[255 if r == 0 else r - 1 for r in row] for row in image] for image in references.tolist()]
    ious = []
    for label in range(3):
        inter = union = 0
        for p_image, r_image in zip(predictions.tolist(), reduced):
            for p_row, r_row in zip(p_image, r_image):
                for p, r in zip(p_row, r_row):
                    if r == 255:
                        continue
                    inter += p == label and r == label
                    union += p == label or r == label
        ious.append(inter / union)
    module = snd.metrics.load("mean_iou")
    result = module.compute(predictions=predictions.tolist(), references=references.tolist(), num_labels=3,
                            ignore_index=255, reduce_labels=True)
    assert result["per_class_iou"] == pytest.approx([100 * v for v in ious])
    assert result["mean_iou"] == pytest.approx(100 * sum(ious) / 3)
    # old name still works and agrees; a contradiction is refused
    assert segmentation_metrics(predictions, np.array(reduced), num_classes=3)["mean_iou"] == pytest.approx(result["mean_iou"])
    with pytest.raises(ValueError, match="disagree"):
        segmentation_metrics(predictions, np.array(reduced), num_classes=3, num_labels=4)
    # label_map applies before reduce_labels; nan_to_num fills classes absent from both sides
    mapped = segmentation_metrics(predictions, references, num_labels=3, reduce_labels=True, label_map={3: 0})
    assert (predictions == 2).any() and mapped["per_class_iou"][2] == 0.0  # label 3 mapped to unlabelled: no class-2 truth
    empty = segmentation_metrics(np.zeros((1, 2, 2), int), np.zeros((1, 2, 2), int), num_labels=3, nan_to_num=-1.0)
    assert empty["per_class_iou"] == [100.0, -1.0, -1.0]
