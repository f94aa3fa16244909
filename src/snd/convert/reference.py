"""A functional re-statement of the original DINOv2 forward (facebookresearch/dinov2 `DinoVisionTransformer`)
over a state dict in the torch.hub layout. The converters check their output against it before saving.

It is written from the original's semantics, not from `SnDModel`: explicit softmax attention, the
original position-embedding interpolation (`scale_factor = (n + 0.1) / M`, bicubic, no antialias),
CLS + position, then registers, then patches.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F


def original_position_embeddings(pos_embed: torch.Tensor, grid_height: int, grid_width: int) -> torch.Tensor:
    """DINOv2's `interpolate_pos_encoding` for `pos_embed [1, 1 + M*M, C]` -> `[1, 1 + h*w, C]`."""
    count = pos_embed.shape[1] - 1
    side = int(math.sqrt(count))
    if count == grid_height * grid_width and grid_height == grid_width:
        return pos_embed
    patch = pos_embed[:, 1:].float().reshape(1, side, side, -1).permute(0, 3, 1, 2)
    patch = F.interpolate(
        patch, scale_factor=((grid_height + 0.1) / side, (grid_width + 0.1) / side), mode="bicubic", antialias=False
    )
    patch = patch.permute(0, 2, 3, 1).reshape(1, grid_height * grid_width, -1)
    return torch.cat([pos_embed[:, :1], patch.to(pos_embed.dtype)], dim=1)


def dinov2_reference_patch_tokens(
    weight: Callable[[str], torch.Tensor],
    pixel_values: torch.Tensor,  # [B, 3, H, W]
    num_heads: int,
    num_layers: int,
    num_register_tokens: int = 0,
    swiglu: bool = False,
    layer_norm_eps: float = 1e-6,
) -> torch.Tensor:  # [B, h * w, C] = x_norm_patchtokens
    """`x_norm_patchtokens` of the original DINOv2 model whose torch.hub-layout weights `weight(name)` returns."""
    patch_weight = weight("patch_embed.proj.weight")
    patch_size = patch_weight.shape[-1]
    batch, _, height, width = pixel_values.shape
    x = F.conv2d(pixel_values, patch_weight, weight("patch_embed.proj.bias"), stride=patch_size)
    grid_height, grid_width = x.shape[-2:]
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([weight("cls_token").expand(batch, -1, -1), x], dim=1)
    x = x + original_position_embeddings(weight("pos_embed"), grid_height, grid_width)
    if num_register_tokens:
        x = torch.cat([x[:, :1], weight("register_tokens").expand(batch, -1, -1), x[:, 1:]], dim=1)
    channels = x.shape[-1]
    head_dim = channels // num_heads

    def layer_norm(tensor, prefix):
        return F.layer_norm(tensor, (channels,), weight(f"{prefix}.weight"), weight(f"{prefix}.bias"), layer_norm_eps)

    for index in range(num_layers):
        block = f"blocks.{index}"
        tokens = x.shape[1]
        qkv = F.linear(layer_norm(x, f"{block}.norm1"), weight(f"{block}.attn.qkv.weight"), weight(f"{block}.attn.qkv.bias"))
        qkv = qkv.reshape(batch, tokens, 3, num_heads, head_dim).permute(2, 0, 3, 1, 4)
        query, key, value = qkv[0] * head_dim**-0.5, qkv[1], qkv[2]
        attention = (query @ key.transpose(-2, -1)).softmax(dim=-1)
        attended = (attention @ value).transpose(1, 2).reshape(batch, tokens, channels)
        attended = F.linear(attended, weight(f"{block}.attn.proj.weight"), weight(f"{block}.attn.proj.bias"))
        x = x + weight(f"{block}.ls1.gamma") * attended
        hidden = layer_norm(x, f"{block}.norm2")
        if swiglu:
            both = F.linear(hidden, weight(f"{block}.mlp.w12.weight"), weight(f"{block}.mlp.w12.bias"))
            first, second = both.chunk(2, dim=-1)
            hidden = F.linear(F.silu(first) * second, weight(f"{block}.mlp.w3.weight"), weight(f"{block}.mlp.w3.bias"))
        else:
            hidden = F.gelu(F.linear(hidden, weight(f"{block}.mlp.fc1.weight"), weight(f"{block}.mlp.fc1.bias")))
            hidden = F.linear(hidden, weight(f"{block}.mlp.fc2.weight"), weight(f"{block}.mlp.fc2.bias"))
        x = x + weight(f"{block}.ls2.gamma") * hidden
    x = layer_norm(x, "norm")
    return x[:, 1 + num_register_tokens :]
