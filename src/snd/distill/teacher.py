"""The teacher side of one SnD step: EMA backbone on the context views -> mask-aware upsampling ->
lift onto the lifter's per-pixel Gaussians -> splat into the target views -> segment blending ->
downsample to the student's patch grid -> zero the holes.

Pure functions (``mask_aware_upsample``, ``blend_segments``, ...) carry the numerics and are tested
against brute-force references; :class:`EMATeacher` and :class:`SplatTeacher` compose them.
"""

from __future__ import annotations

import copy
import dataclasses
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
    """Bilinear source indices and weights along one axis.

    ``align_corners=False``: exactly as ``F.interpolate(mode="bilinear")``. ``align_corners=True``: the
    release's grid, ``torch.linspace(0, in - 1, out)`` in float32 (``src/model/vit/utils.py``,
    ``mask_aware_bilinear_upsample_hr_mask``), not ``index * (in - 1) / (out - 1)``: at 41 x 62 -> 576 x 880
    the product lands just below an integer at rows 345 and 460 and column 879 and takes the other floor
    neighbour (fraction ~1 instead of 0), which changes which labels the mask-aware weights compare.
    """
    if align_corners:
        position = torch.linspace(0, in_size - 1, out_size, device=device, dtype=torch.float32)
    else:
        index = torch.arange(out_size, device=device, dtype=torch.float32)
        position = ((index + 0.5) * (in_size / out_size) - 0.5).clamp_min(0.0)
    lower = position.floor().long().clamp(max=in_size - 1)
    upper = (lower + 1).clamp(max=in_size - 1)
    fraction = position - lower.to(position.dtype)
    return lower, upper, fraction


def _low_res_label_rows(in_size: int, out_size: int, align_corners: bool, device) -> torch.Tensor:
    """High-res row (or column) whose label each low-res feature takes: the pixel under the patch centre."""
    if align_corners:
        # The release samples the mask at the align-corners positions of the low-res grid, built as
        # ``torch.linspace(0, out - 1, in).round()`` in float32 (half to even).
        rows = torch.linspace(0, out_size - 1, in_size, device=device, dtype=torch.float32).round()
    else:
        index = torch.arange(in_size, device=device, dtype=torch.float64)
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


def _local_shard(tensor: torch.Tensor) -> torch.Tensor:
    """A DTensor's local shard (FSDP2); any other tensor itself."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


class EMATeacher(nn.Module):
    """A frozen copy of the student (backbone and optional head), updated as an exponential moving average.

    ``update(student_backbone, student_head)`` does ``teacher <- m * teacher + (1 - m) * student``
    (on local shards when both are sharded alike with FSDP2) for every parameter that the student trains (frozen student parameters, e.g. the base weights
    under LoRA, stay bit-identical). :meth:`maybe_update` applies it every ``update_every`` optimiser steps.

    Args:
        backbone: the student backbone to copy (a peft model is copied with its adapters).
        head: the student projection head to copy, or None.
        momentum: EMA momentum ``m``. Default 0.999.
        update_every: optimiser steps between updates. Default 10.
        dropout: keep the teacher in train mode, so dropout layers (LoRA's) are active in its forwards,
            as in the authors' release, which never puts its teacher in eval mode. Default False: the
            teacher is always in eval mode, whatever ``train()`` asks.
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module | None = None,
        momentum: float = 0.999,
        update_every: int = 10,
        dropout: bool = False,
    ) -> None:
        super().__init__()
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"teacher momentum must be in [0, 1], got {momentum}")
        if update_every < 1:
            raise ValueError(f"teacher update_every must be >= 1, got {update_every}")
        self.backbone = copy.deepcopy(backbone)
        self.head = copy.deepcopy(head) if head is not None else None
        self.momentum = momentum
        self.update_every = update_every
        self.dropout = bool(dropout)
        self.requires_grad_(False)
        self.train(self.dropout)

    def train(self, mode: bool = True) -> "EMATeacher":
        # Without `dropout` the teacher never trains: no dropout, whatever the caller asks.
        return super().train(bool(mode) and self.dropout)

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
                    # FSDP2 (DTensor) parameters: the update runs on this process's local shards, which sit side by
                    # side because the teacher is sharded like the student (snd.distill.fsdp).
                    teacher_params.append(_local_shard(teacher_named[name]))
                    student_params.append(_local_shard(student_param.detach()))
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
# The authors' renderer inputs (teacher.splat_covariance="release", teacher.principal_point="centered")


