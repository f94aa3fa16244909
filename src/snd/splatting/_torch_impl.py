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

Compositing is vectorised across tiles (work measured by ``scripts/benchmark.py render --bound``):

* tile lists keep only (tile, Gaussian) pairs whose ``o exp(-sigma)`` reaches 1/255 at some pixel
  centre of the tile (an exact, conservative ellipse-vs-box test; the others are skipped by every
  pixel anyway), so results do not change;
* tiles with similar list lengths are processed together in steps of exactly the remaining list
  length (no padding past the longest list), capped at ``max_elements`` alphas per step;
  ``[tiles, P pixels, K]`` log-alphas come from one matmul with a per-tile quadratic basis,
  transmittance from a cumulative product; on CPU without autograd those temporaries live in
  reused per-thread buffers (no page faults after the first render; ``release_workspace()``);
* only the pairs with a non-zero weight ``alpha T`` are kept, as per-pixel bags in depth order,
  and every channel is blended at the end by one ``embedding_bag`` (weighted sum of feature rows),
  written straight into image order: the geometry is done once for any number of channels, no
  per-pair copy of the features is made and no zero weight is multiplied.

Memory is bounded by ``max_elements`` per step plus the contributing pairs (a pixels x Gaussians
tensor is never built). Everything is plain autograd-able torch (``embedding_bag`` differentiates
with respect to the features and the per-pair weights).
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass

import torch

ALPHA_THRESHOLD = 1.0 / 255.0  # gsplat's ALPHA_THRESHOLD
MAX_ALPHA = 0.999
TRANSMITTANCE_THRESHOLD = 1e-4  # a pixel is done when the next T would be <= this
MAX_EXTENT = 3.33  # screen extent in standard deviations (before the opacity-aware bound)
FRUSTUM_MARGIN = 0.3  # persp_proj clamps x/z, y/z to 30% beyond the image when building J
DEFAULT_MAX_ELEMENTS = 1 << 20  # (tiles x P x K) alphas per compositing step: 4 MiB buffers stay in cache


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
    # Same values as triu(c) + triu(c, 1)^T, without batched triu (slow on [N, 3, 3]).
    above = torch.ones(3, 3, dtype=torch.bool, device=covars.device).triu()
    return torch.where(above, covars, covars.transpose(-1, -2))


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
def intersect_tiles(
    projected: ProjectedGaussians,
    tile_size: int,
    tiles_x: int,
    tiles_y: int,
    width: int | None = None,
    height: int | None = None,
    exact: bool = True,
) -> TileIntersections:
    """Bin visible Gaussians into tiles (gsplat's ``isect_tiles``), keeping only tiles they can reach.

    Candidates are the tiles the extent rectangle touches, as in gsplat. With ``exact`` (default),
    a (tile, Gaussian) pair is then kept only if ``o exp(-sigma) >= 1/255`` somewhere on the box
    spanned by the tile's pixel centres (cropped to the ``width`` x ``height`` image): every other
    pair gets alpha < 1/255 at every pixel of the tile, which gsplat skips, so the render is
    unchanged and only the visited work shrinks (on lifted scenes about a third of the rectangle's
    pairs reach no pixel). The test is conservative: the minimum of ``sigma`` over the box is
    exact (a convex quadratic's minimum lies at the centre or on an edge), is computed in float64,
    and pairs within ``REACH_MARGIN`` of the threshold (or with a non-positive-definite conic) stay.
    """
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
    isect_gaussian = torch.repeat_interleave(gaussian_ids, repeats)  # [M]
    starts = torch.cumsum(repeats, 0) - repeats
    local = torch.arange(total, device=device) - torch.repeat_interleave(starts, repeats)
    width_of = span_x[isect_gaussian]
    tile_y = y_min[isect_gaussian] + local // width_of
    tile_x = x_min[isect_gaussian] + local % width_of
    if exact and total > 0:
        means2d = projected.means2d.detach().reshape(-1, 2)
        conics = projected.conics.detach().reshape(-1, 3)
        opacities = projected.opacities.detach().reshape(-1)
        # In cache-sized blocks: its ~50 elementwise passes run 2-3x faster than over one long array.
        reach = torch.cat(
            [
                _reaches_tile(
                    means2d.index_select(0, block).double(),
                    conics.index_select(0, block).double(),
                    opacities.index_select(0, block).double(),
                    tile_x[start : start + REACH_BLOCK], tile_y[start : start + REACH_BLOCK], tile_size,
                    width=tiles_x * tile_size if width is None else width,
                    height=tiles_y * tile_size if height is None else height,
                )
                for start in range(0, total, REACH_BLOCK)
                for block in (isect_gaussian[start : start + REACH_BLOCK],)
            ]
        )
        isect_gaussian, tile_x, tile_y = isect_gaussian[reach], tile_x[reach], tile_y[reach]
    if isect_gaussian.numel() == 0:
        empty = torch.zeros(num_tiles, dtype=torch.long, device=device)
        return TileIntersections(torch.zeros(0, dtype=torch.long, device=device), empty, empty.clone())
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


