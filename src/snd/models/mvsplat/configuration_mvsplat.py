"""Configuration of the MVSplat cost-volume encoder (feed-forward 3D Gaussians from posed views).

Imports only transformers, so it also works as Hub remote code.
"""

from __future__ import annotations

from transformers import PreTrainedConfig


class MVSplatConfig(PreTrainedConfig):
    r"""Configuration of [`MVSplatModel`]: MVSplat's cost-volume encoder (Chen et al., ECCV 2024).

    Defaults are the released RealEstate10K model (`re10k.ckpt`) as MVSplat's `config/experiment/re10k.yaml`
    and the SnD authors' `config/experiment/scannetpp.yaml` configure it (identical encoder settings):
    128 depth candidates, 1 Gaussian per pixel, SH degree 4, cost-volume U-Net attention at 1/4 of the
    feature grid, depth U-Net with 5 levels and attention at 1/16. Near/far are inputs, not config
    (the SnD ScanNet++ and RE10K configs use near 1, far 100).

    Args:
        feature_channels (`int`, defaults to 128): width of the CNN + transformer features (`d_feature`).
        downscale_factor (`int`, defaults to 4): the features and the cost volume live at 1/`downscale_factor`
            of the image resolution (4 in the released model).
        num_transformer_layers (`int`, defaults to 6): blocks of the multi-view transformer
            (self-attention + cross-view attention + FFN each).
        ffn_dim_expansion (`int`, defaults to 4): FFN width multiplier in the multi-view transformer.
        multiview_trans_attn_split (`int`, defaults to 2): windows per side of the (shifted) window attention.
        num_depth_candidates (`int`, defaults to 128): plane-sweep depths, uniform in inverse depth from far to near.
        costvolume_unet_feat_dim (`int`, defaults to 128): width of the cost-volume refinement U-Net.
        costvolume_unet_channel_mult (`tuple[int]`, defaults to `(1, 1, 1)`): its channel multiplier per level.
        costvolume_unet_attn_res (`tuple[int]`, defaults to `(4,)`): its downsampling rates with (cross-view) attention.
        depth_unet_feat_dim (`int`, defaults to 32): width of the full-resolution depth refinement U-Net.
        depth_unet_channel_mult (`tuple[int]`, defaults to `(1, 1, 1, 1, 1)`): its channel multiplier per level.
        depth_unet_attn_res (`tuple[int]`, defaults to `(16,)`): its downsampling rates with (cross-view) attention.
        unet_num_head_channels (`int`, defaults to 32): channels per attention head in both U-Nets.
        gaussians_per_pixel (`int`, defaults to 1): Gaussians per pixel (SnD uses 1; only 1 is supported).
        num_surfaces (`int`, defaults to 1): surfaces per pixel (only 1 is supported, as released).
        sh_degree (`int`, defaults to 4): degree of the spherical-harmonic colours.
        gaussian_scale_min (`float`, defaults to 0.5): lower bound of the raw Gaussian scale (pixels).
        gaussian_scale_max (`float`, defaults to 15.0): upper bound of the raw Gaussian scale (pixels).
        opacity_mapping_exponent_log2 (`float`, defaults to 0.0): `x` of MVSplat's opacity mapping
            `0.5 * (1 - (1 - p) ** 2**x + p ** (1 / 2**x))` (after warm-up; 0 in every released config, where it is
            the identity `opacity = p`).
        initializer_range (`float`, defaults to 0.02): std of the normal init of linear layers for random weights.
    """

    model_type = "snd_mvsplat"

    feature_channels: int = 128
    downscale_factor: int = 4
    num_transformer_layers: int = 6
    ffn_dim_expansion: int = 4
    multiview_trans_attn_split: int = 2
    num_depth_candidates: int = 128
    costvolume_unet_feat_dim: int = 128
    costvolume_unet_channel_mult: tuple[int, ...] = (1, 1, 1)
    costvolume_unet_attn_res: tuple[int, ...] = (4,)
    depth_unet_feat_dim: int = 32
    depth_unet_channel_mult: tuple[int, ...] = (1, 1, 1, 1, 1)
    depth_unet_attn_res: tuple[int, ...] = (16,)
    unet_num_head_channels: int = 32
    gaussians_per_pixel: int = 1
    num_surfaces: int = 1
    sh_degree: int = 4
    gaussian_scale_min: float = 0.5
    gaussian_scale_max: float = 15.0
    opacity_mapping_exponent_log2: float = 0.0
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        for name in ("costvolume_unet_channel_mult", "costvolume_unet_attn_res", "depth_unet_channel_mult", "depth_unet_attn_res"):
            setattr(self, name, tuple(int(value) for value in getattr(self, name)))
        if self.gaussians_per_pixel != 1 or self.num_surfaces != 1:
            raise ValueError(
                "MVSplatConfig: only gaussians_per_pixel=1 and num_surfaces=1 are supported (the released models), "
                f"got {self.gaussians_per_pixel} and {self.num_surfaces}"
            )
        if self.downscale_factor != 4:
            raise ValueError(f"MVSplatConfig.downscale_factor must be 4 (the released 1/4 feature grid), got {self.downscale_factor}")
        if self.feature_channels % 2 != 0:
            raise ValueError(f"MVSplatConfig.feature_channels must be even (sine position encoding), got {self.feature_channels}")
        for name in ("costvolume_unet_feat_dim", "depth_unet_feat_dim"):
            width = getattr(self, name)
            for rate_name in (name.replace("feat_dim", "attn_res"),):
                if getattr(self, rate_name) and width % self.unet_num_head_channels != 0:
                    raise ValueError(
                        f"MVSplatConfig.{name} ({width}) must be a multiple of unet_num_head_channels "
                        f"({self.unet_num_head_channels}) when {rate_name} is set"
                    )
        if self.num_depth_candidates < 2:
            raise ValueError(f"MVSplatConfig.num_depth_candidates must be >= 2, got {self.num_depth_candidates}")
        super().__post_init__(**kwargs)

    @property
    def num_sh_coefficients(self) -> int:
        return (self.sh_degree + 1) ** 2

    @property
    def gaussian_raw_channels(self) -> int:
        """Channels of the Gaussian head: 2 pixel offsets + 3 scales + 4 quaternion + 3 x SH coefficients."""
        return self.num_surfaces * (2 + 7 + 3 * self.num_sh_coefficients)

    @property
    def size_multiple(self) -> int:
        """Image sides must be multiples of this (1/4 grid, window split and both U-Nets' downsampling)."""
        costvolume_levels = 2 ** (len(self.costvolume_unet_channel_mult) - 1)
        depth_levels = 2 ** (len(self.depth_unet_channel_mult) - 1)
        window = self.downscale_factor * self.multiview_trans_attn_split
        multiple = 1
        for factor in (self.downscale_factor * costvolume_levels, depth_levels, window):
            multiple = multiple * factor // _gcd(multiple, factor)
        return multiple

    @classmethod
    def tiny(cls, **overrides) -> "MVSplatConfig":
        """A tiny random architecture for tests (32 channels, 2 transformer layers, 8 depth candidates, SH degree 1)."""
        arguments = dict(
            feature_channels=32,
            num_transformer_layers=2,
            ffn_dim_expansion=2,
            num_depth_candidates=8,
            costvolume_unet_feat_dim=32,
            costvolume_unet_channel_mult=(1, 1),
            costvolume_unet_attn_res=(2,),
            depth_unet_feat_dim=32,
            depth_unet_channel_mult=(1, 1, 1),
            depth_unet_attn_res=(4,),
            sh_degree=1,
        )
        return cls(**{**arguments, **overrides})


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


__all__ = ["MVSplatConfig"]
