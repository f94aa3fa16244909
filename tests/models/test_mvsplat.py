"""MVSplatModel: shapes, (view, row, col) order, camera conventions, save/load, lifter and RGB render.

Numerical parity with the official MVSplat encoder cannot be tested here (its code is not part of this repo);
it was checked out of tree by converting a random-weight official checkpoint (see BENCHMARKS/README). These tests
pin down the conventions that parity depends on with independent closed-form references.
"""

import math

import pytest
import torch

from snd.data.sample import Views
from snd.gaussians import Gaussians
from snd.models.mvsplat import MVSplatConfig, MVSplatLifter, MVSplatModel, hole_mask, render_rgb
from snd.models.mvsplat.depth_mvsplat import relative_poses, warp_features

HEIGHT, WIDTH = 16, 24


def two_cameras(batch: int = 1, baseline: float = 0.3, yaw_degrees: float = 0.0) -> torch.Tensor:
    """Camera 0 at the origin looking down +z; camera 1 moved along +x (and yawed), OpenCV c2w. [B, 2, 4, 4]"""
    yaw = math.radians(yaw_degrees)
    second = torch.eye(4)
    second[:3, :3] = torch.tensor([[math.cos(yaw), 0.0, math.sin(yaw)], [0.0, 1.0, 0.0], [-math.sin(yaw), 0.0, math.cos(yaw)]])
    second[0, 3] = baseline
    return torch.stack([torch.eye(4), second])[None].repeat(batch, 1, 1, 1)


def intrinsics(batch: int = 1, views: int = 2) -> torch.Tensor:
    return torch.tensor([[0.8, 0.0, 0.5], [0.0, 1.2, 0.5], [0.0, 0.0, 1.0]]).repeat(batch, views, 1, 1)


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return MVSplatModel(MVSplatConfig.tiny()).eval()


def run(model, batch=2, views=2, depths=None, seed=0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, views, 3, HEIGHT, WIDTH, generator=generator)
    extrinsics = two_cameras(batch) if views == 2 else torch.eye(4).repeat(batch, views, 1, 1)
    if views > 2:
        extrinsics[:, :, 0, 3] = torch.linspace(0, 0.5, views)
    near, far = torch.full((batch, views), 1.0), torch.full((batch, views), 20.0)
    with torch.no_grad():
        output = model(images, extrinsics, intrinsics(batch, views), near, far, depths=depths)
    return output, extrinsics, near, far


def project(points, c2w, K, height, width):
    """points [N, 3] world -> continuous pixel coordinates [N, 2] (x, y), pixel (i, j) spans [j, j+1] x [i, i+1]."""
    camera = (points - c2w[:3, 3]) @ c2w[:3, :3]
    pixel = camera @ K.T
    return pixel[:, :2] / pixel[:, 2:] * torch.tensor([width, height])


def test_shapes_ranges_and_gaussian_validity(tiny_model):
    output, _, near, far = run(tiny_model, batch=2)
    count = 2 * HEIGHT * WIDTH
    assert output.means.shape == (2, count, 3)
    assert output.covariances.shape == (2, count, 3, 3)
    assert output.opacities.shape == (2, count)
    assert output.harmonics.shape == (2, count, 3, (tiny_model.config.sh_degree + 1) ** 2)
    assert output.depths.shape == (2, 2, HEIGHT, WIDTH)
    assert torch.isfinite(output.means).all() and torch.isfinite(output.covariances).all()
    assert ((output.opacities > 0) & (output.opacities < 1)).all()
    # MVSplat clamps disparity to [1/far, 1/near], so depth lies in [near, far].
    assert output.depths.min() >= near.min() * (1 - 1e-5) and output.depths.max() <= far.max() * (1 + 1e-5)
    covariances = output.covariances.double()
    assert torch.allclose(covariances, covariances.transpose(-1, -2), atol=1e-6)
    assert (torch.linalg.eigvalsh(covariances) > 0).all()
    # Colours are finite and the degree-0 RGB is in a sensible range for random weights.
    assert torch.isfinite(output.colors).all() and (output.colors >= 0).all()


