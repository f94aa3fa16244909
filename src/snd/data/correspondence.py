"""Pixel correspondences between two views from depth and poses, with an occlusion check."""

from __future__ import annotations

import torch

from ..cameras import project_points, unproject_depth

__all__ = ["pixel_correspondences", "correspondence_pairs"]


def pixel_correspondences(
    depth_a: torch.Tensor,
    extrinsics_a: torch.Tensor,
    intrinsics_a: torch.Tensor,
    depth_b: torch.Tensor,
    extrinsics_b: torch.Tensor,
    intrinsics_b: torch.Tensor,
    relative_tolerance: float = 0.02,
    absolute_tolerance: float = 1e-3,
):
    """Where every pixel of view ``a`` lands in view ``b``, and whether it is seen there.

    Each pixel centre of ``a`` is unprojected with its z-depth and projected into ``b``. It is a
    valid correspondence when its depth is valid (> 0), it lands inside ``b``'s image in front of the
    camera, and ``b``'s depth at the nearest pixel agrees with the projected depth within
    ``absolute_tolerance + relative_tolerance * z`` (otherwise something occludes it in ``b``, or
    ``b`` has no depth there). ``b``'s depth at the point is interpolated bilinearly in inverse depth
    from the four surrounding pixel centres (all must be valid), which is exact on planes. So the
    test errs only at depth edges: visible points within about a pixel of an edge, and surfaces seen
    at grazing angles, are rejected; rarely (about 1% of accepted pixels in the synthetic tests) a
    point hidden just behind an occluder's silhouette is accepted, when most of the four pixel centres
    see the background. For exact visibility in synthetic scenes use ``SyntheticScene.correspondences``.

    Args:
        depth_a: ``[..., H, W]`` z-depth of view ``a`` (0 = invalid).
        extrinsics_a: ``[..., 4, 4]`` camera-to-world (OpenCV).
        intrinsics_a: ``[..., 3, 3]`` normalised.
        depth_b: ``[..., H2, W2]`` z-depth of view ``b`` (may have another resolution).
        extrinsics_b: ``[..., 4, 4]``.
        intrinsics_b: ``[..., 3, 3]``.
    Returns:
        ``(pixels_b [..., H, W, 2], valid [..., H, W])``: continuous (x, y) pixel coordinates in ``b``
        with pixel (i, j) centred at (j + 0.5, i + 0.5), and the validity mask.
    """
    height, width = depth_a.shape[-2:]
    height_b, width_b = depth_b.shape[-2:]
    points = unproject_depth(depth_a, extrinsics_a, intrinsics_a)  # [..., H, W, 3]
    flat = points.reshape(*points.shape[:-3], height * width, 3)
    pixels, z = project_points(flat, extrinsics_b, intrinsics_b, height_b, width_b)  # [..., P, 2], [..., P]
    x, y = pixels[..., 0], pixels[..., 1]
    inside = (z > 0) & (x >= 0) & (x < width_b) & (y >= 0) & (y < height_b)
    tolerance = absolute_tolerance + relative_tolerance * z.abs()
    depth_b_flat = depth_b.reshape(*depth_b.shape[:-2], height_b * width_b)

    def depth_at(column, row):
        column = column.clamp(0, width_b - 1).long()
        row = row.clamp(0, height_b - 1).long()
        return depth_b_flat.gather(-1, row * width_b + column)

    # Bilinear interpolation of inverse depth (exact for a plane seen across the four pixel centres
    # around the point). Across an occluding edge the mix matches neither surface, so the point is
    # rejected: errors at depth edges fall on the safe side.
    left, top = (x - 0.5).floor(), (y - 0.5).floor()
    fx, fy = (x - 0.5) - left, (y - 0.5) - top
    inverse = torch.zeros_like(z)
    all_valid = torch.ones_like(z, dtype=torch.bool)
    for dx, wx in ((0, 1 - fx), (1, fx)):
        for dy, wy in ((0, 1 - fy), (1, fy)):
            neighbour = depth_at(left + dx, top + dy)
            all_valid &= neighbour > 0
            inverse = inverse + wx * wy / neighbour.clamp_min(1e-12)
    interpolated = 1.0 / inverse.clamp_min(1e-12)
    agrees = all_valid & ((interpolated - z).abs() <= tolerance)
    valid = (depth_a.reshape(flat.shape[:-1]) > 0) & inside & agrees
    return pixels.reshape(*depth_a.shape, 2), valid.reshape(depth_a.shape)


def correspondence_pairs(pixels_b: torch.Tensor, valid: torch.Tensor):
    """Flatten one view pair's correspondences into matched lists.

    Args:
        pixels_b: ``[H, W, 2]`` from :func:`pixel_correspondences`.
        valid: ``[H, W]``.
    Returns:
        ``(pixels_a [P, 2], pixels_b [P, 2])`` float (x, y) pixel-centre coordinates of the valid pairs.
    """
    rows, columns = torch.nonzero(valid, as_tuple=True)
    pixels_a = torch.stack([columns, rows], dim=-1).to(pixels_b.dtype) + 0.5
    return pixels_a, pixels_b[rows, columns]
