"""Configuration of the SnD backbone (a DINOv2 ViT with patch 14).

This file imports only transformers, so it also works as Hub remote code.
"""

from __future__ import annotations

import math

from transformers import PreTrainedConfig
from transformers.backbone_utils import BackboneConfigMixin

# Architecture of each DINOv2 size (facebookresearch/dinov2 `vit_small`/`vit_base`/`vit_large`/`vit_giant2`).
_SIZES = {
    "s": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6),
    "b": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12),
    "l": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16),
    "g": dict(hidden_size=1536, num_hidden_layers=40, num_attention_heads=24, use_swiglu_ffn=True),
}

#: Named architectures: ``dinov2-{s,b,l,g}`` and ``dinov2-{s,b,l,g}-reg`` (4 register tokens), plus ``tiny``
#: and ``tiny-reg`` (random-weight test/demo sizes). Configs only; weights come from a checkpoint
#: (see ``snd.convert``) or the Hub.
PRESETS: dict[str, dict] = {}
for _size, _arch in _SIZES.items():
    PRESETS[f"dinov2-{_size}"] = dict(_arch)
    PRESETS[f"dinov2-{_size}-reg"] = dict(_arch, num_register_tokens=4)
PRESETS["tiny"] = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=56, layerscale_value=0.1)
PRESETS["tiny-reg"] = dict(PRESETS["tiny"], num_register_tokens=4)


# How position embeddings are resized to another grid (see SnDConfig.position_interpolation).
POSITION_INTERPOLATIONS = ("dinov2", "transformers", "timm")

