import math

import pytest
import torch
import torch.nn.functional as F

from snd.data.synthetic import SyntheticSceneConfig, generate_scene
from snd.eval import match_pair, ratio_test_matches, relative_rotation_degrees
from snd.metrics import correspondence_metrics


def _rotation_z(degrees):
    a = math.radians(degrees)
    pose = torch.eye(4)
    pose[:2, :2] = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return pose


def test_relative_rotation_angle():
    assert relative_rotation_degrees(_rotation_z(10), _rotation_z(55)) == pytest.approx(45.0, abs=1e-4)
    assert relative_rotation_degrees(torch.eye(4), torch.eye(4)) == pytest.approx(0.0, abs=1e-3)


def test_ratio_test_against_brute_force():
    torch.manual_seed(0)
    a, b = torch.randn(50, 8), torch.randn(40, 8)
    index0, index1, scores = ratio_test_matches(a, b, num_matches=10, chunk=7)
    cosine = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T
    distances, order = (1 - cosine).sort(dim=1)
    expected_scores = 1 - distances[:, 0] / distances[:, 1]
    best = expected_scores.argsort(descending=True)[:10]
    assert index0.tolist() == best.tolist()
    assert index1.tolist() == order[best, 0].tolist()
    torch.testing.assert_close(scores, expected_scores[best])


def _scene_pair(gap=3, size=48):
    scene = generate_scene(SyntheticSceneConfig(num_scenes=1, num_frames=12, height=size, width=size, seed=3), 0)
    render = scene.render([0, gap])
    return scene, render


def _fourier_features(points, channels=64, seed=0):
    """[V, H, W, 3] world points -> [V, C, H, W] features unique to each surface point."""
    generator = torch.Generator().manual_seed(seed)
    frequencies = torch.randn(3, channels // 2, generator=generator) * 3.0
    projection = points @ frequencies
    return torch.cat([projection.sin(), projection.cos()], dim=-1).permute(0, 3, 1, 2)


def test_match_pair_reference_agrees_with_ray_cast_ground_truth():
    # The reference positions come from depth + poses; the scene's own correspondences come from
    # ray casting world points: for visible points they must agree.
    scene, render = _scene_pair()
    views = render.views
    features = _fourier_features(render.points)
    matches = match_pair(features[0], features[1], views.depths[0], views.depths[1], views.intrinsics[0],
                         views.extrinsics[0], views.extrinsics[1], num_correspondences=300, scale=1.0)
    truth, visible = scene.correspondences(0, 3)
    rows = (matches.source[:, 1] - 0.5).long()
    cols = (matches.source[:, 0] - 0.5).long()
    keep = visible[rows, cols]
    assert keep.sum() > 100
    torch.testing.assert_close(matches.reference[keep], truth[rows, cols][keep], atol=1e-3, rtol=0)


def test_oracle_features_give_high_recall_and_random_ones_do_not():
    scene, render = _scene_pair()
    views = render.views
    args = (views.depths[0], views.depths[1], views.intrinsics[0], views.extrinsics[0], views.extrinsics[1])
    oracle = _fourier_features(render.points)
    good = match_pair(oracle[0], oracle[1], *args, num_correspondences=300, scale=1.0)
    noise = torch.randn_like(oracle)
    bad = match_pair(noise[0], noise[1], *args, num_correspondences=300, scale=1.0)
    good_recall = correspondence_metrics([good.predicted.numpy()], [good.reference.numpy()])["recall_5px"]
    bad_recall = correspondence_metrics([bad.predicted.numpy()], [bad.reference.numpy()])["recall_5px"]
    assert good_recall > 95.0
    assert bad_recall < 30.0
    assert good.rotation_degrees > 1.0


def test_quarter_scale_uses_downsampled_pixels():
    scene, render = _scene_pair(size=64)
    views = render.views
    features = _fourier_features(render.points)
    matches = match_pair(features[0], features[1], views.depths[0], views.depths[1], views.intrinsics[0],
                         views.extrinsics[0], views.extrinsics[1], num_correspondences=1000, scale=0.25)
    assert len(matches.source) == 16 * 16  # fewer valid points than requested matches
    assert matches.source.max() < 16