REACH_MARGIN = 1e-2  # slack (in sigma, i.e. a 1% alpha factor) of the exact tile test
REACH_BLOCK = 1 << 15  # (tile, Gaussian) candidates tested per block


def _reaches_tile(
    means2d: torch.Tensor,  # [M, 2]
    conics: torch.Tensor,  # [M, 3] (a, b, c)
    opacities: torch.Tensor,  # [M]
    tile_x: torch.Tensor,  # [M] int
    tile_y: torch.Tensor,  # [M] int
    tile_size: int,
    width: int,
    height: int,
) -> torch.Tensor:
    """``[M]`` bool: can Gaussian m reach ``alpha >= 1/255`` at some pixel centre of its tile?

    ``sigma(d) = 0.5 a dx^2 + b dx dy + 0.5 c dy^2`` with ``d = mean - pixel`` is minimised over
    the box of pixel centres: zero when the mean lies inside, else on one of the four edges, where
    the 1D minimiser is clamped to the edge. Reached when ``sigma_min <= ln(255 o)``.
    """
    dtype = means2d.dtype
    x0 = tile_x.to(dtype) * tile_size + 0.5
    y0 = tile_y.to(dtype) * tile_size + 0.5
    x1 = torch.clamp(x0 + (tile_size - 1), max=width - 0.5)
    y1 = torch.clamp(y0 + (tile_size - 1), max=height - 0.5)
    mx, my = means2d.unbind(-1)
    a, b, c = conics.unbind(-1)
    definite = (a > 0) & (c > 0) & (a * c - b * b > 0)
    a = torch.where(definite, a, torch.ones_like(a))
    c = torch.where(definite, c, torch.ones_like(c))
    dx_lo, dx_hi = mx - x1, mx - x0
    dy_lo, dy_hi = my - y1, my - y0

    def sigma(dx, dy):
        return 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy

    edges = [sigma(dx, torch.clamp(-b * dx / c, dy_lo, dy_hi)) for dx in (dx_lo, dx_hi)]
    edges += [sigma(torch.clamp(-b * dy / a, dx_lo, dx_hi), dy) for dy in (dy_lo, dy_hi)]
    sigma_min = torch.stack(edges).amin(0)
    inside = (dx_lo <= 0) & (dx_hi >= 0) & (dy_lo <= 0) & (dy_hi >= 0)
    sigma_min = torch.where(inside, torch.zeros_like(sigma_min), sigma_min)
    limit = torch.log(255.0 * opacities.clamp(min=ALPHA_THRESHOLD)) + REACH_MARGIN
    return ~definite | (sigma_min <= limit)


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
DEFAULT_FIRST_CHUNK = 1024  # list entries per tile in the first step (later steps double, up to the memory cap)
GROUP_LENGTH_RATIO = 0.75  # tiles sharing a step have list lengths within this ratio of the longest


