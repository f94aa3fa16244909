"""Independent dense references for the splatting tests.

``dense_render`` evaluates every pixel against every Gaussian of one image with gsplat's
classic rules, looping over Gaussians in depth order exactly like one CUDA thread of
``rasterize_to_pixels_3dgs_fwd`` loops over its tile's list (but for all pixels at once and
without tiles, except for the tile-rectangle membership that decides which Gaussians a pixel
sees). It shares no code with ``snd.splatting``.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def random_rotations(count: int, generator: torch.Generator | None = None, dtype=torch.float64) -> torch.Tensor:
    """``[count, 3, 3]`` random proper rotations (QR of Gaussian matrices, sign-fixed)."""
    q, r = torch.linalg.qr(torch.randn(count, 3, 3, generator=generator, dtype=dtype))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]
    flip = torch.det(q) < 0
    q[flip, :, 0] = -q[flip, :, 0]
    return q


def random_scene(
    count: int,
    channels: int,
    width: int,
    height: int,
    cameras: int = 1,
    generator: torch.Generator | None = None,
    dtype=torch.float64,
    behind: float = 0.1,
):
    """Gaussians in front of (and a few behind) ``cameras`` pinhole cameras, unit-scale features.

    Returns a dict of ``render_features`` keyword arguments (unbatched: ``[N, ...]``, ``[C, ...]``).
    """
    g = generator
    focal = 0.9 * width
    depth = 1.0 + 4.0 * torch.rand(count, generator=g, dtype=dtype)
    depth[torch.rand(count, generator=g) < behind] *= -1.0  # some behind the first camera
    x = (torch.rand(count, generator=g, dtype=dtype) - 0.5) * 1.3 * width / focal * depth.abs()
    y = (torch.rand(count, generator=g, dtype=dtype) - 0.5) * 1.3 * height / focal * depth.abs()
    means = torch.stack([x, y, depth], -1)
    axes = random_rotations(count, g, dtype)
    scales = 0.01 + 0.12 * torch.rand(count, 3, generator=g, dtype=dtype)
    covars = axes @ torch.diag_embed(scales**2) @ axes.transpose(-1, -2)
    opacities = 0.02 + 0.97 * torch.rand(count, generator=g, dtype=dtype)
    colors = torch.rand(count, channels, generator=g, dtype=dtype)

    viewmats = torch.eye(4, dtype=dtype).repeat(cameras, 1, 1)
    if cameras > 1:  # small extra rotations/translations for the other cameras
        tilt = random_rotations(cameras - 1, g, dtype)
        small = torch.linalg.matrix_exp(0.1 * (tilt - tilt.transpose(-1, -2)))
        viewmats[1:, :3, :3] = small
        viewmats[1:, :3, 3] = 0.2 * torch.randn(cameras - 1, 3, generator=g, dtype=dtype)
    Ks = torch.tensor(
        [[focal, 0.0, width / 2 + 0.3], [0.0, focal, height / 2 - 0.2], [0.0, 0.0, 1.0]], dtype=dtype
    ).repeat(cameras, 1, 1)
    return dict(means=means, covars=covars, opacities=opacities, colors=colors, viewmats=viewmats, Ks=Ks)


def dense_render(*args, **kwargs):
    """One image, every pixel x every Gaussian. Returns ``(render [H, W, D], alpha [H, W], depth [H, W])``.

    Runs single-threaded: its many small ops would otherwise each pay an OpenMP wake-up, which
    costs tens of milliseconds on a loaded shared machine.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _dense_render(*args, **kwargs)
    finally:
        torch.set_num_threads(threads)


