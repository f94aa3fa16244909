"""Tests for snd.splatting on the pure-PyTorch backend (CUDA parity lives in test_gsplat_parity.py)."""

from __future__ import annotations

import math

import pytest
import torch

from snd.cameras import make_intrinsics, project_points
from snd.gaussians import Gaussians
from snd.splatting import render_features, render_gaussians
from snd.splatting._torch_impl import project_gaussians, quat_scale_to_covar
from tests.splatting.reference import dense_render, random_rotations, random_scene

WIDTH, HEIGHT = 56, 40  # not multiples of the tile size: partial tiles on both axes


def render_reference(scene, width, height, backgrounds=None, **kwargs):
    """Dense reference for every camera of an unbatched scene -> (renders [C,H,W,D], alphas [C,H,W], depths [C,H,W])."""
    outputs = [
        dense_render(
            scene["means"], scene["covars"], scene["opacities"], scene["colors"], scene["viewmats"][c], scene["Ks"][c],
            width, height, background=None if backgrounds is None else backgrounds[c], **kwargs,
        )
        for c in range(scene["viewmats"].shape[0])
    ]
    return tuple(torch.stack(parts) for parts in zip(*outputs))


def cast(scene, dtype):
    return {name: tensor.to(dtype) for name, tensor in scene.items()}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_dense_reference_on_random_scenes(dtype, seed):
    generator = torch.Generator().manual_seed(seed)
    scene = random_scene(250, 4, WIDTH, HEIGHT, cameras=2, generator=generator)
    backgrounds = torch.rand(2, 4, generator=generator, dtype=torch.float64)
    ref_renders, ref_alphas, ref_depths = render_reference(scene, WIDTH, HEIGHT, backgrounds)
    assert ref_alphas.max() > 0.9 and ref_alphas.min() < 0.1  # the scene has both covered and empty pixels

    out = render_features(**cast(scene, dtype), width=WIDTH, height=HEIGHT, backgrounds=backgrounds.to(dtype), render_depth=True)
    assert out.renders.shape == (2, HEIGHT, WIDTH, 4) and out.renders.dtype == dtype
    assert out.alphas.shape == (2, HEIGHT, WIDTH, 1) and out.depths.shape == (2, HEIGHT, WIDTH, 1)
    error = (out.renders.double() - ref_renders).abs()
    assert error.mean() < 1e-4 and error.max() < 1e-2
    assert (out.alphas[..., 0].double() - ref_alphas).abs().max() < 1e-3
    covered = ref_alphas > 0.05
    assert (out.depths[..., 0].double() - ref_depths)[covered].abs().max() < 1e-3 * ref_depths[covered].max()
    if dtype == torch.float64:  # same arithmetic up to rounding
        assert error.max() < 1e-9


def test_stops_like_gsplat_in_opaque_scenes():
    """Many opaque Gaussians: pixels hit the T <= 1e-4 stop, which must exclude the crossing Gaussian."""
    generator = torch.Generator().manual_seed(3)
    scene = random_scene(500, 3, 48, 33, generator=generator, behind=0.0)
    scene["opacities"] = 0.95 + 0.049 * torch.rand(500, generator=generator, dtype=torch.float64)
    ref_renders, ref_alphas, _ = render_reference(scene, 48, 33)
    assert (1 - ref_alphas < 1e-3).float().mean() > 0.05  # the stopping rule is exercised

    out = render_features(**scene, width=48, height=33)
    assert (out.renders - ref_renders).abs().max() < 1e-9
    assert (out.alphas[..., 0] - ref_alphas).abs().max() < 1e-9


def test_chunking_and_tile_size_do_not_change_results(single_thread):
    generator = torch.Generator().manual_seed(4)
    scene = random_scene(300, 5, WIDTH, HEIGHT, generator=generator)
    scene["opacities"] = scene["opacities"].clamp(min=0.5)
    base = render_features(**scene, width=WIDTH, height=HEIGHT, render_depth=True, backend="torch")
    for kwargs in (dict(max_elements=300), dict(max_elements=5000), dict(tile_size=16), dict(tile_size=4)):
        other = render_features(**scene, width=WIDTH, height=HEIGHT, render_depth=True, backend="torch", **kwargs)
        for a, b in zip(base, other):
            assert (a - b).abs().max() < 1e-9, kwargs


