"""Lift given depth maps (sensor depth or synthetic ground truth) into per-pixel Gaussians."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..cameras import pixel_rays, unproject_depth
from ..data.sample import Views
from ..gaussians import Gaussians


@dataclass
class DepthLifter:
    """One Gaussian per context pixel, centred on the unprojected depth, sized to the pixel footprint.

    A pixel at z-depth ``z`` seen with a focal length of ``f`` pixels covers ``z / f`` world units,
    so each Gaussian gets standard deviation ``sigma = footprint_scale * z / f`` across the viewing
    ray and ``thickness * sigma`` along it (``thickness = 1``: isotropic; ``< 1``: a disc facing the
    camera, which keeps depth renders from neighbouring views sharp). ``f`` is the mean of the
    pixel focal lengths ``fx * W`` and ``fy * H``.

    Rendered back into their own view (``snd.splatting.render_gaussians``) the Gaussians reproduce
    the depth map exactly when footprints are small and the 2D blur is off (``footprint_scale=0.3``,
    ``eps2d=0``); with the defaults (and the renderer's ``eps2d=0.3``) footprints overlap so the
    image has no holes, and on surfaces seen at grazing angles the rendered depth leans towards the
    nearer neighbours (a few percent at 16 x 20 pixels, less at higher resolution).

    Pixels with invalid depth (0) get opacity 0; they are placed at ``placeholder_depth`` so their
    covariance stays well-conditioned, and contribute nothing to any render.

    Args:
        opacity: opacity of every valid Gaussian, in (0, 1]. Default 1.0 (gsplat clamps alpha at 0.99).
        footprint_scale: sigma in units of the pixel footprint. Default 0.5 (the 1-sigma disc spans
            one pixel, so neighbouring Gaussians tile the image without large overlaps).
        thickness: ratio of the along-ray sigma to the across-ray sigma. Default 1.0 (isotropic).
        placeholder_depth: z-depth where invalid pixels are put (opacity 0). Default 1.0.
        attach_colors: attach the context RGB as ``features [B, N, 3]`` (replace with teacher features
            via ``gaussians.with_features``). Default True.
    """

    opacity: float = 1.0
    footprint_scale: float = 0.5
    thickness: float = 1.0
    placeholder_depth: float = 1.0
    attach_colors: bool = True

    def __post_init__(self) -> None:
        import math

        for name in ("opacity", "footprint_scale", "thickness", "placeholder_depth"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"DepthLifter.{name} must be a finite number, got {type(value).__name__} {value!r}")
        if not 0 < self.opacity <= 1:
            raise ValueError(f"DepthLifter.opacity must be in (0, 1], got {self.opacity}")
        if self.footprint_scale <= 0:
            raise ValueError(f"DepthLifter.footprint_scale must be > 0, got {self.footprint_scale}")
        if self.thickness <= 0:
            raise ValueError(f"DepthLifter.thickness must be > 0, got {self.thickness}")
        if self.placeholder_depth <= 0:
            raise ValueError(f"DepthLifter.placeholder_depth must be > 0, got {self.placeholder_depth}")

    def __call__(self, context: Views, validate: bool = True) -> Gaussians:
        """Lift batched ``context`` views; ``validate`` checks cameras, near/far and depths first (ValueError naming them)."""
        if not context.is_batched:
            raise ValueError("DepthLifter expects batched context views ([B, V, ...]); use collate_multiview")
        if context.depths is None:
            raise ValueError("DepthLifter needs context.depths (z-depth maps); these views carry none")
        if validate:
            from ..splatting.validate import check_views

            check_views(context, "DepthLifter")
        depths = context.depths  # [B, V, H, W]
        batch, views, height, width = depths.shape
        dtype = depths.dtype if depths.is_floating_point() else torch.float32
        depths = depths.to(dtype)
        extrinsics = context.extrinsics.to(dtype)  # [B, V, 4, 4]
        intrinsics = context.intrinsics.to(dtype)  # [B, V, 3, 3]

        valid = depths > 0  # [B, V, H, W]
        safe_depths = torch.where(valid, depths, torch.full_like(depths, self.placeholder_depth))
        means = unproject_depth(safe_depths, extrinsics, intrinsics)  # [B, V, H, W, 3]

        focal_px = 0.5 * (intrinsics[..., 0, 0] * width + intrinsics[..., 1, 1] * height)  # [B, V]
        sigma = self.footprint_scale * safe_depths / focal_px[..., None, None]  # [B, V, H, W]

        rays = pixel_rays(intrinsics, height, width)  # [B, V, H, W, 3] camera frame
        rays = rays / rays.norm(dim=-1, keepdim=True)
        identity = torch.eye(3, dtype=dtype, device=depths.device)
        along = rays[..., :, None] * rays[..., None, :]  # [B, V, H, W, 3, 3]
        shape = (identity - along) + (self.thickness**2) * along
        covariance_camera = sigma[..., None, None] ** 2 * shape
        rotation = extrinsics[:, :, None, None, :3, :3]  # [B, V, 1, 1, 3, 3]
        covariance_world = rotation @ covariance_camera @ rotation.transpose(-1, -2)
        covariance_world = 0.5 * (covariance_world + covariance_world.transpose(-1, -2))

        opacities = valid.to(dtype) * self.opacity  # [B, V, H, W]
        count = views * height * width
        features = None
        if self.attach_colors:
            features = context.images.to(dtype).permute(0, 1, 3, 4, 2).reshape(batch, count, 3)
        return Gaussians(
            means=means.reshape(batch, count, 3),
            covariances=covariance_world.reshape(batch, count, 3, 3),
            opacities=opacities.reshape(batch, count),
            features=features,
        )
