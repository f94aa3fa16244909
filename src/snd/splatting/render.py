"""Public splatting API: ``render_features`` (gsplat's argument names) and ``render_gaussians``.

``render_features`` renders any number of feature channels in one pass. Backends:

* ``"gsplat"``: gsplat's CUDA kernels (CUDA tensors only, float32 inside);
* ``"torch"``: the pure-PyTorch tiled twin in ``_torch_impl`` (any device, any dtype);
* ``"auto"`` (default): ``"gsplat"`` for CUDA tensors, ``"torch"`` otherwise.

Both follow gsplat 1.5's classic rasterizer semantics (see ``_torch_impl``'s docstring).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from ..cameras import camera_to_world_to_viewmat, denormalize_intrinsics
from ..gaussians import Gaussians
from . import validate as checks
from ._torch_impl import DEFAULT_MAX_ELEMENTS, quat_scale_to_covar, rasterize_torch

BACKENDS = ("auto", "torch", "gsplat")


class RenderOutput(NamedTuple):
    """What ``render_features`` / ``render_gaussians`` return."""

    renders: torch.Tensor  # [..., C, H, W, D] composited features (+ T * background)
    alphas: torch.Tensor  # [..., C, H, W, 1] accumulated opacity 1 - T
    depths: torch.Tensor | None  # [..., C, H, W, 1] expected camera z (gsplat "ED"), when asked


def _check_shape(name: str, tensor: torch.Tensor, expected: tuple) -> None:
    if tuple(tensor.shape) != tuple(expected):
        raise ValueError(f"render_features: `{name}` must have shape {tuple(expected)}, got {tuple(tensor.shape)}")


def resolve_backend(backend: str, device: torch.device) -> str:
    """Map ``"auto"`` to a concrete backend and check that the choice can run on ``device``."""
    if backend not in BACKENDS:
        raise ValueError(f"render_features: backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "gsplat" if device.type == "cuda" else "torch"
    if backend == "gsplat" and device.type != "cuda":
        raise ValueError(f"render_features: backend='gsplat' needs CUDA tensors, got tensors on {device}")
    return backend


def render_features(
    means: torch.Tensor,  # [..., N, 3]
    quats: torch.Tensor | None = None,  # [..., N, 4] (w, x, y, z)
    scales: torch.Tensor | None = None,  # [..., N, 3]
    opacities: torch.Tensor | None = None,  # [..., N]
    colors: torch.Tensor | None = None,  # [..., N, D] or [..., C, N, D]
    viewmats: torch.Tensor | None = None,  # [..., C, 4, 4] world-to-camera (OpenCV)
    Ks: torch.Tensor | None = None,  # [..., C, 3, 3] pixel intrinsics
    width: int | None = None,
    height: int | None = None,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    backgrounds: torch.Tensor | None = None,  # [..., C, D]
    covars: torch.Tensor | None = None,  # [..., N, 3, 3] (upper triangle read, as gsplat)
    render_depth: bool = False,
    backend: str = "auto",
    tile_size: int | None = None,
    channel_chunk: int = 32,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    max_alpha: float = 0.999,
    validate: bool = True,
    memory_budget: int | None = None,
) -> RenderOutput:
    """Alpha-composite ``D``-channel Gaussian features into ``C`` cameras in one pass.

    Arguments follow ``gsplat.rasterization`` (positional order included); give either
    ``quats`` + ``scales`` or ``covars``. ``D`` is any positive channel count chosen at run
    time. Leading batch dims ``...`` are shared by every argument.

    Args:
        near_plane, far_plane: Gaussians whose camera z lies outside are culled.
        eps2d: pixels^2 added to the 2D covariance diagonal (0.3 as gsplat).
        backgrounds: added as ``T * background`` (default: none, i.e. black).
        render_depth: also return the expected camera z (gsplat's "ED": normalised by alpha).
        backend: ``"auto"`` | ``"torch"`` | ``"gsplat"`` (see module docstring).
        tile_size: tile edge in pixels; default 16 for gsplat, 8 for the torch backend. Results
            do not depend on it: a pixel outside a Gaussian's extent rectangle always gets
            alpha < 1/255 (the extent is where o exp(-sigma) falls to 1/255), so tiles only
            decide how many certainly-skipped pairs are visited.
        channel_chunk: gsplat backend only: channels per kernel launch (1..513).
        max_elements: torch backend only: ``tiles x 256 x K`` elements per compositing step,
            the knob bounding its working memory.
        max_alpha: per-pair alpha clamp, ``alpha = min(max_alpha, o exp(-sigma))``. 0.999 is gsplat's
            (its kernels hard-code it); the graphdeco/LUDVIG rasterizer of the authors' release uses
            0.99. Any other value than 0.999 renders with the torch backend, on whatever device the
            inputs are (gsplat cannot honour it).
        validate: check values (``snd.splatting.validate``): finite means/covariances/colours, opacities in
            [0, 1], PSD covariances, rigid ``viewmats``, positive focal lengths; ``ValueError`` naming the
            argument and first bad index. ``False`` for hot loops whose inputs were checked upstream.
        memory_budget: bytes a render may take (output + tile intersections, estimated up front); None: the
            memory available on the device. Larger renders raise ``RenderMemoryError`` before any work.

    Returns:
        ``RenderOutput(renders [..., C, H, W, D], alphas [..., C, H, W, 1], depths [..., C, H, W, 1] | None)``.
    """
    for name, value in (("opacities", opacities), ("colors", colors), ("viewmats", viewmats), ("Ks", Ks)):
        if value is None:
            raise ValueError(f"render_features: `{name}` is required")
    if width is None or height is None:
        raise ValueError(f"render_features: `width` and `height` are required, got {width} x {height}")
    sizes = checks.check_image_size("render_features", width=width, height=height)
    width, height = sizes["width"], sizes["height"]
    checks.check_float_tensors("render_features", means=means, quats=quats, scales=scales, opacities=opacities, colors=colors,
                               viewmats=viewmats, Ks=Ks, backgrounds=backgrounds, covars=covars)
    try:
        alpha_value = float(max_alpha)
    except (TypeError, ValueError):
        alpha_value = float("nan")
    if isinstance(max_alpha, (bool, str)) or not 0.0 < alpha_value < 1.0:
        raise ValueError(f"render_features: `max_alpha` must be in (0, 1), got {max_alpha!r}")
    if tile_size is not None and (isinstance(tile_size, bool) or not isinstance(tile_size, int) or not 1 <= tile_size <= 256):
        raise ValueError(f"render_features: `tile_size` must be an integer in [1, 256] pixels (or None), got {tile_size!r}")
    if isinstance(max_elements, bool) or not isinstance(max_elements, int) or max_elements < 1:
        raise ValueError(f"render_features: `max_elements` must be a positive integer, got {max_elements!r}")
    if isinstance(channel_chunk, bool) or not isinstance(channel_chunk, int) or not 1 <= channel_chunk <= 513:
        raise ValueError(f"render_features: `channel_chunk` must be an integer in [1, 513], got {channel_chunk!r}")
    checks.check_render_scalars("render_features", near_plane=near_plane)
    if not near_plane > 0 or not far_plane > near_plane:
        raise ValueError(f"render_features: need 0 < near_plane < far_plane, got {near_plane}, {far_plane}")
    checks.check_render_scalars("render_features", eps2d=eps2d, near_plane=near_plane)
    if means.dim() < 2 or means.shape[-1] != 3:
        raise ValueError(f"render_features: `means` must have shape [..., N, 3], got {tuple(means.shape)}")
    batch_dims = tuple(means.shape[:-2])
    count = means.shape[-2]
    if viewmats.dim() < 3:
        raise ValueError(f"render_features: `viewmats` must have shape [..., C, 4, 4], got {tuple(viewmats.shape)}")
    cameras = viewmats.shape[-3]

    if covars is None:
        if quats is None or scales is None:
            raise ValueError("render_features: give either `covars` or both `quats` and `scales`")
        _check_shape("quats", quats, batch_dims + (count, 4))
        _check_shape("scales", scales, batch_dims + (count, 3))
        covars = quat_scale_to_covar(quats, scales)
    _check_shape("covars", covars, batch_dims + (count, 3, 3))
    _check_shape("opacities", opacities, batch_dims + (count,))
    _check_shape("viewmats", viewmats, batch_dims + (cameras, 4, 4))
    _check_shape("Ks", Ks, batch_dims + (cameras, 3, 3))
    if colors.dim() == len(batch_dims) + 2:
        _check_shape("colors", colors, batch_dims + (count, colors.shape[-1]))
    elif colors.dim() == len(batch_dims) + 3:
        _check_shape("colors", colors, batch_dims + (cameras, count, colors.shape[-1]))
    else:
        raise ValueError(
            f"render_features: `colors` must have shape [..., N, D] or [..., C, N, D] with ... = {batch_dims}, "
            f"got {tuple(colors.shape)}"
        )
    channels = colors.shape[-1]
    if channels < 1:
        raise ValueError("render_features: `colors` needs at least one channel")
    if backgrounds is not None:
        _check_shape("backgrounds", backgrounds, batch_dims + (cameras, channels))
    if validate:
        checks.check_gaussians(means, covars, opacities, colors, quats=quats, scales=scales)
        checks.check_viewmats(viewmats)
        checks.check_intrinsics(Ks)
        checks.check_finite(backgrounds, "backgrounds", "render_features")

    flat_batch = math.prod(batch_dims)

    dtype = means.dtype  # everything is computed in the means' precision; renders come back in the colors'

    def flat(tensor, tail):
        return None if tensor is None else tensor.reshape((flat_batch,) + tuple(tensor.shape[tail:])).to(dtype)

    colors_flat = colors.reshape((flat_batch,) + tuple(colors.shape[len(batch_dims) :])).to(dtype)
    arguments = dict(
        means=flat(means, -2),
        covars=flat(covars, -3),
        opacities=flat(opacities, -1),
        colors=colors_flat,
        viewmats=flat(viewmats, -3),
        Ks=flat(Ks, -3),
        width=width,
        height=height,
        near_plane=near_plane,
        far_plane=far_plane,
        eps2d=eps2d,
        backgrounds=flat(backgrounds, -2),
        render_depth=render_depth,
    )
    # An empty scene is just the background; gsplat's kernels are not needed (nor tested) for it.
    resolved = resolve_backend(backend, means.device)
    if cameras == 0 or flat_batch == 0:  # no image to render: empty outputs of the documented shapes
        image_dims = batch_dims + (cameras, height, width)
        return RenderOutput(
            renders=colors.new_zeros(image_dims + (channels,)),
            alphas=means.new_zeros(image_dims + (1,)),
            depths=means.new_zeros(image_dims + (1,)) if render_depth else None,
        )
    checks.check_render_size(arguments["means"], arguments["covars"], arguments["viewmats"], arguments["Ks"], width, height, channels,
                             near_plane, far_plane, eps2d, tile_size or (16 if resolved == "gsplat" else 8), colors.element_size(),
                             render_depth, memory_budget)
    if resolved == "gsplat" and float(max_alpha) != 0.999:
        if backend == "gsplat":
            raise ValueError(f"render_features: backend='gsplat' clamps alpha at 0.999; max_alpha={max_alpha} needs backend='torch'")
        resolved = "torch"
    if resolved == "gsplat" and count > 0:
        from ._gsplat import rasterize_gsplat  # lazy: touching gsplat's kernels may JIT-compile CUDA

        renders, alphas, depths = rasterize_gsplat(**arguments, tile_size=tile_size or 16, channel_chunk=channel_chunk)
    else:
        renders, alphas, depths = rasterize_torch(
            **arguments, tile_size=tile_size or 8, max_elements=max_elements, max_alpha=float(max_alpha)
        )

    image_dims = batch_dims + (cameras, height, width)
    return RenderOutput(
        renders=renders.reshape(image_dims + (channels,)).to(colors.dtype),
        alphas=alphas.reshape(image_dims + (1,)),
        depths=None if depths is None else depths.reshape(image_dims + (1,)),
    )


def render_gaussians(
    gaussians: Gaussians,
    features: torch.Tensor | None,  # [B, N, D]; None uses gaussians.features
    extrinsics: torch.Tensor,  # [B, C, 4, 4] camera-to-world, OpenCV
    intrinsics: torch.Tensor,  # [B, C, 3, 3] normalised (fx/W, fy/H, cx/W, cy/H)
    height: int,
    width: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    backgrounds: torch.Tensor | None = None,  # [B, C, D]
    render_depth: bool = False,
    backend: str = "auto",
    eps2d: float = 0.3,
    validate: bool = True,
    **kwargs,
) -> RenderOutput:
    """Render MVSplat-style Gaussians into snd cameras: the one place snd cameras become renderer inputs.

    Converts camera-to-world OpenCV extrinsics to gsplat's world-to-camera ``viewmats`` and
    normalised intrinsics to pixels for a ``width`` x ``height`` image (principal point scales
    with the image; pixel centres at +0.5), then calls ``render_features``. ``validate`` (default True)
    checks the Gaussians and that ``extrinsics`` are rigid and ``intrinsics`` have positive focal lengths
    (see ``render_features``).

    Returns:
        ``RenderOutput`` with ``renders [B, C, H, W, D]``.
    """
    checks.check_image_size("render_gaussians", height=height, width=width)
    if features is None:
        features = gaussians.features
    if features is None:
        raise ValueError("render_gaussians: pass `features` or give the Gaussians features (Gaussians.with_features)")
    batch = gaussians.batch_size
    if extrinsics.dim() != 4 or tuple(extrinsics.shape[-2:]) != (4, 4) or extrinsics.shape[0] != batch:
        raise ValueError(f"render_gaussians: `extrinsics` must be [B={batch}, C, 4, 4] camera-to-world, got {tuple(extrinsics.shape)}")
    if tuple(intrinsics.shape) != tuple(extrinsics.shape[:2]) + (3, 3):
        raise ValueError(
            f"render_gaussians: `intrinsics` must be [B, C, 3, 3] = {tuple(extrinsics.shape[:2]) + (3, 3)} (normalised), "
            f"got {tuple(intrinsics.shape)}"
        )
    if validate:
        checks.check_cameras_c2w(extrinsics, "render_gaussians", "extrinsics")
        checks.check_intrinsics(intrinsics, "render_gaussians", "intrinsics")
        checks.check_gaussians(gaussians.means, gaussians.covariances, gaussians.opacities, features, where="render_gaussians",
                               names={"colors": "features", "covars": "covariances"})
    dtype = gaussians.means.dtype
    return render_features(
        means=gaussians.means,
        covars=gaussians.covariances,
        opacities=gaussians.opacities,
        colors=features,
        viewmats=camera_to_world_to_viewmat(extrinsics.to(dtype)),
        Ks=denormalize_intrinsics(intrinsics.to(dtype), width, height),
        width=width,
        height=height,
        near_plane=near_plane,
        far_plane=far_plane,
        eps2d=eps2d,
        backgrounds=backgrounds,
        render_depth=render_depth,
        backend=backend,
        validate=False,  # checked above under the caller's names
        **kwargs,
    )