def test_grad_and_no_grad_paths_agree():
    generator = torch.Generator().manual_seed(5)
    scene = cast(random_scene(200, 3, WIDTH, HEIGHT, generator=generator), torch.float32)
    with torch.no_grad():
        fast = render_features(**scene, width=WIDTH, height=HEIGHT, render_depth=True)
    scene["colors"].requires_grad_(True)
    recorded = render_features(**scene, width=WIDTH, height=HEIGHT, render_depth=True)
    assert recorded.renders.requires_grad
    for a, b in zip(fast, recorded):
        assert torch.allclose(a, b.detach(), atol=1e-6)


def isotropic_setup(opacity, scale, depth, focal=20.0, centre=16.5, size=33):
    means = torch.tensor([[0.0, 0.0, depth]], dtype=torch.float64)
    covars = (scale**2 * torch.eye(3, dtype=torch.float64))[None]
    Ks = torch.tensor([[[focal, 0.0, centre], [0.0, focal, centre], [0.0, 0.0, 1.0]]], dtype=torch.float64)
    return dict(
        means=means, covars=covars, opacities=torch.tensor([opacity], dtype=torch.float64),
        viewmats=torch.eye(4, dtype=torch.float64)[None], Ks=Ks, width=size, height=size,
    )


@pytest.mark.parametrize("opacity,max_alpha", [(0.3, 0.999), (0.8, 0.999), (1.0, 0.999), (0.995, 0.99), (1.0, 0.99)])
def test_single_isotropic_gaussian_closed_form(opacity, max_alpha):
    focal, scale, depth = 20.0, 0.05, 2.0
    setup = isotropic_setup(opacity, scale, depth, focal)
    colors = torch.tensor([[0.25, -1.5, 3.0]], dtype=torch.float64)
    background = torch.tensor([[0.1, 0.2, 0.3]], dtype=torch.float64)
    out = render_features(colors=colors, backgrounds=background, render_depth=True, max_alpha=max_alpha, **setup)

    variance = (focal * scale / depth) ** 2 + 0.3  # EWA: J S J^T + eps2d, J = f / z on the axis
    ys, xs = torch.meshgrid(torch.arange(33.0, dtype=torch.float64), torch.arange(33.0, dtype=torch.float64), indexing="ij")
    sigma = 0.5 * ((xs + 0.5 - 16.5) ** 2 + (ys + 0.5 - 16.5) ** 2) / variance
    alpha = torch.clamp(opacity * torch.exp(-sigma), max=max_alpha)
    radius = math.ceil(min(3.33, math.sqrt(2 * math.log(255 * opacity))) * math.sqrt(variance))
    alpha = torch.where((alpha >= 1 / 255) & ((xs - 16).abs() <= radius) & ((ys - 16).abs() <= radius), alpha, 0.0)

    peak = out.renders[0, 16, 16]
    peak_alpha = min(opacity, max_alpha)
    assert torch.allclose(peak, peak_alpha * colors[0] + (1 - peak_alpha) * background[0], atol=1e-12)
    assert torch.allclose(out.alphas[0, ..., 0], alpha, atol=1e-12)
    expected = alpha[..., None] * colors[0] + (1 - alpha[..., None]) * background[0]
    assert torch.allclose(out.renders[0], expected, atol=1e-12)
    assert torch.allclose(out.depths[0, ..., 0][alpha > 0], torch.tensor(depth, dtype=torch.float64), atol=1e-12)
    assert (out.depths[0, ..., 0][alpha == 0] == 0).all()


def test_permutation_invariance():
    generator = torch.Generator().manual_seed(6)
    scene = random_scene(150, 3, WIDTH, HEIGHT, cameras=2, generator=generator)
    permutation = torch.randperm(150, generator=generator)
    permuted = dict(scene)
    for name in ("means", "covars", "opacities", "colors"):
        permuted[name] = scene[name][permutation]
    a = render_features(**scene, width=WIDTH, height=HEIGHT, render_depth=True)
    b = render_features(**permuted, width=WIDTH, height=HEIGHT, render_depth=True)
    for x, y in zip(a, b):
        assert (x - y).abs().max() < 1e-12


