"""Correspondence under --protocol snd (Probe3D evaluate_scannet_correspondence.py), and the model-choice warning."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from snd import SnDConfig, SnDModel
from snd.eval.protocols import correspondence
from snd.eval.protocols.data_probe3d import ScanNetPairsProbe3D
from snd.eval.protocols.models import blending_variant, model_choice_warning, warn_model_choice

from .probe3d_fixtures import look_at_pose, write_scannet_pairs


def test_scannet_pairs_loader(tmp_path):
    root = write_scannet_pairs(tmp_path / "scannet_test_1500")
    pairs = ScanNetPairsProbe3D(root)
    assert len(pairs) == 2
    item = pairs[1]
    assert item["scene"] == "scene0708_01" and (item["frame_0"], item["frame_1"]) == (0, 45)
    torch.testing.assert_close(item["K"], torch.tensor([[577.6, 0, 318.9], [0, 578.7, 242.7], [0, 0, 1.0]]))
    pose0, pose1 = look_at_pose(0.0, (0.0, 0, 0)), look_at_pose(40.0, (4.5, 0, 0))
    torch.testing.assert_close(item["Rt_1"], torch.from_numpy(np.linalg.inv(pose1) @ pose0).float())
    assert item["rgb_0"].shape == (3, 480, 640) and 0 <= item["rgb_0"].min() and item["rgb_0"].max() <= 1
    with Image.open(root / "scene0708_01" / "color" / "0.jpg") as image:
        expected = torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(item["rgb_0"], expected)
    with Image.open(root / "scene0708_01" / "depth" / "45.png") as image:
        torch.testing.assert_close(item["depth_1"][0], torch.from_numpy(np.asarray(image).astype(np.float32)) / 1000)


def test_scannet_pairs_resizes_other_image_sizes(tmp_path):
    root = write_scannet_pairs(tmp_path, pairs=((1, 0, 0, 1),), image_size=(320, 240), angles=((0.0, 1.0),))
    item = ScanNetPairsProbe3D(root)[0]
    with Image.open(root / "scene0001_00" / "color" / "0.jpg") as image:
        resized = image.convert("RGB").resize((640, 480), Image.BILINEAR)
    assert item["rgb_0"].shape == (3, 480, 640)
    torch.testing.assert_close(item["rgb_0"], torch.from_numpy(np.asarray(resized).copy()).permute(2, 0, 1).float() / 255)


def test_scannet_pairs_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="test.npz"):
        ScanNetPairsProbe3D(tmp_path)
    root = write_scannet_pairs(tmp_path / "s")
    np.savez(root / "intrinsics.npz", scene0707_00=np.eye(3))
    with pytest.raises(ValueError, match="scene0708_01"):
        ScanNetPairsProbe3D(root)


# ----------------------------------------------------------------------------------- matching
def _bilinear_zero_padded(features, x, y):
    """grid_sample(align_corners=False, zeros) at continuous feature-map position (x, y), restated."""
    channels, height, width = features.shape
    x0, y0 = math.floor(x), math.floor(y)
    value = np.zeros(channels)
    for dy in (0, 1):
        for dx in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            weight = (1 - abs(x - xi)) * (1 - abs(y - yi))
            if 0 <= xi < width and 0 <= yi < height:
                value += weight * features[:, yi, xi]
    return value


def _brute_force_errors(features0, features1, depth0, depth1, k, pose, num_corr, scale=0.25):
    """Probe3D's pair error restated with loops in float64 (nearest-neighbour depth downsampling by 4)."""
    k = k.copy()
    k[:2] *= scale
    k_inv = np.linalg.inv(k)
    views = []
    for features, depth in ((features0, depth0), (features1, depth1)):
        small = depth[::4, ::4]  # F.interpolate(scale_factor=0.25, mode="nearest") picks every 4th pixel
        height, width = small.shape
        points, descriptors = [], []
        for row in range(height):
            for col in range(width):
                z = small[row, col]
                if z <= 0:
                    continue
                point = z * (k_inv @ np.array([col + 0.5, row + 0.5, 1.0]))
                u, v = (col + 0.5), (row + 0.5)
                fx = u / width * features.shape[2] - 0.5
                fy = v / height * features.shape[1] - 0.5
                points.append(point)
                descriptors.append(_bilinear_zero_padded(features, fx, fy))
        views.append((np.array(points), np.array(descriptors)))
    (points0, d0), (points1, d1) = views
    d0 = d0 / np.linalg.norm(d0, axis=1, keepdims=True)
    d1 = d1 / np.linalg.norm(d1, axis=1, keepdims=True)
    distance = 1 - d0 @ d1.T
    order = np.argsort(distance, axis=1)
    first, second = distance[np.arange(len(d0)), order[:, 0]], distance[np.arange(len(d0)), order[:, 1]]
    weight = 1 - np.maximum(first, 1e-9) / np.maximum(second, 1e-9)
    chosen = np.argsort(-weight)[:num_corr]
    moved = points0[chosen] @ pose[:3, :3].T + pose[:3, 3]

    def project(p):
        uvd = p @ k.T
        return uvd[:, :2] / uvd[:, 2:3]

    return np.linalg.norm(project(moved) - project(points1[order[chosen, 0]]), axis=1), weight[chosen]


