"""The teacher side of one SnD step: EMA backbone on the context views -> mask-aware upsampling ->
lift onto the lifter's per-pixel Gaussians -> splat into the target views -> segment blending ->
downsample to the student's patch grid -> zero the holes.

Pure functions (``mask_aware_upsample``, ``blend_segments``, ...) carry the numerics and are tested
against brute-force references; :class:`EMATeacher` and :class:`SplatTeacher` compose them.
"""

from __future__ import annotations

import copy
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

StageTimer = Callable[[str], AbstractContextManager]


def no_timer(name: str) -> AbstractContextManager:
    return nullcontext()


# --------------------------------------------------------------------------------------------
# Resampling


def resize_to_patch_multiple(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Bilinearly resize ``images [N, 3, H, W]`` to ``(H - H % p, W - W % p)`` (as the SnD release); a no-op when divisible."""
    height, width = images.shape[-2:]
    new_height, new_width = height - height % patch_size, width - width % patch_size
    if new_height < patch_size or new_width < patch_size:
        raise ValueError(f"images of {height}x{width} are smaller than one {patch_size}-pixel patch")
    if (new_height, new_width) == (height, width):
        return images
    return F.interpolate(images, size=(new_height, new_width), mode="bilinear", align_corners=False)


def _source_positions(out_size: int, in_size: int, align_corners: bool, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bilinear source indices and weights along one axis, exactly as ``F.interpolate(mode="bilinear")``."""
    index = torch.arange(out_size, device=device, dtype=torch.float32)
    if align_corners:
        scale = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
        position = index * scale
    else:
        position = ((index + 0.5) * (in_size / out_size) - 0.5).clamp_min(0.0)
    lower = position.floor().long().clamp(max=in_size - 1)
    upper = (lower + 1).clamp(max=in_size - 1)
    fraction = position - lower.to(position.dtype)
    return lower, upper, fraction


def _low_res_label_rows(in_size: int, out_size: int, align_corners: bool, device) -> torch.Tensor:
    """High-res row (or column) whose label each low-res feature takes: the pixel under the patch centre."""
    index = torch.arange(in_size, device=device, dtype=torch.float64)
    if align_corners:
        # The release samples the mask at the align-corners positions of the low-res grid.
        rows = torch.round(index * ((out_size - 1) / (in_size - 1) if in_size > 1 else 0.0))
    else:
        rows = torch.floor((index + 0.5) * (out_size / in_size))
    return rows.long().clamp(0, out_size - 1)


def mask_aware_upsample(
    features: torch.Tensor,
    masks: torch.Tensor,
    fallback: str = "bilinear",
    align_corners: bool = False,
) -> torch.Tensor:
    """Bilinear upsampling in which a low-res neighbour only counts if it lies in the pixel's segment.

    Each low-res feature takes the instance label of the high-res pixel under its centre. For a
    high-res pixel with label ``l``, the four bilinear weights of neighbours whose label is not
    ``l`` are zeroed and the rest renormalised. Where no neighbour agrees, ``fallback="bilinear"``
    keeps the plain bilinear weights (METHOD.md) and ``fallback="zero"`` outputs zeros (what the
    released code computes). With a single segment this is exactly ``F.interpolate(mode="bilinear")``.

    Args:
        features: ``[N, C, h, w]`` low-res features.
        masks: ``[N, H, W]`` integer instance labels at the output resolution.
        fallback: ``"bilinear"`` or ``"zero"``.
        align_corners: bilinear grid convention (False: pixel centres, as ``F.interpolate``'s default;
            the SnD release uses True).
    Returns:
        ``[N, C, H, W]`` upsampled features.
    """
    if fallback not in ("bilinear", "zero"):
        raise ValueError(f"fallback must be 'bilinear' or 'zero', got {fallback!r}")
    if features.ndim != 4 or masks.ndim != 3 or masks.shape[0] != features.shape[0]:
        raise ValueError(f"expected features [N, C, h, w] and masks [N, H, W], got {tuple(features.shape)} and {tuple(masks.shape)}")
    count, channels, low_height, low_width = features.shape
    height, width = masks.shape[-2:]
    device = features.device
    y0, y1, fy = _source_positions(height, low_height, align_corners, device)
    x0, x1, fx = _source_positions(width, low_width, align_corners, device)
    label_rows = _low_res_label_rows(low_height, height, align_corners, device)
    label_cols = _low_res_label_rows(low_width, width, align_corners, device)
    low_labels = masks[:, label_rows][:, :, label_cols]  # [N, h, w]

    fy = fy.to(features.dtype)[:, None]
    fx = fx.to(features.dtype)[None, :]
    neighbours = [
        (y0, x0, (1 - fy) * (1 - fx)),
        (y0, x1, (1 - fy) * fx),
        (y1, x0, fy * (1 - fx)),
        (y1, x1, fy * fx),
    ]
    plain = [weight.expand(count, height, width) for _, _, weight in neighbours]  # [N, H, W] each
    masked = [weight * (low_labels[:, ys][:, :, xs] == masks).to(features.dtype) for (ys, xs, _), weight in zip(neighbours, plain)]
    total = masked[0] + masked[1] + masked[2] + masked[3]
    none_agree = total == 0
    normaliser = torch.where(none_agree, torch.ones_like(total), total)
    weights, indices = [], []
    for (ys, xs, _), weight, plain_weight in zip(neighbours, masked, plain):
        weight = weight / normaliser
        if fallback == "bilinear":
            weight = torch.where(none_agree, plain_weight, weight)
        weights.append(weight.reshape(count, -1))  # [N, H*W]
        indices.append((ys[:, None] * low_width + xs[None, :]).reshape(-1))  # [H*W] rows of the low-res grid
    # Channels-last accumulation: per pixel, sum of four low-res rows ([h*w, C]) weighted by the masked weights.
    rows = features.flatten(2).transpose(1, 2).contiguous()  # [N, h*w, C]
    if torch.is_grad_enabled() and features.requires_grad:
        output = _accumulate_rows_autograd(rows, indices, weights)
    else:
        output = _accumulate_rows(rows, indices, weights)
    # A [N, C, H, W] view of channels-last memory: flattening it back to per-pixel rows (lifting) is free.
    return output.view(count, height, width, channels).permute(0, 3, 1, 2)


def _accumulate_rows_autograd(rows: torch.Tensor, indices: list[torch.Tensor], weights: list[torch.Tensor]) -> torch.Tensor:
    """``sum_k weights[k][..., None] * rows[:, indices[k]]`` -> ``[N, P, C]``, differentiable in ``rows``."""
    output = None
    for index, weight in zip(indices, weights):
        term = rows.index_select(1, index) * weight[..., None]  # [N, P, C]
        output = term if output is None else output + term
    return output


# Pixels gathered per chunk by _accumulate_rows: 2048 rows of 384 float32 channels is 3 MiB, a cache-sized buffer.
_GATHER_CHUNK_BYTES = 3 * 2**20


def _accumulate_rows(rows: torch.Tensor, indices: list[torch.Tensor], weights: list[torch.Tensor]) -> torch.Tensor:
    """Same sum as :func:`_accumulate_rows_autograd` without autograd and without materialising any
    ``[N, P, C]`` gather: each chunk of output pixels receives its first neighbour's rows directly
    (``index_select(out=)``) and accumulates the other three through one reused cache-sized buffer.
    """
    count, _, channels = rows.shape
    pixels = indices[0].numel()
    output = torch.empty(count, pixels, channels, dtype=rows.dtype, device=rows.device)  # [N, P, C]
    chunk = max(1, min(pixels, _GATHER_CHUNK_BYTES // max(1, channels * rows.element_size())))
    if rows.device.type != "cpu":
        chunk = pixels  # on accelerators one launch per neighbour beats cache blocking
    buffer = torch.empty(chunk, channels, dtype=rows.dtype, device=rows.device)  # [chunk, C]
    for image in range(count):
        source = rows[image]  # [h*w, C]
        for start in range(0, pixels, chunk):
            stop = min(start + chunk, pixels)
            target = output[image, start:stop]  # [chunk, C], contiguous
            torch.index_select(source, 0, indices[0][start:stop], out=target)
            target.mul_(weights[0][image, start:stop, None])
            gathered = buffer[: stop - start]
            for index, weight in zip(indices[1:], weights[1:]):
                torch.index_select(source, 0, index[start:stop], out=gathered)
                target.addcmul_(gathered, weight[image, start:stop, None])
    return output


def upsample_features(features: torch.Tensor, masks: torch.Tensor | None, mode: str, fallback: str, align_corners: bool) -> torch.Tensor:
    """``features [N, C, h, w]`` -> ``[N, C, H, W]`` at the mask resolution, mask-aware or plain bilinear."""
    if mode == "mask_aware":
        if masks is None:
            raise ValueError("mask-aware upsampling needs instance masks on the context views")
        return mask_aware_upsample(features, masks, fallback=fallback, align_corners=align_corners)
    if mode == "bilinear":
        return F.interpolate(features, size=tuple(masks.shape[-2:]), mode="bilinear", align_corners=align_corners)
    raise ValueError(f"upsample mode must be 'mask_aware' or 'bilinear', got {mode!r}")


def resize_masks(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of integer ``masks [N, H, W]`` (labels are never interpolated)."""
    if tuple(masks.shape[-2:]) == tuple(size):
        return masks
    resized = F.interpolate(masks[:, None].double(), size=size, mode="nearest")
    return resized[:, 0].round().to(masks.dtype)


def blend_segments(features: torch.Tensor, masks: torch.Tensor, alpha: float) -> torch.Tensor:
    """Pull every pixel's feature towards the mean of its segment: ``alpha * f + (1 - alpha) * mean_segment(f)``.

    Args:
        features: ``[N, C, H, W]``.
        masks: ``[N, H', W']`` integer labels (nearest-resized to ``H x W`` when they differ).
        alpha: 1.0 leaves the features unchanged ("without blending"); the paper uses 0.5.
    Returns:
        ``[N, C, H, W]``.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"blending alpha must be in [0, 1], got {alpha}")
    if alpha == 1.0:
        return features
    count, channels, height, width = features.shape
    masks = resize_masks(masks, (height, width)).long()
    segment, sizes = _segment_ids(masks.reshape(count, -1))  # [N * H * W], [S]
    # A free view when the features are channels-last in memory (as rendered); a copy otherwise.
    flat = features.permute(0, 2, 3, 1).reshape(-1, channels)  # [N * H * W, C]
    num_segments = sizes.numel()
    sums = torch.zeros(num_segments, channels, dtype=flat.dtype, device=flat.device).index_add_(0, segment, flat)
    means = sums / sizes.to(flat.dtype)[:, None]  # [S, C]
    if torch.is_grad_enabled() and features.requires_grad:
        blended = alpha * flat + (1.0 - alpha) * means[segment]
    else:
        blended = _blend_rows(flat, means, segment, alpha)
    return blended.reshape(count, height, width, channels).permute(0, 3, 1, 2)


def _segment_ids(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``labels [N, P]`` -> a dense id per (image, label) for every pixel ``[N * P]`` (ordered as
    ``torch.unique`` orders the pairs) and each segment's pixel count ``[S]``."""
    count = labels.shape[0]
    labels = labels - labels.min()
    span = int(labels.max()) + 1
    keys = (labels + span * torch.arange(count, device=labels.device)[:, None]).reshape(-1)  # one key per (image, label)
    if span * count <= max(4 * keys.numel(), 1 << 16):
        # Few distinct keys: a histogram and a prefix sum give unique's ids without sorting every pixel.
        histogram = torch.bincount(keys, minlength=span * count)
        present = histogram > 0
        dense = torch.cumsum(present, 0) - 1  # [span * count]
        return dense[keys], histogram[present]
    _, segment = torch.unique(keys, return_inverse=True)
    return segment, torch.bincount(segment)


def _blend_rows(flat: torch.Tensor, means: torch.Tensor, segment: torch.Tensor, alpha: float) -> torch.Tensor:
    """``alpha * flat + (1 - alpha) * means[segment]`` -> a new ``[P, C]`` in two cache-blocked passes
    (gather the scaled means into the output, add the scaled features) instead of four full-size temporaries."""
    rows, channels = flat.shape
    output = torch.empty(rows, channels, dtype=flat.dtype, device=flat.device)  # [P, C]
    scaled_means = (1.0 - alpha) * means  # [S, C]
    chunk = rows if flat.device.type != "cpu" else max(1, min(rows, _GATHER_CHUNK_BYTES // max(1, channels * flat.element_size())))
    for start in range(0, rows, chunk):
        stop = min(start + chunk, rows)
        target = output[start:stop]
        torch.index_select(scaled_means, 0, segment[start:stop], out=target)
        target.add_(flat[start:stop], alpha=alpha)
    return output


def downsample_features(features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear ``[N, C, H, W]`` -> ``[N, C, h, w]`` on the student's patch grid (no antialiasing, as released)."""
    return F.interpolate(features, size=size, mode="bilinear", align_corners=False)


def downsample_holes(holes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest ``[N, H, W]`` bool -> ``[N, h, w]`` bool."""
    return F.interpolate(holes[:, None].float(), size=size, mode="nearest")[:, 0] >= 0.5


# --------------------------------------------------------------------------------------------
# EMA teacher


class EMATeacher(nn.Module):
    """A frozen copy of the student (backbone and optional head), updated as an exponential moving average.

    ``update(student_backbone, student_head)`` does ``teacher <- m * teacher + (1 - m) * student``
    for every parameter that the student trains (frozen student parameters, e.g. the base weights
    under LoRA, stay bit-identical). :meth:`maybe_update` applies it every ``update_every`` optimiser steps.

    Args:
        backbone: the student backbone to copy (a peft model is copied with its adapters).
        head: the student projection head to copy, or None.
        momentum: EMA momentum ``m``. Default 0.999.
        update_every: optimiser steps between updates. Default 10.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module | None = None, momentum: float = 0.999, update_every: int = 10) -> None:
        super().__init__()
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"teacher momentum must be in [0, 1], got {momentum}")
        if update_every < 1:
            raise ValueError(f"teacher update_every must be >= 1, got {update_every}")
        self.backbone = copy.deepcopy(backbone)
        self.head = copy.deepcopy(head) if head is not None else None
        self.momentum = momentum
        self.update_every = update_every
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "EMATeacher":
        # The teacher never trains: no dropout, whatever the caller asks.
        return super().train(False)

    @torch.no_grad()
    def update(self, backbone: nn.Module, head: nn.Module | None = None, momentum: float | None = None) -> None:
        momentum = self.momentum if momentum is None else momentum
        pairs = [(self.backbone, backbone)] + ([(self.head, head)] if self.head is not None else [])
        teacher_params, student_params = [], []
        for teacher_module, student_module in pairs:
            teacher_named = dict(teacher_module.named_parameters())
            for name, student_param in student_module.named_parameters():
                if name not in teacher_named:
                    raise KeyError(f"EMA teacher has no parameter {name!r}; was the student rebuilt after the teacher was copied?")
                if student_param.requires_grad:
                    teacher_params.append(teacher_named[name])
                    student_params.append(student_param.detach())
        if teacher_params:
            torch._foreach_mul_(teacher_params, momentum)
            torch._foreach_add_(teacher_params, student_params, alpha=1.0 - momentum)

    def maybe_update(self, optimizer_step: int, backbone: nn.Module, head: nn.Module | None = None) -> bool:
        """Update after optimiser step number ``optimizer_step`` (1-based) when it is a multiple of ``update_every``."""
        if optimizer_step % self.update_every != 0:
            return False
        self.update(backbone, head)
        return True


# --------------------------------------------------------------------------------------------
# The composed teacher path


@dataclass
class TeacherTargets:
    """What the teacher hands to the loss.

    Attributes:
        features: ``[B, T, C, h, w]`` rendered teacher features on the student's patch grid, zero on holes.
        valid: ``[B, T, h, w]`` bool, False where no Gaussian reaches the target pixel.
        holes: ``[B, T, H, W]`` bool at the target image resolution.
    """

    features: torch.Tensor
    valid: torch.Tensor
    holes: torch.Tensor


def backbone_patch_features(backbone: nn.Module, images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """``images [N, 3, H, W]`` in [0, 1] -> patch features ``[N, C, H // p, W // p]`` (final LayerNorm applied)."""
    from ..models.snd_dinov2 import normalize_images

    pixel_values = normalize_images(resize_to_patch_multiple(images, patch_size))
    return backbone(pixel_values=pixel_values).patch_features


class SplatTeacher(nn.Module):
    """Teacher features of the context views, splatted into the target views.

    Args:
        teacher: the :class:`EMATeacher` (its backbone embeds the context views).
        lifter: a :class:`snd.lifting.Lifter` (frozen; called without gradients).
        patch_size: the backbone patch size (14).
        upsample_mode: ``"mask_aware"`` (default) or ``"bilinear"``.
        upsample_fallback: ``"bilinear"`` (default) or ``"zero"``, see :func:`mask_aware_upsample`.
        upsample_align_corners: bilinear grid convention. Default False.
        blend_alpha: segment blending strength (0.5 "with blending", 1.0 "without").
        near_plane, far_plane: renderer clipping planes.
        render_backend: renderer backend ("auto", "torch", "gsplat").
    """

    def __init__(
        self,
        teacher: EMATeacher,
        lifter,
        patch_size: int = 14,
        upsample_mode: str = "mask_aware",
        upsample_fallback: str = "bilinear",
        upsample_align_corners: bool = False,
        blend_alpha: float = 0.5,
        near_plane: float = 0.01,
        far_plane: float = 1e10,
        render_backend: str = "auto",
    ) -> None:
        super().__init__()
        self.teacher = teacher
        self.lifter = lifter
        self.patch_size = patch_size
        self.upsample_mode = upsample_mode
        self.upsample_fallback = upsample_fallback
        self.upsample_align_corners = upsample_align_corners
        self.blend_alpha = blend_alpha
        self.near_plane = near_plane
        self.far_plane = far_plane
        self.render_backend = render_backend

    @torch.no_grad()
    def forward(self, context, target, grid_size: tuple[int, int], stage: StageTimer = no_timer) -> TeacherTargets:
        """
        Args:
            context: batched :class:`snd.data.Views` (``images [B, V, 3, H, W]``, masks ``[B, V, H, W]``).
            target: batched :class:`snd.data.Views` (``images [B, T, 3, H', W']``, masks ``[B, T, H', W']``).
            grid_size: the student's patch grid ``(h, w)``.
            stage: a context-manager factory called with each stage name (for benchmarks).
        """
        from ..splatting import render_gaussians

        batch, views, _, height, width = context.images.shape
        targets, target_height, target_width = target.images.shape[1], target.images.shape[-2], target.images.shape[-1]
        with stage("lift"):
            gaussians = self.lifter(context)
        with stage("teacher"):
            low_res = backbone_patch_features(self.teacher.backbone, context.images.flatten(0, 1), self.patch_size)  # [B*V, C, h, w]
        with stage("upsample"):
            context_masks = None if context.masks is None else context.masks.flatten(0, 1)
            if context_masks is None:
                context_masks = torch.zeros(batch * views, height, width, dtype=torch.long, device=low_res.device)
            full_res = upsample_features(low_res, context_masks, self.upsample_mode, self.upsample_fallback, self.upsample_align_corners)
            channels = full_res.shape[1]
            lifted = full_res.reshape(batch, views, channels, height, width)
        with stage("render"), torch.autocast(lifted.device.type, enabled=False):
            # Rendering stays in float32 under mixed precision (alpha compositing accumulates many terms).
            gaussians = gaussians.to(torch.float32).with_features(lifted.float())
            rendered = render_gaussians(
                gaussians,
                gaussians.features,
                target.extrinsics,
                target.intrinsics,
                target_height,
                target_width,
                near_plane=self.near_plane,
                far_plane=self.far_plane,
                backend=self.render_backend,
            )
            features = rendered.renders.permute(0, 1, 4, 2, 3).flatten(0, 1)  # [B*T, C, H', W']
            holes = rendered.alphas[..., 0].flatten(0, 1) <= 0  # [B*T, H', W']
        with stage("blend"):
            if target.masks is not None:
                features = blend_segments(features, target.masks.flatten(0, 1), self.blend_alpha)
            features = downsample_features(features, grid_size)
            holes_grid = downsample_holes(holes, grid_size)
            features = features.masked_fill(holes_grid[:, None], 0.0)
        return TeacherTargets(
            features=features.reshape(batch, targets, channels, *grid_size),
            valid=(~holes_grid).reshape(batch, targets, *grid_size),
            holes=holes.reshape(batch, targets, target_height, target_width),
        )