class _Workspace:
    """Reusable flat scratch buffers (CPU, no autograd), so repeated renders do not page-fault.

    A fresh multi-megabyte CPU tensor is mmapped by the allocator and costs a minor page fault
    per 4 KiB on first touch (~3 us each here); keeping the compositing temporaries between calls
    removes them after the first render. Holds at most a few ``max_elements``-sized buffers per
    thread; ``release_workspace()`` frees them.
    """

    def __init__(self):
        self.buffers: dict = {}

    def take(self, name: str, shape: tuple, dtype: torch.dtype) -> torch.Tensor:
        numel = 1
        for size in shape:
            numel *= size
        buffer = self.buffers.get((name, dtype))
        if buffer is None or buffer.numel() < numel:
            buffer = torch.empty(numel, dtype=dtype)
            self.buffers[(name, dtype)] = buffer
        return buffer[:numel].view(shape)


_THREAD_STATE = threading.local()


def _workspace() -> _Workspace:
    if not hasattr(_THREAD_STATE, "workspace"):
        _THREAD_STATE.workspace = _Workspace()
    return _THREAD_STATE.workspace


def release_workspace() -> None:
    """Free this thread's reusable CPU compositing buffers (they are rebuilt on the next render)."""
    _THREAD_STATE.__dict__.pop("workspace", None)


def _one(dtype: torch.dtype) -> torch.Tensor:
    return torch.ones((), dtype=dtype)


