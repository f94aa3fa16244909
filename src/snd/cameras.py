"""Camera conventions used everywhere in snd, and the conversions at the boundaries.

Inside the package a camera is always:

* **extrinsics**: camera-to-world 4x4, OpenCV axes (x right, y down, z forward);
* **intrinsics**: *normalised* 3x3 (``fx / W``, ``fy / H``, ``cx / W``, ``cy / H``),
  so the same matrix serves any resolution of the same view.

This is the MVSplat/pixelSplat convention. Loaders convert into it (for example
ScanNet++'s nerfstudio ``transforms_train.json`` stores OpenGL camera-to-world) and the
renderer converts out of it (gsplat wants world-to-camera and pixel intrinsics), through
the functions below, so no other code converts cameras by hand.
"""

from __future__ import annotations

import torch

# diag(1, -1, -1, 1): flips y and z, mapping OpenGL camera axes to OpenCV ones (an involution).
_GL_TO_CV = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))


def opengl_to_opencv(camera_to_world: torch.Tensor) -> torch.Tensor:
    """Convert OpenGL camera-to-world matrices (nerfstudio, ScanNet++) to OpenCV ones.

    Applies ``diag(1, -1, -1, 1)`` on both sides, as the SnD/FiT3D ScanNet++ loaders do:
    the right-hand factor turns camera axes, the left-hand one turns the world frame.

    Args:
        camera_to_world: ``[..., 4, 4]`` OpenGL camera-to-world.
    Returns:
        ``[..., 4, 4]`` OpenCV camera-to-world.
    """
    flip = _GL_TO_CV.to(camera_to_world)
    return flip @ camera_to_world @ flip


def invert_rigid(transform: torch.Tensor) -> torch.Tensor:
    """Invert rigid 4x4 transforms exactly (R^T, -R^T t) rather than with a general inverse.

    Args:
        transform: ``[..., 4, 4]`` rigid transforms.
    Returns:
        ``[..., 4, 4]`` inverses.
    """
    rotation = transform[..., :3, :3]
    translation = transform[..., :3, 3:]
    inverse = torch.zeros_like(transform)
    inverse[..., :3, :3] = rotation.transpose(-1, -2)
    inverse[..., :3, 3:] = -rotation.transpose(-1, -2) @ translation
    inverse[..., 3, 3] = 1
    return inverse


def camera_to_world_to_viewmat(camera_to_world: torch.Tensor) -> torch.Tensor:
    """``[..., 4, 4]`` camera-to-world (OpenCV) -> ``[..., 4, 4]`` world-to-camera (gsplat's ``viewmats``)."""
    return invert_rigid(camera_to_world)


def normalize_intrinsics(intrinsics: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Pixel intrinsics ``[..., 3, 3]`` -> normalised (row 0 divided by W, row 1 by H)."""
    scale = torch.tensor([1.0 / width, 1.0 / height, 1.0], dtype=intrinsics.dtype, device=intrinsics.device)
    return intrinsics * scale[:, None]


def denormalize_intrinsics(intrinsics: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Normalised intrinsics ``[..., 3, 3]`` -> pixel intrinsics for an image of ``width`` x ``height``.

    The principal point scales with the image, so ``cx = 0.5`` is the image centre at any size
    (pixel centres sit at +0.5, as in gsplat).
    """
    scale = torch.tensor([float(width), float(height), 1.0], dtype=intrinsics.dtype, device=intrinsics.device)
    return intrinsics * scale[:, None]


def make_intrinsics(fx: float, fy: float, cx: float, cy: float, dtype=torch.float32) -> torch.Tensor:
    """A single ``[3, 3]`` intrinsics matrix from its four numbers (normalised or pixels alike)."""
    return torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=dtype)


