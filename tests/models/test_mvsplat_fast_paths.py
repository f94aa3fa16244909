"""MVSplat speed-ups (issue 15) against restatements of the per-group / per-chunk computation they replace:
the shifted-window masks built once per forward, and the cost volume in one grid_sample with an in-place product."""

import pytest
import torch

import snd.models.mvsplat.backbone_mvsplat as backbone_module
import snd.models.mvsplat.depth_mvsplat as depth_module
from snd.models.mvsplat import MVSplatConfig
from snd.models.mvsplat.backbone_mvsplat import (
    ShiftedWindowMasks,
    merge_windows,
    region_mask,
    shifted_window_regions,
    split_windows,
    window_attention,
)
from snd.models.mvsplat.depth_mvsplat import MVSplatDepthPredictor, relative_poses, view_major, warp_features

TOL = dict(atol=1e-6, rtol=1e-6)


def restated_shifted_window_attention(query, key, value, height, width, splits):
    """Swin-style shifted-window attention written plainly: roll, split, one mask per window (w % K^2), unroll."""
    batch, _, channels = query.shape
    others = key.shape[1]
    window_h, window_w = height // splits, width // splits
    shift = (-(window_h // 2), -(window_w // 2))
    q = torch.roll(query.view(batch, height, width, channels), shift, (1, 2))
    k = torch.roll(key.view(batch, others, height, width, channels), shift, (2, 3)).permute(0, 2, 3, 1, 4).reshape(batch, height, width, -1)
    v = torch.roll(value.view(batch, others, height, width, channels), shift, (2, 3)).permute(0, 2, 3, 1, 4).reshape(batch, height, width, -1)
    count = batch * splits * splits
    q = split_windows(q, splits).reshape(count, -1, channels)
    k = split_windows(k, splits).reshape(count, -1, channels)
    v = split_windows(v, splits).reshape(count, -1, channels)
    regions = shifted_window_regions(height, width, splits, query.device)
    outs = []
    for window in range(count):
        scores = q[window] @ k[window].T / channels**0.5 + region_mask(regions[window % (splits * splits)]).repeat(1, others)
        outs.append(torch.softmax(scores, dim=-1) @ v[window])
    out = merge_windows(torch.stack(outs).view(count, window_h, window_w, channels), splits)
    return torch.roll(out, (window_h // 2, window_w // 2), (1, 2)).reshape(batch, -1, channels)


@pytest.mark.parametrize("others", [1, 2])
# all 12 windows at once; 3 per group (< 4 windows per image: masks gathered); 6 per group (rounded to 4: broadcast)
@pytest.mark.parametrize("budget", [2**26, 3 * 16 * 16, 6 * 16 * 16])
def test_window_attention_with_memoised_masks_matches_restatement(monkeypatch, others, budget):
    monkeypatch.setattr(backbone_module, "_SCORE_BUDGET", budget * others)
    generator = torch.Generator().manual_seed(0)
    batch, height, width, splits, channels = 3, 8, 8, 2, 5  # 4 windows of 16 tokens per image, 12 windows
    query = torch.randn(batch, height * width, channels, generator=generator, requires_grad=True)
    key = torch.randn(batch, others, height * width, channels, generator=generator)
    value = torch.randn(batch, others, height * width, channels, generator=generator)
    masks = ShiftedWindowMasks(shifted_window_regions(height, width, splits, "cpu"))
    result = window_attention(query, key, value, height, width, splits, masks)
    reference_query = query.detach().clone().requires_grad_(True)
    expected = restated_shifted_window_attention(reference_query, key, value, height, width, splits)
    torch.testing.assert_close(result, expected, **TOL)
    # the same masks object serves a second call (another layer) from its memo, and plain region labels still work
    assert masks.mask(others) is masks.mask(others)
    torch.testing.assert_close(window_attention(query, key, value, height, width, splits, masks.regions), expected, **TOL)
    upstream = torch.randn(expected.shape, generator=generator)
    (result * upstream).sum().backward()
    (expected * upstream).sum().backward()
    torch.testing.assert_close(query.grad, reference_query.grad, **TOL)


def restated_cost_volume(features, intrinsics, extrinsics, disparities):
    """All depth candidates warped at once, product then channel sum: MVSplat's correlation."""
    views, channels = features.shape[1], features.shape[2]
    reference = view_major(features)
    volumes = []
    for shift, pose in zip(range(1, views), relative_poses(extrinsics)):
        source = view_major(features[:, list(range(shift, views)) + list(range(shift))])
        warped = warp_features(source, intrinsics, pose, 1.0 / disparities)
        volumes.append((reference.unsqueeze(2) * warped).sum(1) / channels**0.5)
    return torch.stack(volumes).mean(0)


@pytest.mark.parametrize("budget", [2**27, 3 * 6 * 4 * 6 * 8])  # one grid_sample; chunks of 3 of the 7 depths (3 x [V*B, C, h, w])
def test_cost_volume_in_one_or_several_grid_samples_matches_restatement(monkeypatch, budget):
    monkeypatch.setattr(depth_module, "_WARP_BUDGET", budget)
    generator = torch.Generator().manual_seed(1)
    batch, views, channels, height, width, depths = 2, 3, 4, 6, 8, 7
    predictor = MVSplatDepthPredictor(MVSplatConfig.tiny())
    features = torch.randn(batch, views, channels, height, width, generator=generator)
    extrinsics = torch.eye(4).repeat(batch, views, 1, 1)
    extrinsics[:, :, 0, 3] = torch.linspace(0.0, 0.4, views)
    intrinsics = torch.tensor([[6.0, 0.0, 4.0], [0.0, 5.0, 3.0], [0.0, 0.0, 1.0]]).repeat(views * batch, 1, 1)
    disparities = torch.linspace(0.05, 1.0, depths).repeat(views * batch, 1)
    expected = restated_cost_volume(features, intrinsics, extrinsics, disparities)
    with torch.no_grad():
        torch.testing.assert_close(predictor.cost_volume(features, intrinsics, extrinsics, disparities), expected, **TOL)
    leaf = features.clone().requires_grad_(True)  # with autograd the product is not taken in place
    volume = predictor.cost_volume(leaf, intrinsics, extrinsics, disparities)
    torch.testing.assert_close(volume, expected, **TOL)
    volume.sum().backward()
    reference_leaf = features.clone().requires_grad_(True)
    restated_cost_volume(reference_leaf, intrinsics, extrinsics, disparities).sum().backward()
    torch.testing.assert_close(leaf.grad, reference_leaf.grad, **TOL)