def release_splat_covariances(covariances: torch.Tensor, orthogonality_tolerance: float = 1e-3) -> torch.Tensor:
    """The covariance the authors' LUDVIG renderer effectively splats for each lifter covariance ``[..., 3, 3]``.

    The release computes ``variances, vectors = torch.linalg.eigh(covariance)`` and hands the
    eigenvalues to the rasterizer as *scales* (standard deviations) with the quaternion of the
    eigenvector matrix; where that matrix is not a proper rotation (det < 0, or not orthogonal within
    ``orthogonality_tolerance``) the quaternion is the identity. The rasterizer then builds
    ``R diag(scales)^2 R^T``. So the rendered covariance is ``V diag(lambda^2) V^T`` (std sigma^2 instead
    of sigma along each axis), or ``diag(lambda^2)`` in world axes (ascending) for reflections. The
    quaternion round trip of the release (``q / (|q| + 1e-6)``, unnormalised in the rasterizer) changes
    this by ~2e-6 relative; it is not reproduced.

    Returns:
        ``[..., 3, 3]`` covariances to render with.
    """
    variances, vectors = torch.linalg.eigh(covariances)  # [..., 3], [..., 3, 3] (eigenvectors in columns)
    identity = torch.eye(3, dtype=covariances.dtype, device=covariances.device)
    error = (vectors.transpose(-1, -2) @ vectors - identity).abs().amax(dim=(-2, -1))
    proper = (error < orthogonality_tolerance) & (torch.linalg.det(vectors) > 0)  # [...]
    rotation = torch.where(proper[..., None, None], vectors, identity.expand_as(vectors))
    return (rotation * variances.square()[..., None, :]) @ rotation.transpose(-1, -2)


def centered_intrinsics(intrinsics: torch.Tensor) -> torch.Tensor:
    """Normalised intrinsics ``[..., 3, 3]`` -> the symmetric frustum the authors' renderers use.

    The release (``get_fov`` + graphdeco's projection matrix) takes the horizontal field of view as
    the angle between the rays through the image points ``(0, 0.5)`` and ``(1, 0.5)`` (vertical:
    ``(0.5, 0)`` and ``(0.5, 1)``), in normalised image coordinates, and renders a frustum centred on
    the optical axis: focal ``0.5 / tan(fov / 2)``, principal point ``(0.5, 0.5)``. For intrinsics whose
    principal point is already centred this returns them unchanged.
    """
    inverse = torch.linalg.inv(intrinsics)  # [..., 3, 3]

    def ray(u: float, v: float) -> torch.Tensor:
        point = torch.tensor([u, v, 1.0], dtype=intrinsics.dtype, device=intrinsics.device)
        direction = inverse @ point  # [..., 3]
        return direction / direction.norm(dim=-1, keepdim=True)

    fov_x = (ray(0.0, 0.5) * ray(1.0, 0.5)).sum(-1).clamp(-1.0, 1.0).acos()  # [...]
    fov_y = (ray(0.5, 0.0) * ray(0.5, 1.0)).sum(-1).clamp(-1.0, 1.0).acos()
    result = torch.zeros_like(intrinsics)
    result[..., 0, 0] = 0.5 / (0.5 * fov_x).tan()
    result[..., 1, 1] = 0.5 / (0.5 * fov_y).tan()
    result[..., 0, 2] = 0.5
    result[..., 1, 2] = 0.5
    result[..., 2, 2] = 1.0
    return result


_SH_C0 = 0.28209479177387814
_SH_C1 = 0.4886025119029199
_SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
_SH_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154, -0.4570457994644658,
          1.445305721320277, -0.5900435899266435)


SH_RASTERIZERS = ("ludvig", "mvsplat")