def _tile_pixel_ids(num_tiles: int, tiles_per_image: int, tiles_x: int, tile_size: int, width: int, height: int, device) -> torch.Tensor:
    """``[tiles, P]`` row of each tile pixel in the output: ``(image * H + y) * W + x`` inside the
    image, then ``I * H * W + 0, 1, ...`` for the pixels of partial tiles that fall outside."""
    tile = torch.arange(num_tiles, device=device)[:, None]
    local = torch.arange(tile_size * tile_size, device=device)
    in_image = tile % tiles_per_image
    x = (in_image % tiles_x) * tile_size + local % tile_size  # [tiles, P]
    y = (in_image // tiles_x) * tile_size + local // tile_size
    inside = (x < width) & (y < height)
    ids = ((tile // tiles_per_image) * height + y) * width + x
    outside_rank = torch.cumsum((~inside).reshape(-1), 0).reshape(inside.shape) - 1
    images = num_tiles // tiles_per_image
    return torch.where(inside, ids, images * height * width + outside_rank)


def composite_tiles(
    projected: ProjectedGaussians,
    intersections: TileIntersections,
    colors: torch.Tensor,  # [G, D] one row per colour source
    color_ids: torch.Tensor,  # [I * N] row of `colors` for each flattened Gaussian
    tile_size: int,
    tiles_x: int,
    width: int,
    height: int,
    depths: torch.Tensor | None = None,  # [I * N] camera z, blended into a depth sum when given
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    first_chunk: int = DEFAULT_FIRST_CHUNK,
    max_chunk: int | None = None,
    max_alpha: float = MAX_ALPHA,
    stats: dict | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Front-to-back alpha compositing of every tile.

    Geometry: tiles with similar list lengths (within ``GROUP_LENGTH_RATIO``) are processed
    together, their depth-sorted lists consumed in steps of exactly the remaining length (at most
    ``first_chunk`` list entries at first, doubling, capped by ``max_elements`` and ``max_chunk``),
    carrying transmittance and a "done" flag per pixel; a tile leaves the working set when all its
    pixels are done (gsplat's early exit) or its list is exhausted. Each step evaluates the alphas
    of ``[tiles, P, K]`` pairs and their transmittances.

    Features: only the pairs with a non-zero weight ``alpha_k T_{k-1}`` are kept (about 1 in 6 of
    a tile's list on lifted scenes), as per-pixel bags of (Gaussian, weight) in depth order, and all
    channels are blended at the end by one ``embedding_bag`` (weighted sum of feature rows per
    pixel) straight into image order: no per-pair feature copy, no multiplication by zero weights,
    exactly one pass over the ``D`` channels per contributing pair.

    ``stats``, when given, receives the work done: ``listed_pairs`` (tile list entries),
    ``evaluated_pairs`` (pixel x list entry alphas evaluated, padding included) and
    ``contributing_pairs`` (pixel x Gaussian pairs blended).

    Returns:
        ``(accumulated [I, H, W, D], transmittance [I, H, W], depth_sum [I, H, W] | None)``;
        background not added.
    """
    device, dtype = colors.device, colors.dtype
    channels = colors.shape[-1]
    pixels = tile_size * tile_size
    num_tiles = intersections.tile_counts.numel()
    images = max(1, projected.depths.shape[0])
    tiles_per_image = num_tiles // images
    needs_grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in (colors, projected.means2d, projected.conics, projected.opacities)
    )
    workspace = _workspace() if (not needs_grad and device.type == "cpu") else None

    means2d = projected.means2d.reshape(-1, 2)
    conics = projected.conics.reshape(-1, 3)
    opacities = projected.opacities.reshape(-1)
    # Non-positive-definite conics only ever give sigma < 0, which gsplat skips: drop them up front.
    usable = (opacities > 0) & (conics[:, 0] > 0)
    log_opacities = torch.where(usable, torch.log(torch.where(usable, opacities, torch.ones_like(opacities))), NEGLIGIBLE_LOG_ALPHA)
    basis = _pixel_basis(tile_size, dtype, device)  # [P, 6]
    # One table, so each step gathers its Gaussians' parameters with a single index_select.
    gaussian_params = torch.cat([means2d, conics, log_opacities[:, None]], dim=-1)  # [I * N, 6]
    tile_pixels = _tile_pixel_ids(num_tiles, tiles_per_image, tiles_x, tile_size, width, height, device)  # [tiles, P]

    counts = intersections.tile_counts
    busy = torch.nonzero(counts > 0).squeeze(1)
    busy = busy[torch.argsort(counts[busy], descending=True, stable=True)]  # similar lengths share a group
    busy_counts = counts[busy].tolist()
    negated = [-c for c in busy_counts]  # ascending, for bisect
    step_cap = max(1, max_elements // pixels)
    if max_chunk is not None:
        step_cap = min(step_cap, max(1, max_chunk))

    transmittance = torch.ones(num_tiles, pixels, device=device, dtype=dtype)
    bag_sizes = torch.zeros(num_tiles * pixels, device=device, dtype=torch.long)  # contributing pairs per output row
    pieces = []  # (weights [n], gaussian ids [n], output row [n], rank in the row's bag [n]) per step
    start = 0
    while start < len(busy_counts):
        longest = busy_counts[start]
        step = max(1, min(longest, first_chunk, step_cap))
        similar = bisect.bisect_right(negated, -GROUP_LENGTH_RATIO * longest, lo=start)
        end = min(max(similar, start + 1), start + max(1, max_elements // (pixels * (step + 1))))
        tiles = busy[start:end]  # [g]
        start = end
        transmittance = _composite_group(
            tiles, intersections, gaussian_params, basis, tile_pixels, transmittance, bag_sizes, pieces,
            tile_size=tile_size, tiles_x=tiles_x, tiles_per_image=tiles_per_image, step=step, step_cap=step_cap,
            needs_grad=needs_grad, max_alpha=max_alpha, workspace=workspace,
        )

    # Put every pair at (its row's bag start + rank): each bag is contiguous and front to back.
    bag_offsets = torch.cumsum(bag_sizes, 0) - bag_sizes  # [tiles * P]
    total = int(bag_sizes.sum())
    # The positions are a permutation of 0..total-1: every entry is written.
    if workspace is not None:
        gaussian_ids = workspace.take("pair_ids", (total,), torch.long)
    else:
        gaussian_ids = torch.zeros(total, device=device, dtype=torch.long)
    positions = [bag_offsets.index_select(0, row) + rank for _, _, row, rank, _ in pieces]
    for (_, ids, _, _, _), position in zip(pieces, positions):
        gaussian_ids.index_copy_(0, position, ids)
    if needs_grad and pieces:
        values = torch.cat([piece[0] for piece in pieces])
        weights = values.new_zeros(total).index_copy(0, torch.cat(positions), values)
    else:
        weights = torch.zeros(total, device=device, dtype=dtype) if workspace is None else workspace.take("pair_weights", (total,), dtype)
        for (values, _, _, _, _), position in zip(pieces, positions):
            weights.index_copy_(0, position, values)
    # Rows past the image (pixels of partial tiles) come last: their pairs are cut off here.
    image_pixels = images * height * width
    bag_offsets = bag_offsets[:image_pixels]
    blended = int(bag_sizes[:image_pixels].sum())
    gaussian_ids, weights = gaussian_ids[:blended], weights[:blended]
    if stats is not None:
        stats.update(
            listed_pairs=intersections.flatten_ids.numel(),
            evaluated_pairs=sum(piece[4] for piece in pieces),
            contributing_pairs=blended,
            pixels=image_pixels,
        )
    if workspace is None:
        color_rows = color_ids.index_select(0, gaussian_ids)
    else:
        color_rows = torch.index_select(color_ids, 0, gaussian_ids, out=workspace.take("pair_rows", (blended,), torch.long))
    accumulated = torch.nn.functional.embedding_bag(
        color_rows, colors, bag_offsets, mode="sum", per_sample_weights=weights
    ).reshape(images, height, width, channels)
    depth_sum = None
    if depths is not None:
        depth_sum = torch.nn.functional.embedding_bag(
            gaussian_ids, depths.to(dtype)[:, None], bag_offsets, mode="sum", per_sample_weights=weights
        ).reshape(images, height, width)
    final_t = transmittance.reshape(-1).new_ones(num_tiles * pixels).index_copy(0, tile_pixels.reshape(-1), transmittance.reshape(-1))
    return accumulated, final_t[:image_pixels].reshape(images, height, width), depth_sum


def _rows(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[index]`` for integer ``index`` of any shape, via index_select (much faster on CPU)."""
    return table.index_select(0, index.reshape(-1)).reshape(*index.shape, *table.shape[1:])


def _composite_group(
    tiles: torch.Tensor,  # [g] global tile ids
    intersections: TileIntersections,
    gaussian_params: torch.Tensor,  # [I * N, 6] (mean2d, conic, log opacity)
    basis: torch.Tensor,  # [P, 6]
    tile_pixels: torch.Tensor,  # [tiles, P] output row of each tile pixel
    transmittance: torch.Tensor,  # [tiles, P], updated (functionally when needs_grad)
    bag_sizes: torch.Tensor,  # [tiles * P] long, updated in place
    pieces: list,  # appended: (weights, gaussian ids, output row, rank) of the step's contributing pairs, alphas evaluated
    tile_size: int,
    tiles_x: int,
    tiles_per_image: int,
    step: int,
    step_cap: int,
    needs_grad: bool,
    max_alpha: float = MAX_ALPHA,
    workspace: _Workspace | None = None,
) -> torch.Tensor:
    """Composite one group of tiles; returns the updated ``transmittance``."""
    device, dtype = basis.device, basis.dtype
    group, pixels = tiles.numel(), basis.shape[0]
    tile_count = intersections.tile_counts[tiles]
    tile_offset = intersections.tile_offsets[tiles]
    tile_in_image = tiles % tiles_per_image
    centre = torch.stack([tile_in_image % tiles_x, tile_in_image // tiles_x], dim=-1).to(dtype) * tile_size + tile_size / 2

    done = torch.zeros(group, pixels, device=device, dtype=torch.bool)
    active = torch.arange(group, device=device)
    skip_below = torch.nextafter(torch.tensor(ALPHA_THRESHOLD, dtype=dtype), torch.tensor(0.0, dtype=dtype)).item()
    k_start = 0
    count_left = tile_count
    while active.numel() > 0:
        rows = None if active.numel() == group else active  # no gather while every tile works
        if rows is not None:
            count_left = tile_count[rows]
        step = max(1, min(step, int(count_left.max()) - k_start))  # exactly to the longest remaining list
        active_tiles = tiles if rows is None else tiles[rows]
        a = active_tiles.numel()
        slot = k_start + torch.arange(step, device=device)  # [K]
        filled = slot < count_left[:, None]  # [a, K]
        offsets = tile_offset if rows is None else tile_offset[rows]
        position = torch.where(filled, offsets[:, None] + slot, 0)  # [a, K] into the sorted lists
        ids = _rows(intersections.flatten_ids, position)  # [a, K] flattened Gaussian ids
        params = _rows(gaussian_params, ids)  # [a, K, 6]
        coefficients = _log_alpha_coefficients(
            params[..., 0:2] - (centre if rows is None else centre[rows])[:, None, :],
            params[..., 2:5],
            torch.where(filled, params[..., 5], NEGLIGIBLE_LOG_ALPHA),
        )  # [a, K, 6]
        start_t = transmittance.index_select(0, active_tiles)  # [a, P]
        start_done = done if rows is None else done[rows]
        shape = (a, pixels, step)
        # alpha = min(max_alpha, o exp(-sigma)), zeroed (skipped) below 1/255; threshold() keeps
        # x > t, so t is the float just below 1/255 to keep alpha == 1/255 like gsplat.
        # Far-away pairs have log alpha down to -1e4; exp() of such values is several times slower
        # (denormal/underflow paths), and anything below -80 is skipped anyway.
        # trans[..., k] is T after k of the step's Gaussians (column 0: the step's starting T).
        if workspace is None:
            log_alpha = torch.matmul(basis, coefficients.transpose(1, 2))  # [a, P, K]
            alpha = torch.exp(log_alpha.clamp(min=LOG_ALPHA_FLOOR)).clamp(max=max_alpha)
            alpha = torch.nn.functional.threshold(alpha, skip_below, 0.0)
            trans = torch.cumprod(torch.cat([start_t[..., None], 1.0 - alpha], dim=-1), dim=-1)  # [a, P, K + 1]
        else:
            alpha = torch.matmul(basis, coefficients.transpose(1, 2), out=workspace.take("alpha", shape, dtype))
            alpha.clamp_(min=LOG_ALPHA_FLOOR).exp_().clamp_(max=max_alpha)
            torch.nn.functional.threshold_(alpha, skip_below, 0.0)
            trans = workspace.take("trans", (a, pixels, step + 1), dtype)
            trans[..., 0] = start_t
            torch.sub(_one(dtype), alpha, out=trans[..., 1:])
            trans.cumprod_(-1)

        final = trans[..., -1]  # [a, P]
        saturates = bool((final <= TRANSMITTANCE_THRESHOLD).any()) or bool(start_done.any())
        if saturates:
            # T only decreases, so "next T > 1e-4" holds on a prefix: exactly the Gaussians gsplat
            # blends before the pixel stops (exclusive of the one that would cross). Its length
            # comes from a binary search; done pixels keep nothing. Holding T at its last kept
            # value zeroes the weights T_{k-1} - T_k past the stop.
            threshold = torch.full_like(start_t[..., None], -TRANSMITTANCE_THRESHOLD)
            kept = torch.searchsorted(-trans[..., 1:].detach().contiguous(), threshold)[..., 0]  # [a, P]
            kept = torch.where(start_done, 0, kept)
            end_t = trans.gather(-1, kept[..., None])[..., 0]  # [a, P]
            trans = torch.maximum(trans, end_t[..., None]) if workspace is None else torch.maximum(trans, end_t[..., None], out=trans)
            # A pair contributes iff its weight T_{k-1} - T_k is non-zero.
            contributes = trans[..., :-1] != trans[..., 1:]
        else:  # nobody stops in this step (the common case): every listed Gaussian is blended
            end_t = final
            # alpha >= 1/255 shrinks T by a factor <= 0.9961 (T > 1e-4 here), alpha = 0 leaves it
            # unchanged: the weight T_{k-1} - T_k is non-zero exactly where alpha is.
            contributes = (alpha != 0) if workspace is None else torch.ne(alpha, 0, out=workspace.take("nonzero", shape, torch.bool))

        # Keep the contributing pairs as per-pixel bags (pixel-major, front to back), ranked
        # after earlier steps' pairs; weights alpha_k T_{k-1} = T_{k-1} - T_k only for them.
        tile_index, pixel_index, k = torch.nonzero(contributes, as_tuple=True)  # [n] each
        row = tile_index * pixels + pixel_index  # [n] into the step's a * P pixels
        before = row * (step + 1) + k  # [n] into trans
        trans_flat = trans.reshape(-1)
        pair_weights = trans_flat.index_select(0, before) - trans_flat.index_select(0, before + 1)  # [n]
        pair_ids = ids.reshape(-1).index_select(0, tile_index * step + k)
        per_pixel = torch.bincount(row, minlength=a * pixels)  # [a * P]
        pixel = tile_pixels.index_select(0, active_tiles).reshape(-1)  # [a * P] output rows
        local_start = torch.cumsum(per_pixel, 0) - per_pixel
        if k_start == 0:  # first visit of these pixels: their bags start here
            bag_sizes.index_copy_(0, pixel, per_pixel)
        else:
            local_start = local_start - bag_sizes.index_select(0, pixel)
            bag_sizes.index_add_(0, pixel, per_pixel)
        pair_rank = torch.arange(row.numel(), device=device) - local_start.index_select(0, row)
        pieces.append((pair_weights, pair_ids, pixel.index_select(0, row), pair_rank, a * pixels * step))

        end_done = start_done | (final <= TRANSMITTANCE_THRESHOLD)
        transmittance = transmittance.index_copy(0, active_tiles, end_t) if needs_grad else transmittance.index_copy_(0, active_tiles, end_t)
        if rows is None:
            done = end_done
        else:
            done = done.index_copy(0, rows, end_done)
        k_start += step
        still = (k_start < count_left) & ~end_done.all(dim=-1)
        active = active[still] if rows is not None else torch.nonzero(still).squeeze(1)
        step = min(2 * step, step_cap)
    return transmittance


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
    stats: dict | None = None,
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
    intersections = intersect_tiles(projected, tile_size, tiles_x, tiles_y, width=width, height=height)

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
        width=width,
        height=height,
        depths=projected.depths.reshape(-1) if render_depth else None,
        max_elements=max_elements,
        max_alpha=max_alpha,
        stats=stats,
    )  # [I, H, W, D], [I, H, W], [I, H, W] | None
    alphas = (1.0 - transmittance).reshape(batch, cameras, height, width, 1)
    depths = None
    if depth_sum is not None:
        depths = depth_sum.reshape(batch, cameras, height, width, 1) / alphas.clamp(min=1e-10)
    renders = accumulated.reshape(batch, cameras, height, width, -1)
    if backgrounds is not None:
        renders = renders + transmittance.reshape(batch, cameras, height, width, 1) * backgrounds[:, :, None, None, :]
    return renders, alphas, depths
