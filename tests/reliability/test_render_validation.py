"""Renderer and lifter inputs are checked at the public boundary: every bad value raises a ValueError naming
the argument and the first offending index (before, the renderer silently culled or clamped them), and a
render too large for memory is refused up front with its estimate."""

from __future__ import annotations

import math
import re

import pytest
import torch

from snd.data import MultiViewSample, SyntheticSceneConfig, collate_multiview, generate_scene
from snd.gaussians import Gaussians
from snd.lifting import DepthLifter
from snd.splatting import render_features, render_gaussians
from snd.splatting._torch_impl import intersect_tiles, project_gaussians
from snd.splatting.validate import RenderMemoryError, estimate_render_bytes


def _scene(count=6, cameras=2):
    """Gaussians in front of ``cameras`` identity-rotation cameras (world-to-camera viewmats)."""
    generator = torch.Generator().manual_seed(0)
    means = torch.rand(count, 3, generator=generator) - 0.5
    means[:, 2] += 3.0
    covars = torch.diag_embed(torch.full((count, 3), 0.01))
    viewmats = torch.eye(4).repeat(cameras, 1, 1)
    viewmats[:, 0, 3] = torch.linspace(-0.1, 0.1, cameras)
    Ks = torch.tensor([[20.0, 0, 16], [0, 20.0, 12], [0, 0, 1]]).repeat(cameras, 1, 1)
    return dict(
        means=means, covars=covars, opacities=torch.full((count,), 0.8), colors=torch.rand(count, 4, generator=generator),
        viewmats=viewmats, Ks=Ks, width=32, height=24, backend="torch",
    )


def _rotation_z(angle):
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _set(name, index, value):
    def apply(scene):
        scene[name] = scene[name].clone()
        scene[name][index] = value

    return apply


NOT_PSD = torch.tensor([[0.01, 0.02, 0.0], [0.02, 0.01, 0.0], [0.0, 0.0, 0.01]])  # eigenvalues 0.03, -0.01, 0.01
SCALED = torch.eye(4)
SCALED[:3, :3] *= 2.0
SHEARED = torch.eye(4)
SHEARED[0, 1] = 0.3
MIRRORED = torch.diag(torch.tensor([1.0, 1.0, -1.0, 1.0]))
PROJECTIVE = torch.eye(4)
PROJECTIVE[3, 2] = 0.5

