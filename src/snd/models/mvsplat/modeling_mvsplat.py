"""MVSplat's cost-volume encoder as a transformers model: posed context views in, one 3D Gaussian per pixel out.

A re-implementation (not a copy) of the encoder of Chen et al., "MVSplat: Efficient 3D Gaussian Splatting from
Sparse Multi-View Images" (ECCV 2024), computing the same Gaussians from the official weights
(`scripts/convert_mvsplat.py` converts `re10k.ckpt` / `acid.ckpt`). Self-contained (relative imports only),
so it also works as Hub remote code.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .backbone_mvsplat import MVSplatBackbone
from .configuration_mvsplat import MVSplatConfig
from .depth_mvsplat import MVSplatDepthPredictor
from .sh_mvsplat import rotate_harmonics

SH_C0 = 0.28209479177387814  # Y_0^0: RGB = SH_C0 * DC coefficient + 0.5 (3D Gaussian splatting's convention)


@dataclass
class MVSplatModelOutput(ModelOutput):
    """Per-pixel Gaussians in (view, row, col) order (N = V * H * W).

    Args:
        means: `[B, N, 3]` world-space centres.
        covariances: `[B, N, 3, 3]` world-space covariances.
        opacities: `[B, N]` in (0, 1).
        harmonics: `[B, N, 3, (sh_degree + 1) ** 2]` spherical-harmonic colour coefficients in world space, in
            MVSplat's (e3nn's) real SH basis; degree 0 is the view-independent colour used for RGB renders.
        depths: `[B, V, H, W]` MVSplat depth: distance from the camera centre along the pixel's ray
            (the Gaussian sits at `origin + depth * unit_ray`, as in the official adapter).
        scales: `[B, N, 3]` Gaussian scales (camera frame).
        rotations: `[B, N, 4]` unit quaternions (x, y, z, w) in the camera frame.
    """

    means: torch.Tensor | None = None
    covariances: torch.Tensor | None = None
    opacities: torch.Tensor | None = None
    harmonics: torch.Tensor | None = None
    depths: torch.Tensor | None = None
    scales: torch.Tensor | None = None
    rotations: torch.Tensor | None = None

    @property
    def colors(self) -> torch.Tensor:
        """`[B, N, 3]` view-independent RGB (degree-0 harmonics), clamped at 0 as 3D Gaussian splatting does."""
        return (SH_C0 * self.harmonics[..., 0] + 0.5).clamp_min(0.0)


def quaternion_to_matrix(quaternions: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:  # [..., 4] (x, y, z, w) -> [..., 3, 3]
    x, y, z, w = quaternions.unbind(-1)
    two_s = 2 / ((quaternions * quaternions).sum(-1) + eps)
    matrix = torch.stack(
        (
            1 - two_s * (y * y + z * z), two_s * (x * y - z * w), two_s * (x * z + y * w),
            two_s * (x * y + z * w), 1 - two_s * (x * x + z * z), two_s * (y * z - x * w),
            two_s * (x * z - y * w), two_s * (y * z + x * w), 1 - two_s * (x * x + y * y),
        ),
        dim=-1,
    )  # fmt: skip
    return matrix.unflatten(-1, (3, 3))


class MVSplatGaussianAdapter(nn.Module):
    """Raw per-pixel parameters + depth + camera -> world-space Gaussians (MVSplat's `GaussianAdapter`)."""

    def __init__(self, config: MVSplatConfig):
        super().__init__()
        self.config = config
        # Higher SH bands start small: MVSplat scales band l by 0.1 * 0.25**l (a fixed mask, not a weight).
        mask = torch.ones(config.num_sh_coefficients)
        for degree in range(1, config.sh_degree + 1):
            mask[degree**2 : (degree + 1) ** 2] = 0.1 * 0.25**degree
        self.register_buffer("sh_mask", mask, persistent=False)

    def forward(
        self,
        raw: torch.Tensor,  # [B, V, R, H, W] raw head output
        depths: torch.Tensor,  # [B, V, H, W] distance along the ray
        densities: torch.Tensor,  # [B, V, H, W]
        extrinsics: torch.Tensor,  # [B, V, 4, 4] camera-to-world
        intrinsics: torch.Tensor,  # [B, V, 3, 3] normalised
    ) -> dict[str, torch.Tensor]:
        config = self.config
        batch, views, _, height, width = raw.shape
        raw = raw.permute(0, 1, 3, 4, 2)  # [B, V, H, W, R]
        device = raw.device
        # Pixel centres in normalised coordinates, moved by a learned sub-pixel offset.
        xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width
        ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # [H, W, 2] as (x, y)
        pixel_size = 1 / torch.tensor((width, height), dtype=torch.float32, device=device)
        coordinates = grid + (raw[..., :2].sigmoid() - 0.5) * pixel_size  # [B, V, H, W, 2]
        raw_scales, raw_rotations, raw_sh = raw[..., 2:].split((3, 4, 3 * config.num_sh_coefficients), dim=-1)

        K = intrinsics[:, :, None, None]  # [B, V, 1, 1, 3, 3]
        c2w = extrinsics[:, :, None, None]
        # Scales: in pixels between min and max, converted to world units at the pixel's depth.
        scales = config.gaussian_scale_min + (config.gaussian_scale_max - config.gaussian_scale_min) * raw_scales.sigmoid()
        multiplier = 0.1 * torch.einsum("...ij,j->...i", K[..., :2, :2].inverse(), pixel_size).sum(-1)  # [B, V, 1, 1]
        scales = scales * depths[..., None] * multiplier[..., None]
        rotations = raw_rotations / (raw_rotations.norm(dim=-1, keepdim=True) + 1e-8)
        rotation = quaternion_to_matrix(rotations)
        scale = scales.diag_embed()
        covariances = rotation @ scale @ scale.transpose(-1, -2) @ rotation.transpose(-1, -2)
        c2w_rotation = c2w[..., :3, :3]
        covariances = c2w_rotation @ covariances @ c2w_rotation.transpose(-1, -2)

        # Means: origin + depth * unit ray through the (offset) pixel.
        homogeneous = torch.cat([coordinates, torch.ones_like(coordinates[..., :1])], dim=-1)
        directions = torch.einsum("...ij,...j->...i", K.inverse(), homogeneous)
        directions = directions / directions.norm(dim=-1, keepdim=True)
        directions = torch.einsum("...ij,...j->...i", c2w_rotation, directions)
        means = c2w[..., :3, 3] + directions * depths[..., None]

        exponent = 2.0**config.opacity_mapping_exponent_log2
        opacities = 0.5 * (1 - (1 - densities) ** exponent + densities ** (1 / exponent)) / config.gaussians_per_pixel

        harmonics = raw_sh.unflatten(-1, (3, config.num_sh_coefficients)) * self.sh_mask
        harmonics = rotate_harmonics(harmonics, c2w_rotation)  # camera -> world frame, as MVSplat (e3nn basis)

        count = views * height * width
        return dict(
            means=means.reshape(batch, count, 3),
            covariances=covariances.reshape(batch, count, 3, 3),
            opacities=opacities.reshape(batch, count),
            harmonics=harmonics.reshape(batch, count, 3, config.num_sh_coefficients),
            scales=scales.reshape(batch, count, 3),
            rotations=rotations.reshape(batch, count, 4),
        )


class MVSplatPreTrainedModel(PreTrainedModel):
    config_class = MVSplatConfig
    config: MVSplatConfig
    base_model_prefix = "mvsplat"
    main_input_name = "images"
    input_modalities = ("image",)
    _no_split_modules = ["MVSplatBackbone", "MVSplatDepthPredictor"]

    def _init_weights(self, module) -> None:
        # PyTorch's default (Kaiming-uniform) init keeps random-weight outputs non-degenerate for tests.
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            module.reset_parameters()
        elif isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, MVSplatGaussianAdapter):
            mask = torch.ones_like(module.sh_mask)
            for degree in range(1, self.config.sh_degree + 1):
                mask[degree**2 : (degree + 1) ** 2] = 0.1 * 0.25**degree
            module.sh_mask.copy_(mask)


