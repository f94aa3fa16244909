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
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BackboneOutput, DepthEstimatorOutput, SemanticSegmenterOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import logging
from transformers.utils import ModelOutput

from .configuration_snd_dinov2 import SnDConfig

logger = logging.get_logger(__name__)


@dataclass
class SnDModelOutput(ModelOutput):
    """Output of [`SnDModel`].

    Args:
        last_hidden_state: `[B, 1 + R + h * w, C]` tokens after the final LayerNorm, ordered CLS, R registers,
            patches (row-major), as transformers' `Dinov2Model`.
        pooler_output: `[B, C]` the normalised CLS token.
        patch_features: `[B, C, h, w]` normalised patch tokens as a dense map, `h = H // 14`, `w = W // 14` (as
            `Dinov2Model`, the last `H % 14` rows and `W % 14` columns are dropped).
        hidden_states: when asked, the embeddings and each block's output (before the final norm).
        attentions: when asked (`output_attentions=True`), each block's attention probabilities
            `[B, heads, T, T]`, `T = 1 + R + h * w`.
    """

    last_hidden_state: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    patch_features: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


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
    antialiasing, `Dinov2WithRegistersModel` with it, hence `antialias`); `mode="timm"` reproduces timm 0.9.10's
    `resample_abs_pos_embed` (bicubic to `size`, always antialiased, in float32; `antialias` is ignored), used by
    timm's `VisionTransformer(dynamic_img_size=True)` on every forward.
    """
    count, channels = patch_position_embeddings.shape[1:]
    side = int(round(math.sqrt(count)))
    if side * side != count:
        raise ValueError(f"position embeddings must form a square grid, got {count} positions")
    if torch.compiler.is_exporting():
        return _interpolate_position_embeddings_traceable(patch_position_embeddings, side, grid_height, grid_width, mode, antialias)
    if grid_height == side and grid_width == side:
        return patch_position_embeddings
    grid = patch_position_embeddings.float().reshape(1, side, side, channels).permute(0, 3, 1, 2)
    if mode == "dinov2":
        # The 0.1 offset avoids floating-point error in the resulting size (DINOv2's `interpolate_offset`).
        scale = ((grid_height + 0.1) / side, (grid_width + 0.1) / side)
        grid = F.interpolate(grid, scale_factor=scale, mode="bicubic", antialias=False)
    elif mode == "timm":
        grid = F.interpolate(grid, size=(grid_height, grid_width), mode="bicubic", antialias=True)
    else:
        grid = F.interpolate(grid, size=(grid_height, grid_width), mode="bicubic", align_corners=False, antialias=antialias)
    if grid.shape[-2:] != (grid_height, grid_width):
        raise RuntimeError(f"position embedding interpolation gave {tuple(grid.shape[-2:])}, expected {(grid_height, grid_width)}")
    grid = grid.permute(0, 2, 3, 1).reshape(1, grid_height * grid_width, channels)
    return grid.to(patch_position_embeddings.dtype)


def _bicubic_matrix(size_out, size_in: int, scale: torch.Tensor, device) -> torch.Tensor:  # [size_out, size_in]
    """The rows of PyTorch's bicubic upsampling (`align_corners=False`, A = -0.75, borders clamped) as a matrix:
    output `i` samples input coordinate `scale * (i + 0.5) - 0.5` (`scale` = input / output step)."""
    a = -0.75
    source = scale * (torch.arange(size_out, device=device, dtype=torch.float32) + 0.5) - 0.5  # [size_out]
    floor = torch.floor(source)
    t = source - floor

    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    weights = torch.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], dim=1)  # [size_out, 4]
    index = (floor.long()[:, None] + torch.arange(-1, 3, device=device)[None]).clamp(0, size_in - 1)  # [size_out, 4]
    return (weights[..., None] * F.one_hot(index, size_in).float()).sum(1)


def _interpolate_position_embeddings_traceable(
    patch_position_embeddings: torch.Tensor,  # [1, M * M, C]
    side: int,
    grid_height,
    grid_width,
    mode: str,
    antialias: bool,
) -> torch.Tensor:  # [1, grid_height * grid_width, C]
    """`interpolate_position_embeddings` without Python branches or float sizes on the grid size, for `torch.export`
    with dynamic height and width: the same bicubic resampling written as two interpolation matrices (equal to
    `F.interpolate` up to float rounding), and the native grid kept as is through `torch.where`."""
    if (mode == "transformers" and antialias) or mode == "timm":
        raise NotImplementedError(
            "torch.export with dynamic shapes supports position_interpolation='dinov2', or 'transformers' without "
            "registers (not antialiased bicubic: 'timm' and registers are); export this model at a fixed size instead"
        )
    channels = patch_position_embeddings.shape[-1]
    device = patch_position_embeddings.device
    heights = torch.full((), grid_height, device=device, dtype=torch.float32)
    widths = torch.full((), grid_width, device=device, dtype=torch.float32)
    if mode == "dinov2":  # scale_factor (n + 0.1) / M: input step M / (n + 0.1)
        row_scale, column_scale = side / (heights + 0.1), side / (widths + 0.1)
    else:  # size n: input step M / n
        row_scale, column_scale = side / heights, side / widths
    rows = _bicubic_matrix(grid_height, side, row_scale, device)  # [h, M]
    columns = _bicubic_matrix(grid_width, side, column_scale, device)  # [w, M]
    native = (heights == side) & (widths == side)
    rows = torch.where(native, torch.eye(grid_height, side, device=device), rows)
    columns = torch.where(native, torch.eye(grid_width, side, device=device), columns)
    grid = patch_position_embeddings.float().reshape(side, side, channels)
    grid = torch.einsum("hm,mnc,wn->hwc", rows, grid, columns)
    return grid.reshape(1, -1, channels).to(patch_position_embeddings.dtype)


class SnDPatchEmbeddings(nn.Module):
    def __init__(self, config: SnDConfig):
        super().__init__()
        self.patch_size = config.patch_size
        self.projection = nn.Conv2d(config.num_channels, config.hidden_size, config.patch_size, stride=config.patch_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:  # [B, 3, H, W] -> [B, h * w, C]
        # h = H // patch, w = W // patch: as transformers' Dinov2Model, the strided patch convolution drops the last
        # H % patch rows and W % patch columns of an image whose sides are not multiples of the patch size.
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


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,  # [B, heads, T, D]
    key: torch.Tensor,  # [B, heads, T, D]
    value: torch.Tensor,  # [B, heads, T, D]
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:  # [B, T, heads, D], [B, heads, T, T]
    """Plain softmax attention that also returns the probabilities (transformers' `"eager"` implementation)."""
    scaling = query.size(-1) ** -0.5 if scaling is None else scaling
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = F.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


class SnDAttention(nn.Module):
    """Fused-qkv self-attention dispatched through transformers' attention interface: `config._attn_implementation`
    is `"sdpa"` by default, `"eager"` (returns attention probabilities), `"flash_attention_2"` where installed, or
    any function registered with `AttentionInterface`."""

    def __init__(self, config: SnDConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = False  # bidirectional: sdpa/flash read this flag
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.qkv_bias)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(
        self, hidden_states: torch.Tensor, output_attentions: bool = False  # [B, T, C]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:  # [B, T, C], [B, heads, T, T] or None
        batch, tokens, channels = hidden_states.shape
        qkv = self.qkv(hidden_states).reshape(batch, tokens, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, heads, T, head_dim]
        implementation = self.config._attn_implementation or "sdpa"
        if output_attentions and implementation != "eager":
            # Only the eager path materialises the probabilities; use it for this call (as transformers advises).
            logger.warning_once(
                f"SnD: output_attentions=True computes attention with 'eager' instead of {implementation!r} for that "
                "call; load with attn_implementation='eager' to make it the default."
            )
            implementation = "eager"
        interface = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
        attended, weights = interface(self, query, key, value, None, dropout=0.0, scaling=self.scaling, is_causal=False)
        attended = self.proj(attended.reshape(batch, tokens, channels))  # attended was [B, T, heads, head_dim]
        return attended, (weights if output_attentions else None)


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


class SnDLayer(GradientCheckpointingLayer):
    """One pre-norm transformer block with LayerScale on both residual branches.

    A `GradientCheckpointingLayer`: `model.activation_checkpointing_enable()` recomputes it in the backward pass."""

    def __init__(self, config: SnDConfig, drop_path_rate: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = SnDAttention(config)
        self.layer_scale1 = SnDLayerScale(config)
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = SnDSwiGLUFFN(config) if config.use_swiglu_ffn else SnDMLP(config)
        self.layer_scale2 = SnDLayerScale(config)
        self.drop_path_rate = drop_path_rate

    def forward(
        self, hidden_states: torch.Tensor, output_attentions: bool = False  # [B, T, C]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attended, weights = self.attention(self.norm1(hidden_states), output_attentions=output_attentions)
        hidden_states = hidden_states + _drop_path(self.layer_scale1(attended), self.drop_path_rate, self.training)
        transformed = self.layer_scale2(self.mlp(self.norm2(hidden_states)))
        return hidden_states + _drop_path(transformed, self.drop_path_rate, self.training), weights


class SnDEncoder(nn.Module):
    def __init__(self, config: SnDConfig):
        super().__init__()
        # on the CPU explicitly: under `with torch.device("meta")` (transformers' meta-device init) a default-device
        # linspace has no values to read
        rates = torch.linspace(0, config.drop_path_rate, config.num_hidden_layers, device="cpu").tolist()
        self.layer = nn.ModuleList([SnDLayer(config, rate) for rate in rates])

    def forward(self, hidden_states: torch.Tensor, output_hidden_states: bool = False, output_attentions: bool = False):
        all_hidden_states = [hidden_states] if output_hidden_states else None
        all_attentions = [] if output_attentions else None
        for layer in self.layer:
            hidden_states, weights = layer(hidden_states, output_attentions)  # positional: checkpointing needs it
            if output_hidden_states:
                all_hidden_states.append(hidden_states)
            if output_attentions:
                all_attentions.append(weights)
        return (
            hidden_states,
            tuple(all_hidden_states) if output_hidden_states else None,
            tuple(all_attentions) if output_attentions else None,
        )


#: Auto classes written into every saved folder's `auto_map` (the saved class adds its own).
_SIBLING_AUTO_CLASSES = {"AutoModel": "SnDModel", "AutoBackbone": "SnDBackbone"}


class SnDPreTrainedModel(PreTrainedModel):
    config_class = SnDConfig
    config: SnDConfig
    base_model_prefix = "snd"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["SnDEmbeddings", "SnDLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = False  # flex needs a block mask; eager, sdpa and flash cover every use here
    _supports_attention_backend = True

    def _init_weights(self, module) -> None:
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            init.trunc_normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, (nn.LayerNorm, nn.BatchNorm2d)):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            if isinstance(module, nn.BatchNorm2d):
                init.zeros_(module.running_mean)
                init.ones_(module.running_var)
                init.zeros_(module.num_batches_tracked)
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
        """The patch embeddings (what `enable_input_require_grads` hooks for PEFT with gradient checkpointing); the
        task models reach them through their backbone, `self.snd`."""
        trunk = getattr(self, self.base_model_prefix, self)
        return trunk.embeddings.patch_embeddings

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`, refusing (naming the weights file) what transformers would load silently
        or report without the file: a corrupt safetensors file, a trunk tensor missing from the checkpoint (it would be
        random; missing task-head tensors are fine, a head is new when loading a backbone checkpoint; with
        `output_loading_info=True` the caller gets them in the info, as in transformers) and NaN/Inf in the trunk's
        weights."""
        import os

        wants_info = kwargs.pop("output_loading_info", False)
        source = str(pretrained_model_name_or_path)
        weights = os.path.join(source, "model.safetensors") if os.path.isdir(source) else f"{source} (model.safetensors)"
        try:
            model, info = super().from_pretrained(pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs)
        except Exception as error:
            if type(error).__name__ == "SafetensorError":
                raise OSError(f"{weights}: corrupt or truncated safetensors file ({error})") from error
            raise
        if pretrained_model_name_or_path is None or kwargs.get("state_dict") is not None:  # weights given in memory, not a file
            return (model, info) if wants_info else model
        trunk_prefix = "" if getattr(model, model.base_model_prefix, model) is model else model.base_model_prefix + "."
        missing = sorted(key for key in info.get("missing_keys") or [] if key.startswith(trunk_prefix))
        if missing and not wants_info:  # a caller asking for the loading info gets the missing keys and decides
            raise OSError(f"{weights}: lacks {len(missing)} tensor(s) of the model, e.g. {missing[:5]}; they would be "
                          "random (an incomplete or foreign checkpoint)")
        bad = [name for name, value in model.named_parameters() if name.startswith(trunk_prefix) and value.is_floating_point()
               and not bool(torch.isfinite(value).all())]
        if bad:
            raise OSError(f"{weights}: {len(bad)} weight tensor(s) hold NaN/Inf values, e.g. {bad[:5]}; expected finite weights")
        return (model, info) if wants_info else model

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, plus `auto_map` entries for the sibling Auto classes (a saved `SnDModel`
        also loads through `AutoBackbone`, and the reverse) so remote code serves every entry point."""
        if self._auto_class is not None:
            module = type(self).__module__.rsplit(".", 1)[-1]
            auto_map = dict(getattr(self.config, "auto_map", None) or {})
            for auto_class, class_name in _SIBLING_AUTO_CLASSES.items():
                auto_map.setdefault(auto_class, f"{module}.{class_name}")
            self.config.auto_map = auto_map
        return super().save_pretrained(save_directory, *args, **kwargs)


class SnDModel(SnDPreTrainedModel):
    """DINOv2 / SnD vision transformer returning dense patch features.

    Example:
        ```python
        >>> import snd, torch
        >>> from transformers import AutoModel
        >>> model = AutoModel.from_pretrained("snd/dinov2-b")          # or SnDModel(snd.SnDConfig.tiny())
        >>> out = model(snd.normalize_images(torch.rand(1, 3, 224, 308)))
        >>> out.patch_features.shape                                   # [B, C, H // 14, W // 14]
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
        pixel_values: torch.Tensor,  # [B, 3, H, W], ImageNet-normalised; grid floor(H / 14) x floor(W / 14)
        bool_masked_pos: torch.Tensor | None = None,  # [B, h * w]
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        output_attentions: bool | None = None,
        **kwargs,
    ) -> SnDModelOutput | tuple:
        if pixel_values.ndim != 4:
            raise ValueError(f"SnDModel expects pixel_values shaped [B, 3, H, W], got {tuple(pixel_values.shape)}")
        output_hidden_states = bool(output_hidden_states) if output_hidden_states is not None else self.config.output_hidden_states
        output_attentions = bool(output_attentions) if output_attentions is not None else self.config.output_attentions
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        batch, _, height, width = pixel_values.shape
        embeddings = self.embeddings(pixel_values, bool_masked_pos=bool_masked_pos)
        hidden, all_hidden_states, attentions = self.encoder(
            embeddings, output_hidden_states=output_hidden_states, output_attentions=output_attentions
        )
        normed = self.layernorm(hidden)
        grid_height, grid_width = height // self.config.patch_size, width // self.config.patch_size
        patch_tokens = normed[:, self.num_prefix_tokens :]
        patch_features = patch_tokens.transpose(1, 2).reshape(batch, -1, grid_height, grid_width)
        if not return_dict:
            return tuple(v for v in (normed, normed[:, 0], patch_features, all_hidden_states, attentions) if v is not None)
        return SnDModelOutput(
            last_hidden_state=normed,
            pooler_output=normed[:, 0],
            patch_features=patch_features,
            hidden_states=all_hidden_states,
            attentions=attentions,
        )


class SnDBackbone(BackboneMixin, SnDPreTrainedModel):
    """SnD as a transformers backbone (`AutoBackbone`): feature maps `B x C x h x w` of the chosen stages.

    Stages are `"stem"` (embeddings) and `"stage1"`... (block outputs); with `apply_layernorm` each map goes
    through the final LayerNorm, as `Dinov2Backbone`, so DPT-style heads can sit on SnD features (DPT wants
    `reshape_hidden_states=False`: token sequences `[B, 1 + h * w, C]`, CLS first, registers dropped).

    `AutoBackbone.from_pretrained(folder, out_indices=...)` works on a local folder, offline, once `snd` is imported
    (transformers 5.25, as 5.24, asks the Hub whether the name is a repo first; `snd.models.register_auto_classes`
    skips that for local folders). Through remote code without `snd` installed it needs a Hub repo id (transformers cannot
    resolve a local folder there before any repository code runs). Same weights as `SnDModel`.
    """

    def __init__(self, config: SnDConfig):
        super().__init__(config)  # BackboneMixin first (as Dinov2Backbone): its set-up sets backbone_type and stages
        self.num_features = [config.hidden_size] * (config.num_hidden_layers + 1)
        self._build_trunk(config)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,  # [B, 3, H, W]
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        output_attentions: bool | None = None,
        **kwargs,
    ) -> BackboneOutput | tuple:
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        output_attentions = bool(output_attentions) if output_attentions is not None else self.config.output_attentions
        output_hidden_states = bool(output_hidden_states) if output_hidden_states is not None else self.config.output_hidden_states
        batch, _, height, width = pixel_values.shape
        embeddings = self.embeddings(pixel_values)
        _, hidden_states, attentions = self.encoder(embeddings, output_hidden_states=True, output_attentions=output_attentions)
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
            return (feature_maps,) + tuple(v for v in (returned_hidden_states, attentions) if v is not None)
        return BackboneOutput(feature_maps=feature_maps, hidden_states=returned_hidden_states, attentions=attentions)


class SnDDepthBinsHead(nn.Module):
    """The linear depth probe of the evaluation protocol (FiT3D / DINOv2 `BNHead`, `classify=True`): patch features
    concatenated with the CLS token, bilinear 4x upsampling, a 1x1 conv to `depth_num_bins` scores, `relu + 0.1`
    normalised to sum to one, depth = expected bin centre (uniform bins from `depth_min` to `depth_max`)."""

    def __init__(self, config: SnDConfig):
        super().__init__()
        self.config = config
        channels = config.hidden_size * (2 if config.depth_head_use_cls else 1)
        self.conv = nn.Conv2d(channels, config.depth_num_bins, kernel_size=1)

    def forward(self, patches: torch.Tensor, cls: torch.Tensor, size) -> torch.Tensor:  # [B, C, h, w], [B, C] -> [B, H, W]
        features = patches
        if self.config.depth_head_use_cls:
            features = torch.cat([patches, cls[:, :, None, None].expand_as(patches)], dim=1)
        features = F.interpolate(features, scale_factor=self.config.depth_head_upsample, mode="bilinear", align_corners=False)
        scores = torch.relu(self.conv(features)) + 0.1  # [B, K, 4h, 4w]
        scores = scores / scores.sum(dim=1, keepdim=True)
        bins = torch.linspace(self.config.depth_min, self.config.depth_max, self.config.depth_num_bins, device=scores.device)
        depth = torch.einsum("bkhw,k->bhw", scores, bins.to(scores.dtype))
        return F.interpolate(depth[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


class SnDLinearSegmentationHead(nn.Module):
    """The linear segmentation probe of the evaluation protocol (FiT3D / DINOv2): BatchNorm then a 1x1 conv to
    `num_labels` logits on the patch features, bilinearly upsampled to the input size."""

    def __init__(self, config: SnDConfig):
        super().__init__()
        self.norm = nn.BatchNorm2d(config.hidden_size)
        self.conv = nn.Conv2d(config.hidden_size, config.num_labels, kernel_size=1)

    def forward(self, patches: torch.Tensor, size) -> torch.Tensor:  # [B, C, h, w] -> [B, K, H, W]
        return F.interpolate(self.conv(self.norm(patches)), size=tuple(size), mode="bilinear", align_corners=False)


def _scale_invariant_log_loss(predicted: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """SigLoss of the depth probe: `sqrt(var(g) + 0.15 mean(g)^2)`, `g = log(pred + 1e-3) - log(gt + 1e-3)`."""
    g = torch.log(predicted[valid] + 1e-3) - torch.log(target[valid] + 1e-3)
    if g.numel() == 0:
        return predicted.sum() * 0
    variance = g.var(unbiased=False) if g.numel() > 1 else g.new_zeros(())
    return torch.sqrt(variance + 0.15 * g.mean() ** 2)


class SnDForDepthEstimation(SnDPreTrainedModel):
    """SnD backbone + the linear-bins depth probe (`AutoModelForDepthEstimation`, `pipeline("depth-estimation")`).

    `predicted_depth [B, H, W]` in metres at the input resolution. `scripts/evaluate.py --save-heads` writes trained
    probes in this form; a fresh one has a random head.
    """

    def __init__(self, config: SnDConfig):
        super().__init__(config)
        self.snd = SnDModel(config)
        self.head = SnDDepthBinsHead(config)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,  # [B, 3, H, W]
        labels: torch.Tensor | None = None,  # [B, H, W] metric depth, 0 = invalid
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> DepthEstimatorOutput | tuple:
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.snd(
            pixel_values, output_hidden_states=output_hidden_states, output_attentions=output_attentions, return_dict=True
        )
        predicted_depth = self.head(outputs.patch_features, outputs.pooler_output, pixel_values.shape[-2:])
        loss = None
        if labels is not None:
            valid = (labels > 0) & (labels <= self.config.depth_max)
            loss = _scale_invariant_log_loss(predicted_depth, labels.to(predicted_depth.dtype), valid)
        if not return_dict:
            extra = tuple(v for v in (outputs.hidden_states, outputs.attentions) if v is not None)
            return ((loss,) if loss is not None else ()) + (predicted_depth,) + extra
        return DepthEstimatorOutput(
            loss=loss, predicted_depth=predicted_depth, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class SnDForSemanticSegmentation(SnDPreTrainedModel):
    """SnD backbone + the linear segmentation probe (`AutoModelForSemanticSegmentation`,
    `pipeline("image-segmentation")`). `logits [B, num_labels, H, W]` at the input resolution."""

    def __init__(self, config: SnDConfig):
        super().__init__(config)
        self.snd = SnDModel(config)
        self.head = SnDLinearSegmentationHead(config)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,  # [B, 3, H, W]
        labels: torch.Tensor | None = None,  # [B, H, W] class ids, `semantic_loss_ignore_index` ignored
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SemanticSegmenterOutput | tuple:
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.snd(
            pixel_values, output_hidden_states=output_hidden_states, output_attentions=output_attentions, return_dict=True
        )
        logits = self.head(outputs.patch_features, pixel_values.shape[-2:])
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits, labels.long(), ignore_index=self.config.semantic_loss_ignore_index)
        if not return_dict:
            extra = tuple(v for v in (outputs.hidden_states, outputs.attentions) if v is not None)
            return ((loss,) if loss is not None else ()) + (logits,) + extra
        return SemanticSegmenterOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


# save_pretrained writes an auto_map (the folder then loads with trust_remote_code=True without snd).
SnDModel.register_for_auto_class("AutoModel")
SnDBackbone.register_for_auto_class("AutoBackbone")
SnDForDepthEstimation.register_for_auto_class("AutoModelForDepthEstimation")
SnDForSemanticSegmentation.register_for_auto_class("AutoModelForSemanticSegmentation")
if __name__.startswith("snd."):
    # snd registers its classes with the Auto classes when transformers' auto modules load (snd._lazy); when
    # that happened during this module's own imports, the class did not exist yet: complete it now.
    sys.modules["snd.models"].register_defined_classes()

__all__ = [
    "SnDModel",
    "SnDBackbone",
    "SnDForDepthEstimation",
    "SnDForSemanticSegmentation",
    "SnDPreTrainedModel",
    "SnDModelOutput",
    "interpolate_position_embeddings",
]
