"""The 2D U-Net MVSplat uses to refine its cost volume and its depth (a trimmed latent-diffusion U-Net:
no timestep embedding, post-norm residual blocks, attention across the pixels of all views).

Module names follow the official `UNetModel` (`input_blocks`, `middle_block`, `output_blocks`, `out`) so
checkpoint keys map one to one.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def group_norm(channels: int) -> nn.GroupNorm:
    """MVSplat's U-Net normalisation: 8 groups, or 4 when the channels are not a multiple of 8."""
    return nn.GroupNorm(8 if channels % 8 == 0 else 4, channels)


class MVSplatResBlock(nn.Module):
    """conv-norm-SiLU twice (post-norm), plus the input (1x1 conv when the channel count changes)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.in_layers = nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1), group_norm(out_channels), nn.SiLU())
        self.out_layers = nn.Sequential(nn.Conv2d(out_channels, out_channels, 3, padding=1), group_norm(out_channels), nn.SiLU())
        self.skip_connection = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # [N, C, H, W]
        return self.skip_connection(hidden) + self.out_layers(self.in_layers(hidden))


class MVSplatCrossViewAttention(nn.Module):
    """Multi-head attention over the pixels of all V views of a scene (post-norm, residual).

    Heads split before q/k/v (the "legacy" layout of the latent-diffusion U-Net): per head, the fused
    projection yields [q; k; v] blocks of `head_channels` each.
    """

    def __init__(self, channels: int, head_channels: int):
        super().__init__()
        self.num_heads = channels // head_channels
        self.qkv = nn.Conv1d(channels, channels * 3, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)
        self.norm = group_norm(channels)

    def forward(self, hidden: torch.Tensor, num_views: int) -> torch.Tensor:  # [V*B, C, H, W], view-major
        count, channels, height, width = hidden.shape
        batch = count // num_views
        flat = hidden.reshape(count, channels, -1)
        qkv = self.qkv(flat)  # [V*B, 3C, T]
        length = height * width
        # "(v b) n t -> b n (v t)": every pixel of every view is a token.
        qkv = qkv.view(num_views, batch, 3 * channels, length).permute(1, 2, 0, 3).reshape(batch, 3 * channels, num_views * length)
        head_channels = channels // self.num_heads
        query, key, value = qkv.reshape(batch * self.num_heads, 3 * head_channels, -1).split(head_channels, dim=1)
        scale = 1 / math.sqrt(math.sqrt(head_channels))
        weights = torch.softmax(torch.einsum("bct,bcs->bts", query * scale, key * scale).float(), dim=-1).type(query.dtype)
        attended = torch.einsum("bts,bcs->bct", weights, value).reshape(batch, channels, num_views * length)
        attended = attended.view(batch, channels, num_views, length).permute(2, 0, 1, 3).reshape(count, channels, length)
        attended = self.norm(self.proj_out(attended))
        return (flat + attended).reshape(count, channels, height, width)


class MVSplatDownsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.op(hidden)


class MVSplatUpsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.conv(nn.functional.interpolate(hidden, scale_factor=2, mode="nearest"))


def _run(blocks: nn.Sequential, hidden: torch.Tensor, num_views: int) -> torch.Tensor:
    for block in blocks:
        hidden = block(hidden, num_views) if isinstance(block, MVSplatCrossViewAttention) else block(hidden)
    return hidden


class MVSplatUNet(nn.Module):
    """U-Net with one residual block per level, cross-view attention at the downsampling rates in `attention_rates`."""

    def __init__(
        self,
        channels: int,
        channel_mult: tuple[int, ...],
        attention_rates: tuple[int, ...],
        head_channels: int,
    ):
        super().__init__()
        self.input_blocks = nn.ModuleList([nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1))])
        skip_channels = [channels]
        width = channels
        rate = 1
        for level, mult in enumerate(channel_mult):
            layers: list[nn.Module] = [MVSplatResBlock(width, mult * channels)]
            width = mult * channels
            if rate in attention_rates:
                layers.append(MVSplatCrossViewAttention(width, head_channels))
            self.input_blocks.append(nn.Sequential(*layers))
            skip_channels.append(width)
            if level != len(channel_mult) - 1:
                self.input_blocks.append(nn.Sequential(MVSplatDownsample(width)))
                skip_channels.append(width)
                rate *= 2
        # Index 1 is an identity where the original has an optional cross-attention slot.
        self.middle_block = nn.Sequential(MVSplatResBlock(width, width), nn.Identity(), MVSplatResBlock(width, width))
        self.output_blocks = nn.ModuleList()
        for level, mult in list(enumerate(channel_mult))[::-1]:
            for index in range(2):
                layers = [MVSplatResBlock(width + skip_channels.pop(), channels * mult)]
                width = channels * mult
                if rate in attention_rates:
                    layers.append(MVSplatCrossViewAttention(width, head_channels))
                if level and index == 1:
                    layers.append(MVSplatUpsample(width))
                    rate //= 2
                self.output_blocks.append(nn.Sequential(*layers))
        self.out = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), group_norm(channels), nn.SiLU())

    def forward(self, hidden: torch.Tensor, num_views: int) -> torch.Tensor:  # [V*B, C, H, W], view-major
        skips = []
        for blocks in self.input_blocks:
            hidden = _run(blocks, hidden, num_views)
            skips.append(hidden)
        hidden = _run(self.middle_block, hidden, num_views)
        for blocks in self.output_blocks:
            hidden = _run(blocks, torch.cat([hidden, skips.pop()], dim=1), num_views)
        return self.out(hidden)
