"""MVSplat's depth predictor: plane-sweep cost volume, its U-Net refinement, a soft-argmin coarse depth,
full-resolution depth refinement, and the heads for Gaussian parameters, depth offsets and opacities.

Everything here runs in MVSplat's view-major batch layout ``(v b)``. Module names follow the official
`DepthPredictorMultiView` so checkpoint keys map one to one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .configuration_mvsplat import MVSplatConfig
from .unet_mvsplat import MVSplatUNet

# Most float32 elements of the [N, C, D', h, w] warped-feature tensor at once: all D depth candidates go
# through one grid_sample when they fit (the released model at 256x256: 2 x 128 x 128 x 64 x 64 = 2^27),
# else in chunks of depths (same result).
_WARP_BUDGET = 2**27


def view_major(tensor: torch.Tensor) -> torch.Tensor:
    """[B, V, ...] -> [V * B, ...]."""
    return tensor.transpose(0, 1).reshape(-1, *tensor.shape[2:])


def batch_major(tensor: torch.Tensor, views: int) -> torch.Tensor:
    """[V * B, ...] -> [B, V, ...]."""
    return tensor.view(views, -1, *tensor.shape[1:]).transpose(0, 1)


def relative_poses(extrinsics: torch.Tensor) -> list[torch.Tensor]:
    """For each cyclic shift s = 1..V-1: [V*B, 4, 4] transforms from reference view v to source view (v + s) % V.

    Two views use inv(E1) @ E0 and its inverse, exactly as the released model was evaluated.
    """
    batch, views = extrinsics.shape[:2]
    if views == 2:
        pose = extrinsics[:, 1].inverse() @ extrinsics[:, 0]
        return [torch.cat((pose, pose.inverse()), dim=0)]
    poses = []
    for shift in range(1, views):
        order = list(range(shift, views)) + list(range(shift))
        poses.append(torch.cat([extrinsics[:, source].inverse() @ extrinsics[:, reference] for reference, source in enumerate(order)]))
    return poses


def warp_features(
    source_features: torch.Tensor,  # [N, C, h, w] features of the source view
    intrinsics: torch.Tensor,  # [N, 3, 3] in pixels of the feature grid (pixel (i, j) at (j, i))
    pose: torch.Tensor,  # [N, 4, 4] reference camera -> source camera
    depths: torch.Tensor,  # [N, D] z-depth candidates of the reference view
    clamp_min_depth: float = 1e-3,
) -> torch.Tensor:  # [N, C, D, h, w]
    """Plane-sweep: sample the source features where each reference pixel lands if it lies at each candidate depth."""
    count, channels, height, width = source_features.shape
    num_depths = depths.shape[1]
    rows, cols = torch.meshgrid(torch.arange(height, device=depths.device), torch.arange(width, device=depths.device), indexing="ij")
    pixels = torch.stack([cols, rows, torch.ones_like(cols)], dim=0).float().view(1, 3, -1).expand(count, 3, -1)
    points = torch.inverse(intrinsics).bmm(pixels)  # [N, 3, hw]
    points = torch.bmm(pose[:, :3, :3], points).unsqueeze(2) * depths.view(count, 1, num_depths, 1)  # [N, 3, D, hw]
    points = points + pose[:, :3, 3:].unsqueeze(-1)
    points = torch.bmm(intrinsics, points.view(count, 3, -1)).view(count, 3, num_depths, height * width)
    coords = points[:, :2] / points[:, 2:].clamp(min=clamp_min_depth)  # [N, 2, D, hw]
    grid = torch.stack([2 * coords[:, 0] / (width - 1) - 1, 2 * coords[:, 1] / (height - 1) - 1], dim=-1)
    warped = F.grid_sample(
        source_features, grid.view(count, num_depths * height, width, 2), mode="bilinear", padding_mode="zeros", align_corners=True
    )
    return warped.view(count, channels, num_depths, height, width)


def _apply(blocks: nn.Sequential, hidden: torch.Tensor, num_views: int) -> torch.Tensor:
    for block in blocks:
        hidden = block(hidden, num_views) if isinstance(block, MVSplatUNet) else block(hidden)
    return hidden


class MVSplatDepthPredictor(nn.Module):
    """Cost volume -> U-Net -> soft-argmin disparity at 1/4, then full-resolution refinement and Gaussian heads."""

    def __init__(self, config: MVSplatConfig):
        super().__init__()
        self.config = config
        channels = config.feature_channels
        candidates = config.num_depth_candidates
        volume_width = config.costvolume_unet_feat_dim
        volume_in = candidates + channels
        self.corr_refine_net = nn.Sequential(
            nn.Conv2d(volume_in, volume_width, 3, 1, 1),
            nn.GroupNorm(8, volume_width),
            nn.GELU(),
            MVSplatUNet(volume_width, config.costvolume_unet_channel_mult, config.costvolume_unet_attn_res, config.unet_num_head_channels),
            nn.Conv2d(volume_width, candidates, 3, 1, 1),
        )
        self.regressor_residual = nn.Conv2d(volume_in, candidates, 1, 1, 0)
        self.depth_head_lowres = nn.Sequential(
            nn.Conv2d(candidates, candidates * 2, 3, 1, 1), nn.GELU(), nn.Conv2d(candidates * 2, candidates, 3, 1, 1)
        )
        self.upsampler = nn.Sequential(
            nn.Conv2d(2 * channels, channels, 3, 1, 1),
            nn.Upsample(scale_factor=config.downscale_factor, mode="bilinear", align_corners=True),
            nn.GELU(),
        )
        depth_width = config.depth_unet_feat_dim
        self.proj_feature = nn.Conv2d(channels, depth_width, 3, 1, 1)
        self.refine_unet = nn.Sequential(
            nn.Conv2d(3 + depth_width + 2, depth_width, 3, 1, 1),
            nn.GroupNorm(4, depth_width),
            nn.GELU(),
            MVSplatUNet(depth_width, config.depth_unet_channel_mult, config.depth_unet_attn_res, config.unet_num_head_channels),
        )
        raw = config.gaussian_raw_channels
        self.to_gaussians = nn.Sequential(
            nn.Conv2d(depth_width + 3 + channels, raw * 2, 3, 1, 1), nn.GELU(), nn.Conv2d(raw * 2, raw, 3, 1, 1)
        )
        self.to_disparity = nn.Sequential(
            nn.Conv2d(depth_width, depth_width * 2, 3, 1, 1),
            nn.GELU(),
            nn.Conv2d(depth_width * 2, config.gaussians_per_pixel * 2, 3, 1, 1),
        )

    def cost_volume(self, features, intrinsics, extrinsics, disparities):
        """Mean over source views of the scaled dot product between reference and warped source features.

        features [B, V, C, h, w]; intrinsics [V*B, 3, 3] in feature pixels; extrinsics [B, V, 4, 4];
        disparities [V*B, D]. Returns [V*B, D, h, w].
        """
        batch, views, channels = features.shape[:3]
        reference = view_major(features)
        depths = 1.0 / disparities
        volumes = []
        chunk = max(1, _WARP_BUDGET // max(1, reference.numel()))  # depth candidates per grid_sample
        in_place = not (torch.is_grad_enabled() and (features.requires_grad or extrinsics.requires_grad))
        for shift, pose in zip(range(1, views), relative_poses(extrinsics)):
            order = list(range(shift, views)) + list(range(shift))
            source = view_major(features[:, order])
            chunks = []
            for start in range(0, depths.shape[1], chunk):
                warped = warp_features(source, intrinsics, pose, depths[:, start : start + chunk])  # [V*B, C, d, h, w]
                # without autograd the product overwrites the warped features (no second [V*B, C, d, h, w] tensor)
                product = warped.mul_(reference.unsqueeze(2)) if in_place else reference.unsqueeze(2) * warped
                chunks.append(product.sum(1) / channels**0.5)
            volumes.append(torch.cat(chunks, dim=1) if len(chunks) > 1 else chunks[0])
        return torch.stack(volumes, dim=0).mean(dim=0)

    def forward(
        self,
        features: torch.Tensor,  # [B, V, C, h, w] transformer features
        cnn_features: torch.Tensor,  # [B, V, C, h, w]
        images: torch.Tensor,  # [B, V, 3, H, W] in [0, 1]
        intrinsics: torch.Tensor,  # [B, V, 3, 3] normalised
        extrinsics: torch.Tensor,  # [B, V, 4, 4] camera-to-world
        near: torch.Tensor,  # [B, V]
        far: torch.Tensor,  # [B, V]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns depths [B, V, H, W], densities [B, V, H, W] in (0, 1) and raw Gaussian parameters [B, V, R, H, W]."""
        batch, views, channels, height, width = features.shape
        config = self.config
        # Cameras enter the sweep without gradients, as in MVSplat.
        extrinsics = extrinsics.detach()
        pixel_intrinsics = intrinsics.detach().clone()
        pixel_intrinsics[:, :, 0, :] *= float(width)
        pixel_intrinsics[:, :, 1, :] *= float(height)
        pixel_intrinsics = view_major(pixel_intrinsics)
        # Candidates uniform in disparity from 1/far to 1/near.
        min_disparity = view_major(1.0 / far.detach())[:, None]
        max_disparity = view_major(1.0 / near.detach())[:, None]
        steps = torch.linspace(0.0, 1.0, config.num_depth_candidates, device=features.device)[None]
        disparities = (min_disparity + steps * (max_disparity - min_disparity)).type_as(features)  # [V*B, D]

        reference = view_major(features)
        volume_in = torch.cat((self.cost_volume(features, pixel_intrinsics, extrinsics, disparities), reference), dim=1)
        volume = _apply(self.corr_refine_net, volume_in, views) + self.regressor_residual(volume_in)
        pdf = F.softmax(self.depth_head_lowres(volume), dim=1)  # [V*B, D, h, w]
        coarse_disparity = (disparities[:, :, None, None] * pdf).sum(dim=1, keepdim=True)
        scale = config.downscale_factor
        pdf_max = F.interpolate(pdf.max(dim=1, keepdim=True)[0], scale_factor=scale)
        disparity = F.interpolate(coarse_disparity, scale_factor=scale, mode="bilinear", align_corners=True)

        flat_images = view_major(images)
        upsampled = self.upsampler(torch.cat((reference, view_major(cnn_features)), dim=1))  # [V*B, C, H, W]
        refined = _apply(
            self.refine_unet, torch.cat((flat_images, self.proj_feature(upsampled), disparity, pdf_max), dim=1), views
        )
        raw_gaussians = self.to_gaussians(torch.cat((refined, flat_images, upsampled), dim=1))
        delta_disparity, raw_density = self.to_disparity(refined).split(config.gaussians_per_pixel, dim=1)
        fine_disparity = (disparity + delta_disparity).clamp(
            1.0 / view_major(far)[:, None, None, None], 1.0 / view_major(near)[:, None, None, None]
        )
        depths = batch_major(1.0 / fine_disparity, views)[:, :, 0]
        densities = batch_major(torch.sigmoid(raw_density), views)[:, :, 0]
        return depths, densities, batch_major(raw_gaussians, views)