def release_sh_colors(harmonics: torch.Tensor, means: torch.Tensor, camera_centers: torch.Tensor,
                      rasterizer: str = "ludvig") -> torch.Tensor:
    """The RGB each MVSplat Gaussian has in each target view of the authors' release.

    ``rasterizer="ludvig"`` (default): what the release computes. Its README installs LUDVIG's rasterizer
    (naver/ludvig ``gaussiansplatting/submodules/diff-gaussian-rasterization``) *instead of* MVSplat's, and
    ``src/model/decoder/cuda_splatting.py`` renders the RGB holes through it (``shs``, ``sh_degree = isqrt(25) - 1
    = 4``). Its ``computeColorFromSH`` is graphdeco's: the real SH polynomials of degree <= 3 (degree-4
    coefficients are passed but ignored) at the view direction ``normalize(mean - camera_centre)`` with
    ``(x, y, z) = (d_x, d_y, d_z)``, plus 0.5, clamped at 0. MVSplat's harmonics are in e3nn's axis order, so the
    release evaluates them with axes its lifter did not use (a quirk, reproduced).

    ``rasterizer="mvsplat"``: MVSplat's own rasterizer (dcharatan/diff-gaussian-rasterization-modified,
    ``computeColorFromSH`` "modified to match e3nn's format"), literally: graphdeco's polynomials with
    ``(x, y, z) = (d_z, d_x, d_y)``, except its ``sh[14]`` term ``SH_C3[5] * z * (zz - xx)``, which uses
    ``d_z`` where the permutation gives ``d_y``.

    Args:
        harmonics: ``[B, N, 3, K]`` SH coefficients (MVSplat's, world space).
        means: ``[B, N, 3]`` Gaussian centres.
        camera_centers: ``[B, T, 3]`` target camera centres (world).
        rasterizer: ``"ludvig"`` or ``"mvsplat"`` (see above).
    Returns:
        ``[B, T, N, 3]`` colours in [0, inf).
    """
    if rasterizer not in SH_RASTERIZERS:
        raise ValueError(f"rasterizer must be one of {SH_RASTERIZERS}, got {rasterizer!r}")
    directions = means[:, None] - camera_centers[:, :, None]  # [B, T, N, 3]
    directions = directions / directions.norm(dim=-1, keepdim=True)
    order = (0, 1, 2) if rasterizer == "ludvig" else (2, 0, 1)  # mvsplat: e3nn's axis order
    x, y, z = (directions[..., index, None] for index in order)  # [B, T, N, 1] each
    sh = harmonics[:, None]  # [B, 1, N, 3, K]
    degree = min(round(harmonics.shape[-1] ** 0.5) - 1, 3)
    result = _SH_C0 * sh[..., 0]
    if degree > 0:
        result = result - _SH_C1 * y * sh[..., 1] + _SH_C1 * z * sh[..., 2] - _SH_C1 * x * sh[..., 3]
    if degree > 1:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        result = (result + _SH_C2[0] * xy * sh[..., 4] + _SH_C2[1] * yz * sh[..., 5] + _SH_C2[2] * (2 * zz - xx - yy) * sh[..., 6]
                  + _SH_C2[3] * xz * sh[..., 7] + _SH_C2[4] * (xx - yy) * sh[..., 8])
    if degree > 2:
        term14 = z if rasterizer == "ludvig" else x  # mvsplat: dcharatan's `z * (zz - xx)` is d_z, i.e. e3nn's x here
        result = (result + _SH_C3[0] * y * (3 * xx - yy) * sh[..., 9] + _SH_C3[1] * xy * z * sh[..., 10]
                  + _SH_C3[2] * y * (4 * zz - xx - yy) * sh[..., 11] + _SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy) * sh[..., 12]
                  + _SH_C3[4] * x * (4 * zz - xx - yy) * sh[..., 13] + _SH_C3[5] * term14 * (xx - yy) * sh[..., 14]
                  + _SH_C3[6] * x * (xx - 3 * yy) * sh[..., 15])
    return (result + 0.5).clamp_min(0.0)


