"""Linear probes trained on frozen, cached features.

Depth (FiT3D / DINOv2 "linear" depth protocol, ``BNHead`` with ``classify=True``):
    input = patch features concatenated with the CLS token broadcast to every patch
    (``2C`` channels), bilinearly upsampled 4x, then one 1x1 convolution to 256 depth bins.
    Output parametrisation: bins are uniform ("UD") between ``min_depth`` and ``max_depth``;
    bin scores go through ``relu(.) + 0.1`` and are normalised to sum to one ("linear"
    normalisation); depth = sum of score x bin centre, bilinearly resized to the ground truth.
    Loss: SigLoss ``sqrt(var(g) + 0.15 mean(g)^2)`` with ``g = log(pred + 1e-3) - log(gt + 1e-3)``
    over valid pixels (only ``sqrt(0.15 mean(g)^2)`` during the first 100 steps, FiT3D's warm-up),
    plus 0.5 x the multi-scale log-depth gradient-matching loss (scales 1, 2, 4, 6).
    AdamW (lr 1e-4, weight decay 0.01), gradient clipping at 35, linear warm-up over the first
    third of training then cosine decay (FiT3D: 12,800 of 38,400 iterations, batch 2).
Surface normals (Probe3D, with the SnD paper's 1x1 linear probe on the last layer):
    one 1x1 convolution to 3 channels, bicubic upsampling to the ground truth, loss = mean angle
    ``acos(cos_sim)`` over valid pixels; AdamW lr 5e-4, 10 epochs, batch 8, 1.5 warm-up epochs then
    Probe3D's quarter-cosine decay to 1 %.
Segmentation (FiT3D / DINOv2 linear head): BatchNorm + one 1x1 convolution on the patch
    features, logits bilinearly upsampled to the labels, cross-entropy ignoring label 255;
    AdamW lr 1e-3, weight decay 1e-4, linear warm-up (FiT3D: 1,500 of 40,000 iterations), then
    linear ("poly", power 1) decay.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from ..progress import progress_bar as tqdm

from .features import FeatureBatch

IGNORE_INDEX = 255


@dataclass
class ProbeConfig:
    """Optimisation of one probe. ``max_steps`` (if set) caps the number of steps."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup_fraction: float
    schedule: str  # "cosine" (half cosine to 0), "probe3d" (quarter cosine to 1 %), "poly" (linear to 0)
    grad_clip: float | None = None
    max_steps: int | None = None
    loss_warmup_steps: int = 0  # depth: steps with SigLoss's mean term only (FiT3D: 100)

    def with_overrides(self, **overrides) -> "ProbeConfig":
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


DEPTH_PROBE = ProbeConfig(epochs=10, batch_size=2, lr=1e-4, weight_decay=0.01, warmup_fraction=1 / 3,
                          schedule="cosine", grad_clip=35.0, loss_warmup_steps=100)
NORMALS_PROBE = ProbeConfig(epochs=10, batch_size=8, lr=5e-4, weight_decay=0.01, warmup_fraction=0.15,
                            schedule="probe3d")
SEGMENTATION_PROBE = ProbeConfig(epochs=10, batch_size=2, lr=1e-3, weight_decay=1e-4, warmup_fraction=0.0375,
                                 schedule="poly")


def learning_rate_factor(step: int, total: int, config: ProbeConfig) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based) of ``total`` steps."""
    warmup = int(round(config.warmup_fraction * total))
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    if config.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    if config.schedule == "probe3d":
        return 0.99 * math.cos(0.5 * math.pi * progress) + 0.01
    if config.schedule == "poly":
        return max(0.0, 1.0 - progress)
    raise ValueError(f"unknown schedule {config.schedule!r}")


# ----------------------------------------------------------------------------------- heads
class DepthBinsHead(nn.Module):
    """FiT3D/DINOv2 linear depth head (see the module docstring for the parametrisation)."""

    def __init__(self, channels: int, min_depth: float = 1e-3, max_depth: float = 10.0, num_bins: int = 256,
                 upsample: int = 4, use_cls: bool = True):
        super().__init__()
        self.use_cls, self.upsample = use_cls, upsample
        self.conv = nn.Conv2d(channels * (2 if use_cls else 1), num_bins, kernel_size=1)
        self.register_buffer("bins", torch.linspace(min_depth, max_depth, num_bins), persistent=False)

    def forward(self, patches: torch.Tensor, cls: torch.Tensor, size) -> torch.Tensor:
        # patches [B, C, h, w], cls [B, C] -> depth [B, H, W]
        x = patches
        if self.use_cls:
            x = torch.cat([x, cls[:, :, None, None].expand_as(patches)], dim=1)
        x = F.interpolate(x, scale_factor=self.upsample, mode="bilinear", align_corners=False)
        scores = torch.relu(self.conv(x)) + 0.1
        scores = scores / scores.sum(dim=1, keepdim=True)
        depth = torch.einsum("bkhw,k->bhw", scores, self.bins)
        return F.interpolate(depth[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


class NormalsHead(nn.Module):
    """Probe3D-style 1x1 linear probe to 3 channels, bicubically upsampled (not normalised)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, 3, kernel_size=1)

    def forward(self, patches: torch.Tensor, cls: torch.Tensor, size) -> torch.Tensor:  # -> [B, 3, H, W]
        return F.interpolate(self.conv(patches), size=tuple(size), mode="bicubic", align_corners=False)


