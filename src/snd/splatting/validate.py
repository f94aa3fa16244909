"""Checks of renderer and lifter inputs at the public boundary: O(N) vectorised, one host sync per argument.

Every check raises ``ValueError`` naming the function, the argument, what was expected and the first
offending index (in the argument's own leading dimensions), e.g.
``render_features: `opacities` must lie in [0, 1]; first offending index (0, 17) holds 1.5 (3 such)``.
Without them the renderer silently culls NaN Gaussians, clamps opacities and treats non-PSD covariances
and broken cameras as holes (gsplat does the same on CUDA), so a broken lifter trains on nothing.

``check_render_memory`` refuses, before any work, a render whose output and tile-intersection list
would not fit the memory budget (default: the memory available on the device).
"""

from __future__ import annotations

import math
import os

import torch

__all__ = [
    "RenderMemoryError",
    "check_cameras_c2w",
    "check_finite",
    "check_gaussians",
    "check_float_tensors",
    "check_image_size",
    "check_intrinsics",
    "check_render_memory",
    "check_render_scalars",
    "check_render_size",
    "check_views",
    "check_viewmats",
]

# Relative tolerances: covariances built in float32 from (quaternion, scale) have minors ~ -1e-7 s^k.
_PSD_TOLERANCE = {torch.float16: 1e-2, torch.bfloat16: 5e-2, torch.float32: 1e-5, torch.float64: 1e-10}
_RIGID_TOLERANCE = {torch.float16: 1e-2, torch.bfloat16: 3e-2, torch.float32: 1e-3, torch.float64: 1e-6}


class RenderMemoryError(MemoryError):
    """A render would need more memory than the budget; the message gives the estimate and how to reduce it."""


def _first(bad: torch.Tensor, where: str, name: str, expected: str, values: torch.Tensor | None = None) -> None:
    """Raise naming the first True entry of ``bad`` (a [...] bool mask over the argument's leading dims)."""
    if not bool(bad.any()):
        return
    index = tuple(int(i) for i in torch.nonzero(bad)[0].tolist())
    count = int(bad.sum())
    shown = ""
    if values is not None:
        value = values[index]
        shown = f" holds {value.item() if value.numel() == 1 else value.detach().cpu().tolist()}"
    raise ValueError(f"{where}: `{name}` {expected}; first offending index {index}{shown} ({count} such)")


def check_finite(tensor: torch.Tensor | None, name: str, where: str, item_dims: int = 0) -> None:
    """Every entry finite; ``item_dims`` trailing dims form one item (reported as one index)."""
    if tensor is None or not tensor.is_floating_point() or tensor.numel() == 0:
        return
    # Fast path: one vectorised reduction; NaN/Inf anywhere make the sum non-finite (an overflowing sum of
    # finite values only sends us to the exact check below, which then finds nothing).
    if bool(torch.isfinite(tensor.detach().sum(dtype=torch.float32 if tensor.element_size() < 4 else None))):
        return
    finite = torch.isfinite(tensor.detach())
    if item_dims:
        finite = finite.flatten(-item_dims).all(-1)
    _first(~finite, where, name, "must be finite (no NaN/Inf)", tensor.detach() if item_dims else tensor.detach())


def check_gaussians(
    means: torch.Tensor,  # [..., N, 3]
    covars: torch.Tensor | None,  # [..., N, 3, 3] (upper triangle read)
    opacities: torch.Tensor,  # [..., N]
    colors: torch.Tensor | None = None,  # [..., N, D] or [..., C, N, D]
    quats: torch.Tensor | None = None,  # [..., N, 4]
    scales: torch.Tensor | None = None,  # [..., N, 3]
    where: str = "render_features",
    names: dict[str, str] | None = None,
) -> None:
    """Finite means/covariances/colours, opacities in [0, 1], covariances symmetric PSD (read from the upper
    triangle, as the renderer does: all principal minors >= -tol * scale^k). ``names`` renames arguments in the
    messages (e.g. ``{"colors": "features", "covars": "covariances"}`` for ``render_gaussians``)."""
    label = {"means": "means", "covars": "covars", "opacities": "opacities", "colors": "colors", "quats": "quats",
             "scales": "scales", **(names or {})}
    check_float_tensors(where, **{label[k]: v for k, v in (("means", means), ("covars", covars), ("opacities", opacities),
                                                            ("colors", colors), ("quats", quats), ("scales", scales))})
    check_finite(means, label["means"], where, item_dims=1)
    check_finite(quats, label["quats"], where, item_dims=1)
    check_finite(scales, label["scales"], where, item_dims=1)
    if quats is not None and quats.numel():
        norm = quats.detach().norm(dim=-1)
        # a zero quaternion has no rotation: normalising it gives NaN (or an arbitrary one after clamping)
        _first(~(norm > torch.finfo(norm.dtype).tiny), where, label["quats"], "must be non-zero quaternions (w, x, y, z)", quats.detach())
    if scales is not None and scales.numel():
        # negative scales square to a valid covariance but mean log-scales (or another parameterisation) were passed
        _first(~(scales.detach() >= 0).all(-1), where, label["scales"], "must be >= 0 (standard deviations, not log-scales)", scales.detach())
    opacity = opacities.detach()
    _first(~((opacity >= 0) & (opacity <= 1)), where, label["opacities"], "must lie in [0, 1]", opacity)
    check_finite(colors, label["colors"], where, item_dims=1)
    if covars is None:
        return
    name = label["covars"] if quats is None else f"{label['covars']} (from quats/scales)"
    _check_covariances(covars, name, where)