def lifter_colors(gaussians, context, target_extrinsics: torch.Tensor | None = None,
                  rasterizer: str = "ludvig") -> torch.Tensor:
    """RGB of the lifter's Gaussians for the hole render.

    With MVSplat harmonics and ``target_extrinsics [B, T, 4, 4]`` (camera-to-world): the view-dependent
    colours of the release's rasterizer, ``[B, T, N, 3]`` (:func:`release_sh_colors`, ``rasterizer``); with
    harmonics only: the DC colour ``[B, N, 3]``; without harmonics (depth lifter): the context pixels' colours
    ``[B, N, 3]``.
    """
    if gaussians.harmonics is not None:
        if target_extrinsics is not None:
            return release_sh_colors(gaussians.harmonics, gaussians.means,
                                     target_extrinsics[..., :3, 3].to(gaussians.means.dtype), rasterizer=rasterizer)
        from ..models.mvsplat.lifting_mvsplat import harmonics_to_rgb

        return harmonics_to_rgb(gaussians.harmonics)
    batch, views, channels, height, width = context.images.shape
    colors = context.images.permute(0, 1, 3, 4, 2).reshape(batch, views * height * width, channels)  # lift order
    if colors.shape[1] != gaussians.num_gaussians:
        raise ValueError(
            f"teacher.holes='rgb': the lifter gave {gaussians.num_gaussians} Gaussians and no harmonics; expected one per "
            f"context pixel ({colors.shape[1]}) to colour them with the context images"
        )
    return colors


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


def backbone_patch_features(backbone: nn.Module, images: torch.Tensor, patch_size: int | None = None) -> torch.Tensor:
    """``images [N, 3, H, W]`` in [0, 1] -> patch features ``[N, C, H // p, W // p]`` (final norm applied).

    Any backbone :mod:`snd.backbones` supports (SnD, transformers DINOv2 with or without registers,
    DINOv3...); ``patch_size`` defaults to the backbone's. A module without a ``config`` (a test double,
    a custom wrapper) is called as ``backbone(pixel_values=...)`` and must return ``patch_features``;
    it needs ``patch_size``.
    """
    from ..backbones import backbone_spec, backbone_tokens
    from ..models.snd_dinov2 import normalize_images

    if getattr(backbone, "config", None) is None and not hasattr(backbone, "get_base_model") and patch_size:
        return backbone(pixel_values=normalize_images(resize_to_patch_multiple(images, patch_size))).patch_features
    spec = backbone_spec(backbone)
    pixel_values = normalize_images(resize_to_patch_multiple(images, patch_size or spec.patch_size))
    return backbone_tokens(backbone, pixel_values, final_norm=True, spec=spec).patches


DEFAULT_FEATURE_BUDGET_BYTES = 2 * 2**30


def feature_map_bytes_per_channel(context_pixels: int, target_pixels: int, bytes_per_value: int = 4) -> int:
    """Bytes one feature channel of the teacher path holds at full resolution at its peak: the upsampled context maps
    and their lift-order copy (``2 x context_pixels``), the rendered target maps, their blended copy and the renderer's
    per-pixel accumulator (``3 x target_pixels``), float32. ``context_pixels`` is ``B * V * H * W`` (all context views
    of the step), ``target_pixels`` ``B * T * H' * W'``."""
    return bytes_per_value * (2 * context_pixels + 3 * target_pixels)


