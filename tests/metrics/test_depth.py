import math

import numpy as np
import pytest

import snd.metrics
from snd.metrics import depth_metrics


def _pair():
    # Image 0: gt [1, 2, 0(invalid), 4], pred [1, 1, 9, 5].
    # Image 1: gt [2, 2, 2, 2],          pred [2, 2, 2, 3].
    reference = np.array([[[1.0, 2.0], [0.0, 4.0]], [[2.0, 2.0], [2.0, 2.0]]])
    prediction = np.array([[[1.0, 1.0], [9.0, 5.0]], [[2.0, 2.0], [2.0, 3.0]]])
    return prediction, reference


def test_depth_hand_computed_per_image():
    prediction, reference = _pair()
    # Image 0 (3 valid): sq errors 0, 1, 1 -> rmse sqrt(2/3); rel 0, 1/2, 1/4 -> 0.25;
    #   ratios 1, 2, 1.25 -> d1 1/3 (1.25 is not < 1.25), d2 2/3 (2 > 1.5625), d3 2/3 (2 > 1.953).
    # Image 1 (4 valid): sq errors 0,0,0,1 -> rmse 1/2; rel 0,0,0,1/2 -> 0.125; ratios 1,1,1,1.5.
    expected_rmse = (math.sqrt(2 / 3) + 0.5) / 2
    expected = {
        "rmse": expected_rmse,
        "abs_rel": (0.25 + 0.125) / 2,
        "d1": (1 / 3 + 3 / 4) / 2,
        "d2": (2 / 3 + 1.0) / 2,
        "d3": (2 / 3 + 1.0) / 2,
        "num_images": 2.0,
    }
    result = depth_metrics(prediction, reference)
    for key, value in expected.items():
        assert result[key] == pytest.approx(value), key


def test_depth_pixel_pooling():
    prediction, reference = _pair()
    # 7 valid pixels pooled: squared errors 0,1,1,0,0,0,1 -> rmse sqrt(3/7).
    result = depth_metrics(prediction, reference, aggregation="pixel")
    assert result["rmse"] == pytest.approx(math.sqrt(3 / 7))
    assert result["abs_rel"] == pytest.approx((0.5 + 0.25 + 0.5) / 7)
    assert result["d1"] == pytest.approx(4 / 7)


def test_depth_max_depth_and_nonpositive_prediction():
    reference = np.array([[[1.0, 2.0, 30.0]]])
    prediction = np.array([[[-1.0, 2.0, 0.0]]])
    result = depth_metrics(prediction, reference, max_depth=20)
    # Only the first two pixels count; the negative prediction misses every threshold.
    assert result["rmse"] == pytest.approx(math.sqrt(4 / 2))
    assert result["d3"] == pytest.approx(0.5)


def test_depth_nyu_crop_only_counts_inside():
    reference = np.ones((1, 480, 640))
    prediction = np.ones((1, 480, 640))
    prediction[0, :45] = 100.0  # outside the Eigen crop: ignored
    assert depth_metrics(prediction, reference, nyu_crop=True)["rmse"] == pytest.approx(0.0)
    assert depth_metrics(prediction, reference)["rmse"] > 1
    with pytest.raises(ValueError, match="480 x 640"):
        depth_metrics(np.ones((1, 4, 4)), np.ones((1, 4, 4)), nyu_crop=True)


def test_depth_errors_are_clear():
    with pytest.raises(ValueError, match="no valid"):
        depth_metrics(np.ones((1, 2, 2)), np.zeros((1, 2, 2)))
    with pytest.raises(ValueError, match=r"\[N, H, W\]"):
        depth_metrics(np.ones((1, 2, 2)), np.ones((1, 2, 3)))


def test_depth_evaluate_module_loads_offline_and_matches():
    prediction, reference = _pair()
    metric = snd.metrics.load("depth")
    result = metric.compute(predictions=prediction, references=reference)
    expected = depth_metrics(prediction, reference)
    assert set(result) == set(expected)
    for key in expected:
        assert result[key] == pytest.approx(expected[key], rel=1e-6), key