class MVSplatModel(MVSplatPreTrainedModel):
    """MVSplat's encoder: V posed views -> one Gaussian per pixel (means, covariances, opacities, SH colours).

    Example:
        ```python
        >>> import torch, snd
        >>> from snd.models.mvsplat import MVSplatConfig, MVSplatModel
        >>> model = MVSplatModel(MVSplatConfig.tiny()).eval()   # or MVSplatModel.from_pretrained(converted_dir)
        >>> out = model(images, extrinsics, intrinsics, near, far)  # [B,V,3,H,W], [B,V,4,4], [B,V,3,3], [B,V], [B,V]
        >>> out.means.shape                                          # [B, V*H*W, 3]
        ```
    """

    def __init__(self, config: MVSplatConfig):
        super().__init__(config)
        self.backbone = MVSplatBackbone(config)
        self.depth_predictor = MVSplatDepthPredictor(config)
        self.gaussian_adapter = MVSplatGaussianAdapter(config)
        self.post_init()

    def _check_inputs(self, images, extrinsics, intrinsics, near, far) -> None:
        if images.ndim != 5 or images.shape[2] != 3:
            raise ValueError(f"MVSplatModel: images must be [B, V, 3, H, W], got {tuple(images.shape)}")
        batch, views, _, height, width = images.shape
        if views < 2:
            raise ValueError(f"MVSplatModel: needs at least 2 context views, got {views}")
        expected = {"extrinsics": (batch, views, 4, 4), "intrinsics": (batch, views, 3, 3), "near": (batch, views), "far": (batch, views)}
        for name, tensor in zip(expected, (extrinsics, intrinsics, near, far)):
            if tuple(tensor.shape) != expected[name]:
                raise ValueError(f"MVSplatModel: {name} must be {list(expected[name])}, got {list(tensor.shape)}")
        multiple = self.config.size_multiple
        if height % multiple or width % multiple:
            raise ValueError(
                f"MVSplatModel: image height and width must be multiples of {multiple} (1/4 feature grid, window split and "
                f"U-Net levels), got {height} x {width}; crop or resize the views (and their intrinsics) first"
            )
        if not bool((far > near).all()) or not bool((near > 0).all()):
            raise ValueError("MVSplatModel: need 0 < near < far for every view")

    def forward(
        self,
        images: torch.Tensor,  # [B, V, 3, H, W] in [0, 1]
        extrinsics: torch.Tensor,  # [B, V, 4, 4] camera-to-world, OpenCV
        intrinsics: torch.Tensor,  # [B, V, 3, 3] normalised (fx/W, fy/H, cx/W, cy/H)
        near: torch.Tensor,  # [B, V]
        far: torch.Tensor,  # [B, V]
        depths: torch.Tensor | None = None,  # [B, V, H, W] optional ray-distance depths replacing the predicted ones
        return_dict: bool | None = None,
        **kwargs,
    ) -> MVSplatModelOutput | tuple:
        self._check_inputs(images, extrinsics, intrinsics, near, far)
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        features, cnn_features = self.backbone(images)
        predicted_depths, densities, raw = self.depth_predictor(features, cnn_features, images, intrinsics, extrinsics, near, far)
        if depths is not None:
            if depths.shape != predicted_depths.shape:
                raise ValueError(f"MVSplatModel: depths must be {list(predicted_depths.shape)}, got {list(depths.shape)}")
            predicted_depths = depths.to(predicted_depths)
        gaussians = self.gaussian_adapter(raw, predicted_depths, densities, extrinsics, intrinsics)
        output = MVSplatModelOutput(depths=predicted_depths, **gaussians)
        return output if return_dict else output.to_tuple()


# save_pretrained writes an auto_map (the folder then loads with trust_remote_code=True without snd).
MVSplatModel.register_for_auto_class("AutoModel")
if __name__.startswith("snd."):
    # snd registers its classes with the Auto classes when transformers' auto modules load (snd._lazy); when
    # that happened during this module's own imports, the class did not exist yet: complete it now.
    sys.modules["snd.models"].register_defined_classes()

__all__ = ["MVSplatModel", "MVSplatModelOutput", "MVSplatPreTrainedModel", "SH_C0"]