def check_float_tensors(where: str, **tensors) -> None:
    """Each given tensor (None skipped) must be a floating-point tensor: an integer opacity of 5 (or a bool mask, an
    integer K) would skip every range check and render as something else entirely."""
    for name, tensor in tensors.items():
        if tensor is None:
            continue
        if not torch.is_tensor(tensor):
            raise ValueError(f"{where}: `{name}` must be a torch.Tensor, got {type(tensor).__name__}")
        if not tensor.is_floating_point():
            raise ValueError(f"{where}: `{name}` must be a floating-point tensor, got dtype {tensor.dtype}")


def _check_covariances(covars: torch.Tensor, name: str, where: str) -> None:
    check_finite(covars, name, where, item_dims=2)
    c = covars.detach()
    upper = c.reshape(-1, 9)[:, [0, 1, 2, 4, 5, 8]].t().contiguous()  # [6, M] rows: a b d e f i
    a, b, d, e, f, i = upper.unbind(0)
    scale = torch.maximum(torch.maximum(a.abs(), e.abs()), i.abs()).clamp_min(torch.finfo(c.dtype).tiny)  # [..., N]
    tol = _PSD_TOLERANCE.get(c.dtype, 1e-5)
    minors = [
        (torch.minimum(torch.minimum(a, e), i), scale),
        (torch.minimum(torch.minimum(a * e - b * b, a * i - d * d), e * i - f * f), scale**2),
        (a * (e * i - f * f) - b * (b * i - f * d) + d * (b * f - e * d), scale**3),
    ]
    bad = torch.zeros_like(a, dtype=torch.bool)
    for minor, unit in minors:
        bad |= minor < -tol * unit
    _first(bad.reshape(c.shape[:-2]), where, name, "must be symmetric positive semi-definite (a negative principal minor)", c)


def check_render_scalars(where: str = "render_features", **values) -> None:
    """Scalar render settings (``eps2d``, ``near_plane``...) must be finite and >= 0: a NaN ``eps2d`` makes every 2D
    covariance NaN, i.e. an empty render, without an error."""
    for name, value in values.items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: `{name}` must be a number, got {type(value).__name__} {value!r}") from None
        if not (math.isfinite(number) and number >= 0):
            raise ValueError(f"{where}: `{name}` must be a finite number >= 0, got {value!r}")


#: Largest image side a render accepts (a typo such as 1e9 is named; sizes below it go to the memory estimate).
MAX_IMAGE_SIDE = 1 << 20


def check_image_size(where: str = "render_features", **sides) -> dict[str, int]:
    """``width`` / ``height`` (and similar counts) must be integers in [1, MAX_IMAGE_SIDE]: a float 32.5 would be
    truncated silently, a bool is not a size, NaN and 1e9 are typos. Returns them as ints."""
    checked = {}
    for name, value in sides.items():
        integral = isinstance(value, int) and not isinstance(value, bool)
        if not integral and torch.is_tensor(value) and value.numel() == 1 and not value.is_floating_point() and value.dtype != torch.bool:
            value, integral = int(value), True
        if not integral and type(value).__module__ == "numpy" and getattr(value, "dtype", None) is not None and value.dtype.kind in "iu":
            value, integral = int(value), True
        if not integral:
            raise ValueError(f"{where}: `{name}` must be an integer number of pixels, got {type(value).__name__} {value!r}")
        if not 1 <= value <= MAX_IMAGE_SIDE:
            raise ValueError(f"{where}: `{name}` must be in [1, {MAX_IMAGE_SIDE}] pixels, got {value}")
        checked[name] = int(value)
    return checked