def _dense_render(
    means,  # [N, 3]
    covars,  # [N, 3, 3]
    opacities,  # [N]
    colors,  # [N, D]
    viewmat,  # [4, 4]
    K,  # [3, 3]
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    background=None,  # [D]
    tile_size: int = 16,
    stats: dict | None = None,  # receives contributing_pairs: (pixel, Gaussian) pairs blended
):
    dtype = means.dtype
    channels = colors.shape[-1]
    ys, xs = torch.meshgrid(torch.arange(height, dtype=dtype), torch.arange(width, dtype=dtype), indexing="ij")
    pixel_x, pixel_y = xs + 0.5, ys + 0.5
    tile_col, tile_row = (xs // tile_size).long(), (ys // tile_size).long()
    tiles_x, tiles_y = math.ceil(width / tile_size), math.ceil(height / tile_size)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    # Per-Gaussian geometry in numpy float64 (cheap for small scenes, independent of torch code paths).
    rotation, translation = viewmat[:3, :3].double().numpy(), viewmat[:3, 3].double().numpy()
    fx, fy, cx, cy = (float(v) for v in (fx, fy, cx, cy))
    limit_x = ((width - cx) / fx + 0.3 * 0.5 * width / fx, cx / fx + 0.3 * 0.5 * width / fx)
    limit_y = ((height - cy) / fy + 0.3 * 0.5 * height / fy, cy / fy + 0.3 * 0.5 * height / fy)
    means_np, covars_np = means.double().numpy(), covars.double().numpy()
    entries = []  # (float32 depth, index, mean2d, conic, opacity, tile box, depth)
    for index in range(means_np.shape[0]):
        x, y, z = rotation @ means_np[index] + translation
        if not near_plane <= z <= far_plane:
            continue
        cov_cam = rotation @ covars_np[index] @ rotation.T
        # gsplat's persp_proj: the Jacobian uses x/z, y/z clamped to 1.3x the half field of view.
        tx = z * min(limit_x[0], max(-limit_x[1], x / z))
        ty = z * min(limit_y[0], max(-limit_y[1], y / z))
        J = np.array([[fx / z, 0.0, -fx * tx / z**2], [0.0, fy / z, -fy * ty / z**2]])
        cov2d = J @ cov_cam @ J.T + eps2d * np.eye(2)
        if np.linalg.det(cov2d) <= 0:
            continue
        conic = np.linalg.inv(cov2d)
        opacity = float(opacities[index])
        if opacity < 1 / 255:
            continue
        extent = min(3.33, math.sqrt(2 * math.log(opacity * 255)))
        radius_x = math.ceil(extent * math.sqrt(cov2d[0, 0]))
        radius_y = math.ceil(extent * math.sqrt(cov2d[1, 1]))
        mean_x, mean_y = fx * x / z + cx, fy * y / z + cy
        if mean_x + radius_x <= 0 or mean_x - radius_x >= width or mean_y + radius_y <= 0 or mean_y - radius_y >= height:
            continue
        box = (
            min(max(0, math.floor((mean_x - radius_x) / tile_size)), tiles_x),
            min(max(0, math.ceil((mean_x + radius_x) / tile_size)), tiles_x),
            min(max(0, math.floor((mean_y - radius_y) / tile_size)), tiles_y),
            min(max(0, math.ceil((mean_y + radius_y) / tile_size)), tiles_y),
        )
        entries.append((float(np.float32(z)), index, mean_x, mean_y, conic.tolist(), opacity, box, float(z)))
    entries.sort(key=lambda entry: (entry[0], entry[1]))

    render = torch.zeros(height, width, channels, dtype=dtype)
    depth_sum = torch.zeros(height, width, dtype=dtype)
    transmittance = torch.ones(height, width, dtype=dtype)
    done = torch.zeros(height, width, dtype=torch.bool)
    contributing = 0
    for _, index, mean_x, mean_y, conic, opacity, box, z in entries:
        in_box = (tile_col >= box[0]) & (tile_col < box[1]) & (tile_row >= box[2]) & (tile_row < box[3])
        dx, dy = mean_x - pixel_x, mean_y - pixel_y
        sigma = 0.5 * (conic[0][0] * dx * dx + conic[1][1] * dy * dy) + conic[0][1] * dx * dy
        # (sigma capped at 200 only to keep exp() off its slow underflow path; alpha is 0 there anyway)
        alpha = torch.clamp(opacity * torch.exp(-sigma.clamp(max=200.0)), max=0.999)
        active = in_box & ~done & (sigma >= 0) & (alpha >= 1 / 255)
        next_t = transmittance * (1 - alpha)
        stopping = active & (next_t <= 1e-4)
        done = done | stopping
        active = active & ~stopping
        weight = torch.where(active, alpha * transmittance, torch.zeros_like(alpha))
        contributing += int(active.sum())
        render = render + weight[..., None] * colors[index]
        depth_sum = depth_sum + weight * z
        transmittance = torch.where(active, next_t, transmittance)
    alpha_total = 1 - transmittance
    if stats is not None:
        stats["contributing_pairs"] = contributing
    if background is not None:
        render = render + transmittance[..., None] * background
    return render, alpha_total, depth_sum / alpha_total.clamp(min=1e-10)