class SegmentationHead(nn.Module):
    """FiT3D/DINOv2 linear segmentation head: BatchNorm then a 1x1 convolution to class logits."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels)
        self.conv = nn.Conv2d(channels, num_classes, kernel_size=1)

    def forward(self, patches: torch.Tensor, cls: torch.Tensor, size) -> torch.Tensor:  # -> [B, K, H, W]
        return F.interpolate(self.conv(self.norm(patches)), size=tuple(size), mode="bilinear", align_corners=False)


# ----------------------------------------------------------------------------------- losses
def sig_loss(prediction: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, warm_up: bool = False,
             eps: float = 1e-3) -> torch.Tensor:
    """Scale-invariant log loss (AdaBins / DINOv2 SigLoss) over the valid pixels of a batch."""
    g = torch.log(prediction[valid] + eps) - torch.log(target[valid] + eps)
    if g.numel() == 0:
        return prediction.sum() * 0
    if warm_up:
        return torch.sqrt(0.15 * g.mean() ** 2)
    variance = g.var(unbiased=False) if g.numel() > 1 else g.new_zeros(())
    return torch.sqrt(variance + 0.15 * g.mean() ** 2)


def gradient_loss(prediction: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Multi-scale gradient matching of log depth (MegaDepth / DINOv2 GradientLoss), [B, H, W] inputs."""
    total = prediction.new_zeros(())
    for step in (1, 2, 4, 6):
        p, t, m = prediction[..., ::step, ::step], target[..., ::step, ::step], valid[..., ::step, ::step]
        count = m.sum()
        if count == 0:
            continue
        diff = (torch.log(p + eps) - torch.log(t + eps)) * m
        vertical = (diff[..., :-2, :] - diff[..., 2:, :]).abs() * (m[..., :-2, :] & m[..., 2:, :])
        horizontal = (diff[..., :, :-2] - diff[..., :, 2:]).abs() * (m[..., :, :-2] & m[..., :, 2:])
        total = total + (vertical.sum() + horizontal.sum()) / count
    return total