def check_viewmats(viewmats: torch.Tensor, where: str = "render_features", name: str = "viewmats") -> None:
    """Finite rigid 4x4 transforms: orthonormal rotation with det +1, last row (0, 0, 0, 1)."""
    check_float_tensors(where, **{name: viewmats})
    check_finite(viewmats, name, where, item_dims=2)
    m = viewmats.detach()
    rotation = m[..., :3, :3]
    tol = _RIGID_TOLERANCE.get(m.dtype, 1e-3)
    identity = torch.eye(3, dtype=m.dtype, device=m.device)
    # in the tensors' own precision: under a bf16/fp16 autocast region (mixed-precision training) the matmul would
    # otherwise run in bf16 and flag exact float32 rotations (|R^T R - I| ~ 1e-2)
    with torch.autocast(device_type=m.device.type, enabled=False):
        orthonormal = (rotation.transpose(-1, -2) @ rotation - identity).abs().flatten(-2).amax(-1) <= tol
    proper = torch.linalg.det(rotation.float() if m.dtype in (torch.float16, torch.bfloat16) else rotation) > 0
    last = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=m.dtype, device=m.device)
    bottom = (m[..., 3, :] - last).abs().amax(-1) <= tol
    _first(~(orthonormal & proper & bottom), where, name, "must be rigid transforms (orthonormal rotation, det +1, last row 0 0 0 1)", m)


def check_cameras_c2w(extrinsics: torch.Tensor, where: str, name: str = "extrinsics") -> None:
    check_viewmats(extrinsics, where, name)


def check_intrinsics(Ks: torch.Tensor, where: str = "render_features", name: str = "Ks") -> None:
    """Finite intrinsics with positive focal lengths ``K[0, 0]``, ``K[1, 1]``."""
    check_float_tensors(where, **{name: Ks})
    check_finite(Ks, name, where, item_dims=2)
    k = Ks.detach()
    _first(~((k[..., 0, 0] > 0) & (k[..., 1, 1] > 0)), where, name, "must have positive focal lengths K[0,0], K[1,1]", k)


def check_views(views, where: str) -> None:
    """A lifter's context views: finite images, rigid camera-to-world extrinsics, positive focal lengths,
    0 < near < far, finite non-negative depths (0 = invalid)."""
    check_finite(views.images, "context.images", where)
    check_cameras_c2w(views.extrinsics, where, "context.extrinsics")
    check_intrinsics(views.intrinsics, where, "context.intrinsics")
    near, far = views.near.detach(), views.far.detach()
    _first(~(near > 0), where, "context.near", "must be > 0", near)
    _first(~(far > near), where, "context.far", "must be > context.near", far)
    if views.depths is not None:
        depths = views.depths.detach()
        if depths.is_floating_point():
            check_finite(depths, "context.depths", where)
        _first(depths < 0, where, "context.depths", "must be >= 0 (0 marks no depth)", depths)