def test_empty_scene_renders_background():
    scene = random_scene(0, 6, WIDTH, HEIGHT, cameras=2)
    background = torch.rand(2, 6, dtype=torch.float64)
    out = render_features(**scene, width=WIDTH, height=HEIGHT, backgrounds=background, render_depth=True)
    assert out.renders.shape == (2, HEIGHT, WIDTH, 6)
    assert torch.equal(out.renders, background[:, None, None, :].expand_as(out.renders))
    assert (out.alphas == 0).all() and (out.depths == 0).all()
    black = render_features(**scene, width=WIDTH, height=HEIGHT)
    assert (black.renders == 0).all()


def test_gaussians_behind_camera_or_outside_depth_range_are_culled():
    generator = torch.Generator().manual_seed(7)
    scene = random_scene(100, 3, WIDTH, HEIGHT, generator=generator, behind=0.0)
    base = render_features(**scene, width=WIDTH, height=HEIGHT, near_plane=0.5, far_plane=50.0)
    assert base.alphas.max() > 0.5

    extra = random_scene(60, 3, WIDTH, HEIGHT, generator=generator, behind=0.0)
    depth = extra["means"][:, 2:3]
    # Mirror behind the camera (projects to the same pixels with flipped sign), just inside the
    # near plane, and beyond the far plane.
    shifted = torch.cat([-extra["means"][:20], extra["means"][20:40] / depth[20:40] * 0.4, extra["means"][40:] / depth[40:] * 60.0])
    combined = {name: torch.cat([scene[name], extra[name]]) for name in ("covars", "opacities", "colors")}
    combined["means"] = torch.cat([scene["means"], shifted])
    combined["opacities"][100:] = 1.0
    out = render_features(**combined, viewmats=scene["viewmats"], Ks=scene["Ks"], width=WIDTH, height=HEIGHT, near_plane=0.5, far_plane=50.0)
    assert torch.equal(out.renders, base.renders) and torch.equal(out.alphas, base.alphas)


@pytest.mark.parametrize("channels", [1, 385])
def test_channel_counts(channels):
    generator = torch.Generator().manual_seed(8)
    scene = random_scene(120, channels, 40, 24, generator=generator)
    ref_renders, _, _ = render_reference(scene, 40, 24)
    out = render_features(**cast(scene, torch.float32), width=40, height=24)
    assert out.renders.shape == (1, 24, 40, channels)
    error = (out.renders.double() - ref_renders).abs()
    assert error.mean() < 1e-4 and error.max() < 1e-2
    # Any channel rendered alone matches the same channel of the one-pass render.
    for channel in (0, channels - 1):
        single = render_features(**dict(scene, colors=scene["colors"][:, channel : channel + 1]), width=40, height=24)
        assert (single.renders[..., 0] - out.renders[..., channel].double()).abs().max() < 1e-5


def test_leading_batch_dims_and_per_camera_colors():
    generator = torch.Generator().manual_seed(9)
    scenes = [random_scene(80, 3, 32, 24, cameras=2, generator=generator) for _ in range(6)]
    stacked = {name: torch.stack([s[name] for s in scenes]).reshape(2, 3, *scenes[0][name].shape) for name in scenes[0]}
    out = render_features(**stacked, width=32, height=24, render_depth=True)
    assert out.renders.shape == (2, 3, 2, 24, 32, 3) and out.depths.shape == (2, 3, 2, 24, 32, 1)
    for index, scene in enumerate(scenes):
        single = render_features(**scene, width=32, height=24, render_depth=True)
        assert torch.allclose(out.renders.reshape(6, 2, 24, 32, 3)[index], single.renders, atol=1e-12)
        assert torch.allclose(out.depths.reshape(6, 2, 24, 32, 1)[index], single.depths, atol=1e-12)

    # colors [..., C, N, D]: camera c uses its own colours
    scene = scenes[0]
    per_camera = torch.stack([scene["colors"], 1.0 - scene["colors"]])
    both = render_features(**dict(scene, colors=per_camera), width=32, height=24)
    second = render_features(**dict(scene, colors=1.0 - scene["colors"]), width=32, height=24)
    assert torch.allclose(both.renders[1], second.renders[1], atol=1e-12)