def test_means_follow_view_row_col_order_and_ray_distance(tiny_model):
    """Each Gaussian n = (v*H + y)*W + x sits at distance depth[v, y, x] from camera v, inside pixel (y, x)."""
    batch, views = 1, 2
    depths = torch.rand(batch, views, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(3)) * 5 + 1
    output, extrinsics, _, _ = run(tiny_model, batch=batch, depths=depths)
    means = output.means[0].view(views, HEIGHT, WIDTH, 3)
    rows, cols = torch.meshgrid(torch.arange(HEIGHT), torch.arange(WIDTH), indexing="ij")
    for view in range(views):
        c2w = extrinsics[0, view]
        distance = (means[view] - c2w[:3, 3]).norm(dim=-1)
        torch.testing.assert_close(distance, depths[0, view], rtol=1e-5, atol=1e-5)
        pixels = project(means[view].reshape(-1, 3), c2w, intrinsics()[0, view], HEIGHT, WIDTH).view(HEIGHT, WIDTH, 2)
        # The learned sub-pixel offset keeps each Gaussian strictly inside its own pixel.
        assert ((pixels[..., 0] - cols).abs().max() < 1 + 1e-4) and (pixels[..., 0] >= cols - 1e-4).all()
        assert ((pixels[..., 1] - rows).abs().max() < 1 + 1e-4) and (pixels[..., 1] >= rows - 1e-4).all()


def centre_offsets(model: MVSplatModel) -> MVSplatModel:
    """Zero the offset channels of the Gaussian head, so every Gaussian sits on its pixel centre's ray."""
    with torch.no_grad():
        last = model.depth_predictor.to_gaussians[2]
        last.weight[:2].zero_()
        last.bias[:2].zero_()
    return model


def test_plane_seen_by_two_views_lies_on_the_plane():
    """Textured fronto-parallel plane z = Z seen by two cameras: with MVSplat's depth forced to the plane
    (as distance along each pixel-centre ray), every Gaussian of both views lies on the plane, and view 1's
    Gaussians re-project into view 0 where the plane point really is."""
    torch.manual_seed(0)
    model = centre_offsets(MVSplatModel(MVSplatConfig.tiny())).eval()
    plane_z = 3.0
    extrinsics = two_cameras(1, baseline=0.4, yaw_degrees=-5.0)
    K = intrinsics()
    ys, xs = torch.meshgrid((torch.arange(HEIGHT) + 0.5) / HEIGHT, (torch.arange(WIDTH) + 0.5) / WIDTH, indexing="ij")
    pixels = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1)  # [H, W, 3] normalised homogeneous
    depths, images = [], []
    for view in range(2):
        c2w = extrinsics[0, view]
        rays = torch.einsum("ij,hwj->hwi", c2w[:3, :3] @ K[0, view].inverse(), pixels)
        unit = rays / rays.norm(dim=-1, keepdim=True)
        distance = (plane_z - c2w[2, 3]) / unit[..., 2]  # closed-form ray / plane intersection
        hit = c2w[:3, 3] + unit * distance[..., None]
        depths.append(distance)
        images.append(torch.stack([0.5 + 0.5 * torch.sin(3 * hit[..., 0]), 0.5 + 0.5 * torch.cos(2 * hit[..., 1]), 0.5 + 0.0 * hit[..., 0]]))
    depths = torch.stack(depths)[None]
    images = torch.stack(images)[None].clamp(0, 1)
    with torch.no_grad():
        output = model(images, extrinsics, K, torch.full((1, 2), 1.0), torch.full((1, 2), 20.0), depths=depths)
    means = output.means[0]
    torch.testing.assert_close(means[:, 2], torch.full_like(means[:, 2], plane_z), rtol=1e-5, atol=1e-5)
    # A Gaussian of view 1 lands, in view 0, on the pixel whose ray hits the same plane point.
    view1 = means.view(2, HEIGHT, WIDTH, 3)[1].reshape(-1, 3)
    in_view0 = project(view1, extrinsics[0, 0], K[0, 0], HEIGHT, WIDTH)
    ray0 = torch.cat([in_view0 / torch.tensor([WIDTH, HEIGHT]), torch.ones(len(view1), 1)], dim=1) @ K[0, 0].inverse().T
    torch.testing.assert_close(ray0 * plane_z, view1, rtol=1e-4, atol=1e-4)
    # Plane-parallel covariances stay symmetric positive definite after the world rotation.
    assert (torch.linalg.eigvalsh(output.covariances[0].double()) > 0).all()


