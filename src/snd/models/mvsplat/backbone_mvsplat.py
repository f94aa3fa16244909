"""MVSplat's multi-view backbone: a UniMatch-style CNN at 1/4 resolution, then a multi-view transformer
(self-attention and cross-view attention in shifted windows, Swin style).

Module names follow the official `BackboneMultiview` so checkpoint keys map one to one.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .configuration_mvsplat import MVSplatConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_SCORE_BUDGET = 2**26  # attention scores held at once (256 MB in float32)


class MVSplatResidualBlock(nn.Module):
    """Two 3x3 convs with (affine-free) instance norm and a residual; a 1x1 conv on the skip when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm1 = nn.InstanceNorm2d(out_channels)
        self.norm2 = nn.InstanceNorm2d(out_channels)
        self.relu = nn.ReLU()
        if stride == 1 and in_channels == out_channels:
            self.downsample = None
        else:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride), nn.InstanceNorm2d(out_channels))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # [N, C, H, W]
        residual = self.relu(self.norm1(self.conv1(hidden)))
        residual = self.relu(self.norm2(self.conv2(residual)))
        if self.downsample is not None:
            hidden = self.downsample(hidden)
        return self.relu(hidden + residual)


class MVSplatCNNEncoder(nn.Module):
    """UniMatch's CNN: 7x7 stride-2 stem, three stages of two residual blocks (64, 96, 128 ch), 1x1 to `feature_channels`.

    The released model keeps the third stage at stride 1, so features come out at 1/4 resolution.
    """

    def __init__(self, config: MVSplatConfig):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.norm1 = nn.InstanceNorm2d(64)
        self.relu1 = nn.ReLU()
        self.layer1 = nn.Sequential(MVSplatResidualBlock(64, 64), MVSplatResidualBlock(64, 64))
        self.layer2 = nn.Sequential(MVSplatResidualBlock(64, 96, stride=2), MVSplatResidualBlock(96, 96))
        self.layer3 = nn.Sequential(MVSplatResidualBlock(96, 128), MVSplatResidualBlock(128, 128))
        self.conv2 = nn.Conv2d(128, config.feature_channels, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # [N, 3, H, W] -> [N, C, H/4, W/4]
        hidden = self.relu1(self.norm1(self.conv1(images)))
        hidden = self.layer3(self.layer2(self.layer1(hidden)))
        return self.conv2(hidden)


def split_windows(features: torch.Tensor, num_splits: int) -> torch.Tensor:
    """[B, H, W, C] -> [B * K * K, H/K, W/K, C], windows in row-major order per batch element."""
    batch, height, width, channels = features.shape
    features = features.view(batch, num_splits, height // num_splits, num_splits, width // num_splits, channels)
    return features.permute(0, 1, 3, 2, 4, 5).reshape(batch * num_splits * num_splits, height // num_splits, width // num_splits, channels)


def merge_windows(windows: torch.Tensor, num_splits: int) -> torch.Tensor:
    """Inverse of :func:`split_windows`: [B * K * K, h, w, C] -> [B, K * h, K * w, C]."""
    count, height, width, channels = windows.shape
    batch = count // (num_splits * num_splits)
    windows = windows.view(batch, num_splits, num_splits, height, width, channels)
    return windows.permute(0, 1, 3, 2, 4, 5).reshape(batch, num_splits * height, num_splits * width, channels)


def sine_position_embedding(batch: int, channels: int, height: int, width: int, device, dtype) -> torch.Tensor:
    """DETR's normalised 2D sine embedding ([B, C, H, W]; first C/2 channels encode y, the rest x)."""
    num_features = channels // 2
    scale = 2 * math.pi
    eps = 1e-6
    y_embed = torch.arange(1, height + 1, dtype=torch.float32, device=device)[:, None].expand(height, width)
    x_embed = torch.arange(1, width + 1, dtype=torch.float32, device=device)[None, :].expand(height, width)
    y_embed = y_embed / (height + eps) * scale
    x_embed = x_embed / (width + eps) * scale
    dim_t = torch.arange(num_features, dtype=torch.float32, device=device)
    dim_t = 10000 ** (2 * (dim_t // 2) / num_features)
    pos_x = x_embed[..., None] / dim_t
    pos_y = y_embed[..., None] / dim_t
    pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=3).flatten(2)
    pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=3).flatten(2)
    position = torch.cat((pos_y, pos_x), dim=2).permute(2, 0, 1)
    return position[None].expand(batch, -1, -1, -1).to(dtype)


def add_window_position_embedding(features: torch.Tensor, num_splits: int) -> torch.Tensor:
    """Add the sine embedding of one window to every window ([N, C, H, W]), as MVSplat does before its transformer."""
    count, channels, height, width = features.shape
    if num_splits <= 1:
        return features + sine_position_embedding(count, channels, height, width, features.device, features.dtype)
    window_h, window_w = height // num_splits, width // num_splits
    position = sine_position_embedding(1, channels, window_h, window_w, features.device, features.dtype)
    return features + position.repeat(1, 1, num_splits, num_splits)


def shifted_window_regions(height: int, width: int, num_splits: int, device) -> torch.Tensor:
    """Swin's region label of every token of every shifted window: [K * K, h * w].

    Tokens attend across regions with a -100 score penalty (Swin's mask), built per window group from these
    labels instead of materialising the [K * K, h * w, h * w] mask.
    """
    window_h, window_w = height // num_splits, width // num_splits
    shift_h, shift_w = window_h // 2, window_w // 2
    regions = torch.zeros((1, height, width, 1), device=device)
    label = 0
    for rows in (slice(0, -window_h), slice(-window_h, -shift_h), slice(-shift_h, None)):
        for cols in (slice(0, -window_w), slice(-window_w, -shift_w), slice(-shift_w, None)):
            regions[:, rows, cols, :] = label
            label += 1
    return split_windows(regions, width // window_w).view(-1, window_h * window_w)


def region_mask(regions: torch.Tensor) -> torch.Tensor:
    """[..., l] region labels -> [..., l, l] additive mask: 0 within a region, -100 across (Swin / MVSplat)."""
    difference = regions.unsqueeze(-2) - regions.unsqueeze(-1)
    return torch.zeros_like(difference).masked_fill(difference != 0, -100.0)


class ShiftedWindowMasks:
    """Swin's additive masks of the K * K shifted windows, built once per number of key views and reused by
    every window group and every layer of one forward (the masks depend only on the grid, not the features).

    Args:
        regions: ``[K * K, l]`` region labels from :func:`shifted_window_regions`.
    """

    def __init__(self, regions: torch.Tensor) -> None:
        self.regions = regions
        self._masks: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return self.regions.shape[0]

    def mask(self, others: int) -> torch.Tensor:
        """``[K * K, l, l * others]``: window ``w``'s mask tiled along the keys of ``others`` views."""
        if others not in self._masks:
            # MVSplat tiles it along the keys view-major although its keys are view-minor; identical for M = 1
            # (two views), kept as is for parity with more views.
            self._masks[others] = region_mask(self.regions).repeat(1, 1, others)
        return self._masks[others]


def window_attention(
    query: torch.Tensor,  # [B, L, C]
    key: torch.Tensor,  # [B, M, L, C] (M other views; M = 1 for self-attention)
    value: torch.Tensor,  # [B, M, L, C]
    height: int,
    width: int,
    num_splits: int,
    regions: torch.Tensor | ShiftedWindowMasks | None,  # [K * K, l] region labels (or their masks) for shifted windows, else None
) -> torch.Tensor:  # [B, L, C]
    """Single-head attention inside (optionally shifted) windows; each query attends to its window in all M views."""
    if isinstance(regions, torch.Tensor):
        regions = ShiftedWindowMasks(regions)
    batch, _, channels = query.shape
    others = key.shape[1]
    window_h, window_w = height // num_splits, width // num_splits
    query = query.view(batch, height, width, channels)
    key = key.view(batch, others, height, width, channels)
    value = value.view(batch, others, height, width, channels)
    if regions is not None:
        shift = (-(window_h // 2), -(window_w // 2))
        query = torch.roll(query, shifts=shift, dims=(1, 2))
        key = torch.roll(key, shifts=shift, dims=(2, 3))
        value = torch.roll(value, shifts=shift, dims=(2, 3))
    num_windows = batch * num_splits * num_splits
    query = split_windows(query, num_splits).reshape(num_windows, -1, channels)
    # Keys of all views side by side; tokens ordered (position, view) with the view fastest, as MVSplat.
    key = split_windows(key.permute(0, 2, 3, 1, 4).reshape(batch, height, width, others * channels), num_splits)
    value = split_windows(value.permute(0, 2, 3, 1, 4).reshape(batch, height, width, others * channels), num_splits)
    key = key.reshape(num_windows, -1, channels)
    value = value.reshape(num_windows, -1, channels)
    # Windows go through in groups so the score matrices stay within ~_SCORE_BUDGET floats (same result).
    tokens = query.shape[1]
    group = max(1, _SCORE_BUDGET // (tokens * key.shape[1]))
    masks_per_image = len(regions) if regions is not None else 1
    if group >= masks_per_image:
        group -= group % masks_per_image  # whole images per group: the masks broadcast without a gather
    outs = []
    for start in range(0, num_windows, group):
        stop = min(start + group, num_windows)
        window = slice(start, stop)
        # In place on the fresh product (nothing saves it for backward): the same values as `/` and `+`, two
        # fewer score-sized temporaries per call.
        scores = torch.matmul(query[window], key[window].transpose(1, 2)).div_(channels**0.5)  # [g, l, l*M]
        if regions is not None:
            # Window w uses the mask of window w % (K*K), built once per forward (ShiftedWindowMasks).
            mask = regions.mask(others)  # [K*K, l, l*M]
            if mask.dtype != scores.dtype:
                scores = scores.to(torch.promote_types(scores.dtype, mask.dtype))  # as `scores + mask` would
            if (stop - start) % masks_per_image == 0:
                scores.view(-1, masks_per_image, *scores.shape[1:]).add_(mask)
            else:
                scores.add_(mask[torch.arange(start, stop, device=scores.device) % masks_per_image])
        outs.append(torch.matmul(torch.softmax(scores, dim=-1), value[window]))
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=0)
    out = merge_windows(out.view(num_windows, window_h, window_w, channels), num_splits)
    if regions is not None:
        out = torch.roll(out, shifts=(window_h // 2, window_w // 2), dims=(1, 2))
    return out.reshape(batch, -1, channels)


def full_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Global single-head attention over all tokens of all M views (no windows): [B, L, C], [B, M, L, C] -> [B, L, C]."""
    key = key.flatten(1, 2)
    value = value.flatten(1, 2)
    scores = torch.matmul(query, key.transpose(1, 2)) / query.shape[-1] ** 0.5
    return torch.matmul(torch.softmax(scores, dim=-1), value)


class MVSplatTransformerLayer(nn.Module):
    """Projections + window attention + merge + LayerNorm, and (with FFN) an MLP on [source, message]."""

    def __init__(self, config: MVSplatConfig, with_ffn: bool, with_shift: bool):
        super().__init__()
        channels = config.feature_channels
        self.with_shift = with_shift
        self.q_proj = nn.Linear(channels, channels, bias=False)
        self.k_proj = nn.Linear(channels, channels, bias=False)
        self.v_proj = nn.Linear(channels, channels, bias=False)
        self.merge = nn.Linear(channels, channels, bias=False)
        self.norm1 = nn.LayerNorm(channels)
        self.with_ffn = with_ffn
        if with_ffn:
            hidden = 2 * channels * config.ffn_dim_expansion
            self.mlp = nn.Sequential(nn.Linear(2 * channels, hidden, bias=False), nn.GELU(), nn.Linear(hidden, channels, bias=False))
            self.norm2 = nn.LayerNorm(channels)

    def forward(self, source, target, height, width, num_splits, shift_regions):  # [B, L, C], [B, M, L, C]
        query, key, value = self.q_proj(source), self.k_proj(target), self.v_proj(target)
        if num_splits > 1:
            message = window_attention(query, key, value, height, width, num_splits, shift_regions if self.with_shift else None)
        else:
            message = full_attention(query, key, value)
        message = self.norm1(self.merge(message))
        if self.with_ffn:
            message = self.norm2(self.mlp(torch.cat([source, message], dim=-1)))
        return source + message


class MVSplatTransformerBlock(nn.Module):
    """Self-attention (no FFN), then cross-view attention with FFN."""

    def __init__(self, config: MVSplatConfig, with_shift: bool):
        super().__init__()
        self.self_attn = MVSplatTransformerLayer(config, with_ffn=False, with_shift=with_shift)
        self.cross_attn_ffn = MVSplatTransformerLayer(config, with_ffn=True, with_shift=with_shift)

    def forward(self, source, target, height, width, num_splits, shift_regions):
        source = self.self_attn(source, source[:, None], height, width, num_splits, shift_regions)
        return self.cross_attn_ffn(source, target, height, width, num_splits, shift_regions)


class MVSplatMultiViewTransformer(nn.Module):
    """Every view attends to itself and to all other views; shifted windows on odd layers."""

    def __init__(self, config: MVSplatConfig):
        super().__init__()
        self.layers = nn.ModuleList(
            [MVSplatTransformerBlock(config, with_shift=index % 2 == 1) for index in range(config.num_transformer_layers)]
        )

    def forward(self, features: torch.Tensor, num_splits: int) -> torch.Tensor:  # [B, V, C, h, w] -> same
        batch, views, channels, height, width = features.shape
        # The shifted-window masks are built once here and shared by every layer and window group.
        shift_regions = ShiftedWindowMasks(shifted_window_regions(height, width, num_splits, features.device)) if num_splits > 1 else None
        # Queries stacked view-major ([V*B, L, C]); keys of view v are the other views in increasing order.
        tokens = features.flatten(3).transpose(2, 3)  # [B, V, L, C]
        for layer in self.layers:
            query = tokens.transpose(0, 1).reshape(views * batch, height * width, channels)
            others = torch.stack(
                [torch.cat([tokens[:, :index], tokens[:, index + 1 :]], dim=1) for index in range(views)], dim=0
            ).reshape(views * batch, views - 1, height * width, channels)
            query = layer(query, others, height, width, num_splits, shift_regions)
            tokens = query.view(views, batch, height * width, channels).transpose(0, 1)
        return tokens.transpose(2, 3).reshape(batch, views, channels, height, width)


class MVSplatBackbone(nn.Module):
    """ImageNet-normalise, CNN features at 1/4, window position embedding, multi-view transformer.

    Returns (transformer features, CNN features), both [B, V, C, H/4, W/4].
    """

    def __init__(self, config: MVSplatConfig):
        super().__init__()
        self.config = config
        self.backbone = MVSplatCNNEncoder(config)
        self.transformer = MVSplatMultiViewTransformer(config)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # [B, V, 3, H, W] in [0, 1]
        batch, views = images.shape[:2]
        mean = images.new_tensor(IMAGENET_MEAN).view(3, 1, 1)
        std = images.new_tensor(IMAGENET_STD).view(3, 1, 1)
        cnn_features = self.backbone(((images - mean) / std).flatten(0, 1))
        cnn_features = cnn_features.unflatten(0, (batch, views))  # [B, V, C, h, w]
        num_splits = self.config.multiview_trans_attn_split
        with_position = add_window_position_embedding(cnn_features.flatten(0, 1), num_splits).unflatten(0, (batch, views))
        return self.transformer(with_position, num_splits), cnn_features