def available_memory(device: torch.device) -> int:
    """Bytes the device can still give: free CUDA memory plus this process's cached blocks, or MemAvailable."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


BYTES_PER_INTERSECTION = 96  # int64 ids, keys, sort indices and offsets the tile binning holds at once


def check_render_size(
    means: torch.Tensor,  # [I, N, 3]
    covars: torch.Tensor,  # [I, N, 3, 3]
    viewmats: torch.Tensor,  # [I, C, 4, 4]
    Ks: torch.Tensor,  # [I, C, 3, 3]
    width: int,
    height: int,
    channels: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    tile_size: int = 16,
    itemsize: int = 4,
    render_depth: bool = False,
    budget: int | None = None,
    where: str = "render_features",
) -> None:
    """Refuse up front a render whose output plus tile intersections exceed ``budget`` (None: available memory).

    The per-Gaussian intersection estimate is only computed when the trivial bound (every Gaussian in every
    tile of every camera) could exceed the budget, so ordinary renders pay two multiplications.
    """
    images, cameras, count = viewmats.shape[0], viewmats.shape[1], means.shape[1]
    tiles = math.ceil(width / tile_size) * math.ceil(height / tile_size)
    output = images * cameras * height * width * (channels + 1 + int(render_depth)) * itemsize
    worst = output + images * cameras * count * tiles * BYTES_PER_INTERSECTION
    limit = available_memory(means.device) if budget is None else int(budget)
    if worst <= limit:
        return
    output, intersections, intersection_bytes = estimate_render_bytes(
        means, covars, viewmats, Ks, width, height, channels, near_plane, far_plane, eps2d, tile_size, itemsize, render_depth
    )
    what = f"{images * cameras} camera(s) of width x height {width} x {height}, {channels} channel(s), {count} Gaussian(s)"
    check_render_memory(output, intersections, intersection_bytes, budget, means.device, where, what)


def estimate_render_bytes(
    means: torch.Tensor,  # [I, N, 3]
    covars: torch.Tensor,  # [I, N, 3, 3]
    viewmats: torch.Tensor,  # [I, C, 4, 4]
    Ks: torch.Tensor,  # [I, C, 3, 3]
    width: int,
    height: int,
    channels: int,
    near_plane: float,
    far_plane: float,
    eps2d: float,
    tile_size: int,
    itemsize: int,
    render_depth: bool = False,
) -> tuple[int, int, int]:
    """``(output bytes, estimated intersections, their bytes)``.

    Intersections are bounded from above per (camera, Gaussian): a 3.33-sigma extent (where ``exp(-sigma)``
    of an opaque Gaussian falls to 1/255) with sigma^2 <= ||J||^2 trace(covariance) + eps2d, clipped to the image.
    """
    images, cameras = viewmats.shape[0], viewmats.shape[1]
    pixels = images * cameras * height * width
    output = pixels * (channels + 1 + int(render_depth)) * itemsize
    if means.shape[1] == 0:
        return output, 0, 0
    with torch.no_grad():
        m = means.detach().float()
        v = viewmats.detach().float()
        k = Ks.detach().float()
        camera = torch.einsum("icab,inb->icna", v[..., :3, :3], m) + v[:, :, None, :3, 3]  # [I, C, N, 3]
        z = camera[..., 2]
        visible = (z > near_plane) & (z < far_plane)
        z_safe = torch.where(visible, z, torch.ones_like(z))
        fx, fy = k[..., 0, 0][..., None], k[..., 1, 1][..., None]  # [I, C, 1]
        u = fx * camera[..., 0] / z_safe + k[..., 0, 2][..., None]
        w = fy * camera[..., 1] / z_safe + k[..., 1, 2][..., None]
        lateral = (camera[..., 0].abs() + camera[..., 1].abs()) / z_safe
        jacobian2 = (torch.maximum(fx, fy) / z_safe) ** 2 * (1 + lateral**2)  # >= ||J||^2
        trace = covars.detach().float().diagonal(dim1=-2, dim2=-1).sum(-1).clamp_min(0)[:, None]  # [I, 1, N]
        radius = 3.33 * torch.sqrt(jacobian2 * trace + eps2d)
        x0 = ((u - radius) / tile_size).floor().clamp(0, math.ceil(width / tile_size))
        x1 = ((u + radius) / tile_size).ceil().clamp(0, math.ceil(width / tile_size))
        y0 = ((w - radius) / tile_size).floor().clamp(0, math.ceil(height / tile_size))
        y1 = ((w + radius) / tile_size).ceil().clamp(0, math.ceil(height / tile_size))
        tiles = (x1 - x0) * (y1 - y0) * visible
        intersections = int(tiles.double().sum().item())
    return output, intersections, intersections * BYTES_PER_INTERSECTION


def check_render_memory(
    output_bytes: int, intersections: int, intersection_bytes: int, budget: int | None, device: torch.device, where: str,
    what: str = "",
) -> None:
    """Raise :class:`RenderMemoryError` when output plus intersections exceed ``budget`` (None: available memory).
    ``what`` describes the render's size (cameras, width x height, channels, Gaussians) for the message."""
    source = "memory_budget" if budget is not None else f"memory available on {device}"
    budget = available_memory(device) if budget is None else int(budget)
    need = output_bytes + intersection_bytes
    if need > budget:
        gib = 1 << 30
        raise RenderMemoryError(
            f"{where}: this render{f' ({what})' if what else ''} needs about {need / gib:.2f} GiB (output {output_bytes / gib:.2f} GiB, "
            f"~{intersections:,} tile intersections {intersection_bytes / gib:.2f} GiB) but the budget is "
            f"{budget / gib:.2f} GiB ({source}); "
            "render fewer cameras or pixels per call, fewer channels (colors[..., :D] in chunks), fewer or smaller "
            "Gaussians, or raise memory_budget"
        )
