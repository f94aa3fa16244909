"""Numerics of the teacher path, each against an independent brute-force reference."""

import math

import pytest
import torch
from torch.nn import functional as F

from snd.distill.teacher import (
    blend_segments,
    downsample_holes,
    mask_aware_upsample,
    resize_to_patch_multiple,
)


def _source(out_index, out_size, in_size, align_corners):
    if align_corners:
        pos = out_index * (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
    else:
        pos = max((out_index + 0.5) * in_size / out_size - 0.5, 0.0)
    lo = min(int(math.floor(pos)), in_size - 1)
    hi = min(lo + 1, in_size - 1)
    return lo, hi, pos - lo


def _label_index(low_index, low_size, out_size, align_corners):
    if align_corners:
        return min(max(int(round(low_index * (out_size - 1) / (low_size - 1))), 0), out_size - 1)
    return min(int(math.floor((low_index + 0.5) * out_size / low_size)), out_size - 1)


def brute_force_mask_aware(features, mask, fallback, align_corners):
    """Pixel-by-pixel loop written from the definition (python floats)."""
    channels, low_h, low_w = features.shape
    height, width = mask.shape
    low_labels = [[int(mask[_label_index(i, low_h, height, align_corners), _label_index(j, low_w, width, align_corners)]) for j in range(low_w)] for i in range(low_h)]
    out = torch.zeros(channels, height, width, dtype=torch.float64)
    for y in range(height):
        y0, y1, fy = _source(y, height, low_h, align_corners)
        for x in range(width):
            x0, x1, fx = _source(x, width, low_w, align_corners)
            corners = [(y0, x0, (1 - fy) * (1 - fx)), (y0, x1, (1 - fy) * fx), (y1, x0, fy * (1 - fx)), (y1, x1, fy * fx)]
            label = int(mask[y, x])
            agreeing = [(a, b, w) for a, b, w in corners if low_labels[a][b] == label]
            total = sum(w for _, _, w in agreeing)
            if total > 0:
                use = [(a, b, w / total) for a, b, w in agreeing]
            elif fallback == "bilinear":
                use = corners
            else:
                use = []
            for a, b, w in use:
                out[:, y, x] += w * features[:, a, b].double()
    return out


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("fallback", ["bilinear", "zero"])
def test_mask_aware_upsample_matches_brute_force(align_corners, fallback):
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(2, 3, 3, 4, generator=generator)
    masks = torch.randint(0, 3, (2, 17, 23), generator=generator)
    # a one-pixel-wide segment that covers no patch centre exercises the fallback
    masks[:, 5, :] = 7
    result = mask_aware_upsample(features, masks, fallback=fallback, align_corners=align_corners)
    assert result.shape == (2, 3, 17, 23)
    for index in range(2):
        expected = brute_force_mask_aware(features[index], masks[index], fallback, align_corners)
        torch.testing.assert_close(result[index].double(), expected, atol=1e-5, rtol=1e-5)
    fallback_row = result[:, :, 5, :]
    if fallback == "zero":
        assert fallback_row.abs().max() == 0
    else:
        assert fallback_row.abs().max() > 0


@pytest.mark.parametrize("align_corners", [False, True])
def test_mask_aware_upsample_with_one_segment_is_bilinear(align_corners):
    features = torch.randn(3, 5, 4, 6)
    masks = torch.full((3, 56, 84), 4)
    result = mask_aware_upsample(features, masks, align_corners=align_corners)
    expected = F.interpolate(features, size=(56, 84), mode="bilinear", align_corners=align_corners)
    torch.testing.assert_close(result, expected, atol=1e-5, rtol=1e-5)


def test_mask_aware_upsample_keeps_segments_apart():
    # left half label 0 with feature 0, right half label 1 with feature 1: no bleeding across the edge
    features = torch.zeros(1, 1, 2, 4)
    features[..., 2:] = 1.0
    masks = torch.zeros(1, 28, 56, dtype=torch.long)
    masks[..., 28:] = 1
    result = mask_aware_upsample(features, masks)
    assert torch.equal(result[0, 0, :, :28], torch.zeros(28, 28))
    torch.testing.assert_close(result[0, 0, :, 28:], torch.ones(28, 28))
    plain = F.interpolate(features, size=(28, 56), mode="bilinear")
    assert 0 < plain[0, 0, 0, 27] < 1  # plain bilinear does bleed


def test_mask_aware_upsample_rejects_bad_input():
    with pytest.raises(ValueError, match="fallback"):
        mask_aware_upsample(torch.zeros(1, 1, 2, 2), torch.zeros(1, 4, 4, dtype=torch.long), fallback="nearest")
    with pytest.raises(ValueError, match="masks"):
        mask_aware_upsample(torch.zeros(1, 1, 2, 2), torch.zeros(4, 4, dtype=torch.long))


@pytest.mark.parametrize("alpha", [0.5, 0.2, 1.0])
def test_blend_segments_matches_per_segment_loop(alpha):
    generator = torch.Generator().manual_seed(2)
    features = torch.randn(3, 4, 9, 11, generator=generator)
    masks = torch.randint(0, 4, (3, 9, 11), generator=generator) * 1000  # sparse label ids
    masks[2] = 5  # one image with a single segment
    result = blend_segments(features, masks, alpha)
    expected = torch.empty_like(features)
    for index in range(3):
        for label in masks[index].unique():
            region = masks[index] == label
            mean = features[index][:, region].mean(dim=1, keepdim=True)
            expected[index][:, region] = alpha * features[index][:, region] + (1 - alpha) * mean
    torch.testing.assert_close(result, expected, atol=1e-6, rtol=1e-6)


def test_blend_segments_resizes_masks_nearest():
    features = torch.randn(1, 2, 4, 4)
    masks = torch.zeros(1, 8, 8, dtype=torch.long)
    masks[:, :, 4:] = 1
    result = blend_segments(features, masks, 0.0)  # alpha 0: every pixel becomes its segment mean
    torch.testing.assert_close(result[0, :, :, :2], features[0, :, :, :2].mean(dim=(1, 2))[:, None, None].expand(2, 4, 2))
    torch.testing.assert_close(result[0, :, :, 2:], features[0, :, :, 2:].mean(dim=(1, 2))[:, None, None].expand(2, 4, 2))
    with pytest.raises(ValueError, match="alpha"):
        blend_segments(features, masks, 1.5)


def test_downsample_holes_and_resize():
    holes = torch.zeros(1, 28, 42, dtype=torch.bool)
    holes[:, :14, :14] = True
    grid = downsample_holes(holes, (2, 3))
    assert grid.tolist() == [[[True, False, False], [False, False, False]]]
    images = torch.rand(2, 3, 30, 45)
    assert resize_to_patch_multiple(images, 14).shape == (2, 3, 28, 42)
    same = torch.rand(1, 3, 28, 28)
    assert resize_to_patch_multiple(same, 14) is same
    with pytest.raises(ValueError, match="patch"):
        resize_to_patch_multiple(torch.rand(1, 3, 10, 30), 14)


def test_splat_teacher_reproduces_the_context_view_from_its_own_camera():
    """Geometric check of the composed teacher path: lifting the features of a view and splatting them back into
    the same camera returns (nearly) those features, and the hole mask is empty where every pixel has depth."""
    from snd import SnDConfig, SnDModel
    from snd.data import collate_multiview
    from snd.distill.build import build_dataset, PreloadedScenes
    from snd.distill.config import DataConfig
    from snd.distill.teacher import EMATeacher, SplatTeacher, backbone_patch_features, downsample_features, upsample_features
    from snd.lifting import DepthLifter

    data = DataConfig(dataset="synthetic", image_height=28, image_width=42, num_scenes=1, num_frames=10, max_gap=9)
    sample = PreloadedScenes(build_dataset(data, seed=0))[0]
    context = sample.context.select([0, 0])  # the same view twice
    target = sample.context.select([0])
    batch = collate_multiview([type(sample)(context=context, target=target, scene=sample.scene)])
    torch.manual_seed(0)
    backbone = SnDModel(SnDConfig.tiny()).eval()
    teacher = EMATeacher(backbone)
    splat = SplatTeacher(teacher, DepthLifter(), patch_size=14, blend_alpha=1.0, upsample_mode="bilinear")
    targets = splat(batch.context, batch.target, grid_size=(2, 3))
    assert targets.valid.all() and not targets.holes.any()
    with torch.no_grad():
        low = backbone_patch_features(backbone, target.images, 14)
        expected = downsample_features(upsample_features(low, target.masks, "bilinear", "bilinear", False), (2, 3))
    rendered = targets.features[0, 0]
    # opacity is clamped at 0.99 per Gaussian and neighbours blur by ~1 px: close, not equal
    cosine = F.cosine_similarity(rendered, expected[0], dim=0)
    assert cosine.min() > 0.97, cosine
    assert (rendered.norm(dim=0) / expected[0].norm(dim=0)).sub(1).abs().max() < 0.1
    # blending with alpha 0 makes every target pixel its segment mean before downsampling
    splat.blend_alpha = 0.0
    blended = splat(batch.context, batch.target, grid_size=(2, 3)).features
    assert not torch.allclose(blended, targets.features)


def test_splat_teacher_with_an_mvsplat_lifter_directory(tmp_path):
    """lifter.kind=mvsplat with a save_pretrained directory (a tiny random MVSplat): Gaussians per context pixel,
    rendered teacher targets on the student's grid, holes where the prediction reaches nothing."""
    from snd import SnDConfig, SnDModel
    from snd.data import collate_multiview
    from snd.distill.build import PreloadedScenes, build_dataset, build_lifter
    from snd.distill.config import DataConfig, LifterConfig
    from snd.distill.teacher import EMATeacher, SplatTeacher
    from snd.models.mvsplat import MVSplatConfig, MVSplatModel

    torch.manual_seed(0)
    MVSplatModel(MVSplatConfig.tiny()).save_pretrained(tmp_path / "mvsplat")
    lifter = build_lifter(LifterConfig(kind="mvsplat", checkpoint=str(tmp_path / "mvsplat")))
    assert not any(p.requires_grad for p in lifter.model.parameters())
    data = DataConfig(dataset="synthetic", image_height=32, image_width=32, num_scenes=1, num_frames=10, max_gap=9)
    batch = collate_multiview([PreloadedScenes(build_dataset(data, seed=0))[0]])
    splat = SplatTeacher(EMATeacher(SnDModel(SnDConfig.tiny())), lifter, patch_size=14)
    targets = splat(batch.context, batch.target, grid_size=(2, 2))
    assert targets.features.shape == (1, 1, 32, 2, 2) and targets.holes.shape == (1, 1, 32, 32)
    assert torch.isfinite(targets.features).all()
    assert torch.equal(targets.features.masked_select(~targets.valid[:, :, None].expand_as(targets.features)).abs().sum(), torch.tensor(0.0))