def angular_loss(prediction: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Mean angle (radians) between predicted and true normals ``[B, 3, H, W]`` over valid pixels."""
    cosine = F.cosine_similarity(prediction, target, dim=1).clamp(-1 + eps, 1 - eps)
    angles = torch.acos(cosine)[valid]
    return angles.mean() if angles.numel() else prediction.sum() * 0


# ----------------------------------------------------------------------------------- training
def _stack(dataset, indices, key: str) -> torch.Tensor:
    return torch.stack([dataset[int(i)][key] for i in indices])


def _depth_valid(depth: torch.Tensor, max_depth: float) -> torch.Tensor:
    return (depth > 0) & (depth <= max_depth)


@dataclass
class ProbeTask:
    """What distinguishes the three dense probes: the head, the targets and the loss."""

    name: str
    config: ProbeConfig

    def build_head(self, channels: int, dataset) -> nn.Module:
        if self.name == "depth":
            return DepthBinsHead(channels, min_depth=dataset.min_depth, max_depth=dataset.max_depth)
        if self.name == "normals":
            return NormalsHead(channels)
        if self.name == "segmentation":
            if not dataset.num_classes:
                raise ValueError(f"{dataset.name}: segmentation needs num_classes")
            return SegmentationHead(channels, dataset.num_classes)
        raise ValueError(f"unknown dense task {self.name!r}")

    def loss(self, head_output, dataset, indices, step: int) -> torch.Tensor:
        if self.name == "depth":
            target = _stack(dataset, indices, "depth")
            valid = _depth_valid(target, dataset.max_depth)
            warm_up = step < self.config.loss_warmup_steps
            return sig_loss(head_output, target, valid, warm_up=warm_up) + 0.5 * gradient_loss(head_output, target, valid)
        if self.name == "normals":
            target = _stack(dataset, indices, "normals")
            valid = _stack(dataset, indices, "normal_valid")
            return angular_loss(head_output, target, valid)
        target = _stack(dataset, indices, "semantics")
        return F.cross_entropy(head_output, target, ignore_index=IGNORE_INDEX)


def target_size(dataset) -> tuple[int, int]:
    item = dataset[0]
    return tuple(item["image"].shape[-2:])


def train_probe(task: ProbeTask, features: FeatureBatch, dataset, seed: int = 0, progress: bool = True) -> nn.Module:
    """Train the probe of ``task`` on cached ``features`` of ``dataset`` (same order); returns it in eval mode."""
    if len(features) != len(dataset):
        raise ValueError(f"{len(features)} feature maps for {len(dataset)} images of {dataset.name}")
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    config = task.config
    head = task.build_head(features.patches.shape[1], dataset)
    decay, no_decay = [], []
    for name, parameter in head.named_parameters():
        (no_decay if parameter.ndim <= 1 else decay).append(parameter)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=config.lr
    )
    batch_size = min(config.batch_size, len(dataset))
    steps_per_epoch = max(1, len(dataset) // batch_size)  # drop the last partial batch (BatchNorm needs > 1)
    total = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    head.train()
    step = 0
    bar = tqdm(total=total, desc=f"{task.name} probe", leave=False, disable=not progress)
    while step < total:
        order = torch.randperm(len(dataset), generator=generator)
        for start in range(0, steps_per_epoch * batch_size, batch_size):
            if step >= total:
                break
            indices = order[start : start + batch_size]
            for group in optimizer.param_groups:
                group["lr"] = config.lr * learning_rate_factor(step, total, config)
            batch = features.select(indices)
            size = tuple(dataset[int(indices[0])]["image"].shape[-2:])
            output = head(batch.patches, batch.cls, size)
            loss = task.loss(output, dataset, indices, step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(head.parameters(), config.grad_clip)
            optimizer.step()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
    bar.close()
    return head.eval()


@torch.no_grad()
def predict(head: nn.Module, features: FeatureBatch, dataset, task: str, batch_size: int = 8):
    """Yield ``(indices, predictions)`` batches: depth ``[B, H, W]``, unit normals ``[B, 3, H, W]``
    or class maps ``[B, H, W]``."""
    head.eval()
    for start in range(0, len(dataset), batch_size):
        indices = list(range(start, min(start + batch_size, len(dataset))))
        batch = features.select(indices)
        size = tuple(dataset[indices[0]]["image"].shape[-2:])
        output = head(batch.patches, batch.cls, size)
        if task == "normals":
            output = F.normalize(output, dim=1)
        elif task == "segmentation":
            output = output.argmax(dim=1)
        yield indices, output


def evaluate_probe(head: nn.Module, features: FeatureBatch, dataset, task: str, keep: int = 4, batch_size: int = 8,
                   progress: bool = True):
    """Metrics of a trained probe on a test set, plus the first ``keep`` predictions for pictures.

    Depth and normals are aggregated per image (Probe3D); segmentation is pooled over the set
    (mmseg/FiT3D). Returns ``(metrics dict, list of (index, prediction))``.
    """
    from snd.metrics import depth_metrics, normal_metrics, segmentation_metrics

    kept, per_batch, weights = [], [], []
    all_predictions, all_references = [], []
    for indices, output in tqdm(predict(head, features, dataset, task, batch_size), desc=f"{task} test",
                                total=math.ceil(len(dataset) / batch_size), leave=False, disable=not progress):
        for offset, index in enumerate(indices):
            if len(kept) < keep:
                kept.append((index, output[offset].clone()))
        if task == "depth":
            reference = _stack(dataset, indices, "depth")
            valid_images = _depth_valid(reference, dataset.max_depth).flatten(1).any(1)
            if not valid_images.any():
                continue
            result = depth_metrics(output[valid_images].numpy(), reference[valid_images].numpy(),
                                   max_depth=dataset.max_depth, nyu_crop=dataset.nyu_crop)
        elif task == "normals":
            reference = _stack(dataset, indices, "normals")
            valid = _stack(dataset, indices, "normal_valid")
            keep_images = valid.flatten(1).any(1)
            if not keep_images.any():
                continue
            result = normal_metrics(output[keep_images].numpy(), reference[keep_images].numpy(),
                                    valid=valid[keep_images].numpy())
        else:
            all_predictions.append(output.to(torch.int16).numpy())
            all_references.append(_stack(dataset, indices, "semantics").to(torch.int16).numpy())
            continue
        per_batch.append(result)
        weights.append(result["num_images"])
    if task == "segmentation":
        result = segmentation_metrics(np.concatenate(all_predictions), np.concatenate(all_references),
                                      num_classes=dataset.num_classes, ignore_index=IGNORE_INDEX)
        if dataset.class_names:
            result["per_class_iou"] = dict(zip(dataset.class_names, result["per_class_iou"]))
        return result, kept
    if not per_batch:
        raise ValueError(f"{dataset.name}: no test image has valid {task} ground truth")
    # Per-image aggregation: a weighted mean of per-batch means is the mean over all images.
    total = float(sum(weights))
    metrics = {key: float(sum(r[key] * w for r, w in zip(per_batch, weights)) / total)
               for key in per_batch[0] if key != "num_images"}
    metrics["num_images"] = total
    return metrics, kept
