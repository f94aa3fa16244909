"""Pure-PyTorch twin of gsplat's classic 3DGS rasterizer: tiled, any device, any channel count.

It reproduces gsplat 1.5's ``rasterization(..., rasterize_mode="classic")`` step by step:

1. **Projection** (``projection_ewa_3dgs_fused``): world -> camera with the view matrix,
   near/far culling on camera z, EWA Jacobian with the +-30% frustum clamp of ``persp_proj``,
   ``eps2d`` added to the 2D covariance diagonal, conic = inverse 2D covariance, opacity-aware
   screen extent ``ceil(min(3.33, sqrt(2 ln(255 o))) * sqrt(cov2d_ii))`` per axis, Gaussians with
   opacity < 1/255 or entirely off screen culled.
2. **Tile binning** (``isect_tiles``): each Gaussian joins every 16x16 tile its extent rectangle
   touches; intersections are sorted by (image, tile, camera z), ties keeping Gaussian order.
3. **Compositing** (``rasterize_to_pixels_3dgs_fwd``): per pixel (centre at +0.5), front to
   back, ``alpha = min(0.999, o * exp(-sigma))``; a Gaussian with ``sigma < 0`` or
   ``alpha < 1/255`` is skipped; the pixel stops, *without* that Gaussian, as soon as the next
   transmittance would be ``<= 1e-4``; ``render = sum(w_i c_i) + T * background``,
   ``alpha = 1 - T``.

Compositing is vectorised across tiles: the depth-sorted intersection lists of a group of tiles
with similar list lengths are padded into ``[tiles, K]``, alphas are evaluated for
``[tiles, 256 pixels, K]``, transmittance comes from a cumulative product, and the features are
blended by one batched matmul ``[tiles, 256, K] @ [tiles, K, D]``. So the geometry is done once
for any number of channels, and memory is bounded by ``max_elements`` per step (a pixels x
Gaussians tensor is never built). Everything is plain autograd-able torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

ALPHA_THRESHOLD = 1.0 / 255.0  # gsplat's ALPHA_THRESHOLD
MAX_ALPHA = 0.999
TRANSMITTANCE_THRESHOLD = 1e-4  # a pixel is done when the next T would be <= this
MAX_EXTENT = 3.33  # screen extent in standard deviations (before the opacity-aware bound)
FRUSTUM_MARGIN = 0.3  # persp_proj clamps x/z, y/z to 30% beyond the image when building J
DEFAULT_MAX_ELEMENTS = 1 << 22  # (tiles x 256 x K) elements per compositing step


def quat_scale_to_covar(quats: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """World covariances ``R S S^T R^T`` from quaternions and scales (gsplat's convention).

    Args:
        quats: ``[..., 4]`` quaternions ``(w, x, y, z)``, normalised here.
        scales: ``[..., 3]`` standard deviations along the rotated axes.
    Returns:
        ``[..., 3, 3]`` covariances.
    """
    w, x, y, z = torch.nn.functional.normalize(quats, dim=-1).unbind(-1)
    rotation = torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(*quats.shape[:-1], 3, 3)
    scaled = rotation * scales[..., None, :]
    return scaled @ scaled.transpose(-1, -2)


def symmetrize_upper(covars: torch.Tensor) -> torch.Tensor:
    """``[..., 3, 3]`` -> symmetric matrix built from the upper triangle, as gsplat reads covariances."""
    upper = torch.triu(covars)
    return upper + torch.triu(covars, diagonal=1).transpose(-1, -2)


@dataclass
class ProjectedGaussians:
    """Screen-space Gaussians, one set per image (``I = B * C`` images, flattened)."""

    means2d: torch.Tensor  # [I, N, 2] pixel coordinates
    conics: torch.Tensor  # [I, N, 3] upper triangle (a, b, c) of the inverse 2D covariance
    depths: torch.Tensor  # [I, N] camera z
    opacities: torch.Tensor  # [I, N]
    radii: torch.Tensor  # [I, N, 2] int64 screen extent in pixels, 0 where culled
    visible: torch.Tensor  # [I, N] bool


def project_gaussians(
    means: torch.Tensor,  # [B, N, 3]
    covars: torch.Tensor,  # [B, N, 3, 3] symmetric
    opacities: torch.Tensor,  # [B, N]
    viewmats: torch.Tensor,  # [B, C, 4, 4] world-to-camera
    Ks: torch.Tensor,  # [B, C, 3, 3] pixel intrinsics
    width: int,
    height: int,
    eps2d: float,
    near_plane: float,
    far_plane: float,
) -> ProjectedGaussians:
    """EWA projection with gsplat's culling rules (see module docstring). Differentiable."""
    batch, count = means.shape[:2]
    cameras = viewmats.shape[1]
    rotation = viewmats[..., :3, :3]  # [B, C, 3, 3]
    translation = viewmats[..., :3, 3]  # [B, C, 3]
    means_cam = torch.einsum("bcij,bnj->bcni", rotation, means) + translation[:, :, None]  # [B, C, N, 3]
    covars_cam = rotation[:, :, None] @ covars[:, None] @ rotation[:, :, None].transpose(-1, -2)  # [B, C, N, 3, 3]

    x, y, z = means_cam.unbind(-1)  # [B, C, N]
    in_depth_range = (z >= near_plane) & (z <= far_plane)
    # Culled Gaussians get harmless stand-in values so no inf/nan reaches autograd.
    z = torch.where(in_depth_range, z, torch.ones_like(z))

    fx, fy = Ks[..., 0, 0, None], Ks[..., 1, 1, None]  # [B, C, 1]
    cx, cy = Ks[..., 0, 2, None], Ks[..., 1, 2, None]
    lim_x_pos = (width - cx) / fx + FRUSTUM_MARGIN * (0.5 * width / fx)
    lim_x_neg = cx / fx + FRUSTUM_MARGIN * (0.5 * width / fx)
    lim_y_pos = (height - cy) / fy + FRUSTUM_MARGIN * (0.5 * height / fy)
    lim_y_neg = cy / fy + FRUSTUM_MARGIN * (0.5 * height / fy)
    rz = 1.0 / z
    tx = z * torch.minimum(lim_x_pos, torch.maximum(-lim_x_neg, x * rz))
    ty = z * torch.minimum(lim_y_pos, torch.maximum(-lim_y_neg, y * rz))
    zeros = torch.zeros_like(z)
    jacobian = torch.stack(
        [fx * rz, zeros, -fx * tx * rz * rz, zeros, fy * rz, -fy * ty * rz * rz], dim=-1
    ).reshape(batch, cameras, count, 2, 3)
    cov2d = jacobian @ covars_cam @ jacobian.transpose(-1, -2)  # [B, C, N, 2, 2]
    means2d = torch.stack([fx * x * rz + cx, fy * y * rz + cy], dim=-1)  # [B, C, N, 2]

    cov_xx = cov2d[..., 0, 0] + eps2d
    cov_xy = cov2d[..., 0, 1]
    cov_yy = cov2d[..., 1, 1] + eps2d
    det = cov_xx * cov_yy - cov_xy * cov_xy
    invertible = det > 0
    det = torch.where(invertible, det, torch.ones_like(det))
    conics = torch.stack([cov_yy / det, -cov_xy / det, cov_xx / det], dim=-1)  # [B, C, N, 3]

    opacities = opacities[:, None].expand(batch, cameras, count)
    with torch.no_grad():
        opaque_enough = opacities >= ALPHA_THRESHOLD
        safe_opacity = opacities.clamp(min=ALPHA_THRESHOLD)
        extent = torch.sqrt(2.0 * torch.log(safe_opacity / ALPHA_THRESHOLD)).clamp(max=MAX_EXTENT)
        radius_x = torch.ceil(extent * torch.sqrt(cov_xx.clamp(min=0)))
        radius_y = torch.ceil(extent * torch.sqrt(cov_yy.clamp(min=0)))
        on_screen = (
            (means2d[..., 0] + radius_x > 0)
            & (means2d[..., 0] - radius_x < width)
            & (means2d[..., 1] + radius_y > 0)
            & (means2d[..., 1] - radius_y < height)
        )
        # radius_clip = 0: gsplat drops a Gaussian only when both radii are <= 0.
        nonzero_radius = (radius_x > 0) | (radius_y > 0)
        visible = in_depth_range & invertible & opaque_enough & on_screen & nonzero_radius
        radii = torch.stack([radius_x, radius_y], dim=-1).long() * visible[..., None]

    images = batch * cameras
    return ProjectedGaussians(
        means2d=means2d.reshape(images, count, 2),
        conics=conics.reshape(images, count, 3),
        depths=z.reshape(images, count),
        opacities=opacities.reshape(images, count),
        radii=radii.reshape(images, count, 2),
        visible=visible.reshape(images, count),
    )


@dataclass
class TileIntersections:
    """Depth-sorted (image, tile) -> Gaussian lists, like gsplat's ``isect_offsets`` / ``flatten_ids``."""

    flatten_ids: torch.Tensor  # [M] index into the flattened [I * N] Gaussians, sorted by (image, tile, depth)
    tile_counts: torch.Tensor  # [I * tiles_y * tiles_x] list length per tile
    tile_offsets: torch.Tensor  # [I * tiles_y * tiles_x] start of each tile's list in flatten_ids


@torch.no_grad()
def intersect_tiles(projected: ProjectedGaussians, tile_size: int, tiles_x: int, tiles_y: int) -> TileIntersections:
    """Bin visible Gaussians into the tiles their extent rectangles touch (gsplat's ``isect_tiles``)."""
    images, count = projected.depths.shape
    device = projected.depths.device
    means2d = projected.means2d.detach().reshape(-1, 2)
    radii = projected.radii.reshape(-1, 2).to(means2d.dtype)
    tile_cx = means2d[:, 0] / tile_size
    tile_cy = means2d[:, 1] / tile_size
    tile_rx = radii[:, 0] / tile_size
    tile_ry = radii[:, 1] / tile_size
    x_min = torch.floor(tile_cx - tile_rx).clamp(0, tiles_x).long()
    x_max = torch.ceil(tile_cx + tile_rx).clamp(0, tiles_x).long()
    y_min = torch.floor(tile_cy - tile_ry).clamp(0, tiles_y).long()
    y_max = torch.ceil(tile_cy + tile_ry).clamp(0, tiles_y).long()
    span_x = x_max - x_min
    per_gaussian = span_x * (y_max - y_min) * projected.visible.reshape(-1)

    gaussian_ids = torch.nonzero(per_gaussian > 0).squeeze(1)  # ascending, like gsplat's fill order
    repeats = per_gaussian[gaussian_ids]
    total = int(repeats.sum())
    num_tiles = images * tiles_y * tiles_x
    if total == 0:
        empty = torch.zeros(num_tiles, dtype=torch.long, device=device)
        return TileIntersections(torch.zeros(0, dtype=torch.long, device=device), empty, empty.clone())
    isect_gaussian = torch.repeat_interleave(gaussian_ids, repeats)  # [M]
    starts = torch.cumsum(repeats, 0) - repeats
    local = torch.arange(total, device=device) - torch.repeat_interleave(starts, repeats)
    width_of = span_x[isect_gaussian]
    tile_y = y_min[isect_gaussian] + local // width_of
    tile_x = x_min[isect_gaussian] + local % width_of
    image = isect_gaussian // count
    tile_key = (image * tiles_y + tile_y) * tiles_x + tile_x  # [M]

    # gsplat sorts 64-bit keys (image | tile | float32 depth bits); positive floats order like
    # their bit patterns, and the stable sort keeps Gaussian order among equal depths.
    depth_bits = projected.depths.detach().reshape(-1)[isect_gaussian].float().view(torch.int32).long() & 0xFFFFFFFF
    order = torch.sort((tile_key << 32) | depth_bits, stable=True).indices
    flatten_ids = isect_gaussian[order]
    tile_counts = torch.bincount(tile_key, minlength=num_tiles)
    tile_offsets = torch.cumsum(tile_counts, 0) - tile_counts
    return TileIntersections(flatten_ids, tile_counts, tile_offsets)


def _pixel_basis(tile_size: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``[P, 6]`` monomials ``(x^2, y^2, xy, x, y, 1)`` of pixel centres relative to the tile centre."""
    index = torch.arange(tile_size * tile_size, device=device)
    x = (index % tile_size).to(dtype) + 0.5 - tile_size / 2
    y = (index // tile_size).to(dtype) + 0.5 - tile_size / 2
    return torch.stack([x * x, y * y, x * y, x, y, torch.ones_like(x)], dim=-1)


def _log_alpha_coefficients(mean: torch.Tensor, conic: torch.Tensor, log_opacity: torch.Tensor) -> torch.Tensor:
    """Coefficients (on ``_pixel_basis``) of ``log(o) - sigma`` for Gaussians centred at ``mean``.

    ``sigma = 0.5 a dx^2 + b dx dy + 0.5 c dy^2`` with ``d = mean - pixel`` expands into a
    quadratic in the pixel coordinates, so ``log(o) - sigma`` for every (pixel, Gaussian) pair of a
    tile is one matmul ``[P, 6] @ [6, K]``. Tile-centred coordinates keep the expansion's float32
    rounding far below the 1/255 alpha resolution.

    Args:
        mean: ``[..., 2]`` Gaussian centres relative to the tile centre.
        conic: ``[..., 3]`` ``(a, b, c)``.
        log_opacity: ``[...]``.
    Returns:
        ``[..., 6]``.
    """
    mx, my = mean.unbind(-1)
    a, b, c = conic.unbind(-1)
    constant = log_opacity - (0.5 * a * mx * mx + 0.5 * c * my * my + b * mx * my)
    return torch.stack([-0.5 * a, -0.5 * c, -b, a * mx + b * my, c * my + b * mx, constant], dim=-1)


NEGLIGIBLE_LOG_ALPHA = -1e4  # log-opacity of padding / skipped Gaussians
LOG_ALPHA_FLOOR = -80.0  # exp(-80) ~ 1.8e-35: still a normal float32, far below 1/255


def composite_tiles(
    projected: ProjectedGaussians,
    intersections: TileIntersections,
    colors: torch.Tensor,  # [G, D] one row per colour source
    color_ids: torch.Tensor,  # [I * N] row of `colors` for each flattened Gaussian
    tile_size: int,
    tiles_x: int,
    depths: torch.Tensor | None = None,  # [I * N] camera z, blended into a depth sum when given
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    first_chunk: int = 64,
    max_chunk: int = 1024,
    max_alpha: float = MAX_ALPHA,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Front-to-back alpha compositing of every tile.

    Tiles with similar list lengths are processed together; each tile's depth-sorted list is
    consumed in chunks (growing from ``first_chunk`` to ``max_chunk``), carrying transmittance
    and a "done" flag per pixel, and a tile leaves the working set as soon as all its pixels are
    done (gsplat's early exit) or its list is exhausted.

    Returns:
        ``(accumulated [I * tiles, P, D], transmittance [I * tiles, P], depth_sum [I * tiles, P] | None)``
        with ``P = tile_size ** 2`` pixels per tile in row-major order; background not added.
    """
    device, dtype = colors.device, colors.dtype
    channels = colors.shape[-1]
    pixels = tile_size * tile_size
    num_tiles = intersections.tile_counts.numel()
    tiles_per_image = num_tiles // max(1, projected.depths.shape[0])
    needs_grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in (colors, projected.means2d, projected.conics, projected.opacities)
    )

    means2d = projected.means2d.reshape(-1, 2)
    conics = projected.conics.reshape(-1, 3)
    opacities = projected.opacities.reshape(-1)
    # Non-positive-definite conics only ever give sigma < 0, which gsplat skips: drop them up front.
    usable = (opacities > 0) & (conics[:, 0] > 0)
    log_opacities = torch.where(usable, torch.log(torch.where(usable, opacities, torch.ones_like(opacities))), NEGLIGIBLE_LOG_ALPHA)
    basis = _pixel_basis(tile_size, dtype, device)  # [P, 6]
    # One table, so each chunk gathers its Gaussians' parameters with a single index_select.
    columns = [means2d, conics, log_opacities[:, None]] + ([depths[:, None].to(dtype)] if depths is not None else [])
    gaussian_params = torch.cat(columns, dim=-1)

    counts = intersections.tile_counts
    busy = torch.nonzero(counts > 0).squeeze(1)
    busy = busy[torch.argsort(counts[busy], descending=True, stable=True)]  # similar lengths share a group
    busy_counts = counts[busy].tolist()

    all_accumulated = torch.zeros(num_tiles, pixels, channels, device=device, dtype=dtype)
    all_transmittance = torch.ones(num_tiles, pixels, device=device, dtype=dtype)
    all_depth = torch.zeros(num_tiles, pixels, device=device, dtype=dtype) if depths is not None else None
    start = 0
    while start < busy.numel():
        chunk_cap = max(1, min(busy_counts[start], max_chunk, max_elements // pixels))
        tiles = busy[start : start + max(1, max_elements // (pixels * chunk_cap))]  # [g]
        start += tiles.numel()
        accumulated, transmittance, depth_sum = _composite_group(
            tiles, intersections, gaussian_params, colors, color_ids, depths is not None,
            basis, tile_size, tiles_x, tiles_per_image, min(first_chunk, chunk_cap), chunk_cap, needs_grad,
            max_alpha=max_alpha,
        )
        if needs_grad:
            all_accumulated = all_accumulated.index_copy(0, tiles, accumulated)
            all_transmittance = all_transmittance.index_copy(0, tiles, transmittance)
            if all_depth is not None:
                all_depth = all_depth.index_copy(0, tiles, depth_sum)
        else:
            all_accumulated[tiles] = accumulated
            all_transmittance[tiles] = transmittance
            if all_depth is not None:
                all_depth[tiles] = depth_sum
    return all_accumulated, all_transmittance, all_depth


def _rows(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[index]`` for integer ``index`` of any shape, via index_select (much faster on CPU)."""
    return table.index_select(0, index.reshape(-1)).reshape(*index.shape, *table.shape[1:])


def _accumulate(total: torch.Tensor, rows: torch.Tensor | None, part: torch.Tensor, needs_grad: bool) -> torch.Tensor:
    """``total[rows] += part`` (all rows when ``rows`` is None), out of place when autograd records."""
    if rows is None:
        return total + part if needs_grad else total.add_(part)
    if needs_grad:
        return total.index_put((rows,), part, accumulate=True)
    return total.index_put_((rows,), part, accumulate=True)


def _composite_group(
    tiles: torch.Tensor,  # [g] global tile ids
    intersections: TileIntersections,
    gaussian_params: torch.Tensor,  # [I * N, 6 or 7] (mean2d, conic, log opacity[, depth])
    colors: torch.Tensor,  # [G, D]
    color_ids: torch.Tensor,  # [I * N]
    with_depth: bool,
    basis: torch.Tensor,  # [P, 6]
    tile_size: int,
    tiles_x: int,
    tiles_per_image: int,
    chunk: int,
    chunk_cap: int,
    needs_grad: bool,
    max_alpha: float = MAX_ALPHA,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Composite one group of tiles: ``(accumulated [g, P, D], transmittance [g, P], depth_sum [g, P] | None)``."""
    device, dtype = colors.device, colors.dtype
    group, pixels = tiles.numel(), basis.shape[0]
    tile_count = intersections.tile_counts[tiles]
    tile_offset = intersections.tile_offsets[tiles]
    tile_in_image = tiles % tiles_per_image
    centre = torch.stack([tile_in_image % tiles_x, tile_in_image // tiles_x], dim=-1).to(dtype) * tile_size + tile_size / 2

    accumulated = torch.zeros(group, pixels, colors.shape[-1], device=device, dtype=dtype)
    depth_sum = torch.zeros(group, pixels, device=device, dtype=dtype) if with_depth else None
    transmittance = torch.ones(group, pixels, device=device, dtype=dtype)
    done = torch.zeros(group, pixels, device=device, dtype=torch.bool)
    active = torch.arange(group, device=device)
    skip_below = torch.nextafter(torch.tensor(ALPHA_THRESHOLD, dtype=dtype), torch.tensor(0.0, dtype=dtype)).item()
    k_start = 0
    while active.numel() > 0:
        rows = None if active.numel() == group else active  # no gather/scatter while every tile works
        count_left = tile_count if rows is None else tile_count[rows]
        slot = k_start + torch.arange(chunk, device=device)  # [K]
        filled = slot < count_left[:, None]  # [a, K]
        offsets = tile_offset if rows is None else tile_offset[rows]
        position = torch.where(filled, offsets[:, None] + slot, 0)  # [a, K] into the sorted lists
        ids = _rows(intersections.flatten_ids, position)  # [a, K] flattened Gaussian ids
        params = _rows(gaussian_params, ids)  # [a, K, 6 or 7]
        coefficients = _log_alpha_coefficients(
            params[..., 0:2] - (centre if rows is None else centre[rows])[:, None, :],
            params[..., 2:5],
            torch.where(filled, params[..., 5], NEGLIGIBLE_LOG_ALPHA),
        )  # [a, K, 6]
        log_alpha = torch.matmul(basis, coefficients.transpose(1, 2))  # [a, P, K]
        # alpha = min(0.999, o exp(-sigma)), zeroed (skipped) below 1/255; threshold() keeps x > t,
        # so t is the float just below 1/255 to keep alpha == 1/255 like gsplat.
        # Far-away pairs have log alpha down to -1e4; exp() of such values is several times slower
        # (denormal/underflow paths), and anything below -80 is skipped anyway.
        if needs_grad:
            alpha = torch.exp(log_alpha.clamp(min=LOG_ALPHA_FLOOR)).clamp(max=max_alpha)
            alpha = torch.nn.functional.threshold(alpha, skip_below, 0.0)
        else:
            alpha = log_alpha.clamp_(min=LOG_ALPHA_FLOOR).exp_().clamp_(max=max_alpha)
            alpha = torch.nn.functional.threshold_(alpha, skip_below, 0.0)

        start_t = transmittance if rows is None else transmittance[rows]  # [a, P]
        start_done = done if rows is None else done[rows]
        after = torch.cumprod(1.0 - alpha, dim=-1)  # T after each Gaussian
        if k_start > 0:  # the first chunk starts from T = 1
            after = after * start_t[..., None] if needs_grad else after.mul_(start_t[..., None])
        # T only decreases, so "next T > 1e-4" holds on a prefix: exactly the Gaussians gsplat
        # blends before the pixel stops (exclusive of the one that would cross). Its length comes
        # from a binary search; done pixels keep nothing.
        kept = torch.searchsorted(-after.detach(), torch.full_like(start_t[..., None], -TRANSMITTANCE_THRESHOLD))[..., 0]
        kept = torch.where(start_done, 0, kept)
        last = after.gather(-1, (kept - 1).clamp(min=0)[..., None])[..., 0]
        end_t = torch.where(kept > 0, last, start_t)  # [a, P]
        # Holding T at its last kept value zeroes the weights T_{k-1} - T_k past the stop.
        held = torch.maximum(after, end_t[..., None])
        weights = torch.cat([start_t[..., None], held[..., :-1]], dim=-1) - held  # [a, P, K] = alpha_k T_{k-1}
        features = _rows(colors, _rows(color_ids, ids))  # [a, K, D]
        accumulated = _accumulate(accumulated, rows, torch.bmm(weights, features), needs_grad)
        if depth_sum is not None:
            depth_sum = _accumulate(depth_sum, rows, torch.bmm(weights, params[..., 6:7])[..., 0], needs_grad)

        end_done = start_done | (after[..., -1] <= TRANSMITTANCE_THRESHOLD)
        if rows is None:
            transmittance, done = end_t, end_done
        else:
            transmittance = transmittance.index_copy(0, rows, end_t)
            done = done.index_copy(0, rows, end_done)
        k_start += chunk
        still = (k_start < count_left) & ~end_done.all(dim=-1)
        active = active[still] if rows is not None else torch.nonzero(still).squeeze(1)
        chunk = min(2 * chunk, chunk_cap)
    return accumulated, transmittance, depth_sum


def tiles_to_image(tiled: torch.Tensor, images: int, tiles_y: int, tiles_x: int, tile_size: int, height: int, width: int):
    """``[I * tiles, P, D]`` -> ``[I, H, W, D]`` (cropping the partial last tile row/column)."""
    channels = tiled.shape[-1]
    grid = tiled.reshape(images, tiles_y, tiles_x, tile_size, tile_size, channels).permute(0, 1, 3, 2, 4, 5)
    return grid.reshape(images, tiles_y * tile_size, tiles_x * tile_size, channels)[:, :height, :width]


def rasterize_torch(
    means: torch.Tensor,  # [B, N, 3]
    covars: torch.Tensor,  # [B, N, 3, 3]
    opacities: torch.Tensor,  # [B, N]
    colors: torch.Tensor,  # [B, N, D] or [B, C, N, D]
    viewmats: torch.Tensor,  # [B, C, 4, 4]
    Ks: torch.Tensor,  # [B, C, 3, 3]
    width: int,
    height: int,
    near_plane: float,
    far_plane: float,
    eps2d: float,
    backgrounds: torch.Tensor | None,  # [B, C, D]
    render_depth: bool,
    tile_size: int = 8,  # any size gives the same result (see render_features)
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    max_alpha: float = MAX_ALPHA,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Render ``[B, C, H, W, D]`` features, ``[B, C, H, W, 1]`` alphas and optional expected depth.

    Expected depth follows gsplat's "ED" mode: ``sum(w_i z_i) / max(1 - T, 1e-10)`` (camera z,
    normalised by the accumulated alpha, background 0).
    """
    batch, count = means.shape[:2]
    cameras = viewmats.shape[1]
    images = batch * cameras
    projected = project_gaussians(
        means, symmetrize_upper(covars), opacities, viewmats, Ks, width, height, eps2d, near_plane, far_plane
    )
    tiles_x = -(-width // tile_size)
    tiles_y = -(-height // tile_size)
    intersections = intersect_tiles(projected, tile_size, tiles_x, tiles_y)

    flat_ids = torch.arange(images * count, device=means.device)
    if colors.dim() == 4:  # per-camera colours [B, C, N, D]: one row per (image, Gaussian)
        color_rows = colors.reshape(images * count, colors.shape[-1])
        color_ids = flat_ids
    else:  # image i = b * C + c reads row b * N + n
        color_rows = colors.reshape(batch * count, colors.shape[-1])
        color_ids = flat_ids // (cameras * count) * count + flat_ids % count
    accumulated, transmittance, depth_sum = composite_tiles(
        projected,
        intersections,
        color_rows,
        color_ids,
        tile_size,
        tiles_x,
        depths=projected.depths.reshape(-1) if render_depth else None,
        max_elements=max_elements,
        max_alpha=max_alpha,
    )
    accumulated = tiles_to_image(accumulated, images, tiles_y, tiles_x, tile_size, height, width)
    transmittance = tiles_to_image(transmittance[..., None], images, tiles_y, tiles_x, tile_size, height, width)
    alphas = (1.0 - transmittance).reshape(batch, cameras, height, width, 1)
    depths = None
    if depth_sum is not None:
        depth_sum = tiles_to_image(depth_sum[..., None], images, tiles_y, tiles_x, tile_size, height, width)
        depths = depth_sum.reshape(batch, cameras, height, width, 1) / alphas.clamp(min=1e-10)
    renders = accumulated.reshape(batch, cameras, height, width, -1)
    if backgrounds is not None:
        renders = renders + transmittance.reshape(batch, cameras, height, width, 1) * backgrounds[:, :, None, None, :]
    return renders, alphas, depths