def test_quats_and_scales_match_covariances():
    generator = torch.Generator().manual_seed(10)
    quats = torch.randn(50, 4, generator=generator, dtype=torch.float64)
    scales = 0.02 + 0.1 * torch.rand(50, 3, generator=generator, dtype=torch.float64)
    # Independent construction: rotation matrix from the unit quaternion via its standard formula.
    w, x, y, z = torch.nn.functional.normalize(quats, dim=-1).unbind(-1)
    rotation = torch.stack(
        [
            torch.stack([w * w + x * x - y * y - z * z, 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            torch.stack([2 * (x * y + w * z), w * w - x * x + y * y - z * z, 2 * (y * z - w * x)], -1),
            torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), w * w - x * x - y * y + z * z], -1),
        ],
        dim=-2,
    )
    covars = rotation @ torch.diag_embed(scales**2) @ rotation.transpose(-1, -2)
    assert torch.allclose(quat_scale_to_covar(quats, scales), covars, atol=1e-12)

    scene = random_scene(50, 3, WIDTH, HEIGHT, generator=generator, behind=0.0)
    scene["covars"] = covars
    a = render_features(**scene, width=WIDTH, height=HEIGHT)
    scene.pop("covars")
    b = render_features(**scene, quats=quats, scales=scales, width=WIDTH, height=HEIGHT)
    assert torch.allclose(a.renders, b.renders, atol=1e-10)


def test_projection_matches_gsplat_reference_implementation():
    """Another library as reference: gsplat's own pure-PyTorch projection (runs on CPU)."""
    gsplat_torch = pytest.importorskip("gsplat.cuda._torch_impl")
    generator = torch.Generator().manual_seed(11)
    scene = random_scene(200, 3, WIDTH, HEIGHT, cameras=2, generator=generator)
    scene["means"][:60, :2] *= 2.5  # well outside the field of view: exercises the Jacobian's frustum clamp
    ours = project_gaussians(
        scene["means"][None], scene["covars"][None], scene["opacities"][None], scene["viewmats"][None], scene["Ks"][None],
        WIDTH, HEIGHT, 0.3, 0.01, 1e10,
    )
    radii, means2d, depths, conics, _ = gsplat_torch._fully_fused_projection(
        scene["means"], scene["covars"], scene["viewmats"], scene["Ks"], WIDTH, HEIGHT, eps2d=0.3
    )
    in_front = depths > 0.01
    for mine, theirs in ((ours.means2d, means2d), (ours.conics, conics), (ours.depths, depths)):
        mine = mine.reshape(theirs.shape)
        assert torch.allclose(mine[in_front], theirs[in_front], rtol=1e-9, atol=1e-9)
    # Their reference uses the fixed 3.33-sigma extent; ours is the opacity-aware (tighter) one.
    visible = ours.visible.reshape(in_front.shape)
    assert (ours.radii.reshape(radii.shape)[visible] <= radii[visible]).all()