def test_plane_sweep_warp_matches_reference_view_at_the_plane_depth():
    """The cost volume's warp (poses, pixel intrinsics) aligns view 1 onto view 0 at the plane's depth only.

    MVSplat's warp puts feature pixel (i, j) at (j, i) in pixel units of the 1/4 grid; the textures are drawn
    on the same grid so that only the camera geometry is tested.
    """
    height, width, candidates = 24, 32, 6
    near, far = 1.0, 6.0
    disparities = torch.linspace(1 / far, 1 / near, candidates)
    plane_index = 2
    plane_z = 1 / disparities[plane_index].item()
    extrinsics = two_cameras(1, baseline=0.25, yaw_degrees=4.0)
    K = intrinsics()[0, 0].clone()
    K[0] *= width
    K[1] *= height
    rows, cols = torch.meshgrid(torch.arange(height).float(), torch.arange(width).float(), indexing="ij")
    pixels = torch.stack([cols, rows, torch.ones_like(cols)], dim=-1)
    images = []
    for view in range(2):
        c2w = extrinsics[0, view]
        rays = torch.einsum("ij,hwj->hwi", c2w[:3, :3] @ K.inverse(), pixels)
        hit = c2w[:3, 3] + rays * ((plane_z - c2w[2, 3]) / rays[..., 2])[..., None]
        images.append(torch.stack([torch.sin(2.0 * hit[..., 0]), torch.cos(1.5 * hit[..., 1]), torch.sin(hit[..., 0] + hit[..., 1])]))
    images = torch.stack(images)[None]  # [1, 2, 3, h, w]
    pose = relative_poses(extrinsics)[0]  # [2, 4, 4], view-major: reference 0 -> source 1, reference 1 -> source 0
    source = images[:, [1, 0]].transpose(0, 1).reshape(2, 3, height, width)
    reference = images.transpose(0, 1).reshape(2, 3, height, width)
    warped = warp_features(source, K.repeat(2, 1, 1), pose, (1 / disparities).repeat(2, 1))  # [2, 3, D, h, w]
    # Pixels whose every bilinear tap lies inside the source image (zero padding would bias the border).
    coverage = warp_features(torch.ones(2, 1, height, width), K.repeat(2, 1, 1), pose, (1 / disparities).repeat(2, 1))[:, 0]
    valid = coverage > 1 - 1e-5
    error = ((warped - reference[:, :, None]).abs().sum(dim=1) * valid).sum(dim=(-1, -2)) / valid.sum(dim=(-1, -2)).clamp_min(1)
    for view in range(2):
        assert error[view].argmin().item() == plane_index, error[view]
        assert error[view, plane_index] < 0.02, error[view]
        others = torch.cat([error[view, :plane_index], error[view, plane_index + 1 :]])
        assert others.min() > 5 * error[view, plane_index]


def test_three_views_and_batch_independence(tiny_model):
    output, _, _, _ = run(tiny_model, batch=2, views=3)
    assert output.means.shape == (2, 3 * HEIGHT * WIDTH, 3)
    single, _, _, _ = run(tiny_model, batch=1, views=3)
    # Batch element 0 does not depend on element 1 (same inputs as a batch of one).
    torch.testing.assert_close(output.means[:1], single.means, rtol=1e-4, atol=1e-4)


