import math

import numpy as np
import pytest

import snd.metrics
from snd.metrics import correspondence_metrics


def _pairs():
    reference = [np.zeros((4, 2)), np.zeros((2, 2))]
    # errors: pair 0 -> 3, 6, 12, 30 ; pair 1 -> 4 (3-4-5 triangle: 5), 0
    prediction = [
        np.array([[3.0, 0], [0, 6.0], [12.0, 0], [0, 30.0]]),
        np.array([[3.0, 4.0], [0.0, 0.0]]),
    ]
    return prediction, reference


def test_recall_hand_computed():
    prediction, reference = _pairs()
    result = correspondence_metrics(prediction, reference, relative_rotations=[10.0, 45.0])
    # per pair recall@5: pair0 1/4, pair1 1/2 (5 is not < 5) -> mean 37.5 %
    assert result["recall_5px"] == pytest.approx(37.5)
    # @10: 2/4 and 2/2 -> 75 ; @20: 3/4 and 1 -> 87.5
    assert result["recall_10px"] == pytest.approx(75.0)
    assert result["recall_20px"] == pytest.approx(87.5)
    assert result["recall_10px_rot_0_15"] == pytest.approx(50.0)
    assert result["recall_10px_rot_30_60"] == pytest.approx(100.0)
    assert math.isnan(result["recall_10px_rot_15_30"])
    pooled = correspondence_metrics(prediction, reference, aggregation="pixel")
    assert pooled["recall_5px"] == pytest.approx(100 * 2 / 6)


def test_recall_shape_errors():
    with pytest.raises(ValueError, match="pair 0"):
        correspondence_metrics([np.zeros((3, 2))], [np.zeros((2, 2))])
    with pytest.raises(ValueError, match="rotations"):
        correspondence_metrics([np.zeros((3, 2))], [np.zeros((3, 2))], relative_rotations=[1.0, 2.0])


def test_recall_evaluate_module_matches():
    prediction, reference = _pairs()
    result = snd.metrics.load("correspondence").compute(
        predictions=prediction, references=reference, relative_rotations=[10.0, 45.0]
    )
    assert result["recall_10px"] == pytest.approx(75.0)
    assert result["recall_10px_rot_0_15"] == pytest.approx(50.0)
