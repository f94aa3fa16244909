"""Multi-view evaluation: exact correspondences, the AUC, and the scoring against an oracle feature map."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from snd.data.synthetic import SyntheticSceneConfig, generate_scene
from snd.eval.awareness import paired_interval, t_quantile_95
from snd.eval.multiview import MultiViewEvalConfig, auc, build_pairs, evaluate_multiview, score_pair

CONFIG = MultiViewEvalConfig(seed=123, first_scene=0, num_scenes=1, image_size=48, gaps=(3, 12), starts=(0,), stride=4)


@pytest.fixture(scope="module")
def pairs():
    return build_pairs(CONFIG)


def test_auc_equals_the_pairwise_count():
    torch.manual_seed(0)
    positive, negative = torch.randn(7), torch.randn(5) - 0.3
    positive[0] = negative[0]  # a tie counts one half
    expected = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(positive.tolist(), negative.tolist()))
    assert auc(positive, negative) == pytest.approx(expected / 35)


def test_true_positions_see_the_same_surface_point(pairs):
    """Independent check of the ray-cast truth: re-render view b and read the world point under each true position."""
    scene = generate_scene(SyntheticSceneConfig(num_scenes=1, num_frames=CONFIG.frames, height=48, width=48, seed=123), 0)
    for pair in pairs:
        points_b = scene.render([pair.frames[1]]).points[0]  # [S, S, 3]
        index = pair.truth.floor().long().clamp(0, 47)
        seen = points_b[index[:, 1], index[:, 0]]
        # within about a pixel's footprint (~3 cm at these distances) for nearly every visible source
        close = (seen - pair.points).norm(dim=-1) < 0.15
        assert close.float().mean() > 0.9
        assert (pair.truth >= 0).all() and (pair.truth < 48).all()


def _fourier_features(points: torch.Tensor, patch: int = 8, channels: int = 64) -> torch.Tensor:
    """An oracle feature map: random Fourier features of the world point at each patch centre, ``[C, h, w]``."""
    generator = torch.Generator().manual_seed(0)
    frequencies = torch.randn(3, channels // 2, generator=generator) * 1.5
    centres = points[patch // 2 :: patch, patch // 2 :: patch]  # [h, w, 3]
    angles = centres @ frequencies
    return torch.cat([angles.sin(), angles.cos()], dim=-1).permute(2, 0, 1)


def test_an_oracle_feature_map_matches_and_is_consistent_and_random_features_are_not(pairs):
    scene = generate_scene(SyntheticSceneConfig(num_scenes=1, num_frames=CONFIG.frames, height=48, width=48, seed=123), 0)
    for pair in pairs:
        points = scene.render(list(pair.frames)).points
        oracle = score_pair(_fourier_features(points[0]), _fourier_features(points[1]), pair, 48)
        torch.manual_seed(1)
        noise = score_pair(torch.randn(64, 6, 6), torch.randn(64, 6, 6), pair, 48)
        assert (oracle["errors"] < 12).float().mean() > 0.75, pair.frames
        assert (noise["errors"] < 12).float().mean() < (oracle["errors"] < 12).float().mean() - 0.3
        assert auc(oracle["same"], oracle["different"]) > 0.9
        assert abs(auc(noise["same"], noise["different"]) - 0.5) < 0.2


def test_evaluate_multiview_bins_the_pairs_by_rotation(pairs):
    class Extractor:
        def __call__(self, images):
            return type("Features", (), {"patches": images.mean(1, keepdim=True).repeat(1, 4, 1, 1)[:, :, ::8, ::8]})()

    metrics, kept = evaluate_multiview(Extractor(), pairs, CONFIG, keep_matches=1)
    assert metrics["num_pairs"] == len(pairs) == 2 and len(kept) == 1
    small, large = sorted(pairs, key=lambda p: p.rotation)
    assert small.rotation < 15 and 30 <= large.rotation < 60
    assert math.isfinite(metrics["recall_6px_rot_0-15"]) and math.isfinite(metrics["recall_6px_rot_30-60"])
    assert math.isnan(metrics["recall_6px_rot_15-30"])
    per_pair = [float((score_pair(*Extractor()(torch.stack([p.image_a, p.image_b])).patches, p, 48)["errors"] < 6).float().mean()) * 100
                for p in pairs]
    assert metrics["recall_6px"] == pytest.approx(sum(per_pair) / 2)


def test_paired_interval_is_the_t_interval():
    result = paired_interval([1.0, 2.0, 3.0])
    half = 4.303 * 1.0 / math.sqrt(3)
    assert result["mean"] == pytest.approx(2.0)
    assert (result["low"], result["high"]) == pytest.approx((2.0 - half, 2.0 + half))
    assert math.isnan(paired_interval([0.5])["low"])
    assert t_quantile_95(1) == pytest.approx(12.706) and t_quantile_95(100) == pytest.approx(1.96)
