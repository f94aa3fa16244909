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


def _rotate_half(tensor: torch.Tensor) -> torch.Tensor:
    # [x0 x1 x2 x3] -> [-x2 -x3 x0 x1], as the original `rope_rotate_half`
    first, second = tensor.chunk(2, dim=-1)
    return torch.cat([-second, first], dim=-1)


def dinov3_reference_tokens(
    weight: Callable[[str], torch.Tensor],
    has: Callable[[str], bool],
    pixel_values: torch.Tensor,  # [B, 3, H, W]
    num_heads: int,
    num_layers: int,
    layer_norm_eps: float = 1e-5,
) -> tuple[torch.Tensor, torch.Tensor]:  # ([B, h * w, C] x_norm_patchtokens, [B, h * w, C] pre-norm patch tokens)
    """The original DINOv3 ``DinoVisionTransformer.forward_features`` (facebookresearch/dinov3), restated
    over its torch.hub state dict: ``weight(name)`` returns a tensor, ``has(name)`` says whether it exists.

    Written from the original's semantics: one fused ``qkv`` (its bias times ``bias_mask`` when the
    checkpoint has one: ``LinearKMaskedBias`` zeroes the key bias), axial RoPE from the stored
    ``rope_embed.periods`` (coordinates of patch centres in [-1, 1] per axis, "separate" normalisation)
    applied to the patch tokens only, CLS then storage (register) tokens then patches, LayerScale
    ``gamma``, an ``Mlp`` (``fc1``/``fc2``, exact GELU) or a ``SwiGLUFFN`` (``w1``/``w2``/``w3``).
    """
    patch_weight = weight("patch_embed.proj.weight")
    patch_size = patch_weight.shape[-1]
    batch = pixel_values.shape[0]
    x = F.conv2d(pixel_values, patch_weight, weight("patch_embed.proj.bias"), stride=patch_size)  # [B, C, h, w]
    grid_height, grid_width = x.shape[-2:]
    x = x.flatten(2).transpose(1, 2)
    prefix = [weight("cls_token").expand(batch, -1, -1)]
    if has("storage_tokens"):
        prefix.append(weight("storage_tokens").expand(batch, -1, -1))
    x = torch.cat(prefix + [x], dim=1)
    num_prefix = x.shape[1] - grid_height * grid_width
    channels = x.shape[-1]
    head_dim = channels // num_heads

    periods = weight("rope_embed.periods").float()  # [D_head / 4]
    coords_h = torch.arange(0.5, grid_height, dtype=torch.float32) / grid_height
    coords_w = torch.arange(0.5, grid_width, dtype=torch.float32) / grid_width
    coords = torch.stack(torch.meshgrid(coords_h, coords_w, indexing="ij"), dim=-1).flatten(0, 1) * 2.0 - 1.0  # [hw, 2]
    angles = (2 * math.pi * coords[:, :, None] / periods[None, None, :]).flatten(1, 2).tile(2)  # [hw, D_head]
    sin, cos = angles.sin(), angles.cos()

    def rope(tensor):  # [B, heads, N, D_head]; prefix tokens untouched
        patches = tensor[:, :, num_prefix:]
        return torch.cat([tensor[:, :, :num_prefix], patches * cos + _rotate_half(patches) * sin], dim=2)

    def layer_norm(tensor, name):
        return F.layer_norm(tensor, (channels,), weight(f"{name}.weight"), weight(f"{name}.bias"), layer_norm_eps)

    def linear(tensor, name, bias_mask=False):
        bias = weight(f"{name}.bias") if has(f"{name}.bias") else None
        if bias is not None and bias_mask and has(f"{name}.bias_mask"):
            bias = bias * weight(f"{name}.bias_mask")
        return F.linear(tensor, weight(f"{name}.weight"), bias)

    def scale(tensor, name):
        return tensor * weight(name) if has(name) else tensor

    for index in range(num_layers):
        block = f"blocks.{index}"
        tokens = x.shape[1]
        qkv = linear(layer_norm(x, f"{block}.norm1"), f"{block}.attn.qkv", bias_mask=True)
        qkv = qkv.reshape(batch, tokens, 3, num_heads, head_dim).permute(2, 0, 3, 1, 4)  # [3, B, heads, N, D_head]
        query, key, value = rope(qkv[0]), rope(qkv[1]), qkv[2]
        attention = (query @ key.transpose(-2, -1) * head_dim**-0.5).softmax(dim=-1)
        attended = (attention @ value).transpose(1, 2).reshape(batch, tokens, channels)
        x = x + scale(linear(attended, f"{block}.attn.proj"), f"{block}.ls1.gamma")
        hidden = layer_norm(x, f"{block}.norm2")
        if has(f"{block}.mlp.w1.weight"):
            hidden = linear(F.silu(linear(hidden, f"{block}.mlp.w1")) * linear(hidden, f"{block}.mlp.w2"), f"{block}.mlp.w3")
        else:
            hidden = linear(F.gelu(linear(hidden, f"{block}.mlp.fc1")), f"{block}.mlp.fc2")
        x = x + scale(hidden, f"{block}.ls2.gamma")
    return layer_norm(x, "norm")[:, num_prefix:], x[:, num_prefix:]