@pytest.fixture
def single_thread():
    """Many tiny ops: on a loaded shared CPU each OpenMP region costs more than the op itself."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_gradcheck_float64(single_thread):
    generator = torch.Generator().manual_seed(12)
    rotations = random_rotations(3, generator)
    means = torch.tensor([[0.1, -0.05, 2.0], [-0.15, 0.1, 2.5], [0.05, 0.12, 3.0]], dtype=torch.float64)
    covars = rotations @ torch.diag_embed(torch.tensor([[0.08, 0.05, 0.06], [0.1, 0.07, 0.05], [0.06, 0.09, 0.08]], dtype=torch.float64) ** 2) @ rotations.transpose(-1, -2)
    opacities = torch.tensor([0.6, 0.45, 0.7], dtype=torch.float64)
    colors = torch.rand(3, 2, generator=generator, dtype=torch.float64)
    Ks = torch.tensor([[[18.0, 0.0, 10.3], [0.0, 18.0, 8.7], [0.0, 0.0, 1.0]]], dtype=torch.float64)
    viewmats = torch.eye(4, dtype=torch.float64)[None]

    def render(means, covars, opacities, colors):
        out = render_features(
            means, None, None, opacities, colors, viewmats, Ks, 20, 18, covars=covars, render_depth=True, backend="torch", tile_size=8
        )
        return out.renders, out.alphas, out.depths

    inputs = tuple(t.clone().requires_grad_(True) for t in (means, covars, opacities, colors))
    assert render(*inputs)[1].max() > 0.5
    # fast_mode checks a random vector-Jacobian product against finite differences (the full
    # Jacobian needs one backward pass per output pixel and channel).
    assert torch.autograd.gradcheck(render, inputs, eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)

    # Full Jacobian on a crop around the Gaussians' centres (the image is 20 x 18, so tiles differ).
    def render_crop(*args):
        return tuple(output[0, 6:12, 7:13] for output in render(*args))

    assert torch.autograd.gradcheck(render_crop, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


def test_render_gaussians_converts_snd_cameras():
    """A small Gaussian at a world point lands where snd.cameras.project_points puts that point."""
    generator = torch.Generator().manual_seed(13)
    width, height = 48, 32
    rotation = random_rotations(1, generator)[0]
    camera_to_world = torch.eye(4, dtype=torch.float64)
    camera_to_world[:3, :3] = rotation
    camera_to_world[:3, 3] = torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64)
    intrinsics = make_intrinsics(0.9, 1.2, 0.45, 0.55, dtype=torch.float64)  # fx/W, fy/H, cx/W, cy/H
    points_camera = torch.tensor([[0.21, -0.13, 2.0], [-0.4, 0.3, 3.0]], dtype=torch.float64)
    points = points_camera @ rotation.T + camera_to_world[:3, 3]
    gaussians = Gaussians(
        means=points[None],
        covariances=(0.03**2 * torch.eye(3, dtype=torch.float64)).expand(1, 2, 3, 3),
        opacities=torch.full((1, 2), 0.9, dtype=torch.float64),
    )
    features = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]], dtype=torch.float64)  # one channel per Gaussian
    out = render_gaussians(gaussians, features, camera_to_world[None, None], intrinsics[None, None], height, width, render_depth=True)
    assert out.renders.shape == (1, 1, height, width, 2)

    pixels, depth = project_points(points, camera_to_world, intrinsics, height, width)
    ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    for index in range(2):
        weight = out.renders[0, 0, ..., index]
        assert weight.sum() > 1.0
        centroid = torch.stack([(weight * xs).sum(), (weight * ys).sum()]) / weight.sum()
        assert torch.allclose(centroid, pixels[index], atol=0.05), (centroid, pixels[index])
        peak = torch.nonzero(weight == weight.max())[0]
        assert math.isclose(out.depths[0, 0, peak[0], peak[1], 0].item(), depth[index].item(), rel_tol=1e-9)

    # features default to the Gaussians' own
    again = render_gaussians(gaussians.with_features(features), None, camera_to_world[None, None], intrinsics[None, None], height, width)
    assert torch.equal(again.renders, out.renders)


def test_clear_errors():
    scene = random_scene(10, 3, 16, 16)
    with pytest.raises(ValueError, match="opacities"):
        render_features(**dict(scene, opacities=scene["opacities"][:5]), width=16, height=16)
    with pytest.raises(ValueError, match="colors"):
        render_features(**dict(scene, colors=scene["colors"][None, None]), width=16, height=16)
    with pytest.raises(ValueError, match="covars"):
        render_features(**dict(scene, covars=None), width=16, height=16)
    with pytest.raises(ValueError, match="CUDA"):
        render_features(**scene, width=16, height=16, backend="gsplat")
    with pytest.raises(ValueError, match="backend"):
        render_features(**scene, width=16, height=16, backend="opengl")
    with pytest.raises(ValueError, match="width"):
        render_features(**scene, width=0, height=16)
    gaussians = Gaussians(scene["means"][None], scene["covars"][None], scene["opacities"][None])
    with pytest.raises(ValueError, match="features"):
        render_gaussians(gaussians, None, torch.eye(4)[None, None], torch.eye(3)[None, None], 16, 16)
    with pytest.raises(ValueError, match="intrinsics"):
        render_gaussians(gaussians, scene["colors"][None], torch.eye(4)[None, None], torch.eye(3)[None], 16, 16)


def test_mixed_dtypes_compute_in_means_precision():
    scene = random_scene(60, 4, 32, 24, generator=torch.Generator().manual_seed(14), behind=0.0)
    reference = render_features(**cast(scene, torch.float32), width=32, height=24)
    mixed = dict(cast(scene, torch.float32), Ks=scene["Ks"], viewmats=scene["viewmats"], colors=scene["colors"].to(torch.bfloat16))
    out = render_features(**mixed, width=32, height=24)
    assert out.renders.dtype == torch.bfloat16 and out.alphas.dtype == torch.float32
    assert torch.allclose(out.alphas, reference.alphas, atol=1e-6)
    assert (out.renders.float() - reference.renders).abs().max() < 2e-2  # bfloat16 colours and output
