"""The matched 2D control (``teacher.target="same_view"``) differs from SnD in the teacher's target alone."""

from __future__ import annotations

import copy

import pytest
import torch

from snd.data import collate_multiview
from snd.distill.build import DistillStudent, PreloadedScenes, build_dataset
from snd.distill.config import DataConfig, DistillConfig, load_config
from snd.distill.heads import DINOHead
from snd.distill.loss import PrototypeCrossEntropy
from snd.distill.teacher import (
    EMATeacher,
    SplatTeacher,
    backbone_patch_features,
    blend_segments,
    downsample_features,
    downsample_holes,
    upsample_features,
)
from snd.distill.trainer import distill_step
from snd.lifting import DepthLifter
from snd.models.snd_dinov2 import SnDConfig, SnDModel


def _batch(seed: int = 0):
    data = DataConfig(dataset="synthetic", image_height=32, image_width=40, num_scenes=1, num_frames=12, min_gap=4, max_gap=8)
    return collate_multiview([PreloadedScenes(build_dataset(data, seed=seed, load_depth=True))[0]])


def _parts():
    torch.manual_seed(0)
    backbone = SnDModel(SnDConfig.tiny(patch_size=8, image_size=32))
    head = DINOHead(32, num_prototypes=16, hidden_dim=16, bottleneck_dim=8, num_layers=2)
    student = DistillStudent(backbone, head, patch_size=8)
    teacher = EMATeacher(backbone, head, momentum=0.9, update_every=1)
    return student, teacher


def _teacher(teacher, target: str) -> SplatTeacher:
    return SplatTeacher(teacher, DepthLifter(footprint_scale=0.5), patch_size=8, blend_alpha=0.5, target=target, render_backend="torch")


def test_same_view_target_is_the_teachers_own_features_with_the_splat_holes():
    batch = _batch()
    _, teacher = _parts()
    splat = _teacher(teacher, "splat")(batch.context, batch.target, grid_size=(4, 5))
    same = _teacher(teacher, "same_view")(batch.context, batch.target, grid_size=(4, 5))
    # the holes (and so the loss's valid pixels) come from the same render
    assert torch.equal(same.holes, splat.holes) and torch.equal(same.valid, splat.valid)
    assert splat.holes.any() and not splat.holes.all(), "the test scene should have some holes, not only holes"
    # independent restatement of the control's target: own features -> upsample -> blend -> downsample -> zero holes
    with torch.no_grad():
        target_images = batch.target.images.flatten(0, 1)
        masks = batch.target.masks.flatten(0, 1)
        own = backbone_patch_features(teacher.backbone, target_images, 8)
        full = upsample_features(own, masks, "mask_aware", "bilinear", False)
        expected = downsample_features(blend_segments(full, masks, 0.5), (4, 5))
        expected = expected.masked_fill(downsample_holes(splat.holes.flatten(0, 1), (4, 5))[:, None], 0.0)
    torch.testing.assert_close(same.features.flatten(0, 1), expected, rtol=0, atol=1e-6)
    # ... and it is not what SnD teaches: the splatted features of the context views differ
    assert (same.features - splat.features).abs().max() > 1e-3


def test_same_view_and_splat_share_every_other_code_path(monkeypatch):
    """With the render patched to return the target view's own (upsampled) features, SnD's target equals the control's,
    and then the two modes give the same loss, the same gradients and the same optimiser step: nothing but the target
    differs between them."""
    import snd.splatting as splatting

    batch = _batch(1)
    real_render = splatting.render_gaussians

    def render_own_features(gaussians, features, extrinsics, intrinsics, height, width, **settings):
        result = real_render(gaussians, features, extrinsics, intrinsics, height, width, **settings)
        if features.shape[-1] == 1:  # the control's one-channel alpha render: untouched
            return result
        with torch.no_grad():
            own = backbone_patch_features(render_own_features.backbone, batch.target.images.flatten(0, 1), 8)
            full = upsample_features(own, batch.target.masks.flatten(0, 1), "mask_aware", "bilinear", False)  # [T, C, H, W]
        renders = full.permute(0, 2, 3, 1).reshape(result.renders.shape)  # [B, T, H, W, C]
        return result._replace(renders=renders)

    outcomes = {}
    for mode in ("splat", "same_view"):
        student, teacher = _parts()
        render_own_features.backbone = teacher.backbone
        monkeypatch.setattr(splatting, "render_gaussians", render_own_features)
        splat_teacher = _teacher(teacher, mode)
        loss_fn = PrototypeCrossEntropy(0.1, 0.04, "all")
        optimizer = torch.optim.SGD([p for p in student.parameters() if p.requires_grad], lr=0.1)
        torch.manual_seed(3)
        losses = distill_step(student, splat_teacher, loss_fn, batch, return_targets=True)
        losses["loss"].backward()
        optimizer.step()
        outcomes[mode] = (losses, copy.deepcopy(student.state_dict()))
        monkeypatch.undo()
    (splat_losses, splat_state), (same_losses, same_state) = outcomes["splat"], outcomes["same_view"]
    torch.testing.assert_close(splat_losses["targets"].features, same_losses["targets"].features, rtol=0, atol=1e-6)
    torch.testing.assert_close(splat_losses["loss"], same_losses["loss"], rtol=0, atol=1e-6)
    assert torch.equal(splat_losses["targets"].valid, same_losses["targets"].valid)
    for name in splat_state:
        torch.testing.assert_close(splat_state[name], same_state[name], rtol=0, atol=1e-6, msg=name)


def test_teacher_target_is_a_config_switch():
    config = load_config(overrides=["teacher.target=same_view"])
    assert config.teacher.target == "same_view"
    assert DistillConfig().teacher.target == "splat"
    with pytest.raises(ValueError, match="teacher.target"):
        load_config(overrides=["teacher.target=other"]).validate()
