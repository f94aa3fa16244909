"""Camera conventions: conversions checked against closed-form cases and round trips."""

import math

import pytest
import torch

from snd.cameras import (
    camera_to_world_to_viewmat,
    check_rigid,
    denormalize_intrinsics,
    invert_rigid,
    make_intrinsics,
    normalize_intrinsics,
    opengl_to_opencv,
    pixel_rays,
    project_points,
    unproject_depth,
)
from snd.gaussians import Gaussians


def random_pose(generator):
    axis = torch.nn.functional.normalize(torch.randn(3, generator=generator, dtype=torch.float64), dim=0)
    angle = torch.rand(1, generator=generator, dtype=torch.float64) * math.pi
    skew = torch.tensor([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]], dtype=torch.float64)
    rotation = torch.eye(3, dtype=torch.float64) + torch.sin(angle) * skew + (1 - torch.cos(angle)) * skew @ skew
    pose = torch.eye(4, dtype=torch.float64)
    pose[:3, :3] = rotation
    pose[:3, 3] = torch.randn(3, generator=generator, dtype=torch.float64)
    return pose


def test_invert_rigid_matches_general_inverse():
    generator = torch.Generator().manual_seed(0)
    poses = torch.stack([random_pose(generator) for _ in range(5)])
    assert torch.allclose(invert_rigid(poses), torch.linalg.inv(poses), atol=1e-12)
    assert torch.allclose(camera_to_world_to_viewmat(poses) @ poses, torch.eye(4, dtype=torch.float64).expand(5, 4, 4), atol=1e-12)


def test_opengl_to_opencv_flips_camera_axes():
    # An OpenGL camera at the origin looks down -z with y up; in OpenCV terms it looks down +z' with y' down.
    gl_pose = torch.eye(4)
    cv_pose = opengl_to_opencv(gl_pose)
    assert torch.equal(cv_pose, torch.eye(4))  # identity is its own conversion (both sides flip)
    generator = torch.Generator().manual_seed(1)
    pose = random_pose(generator).float()
    converted = opengl_to_opencv(pose)
    assert torch.allclose(opengl_to_opencv(converted), pose, atol=1e-6)  # involution
    # A world point in front of the OpenGL camera (negative camera z) is in front of the OpenCV one (positive z)
    # once the world frame is flipped the same way.
    flip = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))
    point_gl_camera = torch.tensor([0.3, 0.2, -2.0, 1.0])
    world_gl = pose @ point_gl_camera
    world_cv = flip @ world_gl
    point_cv_camera = invert_rigid(converted) @ world_cv
    assert torch.allclose(point_cv_camera[:3], torch.tensor([0.3, -0.2, 2.0]), atol=1e-5)


def test_intrinsics_normalisation_round_trip_and_centre():
    pixel = make_intrinsics(500.0, 480.0, 320.0, 240.0)
    normalised = normalize_intrinsics(pixel, 640, 480)
    assert torch.allclose(normalised, make_intrinsics(500 / 640, 1.0, 0.5, 0.5))
    assert torch.allclose(denormalize_intrinsics(normalised, 640, 480), pixel)
    # the same normalised matrix at half resolution halves focal lengths and principal point
    assert torch.allclose(denormalize_intrinsics(normalised, 320, 240), make_intrinsics(250.0, 240.0, 160.0, 120.0))


def test_pixel_rays_principal_point_pixel():
    intrinsics = make_intrinsics(1.0, 1.0, 0.5, 0.5)
    rays = pixel_rays(intrinsics, 4, 4)
    # pixel centres at +0.5: the four central pixels are symmetric around the optical axis
    assert torch.allclose(rays[1, 1, :2], torch.tensor([-0.125, -0.125]))
    assert torch.allclose(rays[2, 2, :2], torch.tensor([0.125, 0.125]))


def test_unproject_then_project_lands_on_pixel_centres():
    generator = torch.Generator().manual_seed(2)
    pose = random_pose(generator)
    intrinsics = make_intrinsics(0.9, 1.2, 0.45, 0.55, dtype=torch.float64)
    depth = torch.rand(6, 8, generator=generator, dtype=torch.float64) * 3 + 1
    points = unproject_depth(depth, pose, intrinsics)
    pixels, z = project_points(points.reshape(-1, 3), pose, intrinsics, 6, 8)
    ys, xs = torch.meshgrid(torch.arange(6, dtype=torch.float64), torch.arange(8, dtype=torch.float64), indexing="ij")
    assert torch.allclose(pixels, torch.stack([xs + 0.5, ys + 0.5], -1).reshape(-1, 2), atol=1e-9)
    assert torch.allclose(z, depth.reshape(-1), atol=1e-9)


def test_check_rigid_reasons():
    assert check_rigid(torch.eye(4)) is None
    bad = torch.eye(4)
    bad[0, 0] = 2
    assert "orthonormal" in check_rigid(bad)
    assert "non-finite" in check_rigid(torch.full((4, 4), float("nan")))
    reflection = torch.diag(torch.tensor([1.0, 1.0, -1.0, 1.0]))
    assert "reflection" in check_rigid(reflection)
    assert "shape" in check_rigid(torch.eye(3))


def test_gaussians_validate_shapes_and_attach_features():
    means = torch.zeros(2, 2 * 3 * 4, 3)
    gaussians = Gaussians(means, torch.eye(3).expand(2, 24, 3, 3), torch.ones(2, 24))
    features = torch.arange(2 * 2 * 5 * 3 * 4, dtype=torch.float32).reshape(2, 2, 5, 3, 4)  # [B, V, C, H, W]
    attached = gaussians.with_features(features)
    # Gaussian n = (v * H + y) * W + x carries the feature of pixel (v, y, x)
    v, y, x = 1, 2, 3
    assert torch.equal(attached.features[1, (v * 3 + y) * 4 + x], features[1, v, :, y, x])
    with pytest.raises(ValueError, match="covariances"):
        Gaussians(means, torch.eye(3).expand(2, 23, 3, 3), torch.ones(2, 24))
    with pytest.raises(ValueError, match="opacities"):
        Gaussians(means, torch.eye(3).expand(2, 24, 3, 3), torch.ones(2, 23))