def auto_channel_chunk(channels: int, context_pixels: int, target_pixels: int,
                       budget_bytes: int = DEFAULT_FEATURE_BUDGET_BYTES) -> int:
    """``channels`` when the maps of all of them fit ``budget_bytes`` (:func:`feature_map_bytes_per_channel`), else the
    largest chunk that does (at least 1)."""
    per_channel = max(1, feature_map_bytes_per_channel(context_pixels, target_pixels))
    return max(1, min(channels, budget_bytes // per_channel))


class SplatTeacher(nn.Module):
    """Teacher features of the context views, splatted into the target views.

    Args:
        teacher: the :class:`EMATeacher` (its backbone embeds the context views).
        lifter: a :class:`snd.lifting.Lifter` (frozen; called without gradients).
        patch_size: the backbone patch size (14 for DINOv2, 16 for DINOv3).
        upsample_mode: ``"mask_aware"`` (default) or ``"bilinear"``.
        upsample_fallback: ``"bilinear"`` (default) or ``"zero"``, see :func:`mask_aware_upsample`.
        upsample_align_corners: bilinear grid convention. Default False.
        blend_alpha: segment blending strength (0.5 "with blending", 1.0 "without").
        near_plane, far_plane: renderer clipping planes.
        render_backend: renderer backend ("auto", "torch", "gsplat").
        splat_covariance: ``"lifter"`` (default) or ``"release"`` (:func:`release_splat_covariances`).
        opacity_clamp: the renderer's per-pair alpha clamp. Default 0.999 (gsplat); 0.99 the release.
        principal_point: ``"intrinsics"`` (default) or ``"centered"`` (:func:`centered_intrinsics`).
        holes: ``"alpha"`` (default: feature render's alpha is 0) or ``"rgb"`` (an RGB render of the
            lifter's Gaussians with their own covariances and :func:`lifter_colors`, is exactly 0).
        target: ``"splat"`` (default: the context views' features, lifted and splatted into the target view) or
            ``"same_view"`` (the matched 2D control: the teacher's own features of the target view, upsampled with
            the target's masks as the context features are; the lift and render still run, for the same holes).
        channel_chunk: feature channels carried through upsampling, splatting, blending and downsampling at once
            (each of these is linear per channel, so any chunk gives the unchunked result up to float rounding; the
            geometry, the holes and the backbone forwards are computed once). None (default): "auto", every channel
            when the full-resolution maps fit ``feature_budget_bytes`` (see :func:`auto_channel_chunk`), else the
            largest chunk that does.
        feature_budget_bytes: the memory the full-resolution feature maps of one chunk may take (``channel_chunk``
            None). Default 2 GiB.
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
        splat_covariance: str = "lifter",
        opacity_clamp: float = 0.999,
        principal_point: str = "intrinsics",
        holes: str = "alpha",
        target: str = "splat",
        channel_chunk: int | None = None,
        feature_budget_bytes: int = DEFAULT_FEATURE_BUDGET_BYTES,
    ) -> None:
        super().__init__()
        if channel_chunk is not None and channel_chunk < 1:
            raise ValueError(f"SplatTeacher: channel_chunk must be >= 1 or None (auto), got {channel_chunk}")
        if feature_budget_bytes <= 0:
            raise ValueError(f"SplatTeacher: feature_budget_bytes must be > 0, got {feature_budget_bytes}")
        self.channel_chunk = channel_chunk
        self.feature_budget_bytes = int(feature_budget_bytes)
        for name, value, choices in (
            ("splat_covariance", splat_covariance, ("lifter", "release")),
            ("principal_point", principal_point, ("intrinsics", "centered")),
            ("holes", holes, ("alpha", "rgb")),
            ("target", target, ("splat", "same_view")),
        ):
            if value not in choices:
                raise ValueError(f"SplatTeacher: {name} must be one of {list(choices)}, got {value!r}")
        self.splat_covariance = splat_covariance
        self.opacity_clamp = float(opacity_clamp)
        self.principal_point = principal_point
        self.holes = holes
        self.target = target
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

    @classmethod
    def from_config(cls, teacher: EMATeacher, lifter, patch_size: int, config) -> "SplatTeacher":
        """Build from a :class:`snd.distill.config.TeacherConfig` (every rendering switch of the config)."""
        return cls(
            teacher,
            lifter,
            patch_size=patch_size,
            upsample_mode=config.upsample,
            upsample_fallback=config.upsample_fallback,
            upsample_align_corners=config.upsample_align_corners,
            blend_alpha=config.blend_alpha,
            near_plane=config.near_plane,
            far_plane=config.far_plane,
            render_backend=config.render_backend,
            splat_covariance=config.splat_covariance,
            opacity_clamp=config.opacity_clamp,
            principal_point=config.principal_point,
            holes=config.holes,
            target=getattr(config, "target", "splat"),
            channel_chunk=getattr(config, "channel_chunk", None),
            feature_budget_bytes=int(getattr(config, "feature_budget_gib", 2.0) * 2**30),
        )

    def _upsample(self, low_res: torch.Tensor, masks: torch.Tensor | None, count: int, height: int, width: int) -> torch.Tensor:
        """Teacher features ``[N, C, h, w]`` -> ``[N, C, H, W]`` with the views' masks ``[B, V, H, W]`` (one segment when None)."""
        flat_masks = None if masks is None else masks.flatten(0, 1)
        if flat_masks is None:
            flat_masks = torch.zeros(count, height, width, dtype=torch.long, device=low_res.device)
        return upsample_features(low_res, flat_masks, self.upsample_mode, self.upsample_fallback, self.upsample_align_corners)

    def _holes(self, rendered, gaussians, context, target, intrinsics, height: int, width: int, settings: dict) -> torch.Tensor:
        """``[B*T, H', W']`` bool: where the feature render's alpha is 0 (``holes="alpha"``), or where an RGB render of the
        lifter's Gaussians with their own covariances is exactly 0 (``holes="rgb"``)."""
        from ..splatting import render_gaussians

        if self.holes == "rgb":
            colors = lifter_colors(gaussians, context, target.extrinsics).float()  # [B, T, N, 3] or [B, N, 3]
            # same Gaussians and cameras as the feature render, already checked (by the lifter and that render)
            rgb = render_gaussians(gaussians, colors, target.extrinsics, intrinsics, height, width, validate=False, **settings)
            return (rgb.renders == 0).all(dim=-1).flatten(0, 1)
        return rendered.alphas[..., 0].flatten(0, 1) <= 0

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
        channels = low_res.shape[1]
        chunk = self.channel_chunk or auto_channel_chunk(
            channels, batch * views * height * width, batch * targets * target_height * target_width, self.feature_budget_bytes)
        chunk = min(chunk, channels)
        with stage("render"), torch.autocast(low_res.device.type, enabled=False):
            # Rendering stays in float32 under mixed precision (alpha compositing accumulates many terms).
            gaussians = gaussians.to(torch.float32)
            intrinsics = target.intrinsics.float()
            if self.principal_point == "centered":
                intrinsics = centered_intrinsics(intrinsics)
            settings = dict(
                near_plane=self.near_plane, far_plane=self.far_plane, backend=self.render_backend, max_alpha=self.opacity_clamp
            )
            geometry = gaussians
            if self.splat_covariance == "release":
                geometry = dataclasses.replace(geometry, covariances=release_splat_covariances(geometry.covariances))
        holes = None
        own = None
        if self.target == "same_view":
            with stage("render"), torch.autocast(low_res.device.type, enabled=False):
                # The control renders one constant channel: the same Gaussians and cameras give the same alphas, so the
                # same holes, at a fraction of the cost; its features are the target view's own (below).
                ones = low_res.new_ones(batch, views, 1, height, width, dtype=torch.float32)
                rendered = render_gaussians(geometry, geometry.with_features(ones).features, target.extrinsics, intrinsics,
                                            target_height, target_width, **settings)
                holes = self._holes(rendered, gaussians, context, target, intrinsics, target_height, target_width, settings)
            with stage("teacher"):
                own = backbone_patch_features(self.teacher.backbone, target.images.flatten(0, 1), self.patch_size)  # [B*T, C, h, w]
        parts = []
        for first in range(0, channels, chunk):
            last = min(first + chunk, channels)
            if own is None:
                with stage("upsample"):
                    full_res = self._upsample(low_res[:, first:last], context.masks, batch * views, height, width)  # [B*V, c, H, W]
                    lifted = full_res.reshape(batch, views, last - first, height, width)
                with stage("render"), torch.autocast(lifted.device.type, enabled=False):
                    splats = geometry.with_features(lifted.float())  # features [B, N, c] in lift order
                    rendered = render_gaussians(splats, splats.features, target.extrinsics, intrinsics, target_height,
                                                target_width, validate=first == 0, **settings)
                    features = rendered.renders.permute(0, 1, 4, 2, 3).flatten(0, 1)  # [B*T, c, H', W']
                    del splats, lifted, full_res
                    if holes is None:  # the alphas do not depend on the features: the first chunk's are every chunk's
                        holes = self._holes(rendered, gaussians, context, target, intrinsics, target_height, target_width, settings)
                    del rendered
            else:
                with stage("upsample"):
                    features = self._upsample(own[:, first:last], target.masks, batch * targets, target_height, target_width).float()
            with stage("blend"):
                if target.masks is not None:
                    features = blend_segments(features, target.masks.flatten(0, 1), self.blend_alpha)
                features = downsample_features(features, grid_size)
                if first == 0:
                    holes_grid = downsample_holes(holes, grid_size)
                parts.append(features.masked_fill(holes_grid[:, None], 0.0))
            del features
        features = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)  # [B*T, C, h, w]
        return TeacherTargets(
            features=features.reshape(batch, targets, channels, *grid_size),
            valid=(~holes_grid).reshape(batch, targets, *grid_size),
            holes=holes.reshape(batch, targets, target_height, target_width),
        )