class SnDConfig(BackboneConfigMixin, PreTrainedConfig):
    r"""Configuration of [`SnDModel`] and [`SnDBackbone`]: the DINOv2 vision transformer.

    Defaults give DINOv2 ViT-S/14 as released (518 px native grid of 37 x 37 patches).

    Args:
        hidden_size (`int`, defaults to 384): width of the transformer (384 S, 768 B, 1024 L, 1536 G).
        num_hidden_layers (`int`, defaults to 12): number of transformer blocks.
        num_attention_heads (`int`, defaults to 6): attention heads per block.
        mlp_ratio (`float`, defaults to 4.0): MLP hidden width as a multiple of `hidden_size`.
            With SwiGLU the hidden width is `(int(hidden * mlp_ratio * 2 / 3) + 7) // 8 * 8`, as DINOv2.
        hidden_act (`str`, defaults to `"gelu"`): MLP activation (exact GELU, as DINOv2).
        layer_norm_eps (`float`, defaults to 1e-6): LayerNorm epsilon.
        image_size (`int`, defaults to 518): side of the square image the position embeddings were trained
            at; the model runs at any size (a `floor(H / patch_size) x floor(W / patch_size)` grid, as `Dinov2Model`).
        patch_size (`int`, defaults to 14): patch side in pixels.
        num_channels (`int`, defaults to 3): input channels.
        qkv_bias (`bool`, defaults to True): bias on the fused qkv projection.
        layerscale_value (`float`, defaults to 1.0): initial LayerScale value for random initialisation.
        use_swiglu_ffn (`bool`, defaults to False): SwiGLU MLP (DINOv2 giant).
        num_register_tokens (`int`, defaults to 0): register tokens (4 for the `*-reg` models).
        position_interpolation (`str`, defaults to `"dinov2"`): how position embeddings are resized for a
            grid other than the native one. `"dinov2"` follows the original DINOv2 code that SnD and DINOv2
            weights were trained and evaluated with (bicubic, `scale_factor = (n + 0.1) / N` per axis, no
            antialiasing); `"transformers"` follows transformers' `Dinov2Model` (bicubic to `size = n`; with
            antialiasing when there are registers, as `Dinov2WithRegistersModel`); `"timm"` follows timm 0.9.10's
            `resample_abs_pos_embed` (bicubic to `size = n` **with** antialiasing, in float32), what the SnD
            authors' depth and segmentation evaluation (`evaluation1/`, a timm `vit_*_patch14_dinov2` with
            `dynamic_img_size=True`) computes; `--protocol snd` selects it for those tasks.
            They differ by ~0.07 on patch tokens at 224 x 224.
        initializer_range (`float`, defaults to 0.02): std of the truncated normal for random weights.
        drop_path_rate (`float`, defaults to 0.0): stochastic depth rate (training only).
        use_mask_token (`bool`, defaults to True): keep a mask token (used with `bool_masked_pos`).
        apply_layernorm (`bool`, defaults to True): backbone feature maps go through the final LayerNorm.
        reshape_hidden_states (`bool`, defaults to True): backbone feature maps as `B x C x h x w`.
        out_features / out_indices: backbone stages to return (`"stem"`, `"stage1"`, ...; default the last).
        depth_min (`float`, defaults to 1e-3), depth_max (`float`, defaults to 10.0), depth_num_bins (`int`, defaults
            to 256), depth_head_upsample (`int`, defaults to 4), depth_head_use_cls (`bool`, defaults to True):
            the linear-bins depth head of [`SnDForDepthEstimation`] (the FiT3D / DINOv2 linear depth probe: uniform
            bins in metres, patch features concatenated with the CLS token, upsampled 4x before the 1x1 conv).
        semantic_loss_ignore_index (`int`, defaults to 255): label ignored by [`SnDForSemanticSegmentation`]'s loss.
            Its classes are `num_labels` / `id2label`, as every transformers segmentation model.
    """

    model_type = "snd_dinov2"

    hidden_size: int = 384
    num_hidden_layers: int = 12
    num_attention_heads: int = 6
    mlp_ratio: float = 4.0
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-6
    image_size: int = 518
    patch_size: int = 14
    num_channels: int = 3
    qkv_bias: bool = True
    layerscale_value: float = 1.0
    use_swiglu_ffn: bool = False
    num_register_tokens: int = 0
    position_interpolation: str = "dinov2"
    initializer_range: float = 0.02
    drop_path_rate: float = 0.0
    use_mask_token: bool = True
    apply_layernorm: bool = True
    reshape_hidden_states: bool = True
    depth_min: float = 1e-3
    depth_max: float = 10.0
    depth_num_bins: int = 256
    depth_head_upsample: int = 4
    depth_head_use_cls: bool = True
    semantic_loss_ignore_index: int = 255
    _out_features: list[str] | None = None
    _out_indices: list[int] | None = None

    def __post_init__(self, **kwargs):
        for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "patch_size", "image_size", "num_channels"):
            value = getattr(self, name, 1)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"SnDConfig.{name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"SnDConfig: hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})"
            )
        if self.position_interpolation not in POSITION_INTERPOLATIONS:
            raise ValueError(
                f"SnDConfig.position_interpolation must be one of {POSITION_INTERPOLATIONS}, "
                f"got {self.position_interpolation!r}"
            )
        if self.image_size % self.patch_size != 0:
            raise ValueError(f"SnDConfig: image_size ({self.image_size}) must be a multiple of patch_size ({self.patch_size})")
        for name in ("num_register_tokens", "depth_num_bins", "depth_head_upsample"):
            value = getattr(self, name, 0)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "num_register_tokens" else 1):
                raise ValueError(f"SnDConfig.{name} must be an integer >= {0 if name == 'num_register_tokens' else 1}, got {value!r}")
        for name, low, strict in (("mlp_ratio", 0.0, True), ("layer_norm_eps", 0.0, True), ("initializer_range", 0.0, False),
                                  ("drop_path_rate", 0.0, False), ("layerscale_value", None, False), ("depth_min", 0.0, True),
                                  ("depth_max", 0.0, True)):
            value = getattr(self, name, 1.0)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or \
                    (low is not None and (value <= low if strict else value < low)):
                bound = "" if low is None else f" {'>' if strict else '>='} {low:g}"
                raise ValueError(f"SnDConfig.{name} must be a finite number{bound}, got {value!r}")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"SnDConfig.drop_path_rate must be in [0, 1), got {self.drop_path_rate!r}")
        if self.depth_min >= self.depth_max:
            raise ValueError(f"SnDConfig: depth_min ({self.depth_min}) must be below depth_max ({self.depth_max})")
        if int(self.hidden_size * self.mlp_ratio) <= 0:
            raise ValueError(f"SnDConfig.mlp_ratio {self.mlp_ratio!r} gives an empty MLP for hidden_size {self.hidden_size}")
        for name in ("qkv_bias", "use_swiglu_ffn", "use_mask_token", "apply_layernorm", "reshape_hidden_states", "depth_head_use_cls"):
            if not isinstance(getattr(self, name, True), bool):
                raise ValueError(f"SnDConfig.{name} must be true or false, got {getattr(self, name)!r}")
        from transformers.activations import ACT2FN

        if not isinstance(self.hidden_act, str) or self.hidden_act not in ACT2FN:
            raise ValueError(f"SnDConfig.hidden_act must be an activation name such as 'gelu', got {self.hidden_act!r}")
        self.stage_names = ["stem"] + [f"stage{index}" for index in range(1, self.num_hidden_layers + 1)]
        self.set_output_features_output_indices(
            out_indices=kwargs.pop("out_indices", None), out_features=kwargs.pop("out_features", None)
        )
        super().__post_init__(**kwargs)

    @property
    def mlp_hidden_size(self) -> int:
        hidden = int(self.hidden_size * self.mlp_ratio)
        if self.use_swiglu_ffn:
            hidden = (int(hidden * 2 / 3) + 7) // 8 * 8
        return hidden

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "SnDConfig":
        """A config for a named DINOv2 architecture (see `PRESETS`), e.g. `SnDConfig.from_preset("dinov2-b")`."""
        if name not in PRESETS:
            raise ValueError(f"Unknown SnD preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    @classmethod
    def tiny(cls, **overrides) -> "SnDConfig":
        """A tiny random architecture for tests, notebooks and the embedded default (hidden 32, 2 layers, 56 px grid)."""
        return cls.from_preset("tiny", **overrides)


__all__ = ["SnDConfig", "PRESETS"]
