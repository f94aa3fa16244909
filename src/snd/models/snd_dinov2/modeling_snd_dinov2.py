"""The SnD backbone: DINOv2's vision transformer as a transformers `PreTrainedModel`.

Module names follow the original torch.hub layout where it matters for users: attention is a fused
`qkv` Linear plus `proj`, so peft LoRA with `target_modules=["qkv", "proj"]` (SnD's setting) hits exactly
those layers. Imports stay within this folder and transformers, so the folder works as Hub remote code.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.backbone_utils import BackboneMixin
from transformers.modeling_outputs import BackboneOutput
from transformers.utils import ModelOutput

from .configuration_snd_dinov2 import SnDConfig


@dataclass
class SnDModelOutput(ModelOutput):
    """Output of [`SnDModel`].

    Args:
        last_hidden_state: `[B, 1 + R + h * w, C]` tokens after the final LayerNorm, ordered CLS, R registers,
            patches (row-major), as transformers' `Dinov2Model`.
        pooler_output: `[B, C]` the normalised CLS token.
        patch_features: `[B, C, h, w]` normalised patch tokens as a dense map, `h = H / 14`, `w = W / 14`.
        hidden_states: when asked, the embeddings and each block's output (before the final norm).
    """

    last_hidden_state: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    patch_features: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


def interpolate_position_embeddings(
    patch_position_embeddings: torch.Tensor,  # [1, N, C], N = M * M
    grid_height: int,
    grid_width: int,
    mode: str = "dinov2",
    antialias: bool = False,
) -> torch.Tensor:  # [1, grid_height * grid_width, C]
    """Resize a square grid of patch position embeddings to `grid_height x grid_width`.

    `mode="dinov2"` reproduces the original DINOv2 code (bicubic, `scale_factor = (n + 0.1) / M`, no
    antialiasing); `mode="transformers"` reproduces transformers (bicubic to `size`; `Dinov2Model` without
    antialiasing, `Dinov2WithRegistersModel` with it, hence `antialias`).
    """
    count, channels = patch_position_embeddings.shape[1:]
    side = int(round(math.sqrt(count)))
    if side * side != count:
        raise ValueError(f"position embeddings must form a square grid, got {count} positions")
    if grid_height == side and grid_width == side:
        return patch_position_embeddings
    grid = patch_position_embeddings.float().reshape(1, side, side, channels).permute(0, 3, 1, 2)
    if mode == "dinov2":
        # The 0.1 offset avoids floating-point error in the resulting size (DINOv2's `interpolate_offset`).
        scale = ((grid_height + 0.1) / side, (grid_width + 0.1) / side)
        grid = F.interpolate(grid, scale_factor=scale, mode="bicubic", antialias=False)
    else:
        grid = F.interpolate(grid, size=(grid_height, grid_width), mode="bicubic", align_corners=False, antialias=antialias)
    if grid.shape[-2:] != (grid_height, grid_width):
        raise RuntimeError(f"position embedding interpolation gave {tuple(grid.shape[-2:])}, expected {(grid_height, grid_width)}")
    grid = grid.permute(0, 2, 3, 1).reshape(1, grid_height * grid_width, channels)
    return grid.to(patch_position_embeddings.dtype)


class SnDPatchEmbeddings(nn.Module):
    def __init__(self, config: SnDConfig):
        super().__init__()
        self.patch_size = config.patch_size
        self.projection = nn.Conv2d(config.num_channels, config.hidden_size, config.patch_size, stride=config.patch_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:  # [B, 3, H, W] -> [B, h * w, C]
        height, width = pixel_values.shape[-2:]
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(
                f"SnDModel expects image height and width that are multiples of {self.patch_size}, got {height} x {width}; "
                "resize or crop first (SnDImageProcessor does)"
            )
        projected = self.projection(pixel_values.to(self.projection.weight.dtype))
        return projected.flatten(2).transpose(1, 2)


class SnDEmbeddings(nn.Module):
    """CLS token + patch embeddings + interpolated position embeddings, then register tokens (DINOv2 order)."""

    def __init__(self, config: SnDConfig):
        super().__init__()
        self.config = config
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.mask_token = nn.Parameter(torch.zeros(1, config.hidden_size)) if config.use_mask_token else None
        self.register_tokens = (
            nn.Parameter(torch.zeros(1, config.num_register_tokens, config.hidden_size))
            if config.num_register_tokens > 0
            else None
        )
        self.patch_embeddings = SnDPatchEmbeddings(config)
        num_patches = (config.image_size // config.patch_size) ** 2
        self.position_embeddings = nn.Parameter(torch.zeros(1, num_patches + 1, config.hidden_size))

    def forward(self, pixel_values: torch.Tensor, bool_masked_pos: torch.Tensor | None = None) -> torch.Tensor:
        batch, _, height, width = pixel_values.shape
        patches = self.patch_embeddings(pixel_values)
        if bool_masked_pos is not None:
            if self.mask_token is None:
                raise ValueError("bool_masked_pos given but the config has use_mask_token=False")
            patches = torch.where(bool_masked_pos.unsqueeze(-1), self.mask_token.to(patches.dtype).unsqueeze(0), patches)
        grid_height, grid_width = height // self.config.patch_size, width // self.config.patch_size
        patch_position = interpolate_position_embeddings(
            self.position_embeddings[:, 1:],
            grid_height,
            grid_width,
            self.config.position_interpolation,
            antialias=self.config.num_register_tokens > 0,  # only used by mode "transformers"
        )
        cls = self.cls_token.expand(batch, -1, -1) + self.position_embeddings[:, :1]
        tokens = [cls.to(patches.dtype)]
        if self.register_tokens is not None:
            tokens.append(self.register_tokens.expand(batch, -1, -1).to(patches.dtype))
        tokens.append(patches + patch_position.to(patches.dtype))
        return torch.cat(tokens, dim=1)


class SnDAttention(nn.Module):
    def __init__(self, config: SnDConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.qkv_bias)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:  # [B, T, C]
        batch, tokens, channels = hidden_states.shape
        qkv = self.qkv(hidden_states).reshape(batch, tokens, 3, self.num_heads, channels // self.num_heads)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, heads, T, head_dim]
        attended = F.scaled_dot_product_attention(query, key, value)
        return self.proj(attended.transpose(1, 2).reshape(batch, tokens, channels))


class SnDLayerScale(nn.Module):
    def __init__(self, config: SnDConfig):
        super().__init__()
        self.lambda1 = nn.Parameter(torch.full((config.hidden_size,), float(config.layerscale_value)))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states * self.lambda1


class SnDMLP(nn.Module):
    def __init__(self, config: SnDConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.mlp_hidden_size)
        self.activation = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(config.mlp_hidden_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation(self.fc1(hidden_states)))


class SnDSwiGLUFFN(nn.Module):
    """DINOv2 giant's fused SwiGLU: `w12` produces gate and value halves, `w3` projects back."""

    def __init__(self, config: SnDConfig):
        super().__init__()
        self.w12 = nn.Linear(config.hidden_size, 2 * config.mlp_hidden_size)
        self.w3 = nn.Linear(config.mlp_hidden_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        gate, value = self.w12(hidden_states).chunk(2, dim=-1)
        return self.w3(F.silu(gate) * value)


def _drop_path(hidden_states: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    if rate == 0.0 or not training:
        return hidden_states
    keep = 1.0 - rate
    mask = hidden_states.new_empty((hidden_states.shape[0],) + (1,) * (hidden_states.ndim - 1)).bernoulli_(keep)
    return hidden_states * mask / keep


class SnDLayer(nn.Module):
    """One pre-norm transformer block with LayerScale on both residual branches."""

    def __init__(self, config: SnDConfig, drop_path_rate: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = SnDAttention(config)
        self.layer_scale1 = SnDLayerScale(config)
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = SnDSwiGLUFFN(config) if config.use_swiglu_ffn else SnDMLP(config)
        self.layer_scale2 = SnDLayerScale(config)
        self.drop_path_rate = drop_path_rate

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        attended = self.layer_scale1(self.attention(self.norm1(hidden_states)))
        hidden_states = hidden_states + _drop_path(attended, self.drop_path_rate, self.training)
        transformed = self.layer_scale2(self.mlp(self.norm2(hidden_states)))
        return hidden_states + _drop_path(transformed, self.drop_path_rate, self.training)


class SnDEncoder(nn.Module):
    def __init__(self, config: SnDConfig):
        super().__init__()
        rates = torch.linspace(0, config.drop_path_rate, config.num_hidden_layers).tolist()
        self.layer = nn.ModuleList([SnDLayer(config, rate) for rate in rates])
        self.gradient_checkpointing = False

    def forward(self, hidden_states: torch.Tensor, output_hidden_states: bool = False):
        all_hidden_states = [hidden_states] if output_hidden_states else None
        for layer in self.layer:
            if self.gradient_checkpointing and self.training:
                hidden_states = torch.utils.checkpoint.checkpoint(layer, hidden_states, use_reentrant=False)
            else:
                hidden_states = layer(hidden_states)
            if output_hidden_states:
                all_hidden_states.append(hidden_states)
        return hidden_states, (tuple(all_hidden_states) if output_hidden_states else None)


class SnDPreTrainedModel(PreTrainedModel):
    config_class = SnDConfig
    config: SnDConfig
    base_model_prefix = "snd"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["SnDEmbeddings", "SnDLayer"]
    _supports_sdpa = True

    def _init_weights(self, module) -> None:
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            init.trunc_normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, SnDEmbeddings):
            init.trunc_normal_(module.position_embeddings, mean=0.0, std=std)
            init.trunc_normal_(module.cls_token, mean=0.0, std=std)
            if module.mask_token is not None:
                init.zeros_(module.mask_token)
            if module.register_tokens is not None:
                init.trunc_normal_(module.register_tokens, mean=0.0, std=std)
        elif isinstance(module, SnDLayerScale):
            init.constant_(module.lambda1, self.config.layerscale_value)

    def _build_trunk(self, config: SnDConfig) -> None:
        """Embeddings, blocks and final norm: the same names in `SnDModel` and `SnDBackbone`, so one checkpoint
        serves both."""
        self.embeddings = SnDEmbeddings(config)
        self.encoder = SnDEncoder(config)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.patch_embeddings

    def _set_gradient_checkpointing(self, enable: bool = True, gradient_checkpointing_func=None):
        for module in self.modules():
            if isinstance(module, SnDEncoder):
                module.gradient_checkpointing = enable


class SnDModel(SnDPreTrainedModel):
    """DINOv2 / SnD vision transformer returning dense patch features.

    Example:
        ```python
        >>> import snd, torch
        >>> from transformers import AutoModel
        >>> model = AutoModel.from_pretrained("snd/dinov2-b")          # or SnDModel(snd.SnDConfig.tiny())
        >>> out = model(snd.normalize_images(torch.rand(1, 3, 224, 308)))
        >>> out.patch_features.shape                                   # [B, C, H/14, W/14]
        ```
    """

    def __init__(self, config: SnDConfig):
        super().__init__(config)
        self._build_trunk(config)
        self.post_init()

    @property
    def num_prefix_tokens(self) -> int:
        """CLS plus register tokens in front of the patch tokens."""
        return 1 + self.config.num_register_tokens

    def forward(
        self,
        pixel_values: torch.Tensor,  # [B, 3, H, W], ImageNet-normalised, H and W multiples of 14
        bool_masked_pos: torch.Tensor | None = None,  # [B, h * w]
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SnDModelOutput | tuple:
        if pixel_values.ndim != 4:
            raise ValueError(f"SnDModel expects pixel_values shaped [B, 3, H, W], got {tuple(pixel_values.shape)}")
        output_hidden_states = bool(output_hidden_states) if output_hidden_states is not None else self.config.output_hidden_states
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        batch, _, height, width = pixel_values.shape
        embeddings = self.embeddings(pixel_values, bool_masked_pos=bool_masked_pos)
        hidden, all_hidden_states = self.encoder(embeddings, output_hidden_states=output_hidden_states)
        normed = self.layernorm(hidden)
        grid_height, grid_width = height // self.config.patch_size, width // self.config.patch_size
        patch_tokens = normed[:, self.num_prefix_tokens :]
        patch_features = patch_tokens.transpose(1, 2).reshape(batch, -1, grid_height, grid_width)
        if not return_dict:
            return tuple(v for v in (normed, normed[:, 0], patch_features, all_hidden_states) if v is not None)
        return SnDModelOutput(
            last_hidden_state=normed,
            pooler_output=normed[:, 0],
            patch_features=patch_features,
            hidden_states=all_hidden_states,
        )


class SnDBackbone(SnDPreTrainedModel, BackboneMixin):
    """SnD as a transformers backbone (`AutoBackbone`): feature maps `B x C x h x w` of the chosen stages.

    Stages are `"stem"` (embeddings) and `"stage1"`... (block outputs); with `apply_layernorm` each map goes
    through the final LayerNorm, as `Dinov2Backbone`, so DPT-style heads can sit on SnD features (DPT wants
    `reshape_hidden_states=False`: token sequences `[B, 1 + h * w, C]`, CLS first, registers dropped).

    Note: transformers 5's `AutoBackbone.from_pretrained` asks the Hub whether the name is a repo even for a
    local folder; offline, use `SnDBackbone.from_pretrained(folder, out_indices=...)` (same weights as `SnDModel`).
    """

    def __init__(self, config: SnDConfig):
        super().__init__(config)
        self._init_transformers_backbone()
        self.num_features = [config.hidden_size] * (config.num_hidden_layers + 1)
        self._build_trunk(config)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,  # [B, 3, H, W]
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BackboneOutput | tuple:
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        batch, _, height, width = pixel_values.shape
        embeddings = self.embeddings(pixel_values)
        _, hidden_states = self.encoder(embeddings, output_hidden_states=True)
        prefix = 1 + self.config.num_register_tokens
        grid_height, grid_width = height // self.config.patch_size, width // self.config.patch_size
        feature_maps = []
        for stage, hidden_state in zip(self.stage_names, hidden_states):
            if stage not in self.out_features:
                continue
            if self.config.apply_layernorm:
                hidden_state = self.layernorm(hidden_state)
            if self.config.reshape_hidden_states:
                hidden_state = hidden_state[:, prefix:].transpose(1, 2).reshape(batch, -1, grid_height, grid_width)
            elif prefix > 1:
                # token sequences keep [CLS, patches] (registers dropped) so DPT's readout sees the layout it expects
                hidden_state = torch.cat([hidden_state[:, :1], hidden_state[:, prefix:]], dim=1)
            feature_maps.append(hidden_state)
        feature_maps = tuple(feature_maps)
        returned_hidden_states = hidden_states if output_hidden_states else None
        if not return_dict:
            return (feature_maps,) + ((returned_hidden_states,) if returned_hidden_states is not None else ())
        return BackboneOutput(feature_maps=feature_maps, hidden_states=returned_hidden_states, attentions=None)


# save_pretrained writes an auto_map (the folder then loads with trust_remote_code=True without snd).
SnDModel.register_for_auto_class("AutoModel")
SnDBackbone.register_for_auto_class("AutoBackbone")
if __name__.startswith("snd."):
    # snd registers its classes with the Auto classes when transformers' auto modules load (snd._lazy); when
    # that happened during this module's own imports, the class did not exist yet: complete it now.
    sys.modules["snd.models"].register_defined_classes()

__all__ = ["SnDModel", "SnDBackbone", "SnDPreTrainedModel", "SnDModelOutput", "interpolate_position_embeddings"]
