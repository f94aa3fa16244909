import numpy as np
import pytest

import snd.metrics
from snd.metrics import normal_metrics


def _unit(angle_degrees):
    """Unit vector in the x-z plane at `angle_degrees` from +z."""
    a = np.radians(angle_degrees)
    return np.array([np.sin(a), 0.0, np.cos(a)])


def _maps(angles):
    """[1, 3, 1, len(angles)] predictions at the given angles from a +z ground truth."""
    prediction = np.stack([_unit(a) for a in angles], axis=-1)[None, :, None, :]
    reference = np.zeros_like(prediction)
    reference[:, 2] = 1.0
    return prediction, reference


def test_normals_hand_computed():
    prediction, reference = _maps([0.0, 10.0, 20.0, 40.0])
    prediction = prediction * 3.0  # length must not matter
    result = normal_metrics(prediction, reference)
    assert result["mean"] == pytest.approx(17.5)
    assert result["median"] == pytest.approx(15.0)
    assert result["rmse"] == pytest.approx(np.sqrt((0 + 100 + 400 + 1600) / 4))
    assert result["within_11.25"] == pytest.approx(50.0)
    assert result["within_22.5"] == pytest.approx(75.0)
    assert result["within_30"] == pytest.approx(75.0)


def test_normals_valid_mask_and_image_average():
    first, reference = _maps([0.0, 90.0])
    second, _ = _maps([30.0, 30.0])
    prediction = np.concatenate([first, second])
    references = np.concatenate([reference, reference])
    valid = np.array([[[True, False]], [[True, True]]])
    result = normal_metrics(prediction, references, valid=valid)
    # image 0: only 0 deg counts -> rmse 0; image 1: rmse 30 -> mean 15.
    assert result["rmse"] == pytest.approx(15.0)
    pooled = normal_metrics(prediction, references, valid=valid, aggregation="pixel")
    assert pooled["rmse"] == pytest.approx(np.sqrt((0 + 900 + 900) / 3))
    # A zero-length ground truth is invalid even without a mask.
    references[1, :, 0, 1] = 0
    assert normal_metrics(prediction, references)["num_images"] == 2.0
    with pytest.raises(ValueError, match="valid mask"):
        normal_metrics(prediction, references, valid=np.ones((2, 3, 3), bool))


def test_normals_evaluate_module_matches():
    prediction, reference = _maps([5.0, 25.0, 50.0])
    result = snd.metrics.load("normals").compute(predictions=prediction, references=reference)
    expected = normal_metrics(prediction, reference)
    for key in expected:
        assert result[key] == pytest.approx(expected[key], rel=1e-5), key


def _restated_angles(prediction, reference):
    """arccos of the clipped dot product of the unit vectors, in degrees, per pixel."""
    p = prediction / np.linalg.norm(prediction, axis=1, keepdims=True)
    g = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    return np.degrees(np.arccos(np.clip((p * g).sum(axis=1), -1.0, 1.0)))


def test_normals_beyond_90_degrees_match_a_restatement():
    """Angles past 90 degrees (up to an exactly opposite normal) count in full: not folded back (|cos|), not clipped
    at 0, not capped at 90. Hand values, then random 3D vectors against the restatement."""
    angles = [100.0, 135.0, 170.0, 180.0]
    prediction, reference = _maps(angles)
    prediction = prediction * 2.5
    result = normal_metrics(prediction, reference, aggregation="pixel")
    assert result["mean"] == pytest.approx(np.mean(angles))
    assert result["median"] == pytest.approx(152.5)
    assert result["rmse"] == pytest.approx(np.sqrt(np.mean(np.square(angles))))
    assert result["within_30"] == 0.0
    # a mix of acute and obtuse errors in random directions (not in one plane)
    rng = np.random.default_rng(0)
    prediction = rng.normal(size=(2, 3, 4, 5))
    reference = rng.normal(size=(2, 3, 4, 5))
    prediction[0, :, 0, 0] = -reference[0, :, 0, 0] * 3.0  # exactly opposite: dot / norms may round below -1
    angles = _restated_angles(prediction, reference)
    assert (angles > 90).sum() >= 10 and angles[0, 0, 0] == pytest.approx(180.0)
    result = normal_metrics(prediction, reference, aggregation="pixel")
    assert result["mean"] == pytest.approx(angles.mean())
    assert result["median"] == pytest.approx(np.median(angles))
    assert result["rmse"] == pytest.approx(np.sqrt(np.mean(angles ** 2)))
    for threshold in (11.25, 22.5, 30):
        assert result[f"within_{threshold:g}"] == pytest.approx(100.0 * (angles < threshold).mean())