def check_rigid(transform: torch.Tensor, atol: float = 1e-3) -> str | None:
    """Return ``None`` if ``[..., 4, 4]`` transforms are finite and rigid, else a reason (for error messages)."""
    if transform.shape[-2:] != (4, 4):
        return f"expected shape [..., 4, 4], got {tuple(transform.shape)}"
    if not torch.isfinite(transform).all():
        return "contains non-finite values"
    t = transform.double()
    rotation = t[..., :3, :3]
    identity = torch.eye(3, dtype=t.dtype).expand_as(rotation)
    orthogonality_error = (rotation @ rotation.transpose(-1, -2) - identity).abs().max().item()
    if orthogonality_error > atol:
        return f"rotation part is not orthonormal (max |R R^T - I| = {orthogonality_error:.3g})"
    determinant = torch.linalg.det(rotation)
    if (determinant < 0).any():
        return "rotation part is a reflection (det < 0)"
    bottom = t[..., 3, :]
    expected = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=t.dtype)
    if (bottom - expected).abs().max().item() > atol:
        return f"last row is not [0, 0, 0, 1] (got {bottom.reshape(-1, 4)[0].tolist()})"
    return None


def pixel_rays(intrinsics: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Camera-space ray directions (z = 1) through pixel centres.

    Args:
        intrinsics: ``[..., 3, 3]`` normalised intrinsics.
    Returns:
        ``[..., H, W, 3]`` directions ``((u - cx) / fx, (v - cy) / fy, 1)`` for pixel centres
        ``u = (x + 0.5) / W``, ``v = (y + 0.5) / H``.
    """
    ys = (torch.arange(height, dtype=intrinsics.dtype, device=intrinsics.device) + 0.5) / height
    xs = (torch.arange(width, dtype=intrinsics.dtype, device=intrinsics.device) + 0.5) / width
    v, u = torch.meshgrid(ys, xs, indexing="ij")
    fx = intrinsics[..., 0, 0, None, None]
    fy = intrinsics[..., 1, 1, None, None]
    cx = intrinsics[..., 0, 2, None, None]
    cy = intrinsics[..., 1, 2, None, None]
    x = (u - cx) / fx
    y = (v - cy) / fy
    return torch.stack([x, y, torch.ones_like(x)], dim=-1)


def unproject_depth(depth: torch.Tensor, extrinsics: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """World points of every pixel from z-depth maps.

    Args:
        depth: ``[..., H, W]`` z-depth (distance along the optical axis).
        extrinsics: ``[..., 4, 4]`` camera-to-world (OpenCV).
        intrinsics: ``[..., 3, 3]`` normalised.
    Returns:
        ``[..., H, W, 3]`` world points.
    """
    height, width = depth.shape[-2:]
    points_camera = pixel_rays(intrinsics, height, width) * depth[..., None]
    rotation = extrinsics[..., None, None, :3, :3]
    translation = extrinsics[..., None, None, :3, 3]
    return (rotation @ points_camera[..., None])[..., 0] + translation


def project_points(points: torch.Tensor, extrinsics: torch.Tensor, intrinsics: torch.Tensor, height: int, width: int):
    """Project world points into a camera.

    Args:
        points: ``[..., P, 3]`` world points.
        extrinsics: ``[..., 4, 4]`` camera-to-world (OpenCV).
        intrinsics: ``[..., 3, 3]`` normalised.
    Returns:
        ``(pixels [..., P, 2], depth [..., P])``: continuous pixel coordinates (x, y) where the
        pixel with index (i, j) has its centre at (j + 0.5, i + 0.5), and camera z-depth.
    """
    world_to_camera = invert_rigid(extrinsics)
    rotation = world_to_camera[..., None, :3, :3]
    translation = world_to_camera[..., None, :3, 3]
    points_camera = (rotation @ points[..., None])[..., 0] + translation
    z = points_camera[..., 2]
    pixel_intrinsics = denormalize_intrinsics(intrinsics, width, height)
    fx = pixel_intrinsics[..., 0, 0, None]
    fy = pixel_intrinsics[..., 1, 1, None]
    cx = pixel_intrinsics[..., 0, 2, None]
    cy = pixel_intrinsics[..., 1, 2, None]
    x = fx * points_camera[..., 0] / z + cx
    y = fy * points_camera[..., 1] / z + cy
    return torch.stack([x, y], dim=-1), z