def test_pair_errors_match_brute_force():
    rng = np.random.default_rng(0)
    features0, features1 = rng.normal(size=(2, 6, 5, 7))
    depth0 = rng.uniform(1, 3, size=(24, 32))
    depth1 = rng.uniform(1, 3, size=(24, 32))
    depth0[:8, :8] = 0
    k = np.array([[30.0, 0, 16.0], [0, 31.0, 12.0], [0, 0, 1]])
    pose = look_at_pose(12.0, (0.1, -0.05, 0.2))
    expected, _ = _brute_force_errors(features0, features1, depth0, depth1, k, pose, num_corr=20)
    errors = correspondence.pair_errors(torch.from_numpy(features0).float(), torch.from_numpy(features1).float(),
                                        torch.from_numpy(depth0).float()[None], torch.from_numpy(depth1).float()[None],
                                        torch.from_numpy(k).float(), torch.from_numpy(pose).float(), num_corr=20)
    assert errors.shape == (20,)
    np.testing.assert_allclose(errors.numpy(), expected, rtol=1e-4, atol=1e-4)
    on_device = correspondence.pair_errors(torch.from_numpy(features0).float(), torch.from_numpy(features1).float(),
                                           torch.from_numpy(depth0).float()[None], torch.from_numpy(depth1).float()[None],
                                           torch.from_numpy(k).float(), torch.from_numpy(pose).float(), num_corr=20,
                                           match_device=torch.device("cpu"))
    torch.testing.assert_close(on_device, errors)


def test_identical_views_match_themselves():
    features = torch.randn(8, 6, 6)
    depth = torch.full((1, 24, 24), 2.0)
    k = torch.tensor([[20.0, 0, 12], [0, 20.0, 12], [0, 0, 1]])
    errors = correspondence.pair_errors(features, features, depth, depth, k, torch.eye(4), num_corr=10)
    assert errors.shape == (10,) and errors.abs().max() < 1e-4


def test_rotation_angle():
    pose = torch.from_numpy(look_at_pose(40.0)).float()
    assert correspondence.rotation_angle_degrees(pose[:3, :3]) == pytest.approx(40.0, abs=1e-3)


# ----------------------------------------------------------------------------------- run()
def test_run_end_to_end(tmp_path):
    write_scannet_pairs(tmp_path / "data" / "scannet_test_1500")
    model = SnDModel(SnDConfig.from_preset("tiny")).eval()
    inputs = []
    model.register_forward_pre_hook(lambda m, a, k: inputs.append(k["pixel_values"]), with_kwargs=True)
    result = correspondence.run(model, tmp_path / "data", dataset="scannet_pairs", max_iters=None,
                                output_dir=tmp_path / "out", device="cpu", progress=False)
    assert inputs[0].shape == (2, 3, 490, 644)  # 480 x 640 zero-padded to 35 x 46 patches
    item = ScanNetPairsProbe3D(tmp_path / "data" / "scannet_test_1500")[0]
    torch.testing.assert_close(inputs[0][0, :, 5:485, 2:642], item["rgb_0"] * 2 - 1)  # mean 0.5 / std 0.5
    assert inputs[0][0, :, :5].abs().max() == 0
    settings = result["settings"]
    assert settings["pairs_evaluated"] == 2 and settings["matches_per_pair"] == 1000 and settings["image_mean"] == [0.5] * 3
    metrics = result["metrics"]
    for key in ("recall_5px", "recall_10px", "recall_20px"):
        assert 0 <= metrics[key] <= 100
    assert metrics["recall_5px"] <= metrics["recall_10px"] <= metrics["recall_20px"]
    # pair rotations 5 and 40 degrees: bins 0-15 and 30-60 are filled, the others empty (NaN, as Probe3D)
    assert np.isfinite(metrics["recall_10px_rot_0_15"]) and np.isfinite(metrics["recall_10px_rot_30_60"])
    assert math.isnan(metrics["recall_10px_rot_15_30"]) and math.isnan(metrics["recall_10px_rot_60_180"])
    saved = json.loads((tmp_path / "out" / "correspondence_snd.json").read_text())
    assert saved["metrics"]["recall_10px"] == pytest.approx(metrics["recall_10px"])
    one = correspondence.run(model, tmp_path / "data" / "scannet_test_1500", dataset="scannet_pairs", max_iters=1,
                             output_dir=None, device="cpu", progress=False)
    assert one["settings"]["pairs_evaluated"] == 1 and one["metrics"]["num_pairs"] == 1
    with pytest.raises(ValueError, match="scannet_pairs"):
        correspondence.run(model, tmp_path / "data", dataset="nyuv2", max_iters=1, output_dir=None, device="cpu")


# ----------------------------------------------------------------------------------- model choice
@pytest.mark.parametrize("name,variant", [
    ("snd/dinov2-s", "blending"), ("snd/dinov2-b-no-blending", "no-blending"),
    ("/ckpt/dinov2_small_snd.pth", "blending"), ("/ckpt/dinov2_small_snd_no_blending.pth", "no-blending"),
    ("facebook/dinov2-small", None), ("my-run/without_blending", "no-blending"), ("sndbox/model", None),
])
def test_blending_variant(name, variant):
    assert blending_variant(name) == variant


def test_model_choice_warning():
    assert "with-blending" in model_choice_warning("snd/dinov2-s-no-blending", "normals")
    assert "without-blending" in model_choice_warning("snd/dinov2-s", "correspondence")
    assert model_choice_warning("snd/dinov2-s", "depth") is None
    assert model_choice_warning("snd/dinov2-s-no-blending", "correspondence") is None
    assert model_choice_warning("facebook/dinov2-small", "correspondence") is None
    with pytest.warns(UserWarning, match="without-blending SnD model"):
        assert warn_model_choice("snd/dinov2-b-no-blending", "segmentation")