CASES = {
    "nan_mean": (_set("means", (3, 1), float("nan")), "means", "(3,)"),
    "inf_mean": (_set("means", (0, 2), float("inf")), "means", "(0,)"),
    "nan_covariance": (_set("covars", (4, 1, 2), float("nan")), "covars", "(4,)"),
    "non_psd_covariance": (_set("covars", 2, NOT_PSD), "covars", "(2,)"),
    "negative_variance": (_set("covars", 5, torch.diag(torch.tensor([0.01, -0.01, 0.01]))), "covars", "(5,)"),
    "opacity_above_one": (_set("opacities", 1, 1.5), "opacities", "(1,)"),
    "negative_opacity": (_set("opacities", 2, -0.1), "opacities", "(2,)"),
    "nan_opacity": (_set("opacities", 0, float("nan")), "opacities", "(0,)"),
    "nan_feature": (_set("colors", (5, 3), float("nan")), "colors", "(5,)"),
    "zero_focal": (_set("Ks", (1, 0, 0), 0.0), "Ks", "(1,)"),
    "negative_focal": (_set("Ks", (0, 1, 1), -20.0), "Ks", "(0,)"),
    "nan_focal": (_set("Ks", (1, 1, 1), float("nan")), "Ks", "(1,)"),
    "scaled_viewmat": (_set("viewmats", 1, SCALED), "viewmats", "(1,)"),
    "sheared_viewmat": (_set("viewmats", 0, SHEARED), "viewmats", "(0,)"),
    "mirrored_viewmat": (_set("viewmats", 1, MIRRORED), "viewmats", "(1,)"),
    "projective_viewmat": (_set("viewmats", 0, PROJECTIVE), "viewmats", "(0,)"),
    "nan_viewmat": (_set("viewmats", (1, 0, 3), float("nan")), "viewmats", "(1,)"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_render_input_names_argument_and_index(case):
    corrupt, name, index = CASES[case]
    scene = _scene()
    render_features(**scene)  # the clean scene renders
    corrupt(scene)
    with pytest.raises(ValueError, match=rf"`{name}`.*first offending index {re.escape(index)}"):
        render_features(**scene)
    render_features(**scene, validate=False)  # the switch for loops that checked upstream


def test_valid_edge_cases_pass():
    scene = _scene()
    scene["opacities"][0], scene["opacities"][1] = 0.0, 1.0
    scene["covars"][2] = torch.diag(torch.tensor([0.01, 0.01, 0.0]))  # a flat (PSD, singular) Gaussian
    rotation = torch.eye(4)
    rotation[:3, :3] = _rotation_z(0.7)
    scene["viewmats"][1] = rotation
    output = render_features(**scene)
    assert torch.isfinite(output.renders).all() and torch.isfinite(output.alphas).all()
    assert ((output.alphas >= 0) & (output.alphas <= 1)).all() and output.alphas.max() > 0.5  # something was drawn
    # the opacity-0 Gaussian contributes nothing: the render without it is the same
    without = {**scene, **{name: scene[name][1:] for name in ("means", "covars", "opacities", "colors")}}
    reference = render_features(**without)
    torch.testing.assert_close(output.renders, reference.renders, rtol=0, atol=1e-6)
    torch.testing.assert_close(output.alphas, reference.alphas, rtol=0, atol=1e-6)
    # quaternions + scales render as their covariance R diag(s^2) R^T (R of the unit quaternion w, x, y, z), restated
    generator = torch.Generator().manual_seed(1)
    quats = torch.nn.functional.normalize(torch.randn(6, 4, generator=generator), dim=-1)
    scales = torch.rand(6, 3, generator=generator) * 0.1 + 1e-4
    from_quats = render_features(**{**scene, "covars": None}, quats=quats, scales=scales)
    w, x, y, z = quats.unbind(-1)
    rotations = torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(6, 3, 3)
    covars = rotations @ torch.diag_embed(scales ** 2) @ rotations.transpose(-1, -2)
    from_covars = render_features(**{**scene, "covars": covars})
    assert from_quats.alphas.max() > 0.1
    torch.testing.assert_close(from_quats.renders, from_covars.renders, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(from_quats.alphas, from_covars.alphas, rtol=1e-4, atol=1e-5)


def test_render_gaussians_names_extrinsics_and_intrinsics():
    scene = _scene(cameras=1)
    gaussians = Gaussians(means=scene["means"][None], covariances=scene["covars"][None], opacities=scene["opacities"][None])
    extrinsics = torch.eye(4)[None, None].clone()  # [1, 1, 4, 4] camera-to-world
    intrinsics = torch.tensor([[0.6, 0, 0.5], [0, 0.8, 0.5], [0, 0, 1.0]])[None, None].clone()
    features = scene["colors"][None]
    render_gaussians(gaussians, features, extrinsics, intrinsics, 24, 32, backend="torch")
    bad = extrinsics.clone()
    bad[0, 0, :3, :3] *= 1.1
    with pytest.raises(ValueError, match=r"render_gaussians: `extrinsics`.*rigid.*\(0, 0\)"):
        render_gaussians(gaussians, features, bad, intrinsics, 24, 32, backend="torch")
    bad = intrinsics.clone()
    bad[0, 0, 0, 0] = 0.0
    with pytest.raises(ValueError, match=r"render_gaussians: `intrinsics`.*positive focal.*\(0, 0\)"):
        render_gaussians(gaussians, features, extrinsics, bad, 24, 32, backend="torch")
    nan_means = Gaussians(means=scene["means"][None].clone(), covariances=scene["covars"][None], opacities=scene["opacities"][None])
    nan_means.means[0, 4, 0] = float("nan")
    with pytest.raises(ValueError, match=r"render_gaussians: `means`.*\(0, 4\)"):
        render_gaussians(nan_means, features, extrinsics, intrinsics, 24, 32, backend="torch")


def test_huge_output_is_refused_up_front():
    # 100,000 x 100,000 x 65 float32 channels would be 2.4 TiB: refused from the sizes alone, naming them
    scene = _scene()
    with pytest.raises(RenderMemoryError, match=r"needs about .* GiB.*output.*budget.*fewer cameras or pixels") as info:
        render_features(**{**scene, "width": 100_000, "height": 100_000, "colors": torch.rand(6, 64)})
    assert "width x height 100000 x 100000, 64 channel(s), 6 Gaussian(s)" in str(info.value)


def test_intersection_estimate_bounds_the_real_count_and_refuses_over_budget():
    # 3000 large Gaussians over a 64x64 view: a small output but many tile intersections
    generator = torch.Generator().manual_seed(1)
    count = 3000
    means = torch.cat([torch.rand(count, 2, generator=generator) - 0.5, 2.0 + torch.rand(count, 1, generator=generator)], -1)
    covars = torch.diag_embed((0.05 + 0.2 * torch.rand(count, 1, generator=generator)).expand(count, 3) ** 2)
    opacities = torch.ones(count)
    viewmats = torch.eye(4)[None]
    Ks = torch.tensor([[60.0, 0, 32], [0, 60.0, 32], [0, 0, 1]])[None]
    projected = project_gaussians(means[None], covars[None], opacities[None], viewmats[None], Ks[None], 64, 64, 0.3, 0.01, 1e10)
    actual = int(intersect_tiles(projected, 8, 8, 8).tile_counts.sum())
    _, estimate, estimate_bytes = estimate_render_bytes(means[None], covars[None], viewmats[None], Ks[None], 64, 64, 3, 0.01, 1e10, 0.3, 8, 4)
    assert actual <= estimate <= 4 * actual, (actual, estimate)
    arguments = dict(means=means, covars=covars, opacities=opacities, colors=torch.rand(count, 3), viewmats=viewmats, Ks=Ks,
                     width=64, height=64, backend="torch", tile_size=8)
    with pytest.raises(RenderMemoryError, match=r"tile intersections"):
        render_features(**arguments, memory_budget=estimate_bytes // 2)
    render_features(**arguments, memory_budget=2 * estimate_bytes + (1 << 20))


@pytest.fixture(scope="module")
def context():
    config = SyntheticSceneConfig(num_scenes=1, num_frames=8, height=16, width=20, seed=5)
    views = generate_scene(config, 0).render([0, 4]).views
    return collate_multiview([MultiViewSample(views, views.select([1]), "s")]).context


@pytest.mark.parametrize(
    "field, index, value, message",
    [
        ("depths", (0, 1, 3, 4), -1.0, r"`context\.depths` must be >= 0.*\(0, 1, 3, 4\)"),
        ("depths", (0, 0, 2, 2), float("nan"), r"`context\.depths` must be finite.*\(0, 0, 2, 2\)"),
        ("extrinsics", (0, 1, 0, 0), 3.0, r"`context\.extrinsics` must be rigid.*\(0, 1\)"),
        ("intrinsics", (0, 0, 1, 1), 0.0, r"`context\.intrinsics` must have positive focal.*\(0, 0\)"),
        ("near", (0, 1), 0.0, r"`context\.near` must be > 0.*\(0, 1\)"),
    ],
)
def test_depth_lifter_checks_its_views(context, field, index, value, message):
    DepthLifter()(context)
    # Views checks itself when built; tensors changed in place afterwards (or a duck-typed Views) are caught here
    broken = type(context)(**{k: v.clone() if torch.is_tensor(v) else v for k, v in context.__dict__.items()})
    getattr(broken, field)[index] = value
    with pytest.raises(ValueError, match=rf"DepthLifter: {message}"):
        DepthLifter()(broken)


def test_mvsplat_lifter_names_non_finite_gaussians():
    from snd.models.mvsplat import MVSplatConfig, MVSplatLifter, MVSplatModel

    config = SyntheticSceneConfig(num_scenes=1, num_frames=8, height=16, width=24, seed=5)
    views = generate_scene(config, 0).render([0, 4]).views
    context = collate_multiview([MultiViewSample(views, views.select([1]), "s")]).context
    torch.manual_seed(0)
    model = MVSplatModel(MVSplatConfig.tiny(num_depth_candidates=12))
    lifter = MVSplatLifter(model)
    assert torch.isfinite(lifter(context).means).all()
    with torch.no_grad():
        for name, value in model.named_parameters():
            if "to_gaussians" in name or "gaussian" in name:
                value.fill_(float("nan"))
    with pytest.raises(ValueError, match=r"MVSplatLifter output: `means` must be finite.*first offending index \(0, 0\)"):
        lifter(context)