def test_bad_inputs_raise_clear_errors(tiny_model):
    images = torch.rand(1, 2, 3, 20, 24)
    with pytest.raises(ValueError, match="multiples of"):
        tiny_model(images, two_cameras(), intrinsics(), torch.ones(1, 2), torch.full((1, 2), 10.0))
    with pytest.raises(ValueError, match="intrinsics"):
        tiny_model(torch.rand(1, 2, 3, HEIGHT, WIDTH), two_cameras(), torch.eye(3).repeat(1, 3, 1, 1), torch.ones(1, 2), torch.ones(1, 2))
    with pytest.raises(ValueError, match="near < far"):
        tiny_model(torch.rand(1, 2, 3, HEIGHT, WIDTH), two_cameras(), intrinsics(), torch.ones(1, 2), torch.ones(1, 2))


def test_save_pretrained_round_trip_and_auto_classes(tiny_model, tmp_path):
    import snd  # noqa: F401 - registers the Auto classes
    from transformers import AutoConfig, AutoModel

    tiny_model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert AutoConfig.from_pretrained(tmp_path).model_type == "snd_mvsplat"
    reloaded = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(reloaded, MVSplatModel)
    for name in ("num_depth_candidates", "feature_channels", "costvolume_unet_attn_res", "depth_unet_channel_mult", "sh_degree"):
        assert getattr(reloaded.config, name) == getattr(tiny_model.config, name), name
    first, _, _, _ = run(tiny_model, batch=1)
    second, _, _, _ = run(reloaded, batch=1)
    torch.testing.assert_close(first.means, second.means, rtol=0, atol=0)
    torch.testing.assert_close(first.opacities, second.opacities, rtol=0, atol=0)


def test_default_config_is_the_released_re10k_encoder():
    config = MVSplatConfig()
    assert config.num_depth_candidates == 128 and config.gaussians_per_pixel == 1 and config.sh_degree == 4
    assert config.costvolume_unet_attn_res == (4,) and config.depth_unet_attn_res == (16,)
    assert config.depth_unet_channel_mult == (1, 1, 1, 1, 1) and config.depth_unet_feat_dim == 32
    assert config.size_multiple == 16
    model = MVSplatModel(config)
    # The released encoder has 11,955,734 parameters in 471 state-dict entries (counted on the official code).
    assert sum(p.numel() for p in model.parameters()) == 11_955_734
    assert len(model.state_dict()) == 471


def batched_views(batch=1, views=2, seed=0) -> Views:
    generator = torch.Generator().manual_seed(seed)
    return Views(
        images=torch.rand(batch, views, 3, HEIGHT, WIDTH, generator=generator),
        extrinsics=two_cameras(batch),
        intrinsics=intrinsics(batch, views),
        near=torch.full((batch, views), 1.0),
        far=torch.full((batch, views), 20.0),
        masks=torch.zeros(batch, views, HEIGHT, WIDTH, dtype=torch.int64),
    )


def test_lifter_returns_gaussians_and_rgb_render_finds_holes(tiny_model):
    lifter = MVSplatLifter(tiny_model)
    context = batched_views()
    gaussians = lifter(context)
    assert isinstance(gaussians, Gaussians)
    assert gaussians.means.shape == (1, 2 * HEIGHT * WIDTH, 3) and gaussians.harmonics is not None
    assert not gaussians.means.requires_grad
    # From context camera 0 the scene covers the image; from a camera looking backwards nothing is visible.
    backwards = torch.eye(4)
    backwards[0, 0], backwards[2, 2] = -1.0, -1.0  # rotate 180 degrees about y: looks down -z
    targets = torch.stack([context.extrinsics[0, 0], backwards])[None]
    render = render_rgb(gaussians, targets, intrinsics(1, 2), HEIGHT, WIDTH, backend="torch")
    assert render.renders.shape == (1, 2, HEIGHT, WIDTH, 3)
    holes = hole_mask(render.renders)
    assert holes.shape == (1, 2, HEIGHT, WIDTH)
    assert holes[0, 1].all()
    assert holes[0, 0].float().mean() < 0.05
    # Rendered colours come from the degree-0 harmonics: the mean rendered colour stays within their range.
    colors = (0.28209479177387814 * gaussians.harmonics[..., 0] + 0.5).clamp_min(0)
    visible = render.renders[0, 0][~holes[0, 0]]
    assert visible.max() <= colors.max() + 1e-4
