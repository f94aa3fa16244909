"""Monocular depth linear probe exactly as the SnD authors ran it (``evaluation1/``, FiT3D-style mmseg configs).

From ``baseline_configs/vits_{nyu,scannet,scannetpp}_depth_linear_config.py`` and the code they run:

* features: the backbone's last block **without** the final LayerNorm (``final_norm=False``), the
  CLS token un-normalised too, images centre-padded with zeros to patch multiples.
* backbone: ``evaluation1/utils/model_utils.py`` builds timm 0.9.10's ``vit_{small,base}_patch14_dinov2``
  (``dynamic_img_size=True``) and loads the SnD ``.pth`` into it; its forward equals the SnD/DINOv2 one except
  that position embeddings are resampled by ``resample_abs_pos_embed`` (bicubic to the exact grid,
  antialiased). ``position_interpolation="timm"`` (default) makes an SnD model do the same for this task.
* head (``BNHead``, no BatchNorm): ``[patches, CLS broadcast]`` (2C channels) -> bilinear x4 -> 1x1 conv
  to 256 bins, ``relu + 0.1`` normalised, uniform bins in ``[min_depth, max_depth]``.
* loss: ``SigLoss(warm_up=True)`` (first 100 calls ``sqrt(0.15 mean(g)^2)``, then
  ``sqrt(var(g) + 0.15 mean(g)^2)`` with torch's **unbiased** variance, valid = gt > 0) plus
  ``0.5 x GradientLoss`` called on ``[B, 1, H, W]`` tensors. The gradient loss indexes its input as
  if it were ``[H, W]``: the "vertical" difference runs over the batch axis ``[0:-2]`` vs ``[2:]``
  and the "horizontal" one over the single channel, so with the config's batch of 2 both are
  empty and **the term is identically 0** (reproduced: :func:`official_gradient_loss`).
* optimiser: AdamW lr 1e-4, weight decay 0.01 on every head parameter (biases included; the
  config's ``decay_mult=0`` keys ``pos_embed``/``cls_token``/``norm`` match no head parameter),
  gradient clipping at norm 35; mmcv cosine annealing from iteration 0 (``min_lr_ratio=1e-8``) with
  a linear warm-up over 12,800 iterations from ratio 1e-3; ``beta1`` cycled 0.95 -> 0.85 -> 0.95
  (mmcv OneCycle momentum, 30 % up); 307,200 iterations of batch 2 (one GPU), shuffled epochs,
  ``drop_last=True``.
* train augmentation per iteration: NYUCrop (NYUv2 only), RandomRotate (p 0.5, +-2.5 deg),
  RandomFlip (p 0.5), RandomCrop 416 x 544, ColorAug (p 0.5).
* test: the whole image (no resize), centre-padded, prediction resized bilinearly to the image size,
  **averaged with the prediction of the horizontally flipped image**; metrics per image on
  ground truth in the open interval ``(1e-3, max_depth)`` (and inside rows 45:471, cols 41:601 for
  NYUv2 and ScanNet, whose configs keep ``eigen_crop=True``), then averaged over images. ScanNet++'s
  ground truth is first resized bilinearly to 584 x 876 as its dataset class does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F

from ...metrics import depth_metrics
from ..probes import DepthBinsHead
from . import augment, schedules
from .common import (FrozenFeatures, Timer, default_workers, finish_training_task, resolve_device, sample_plan,
                     training_batches)
from .data import DepthDataSpec, depth_datasets

# rows 45:471, cols 41:601: the evaluation mask of the datasets with eigen_crop=True
EVAL_CROP = (slice(45, 471), slice(41, 601))


@dataclass(frozen=True)
class DepthProtocol:
    """Every setting of the authors' depth probe (defaults = their configs)."""

    max_iters: int = 307_200
    batch_size: int = 2
    lr: float = 1e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_iters: int = 12_800
    warmup_ratio: float = 1e-3
    min_lr_ratio: float = 1e-8
    momentum_cycle: tuple[float, float] = (0.85, 0.95)
    momentum_pct_start: float = 0.3
    grad_clip: float = 35.0
    crop_size: tuple[int, int] = (416, 544)
    rotate_prob: float = 0.5
    rotate_degrees: float = 2.5
    flip_prob: float = 0.5
    color_prob: float = 0.5
    num_bins: int = 256
    upsample: int = 4
    use_cls: bool = True
    final_norm: bool = False
    sigloss_warmup_calls: int = 100
    sigloss_unbiased_variance: bool = True
    gradient_loss_weight: float = 0.5
    gradient_loss_as_called: bool = True  # the official [B, 1, H, W] call (identically 0 at batch 2)
    flip_test: bool = True
    eval_interval: int = 38_400  # EvalHook(by_epoch=False, interval=38400, save_best="abs_rel")
    position_interpolation: str | None = "timm"  # evaluation1's timm backbone; None: the model's own setting


# ------------------------------------------------------------------------------------ losses
def official_sig_loss(prediction: torch.Tensor, target: torch.Tensor, *, warm_up: bool, unbiased: bool = True,
                      eps: float = 1e-3) -> torch.Tensor:
    """``SigLoss`` (AdaBins) over pixels with ``target > 0``; ``torch.var`` is unbiased (``N - 1``)."""
    valid = target > 0
    g = torch.log(prediction[valid] + eps) - torch.log(target[valid] + eps)
    if warm_up:
        return torch.sqrt(0.15 * torch.mean(g) ** 2)
    return torch.sqrt(torch.var(g, unbiased=unbiased) + 0.15 * torch.mean(g) ** 2)


def official_gradient_loss(prediction: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """``GradientLoss`` exactly as written: it indexes the first two axes of whatever it is given.

    The official depther passes ``[B, 1, H, W]``, so the scales ``[::2i, ::2i]`` subsample the
    batch and channel axes, the vertical difference compares batch items ``b`` and ``b + 2`` and
    the horizontal one the (single) channel with itself two channels on: both empty for ``B <= 2``,
    which makes the loss exactly 0 (divided by the number of valid pixels). Called on ``[H, W]`` it
    is the real multi-scale log-gradient loss.
    """
    loss = prediction.new_zeros(())
    for scale in range(4):
        pred = prediction if scale == 0 else prediction[:: 2 * scale, :: 2 * scale]
        gt = target if scale == 0 else target[:: 2 * scale, :: 2 * scale]
        mask = (gt > 0).to(pred.dtype)
        count = mask.sum()
        diff = (torch.log(pred + eps) - torch.log(gt + eps)) * mask
        vertical = (diff[0:-2, :] - diff[2:, :]).abs() * mask[0:-2, :] * mask[2:, :]
        horizontal = (diff[:, 0:-2] - diff[:, 2:]).abs() * mask[:, 0:-2] * mask[:, 2:]
        loss = loss + (horizontal.sum() + vertical.sum()) / count
    return loss


# ------------------------------------------------------------------------------------ inference
def predict_depth(head: DepthBinsHead, features: FrozenFeatures, images: torch.Tensor, *, flip: bool,
                  min_depth: float, max_depth: float) -> torch.Tensor:
    """Depth ``[B, H, W]`` of whole images: head output resized to the image, optionally flip-averaged."""
    size = tuple(images.shape[-2:])

    def once(batch):
        patches, cls = features(batch)
        return head(patches, cls, size).clamp(min_depth, max_depth)  # [B, H, W]

    prediction = once(images)
    if flip:
        prediction = (prediction + once(images.flip(-1)).flip(-1)) / 2
    return prediction


def evaluation_target(depth: torch.Tensor, spec: DepthDataSpec) -> torch.Tensor:
    """Ground truth with invalid pixels set to 0: outside ``(min_depth, max_depth)`` or the eval crop."""
    if spec.eval_size is not None and tuple(depth.shape) != tuple(spec.eval_size):
        depth = F.interpolate(depth[None, None], size=spec.eval_size, mode="bilinear", align_corners=False)[0, 0]
    valid = (depth > spec.min_depth) & (depth < spec.max_depth)
    if spec.eval_crop:
        crop = torch.zeros_like(valid)
        crop[EVAL_CROP] = True
        valid &= crop
    return torch.where(valid, depth, torch.zeros_like(depth))


def per_image_metrics(prediction: torch.Tensor, target: torch.Tensor) -> dict | None:
    """Metrics of one image (``None`` when it has no valid pixel; the official ``nanmean`` skips it)."""
    if tuple(prediction.shape) != tuple(target.shape):
        prediction = F.interpolate(prediction[None, None], size=target.shape, mode="bilinear",
                                   align_corners=False)[0, 0]
    if not (target > 0).any():
        return None
    return depth_metrics(prediction[None].cpu().numpy(), target[None].cpu().numpy())


# ------------------------------------------------------------------------------------ run
def _augmented_sample(item: dict, rng: np.random.Generator, *, nyu_train_crop: bool, protocol: "DepthProtocol"):
    return augment.depth_train_augment(
        item["image"], item["depth"], rng, nyu_train_crop=nyu_train_crop, crop_size=protocol.crop_size,
        rotate_prob=protocol.rotate_prob, rotate_degrees=protocol.rotate_degrees, flip_prob=protocol.flip_prob,
        color_prob=protocol.color_prob)


def evaluate(head: DepthBinsHead, features: FrozenFeatures, test, spec: DepthDataSpec, protocol: "DepthProtocol",
             device, max_test_images: int | None = None) -> dict:
    """The official test: whole images, flip-averaged, per-image metrics then their mean (NaN images skipped)."""
    head.eval()
    per_image = []
    count = len(test) if max_test_images is None else min(len(test), int(max_test_images))
    with torch.no_grad():
        for index in range(count):
            item = test[index]
            prediction = predict_depth(head, features, item["image"][None].to(device), flip=protocol.flip_test,
                                       min_depth=spec.min_depth, max_depth=spec.max_depth)[0]
            result = per_image_metrics(prediction.cpu(), evaluation_target(item["depth"], spec))
            if result is not None:
                per_image.append(result)
    head.train()
    if not per_image:
        raise ValueError("depth: no test image has a valid ground-truth pixel")
    metrics = {key: float(np.mean([r[key] for r in per_image])) for key in ("rmse", "abs_rel", "d1", "d2", "d3")}
    metrics["num_images"] = len(per_image)
    return metrics


def run(backbone: torch.nn.Module, data_dir, *, dataset: str, max_iters: int | None = None, output_dir=None,
        device=None, seed: int = 0, batch_size: int | None = None, max_test_images: int | None = None,
        num_workers: int | None = None, protocol: DepthProtocol | None = None, progress: bool = False) -> dict:
    """Train the authors' depth probe on ``dataset`` and evaluate it; returns metrics and ``settings``.

    ``max_iters`` stops training after that many iterations of the *official* schedule (the
    learning rate and momentum still follow the 307,200-iteration curves), for smoke runs.
    ``batch_size`` overrides the official 2 (note: with more than 2 the official gradient-loss
    call stops being 0). ``max_test_images`` evaluates only the first test images.
    The test set is evaluated every ``protocol.eval_interval`` iterations (the official EvalHook:
    38,400) and at the end; ``metrics`` are the last evaluation's, ``evaluations`` lists all and
    ``best`` is the one with the lowest AbsRel (the official ``save_best="abs_rel"``).
    ``num_workers`` loader processes augment the training images (default 0 on CPU, 4 on GPU);
    each sample has its own seed, so results do not depend on it.
    """
    protocol = protocol or DepthProtocol()
    if batch_size is not None:
        protocol = replace(protocol, batch_size=int(batch_size))
    device = resolve_device(device)
    train, test, spec = depth_datasets(dataset, data_dir)
    features = FrozenFeatures(backbone, final_norm=protocol.final_norm, device=device,
                              position_interpolation=protocol.position_interpolation)
    lr_schedule = schedules.CosineAnnealingLR(protocol.lr, protocol.max_iters, protocol.warmup_iters,
                                              protocol.warmup_ratio, protocol.min_lr_ratio)
    momentum = schedules.OneCycleMomentum(protocol.max_iters, protocol.momentum_cycle[0], protocol.momentum_cycle[1],
                                          protocol.momentum_pct_start)
    iterations = protocol.max_iters if max_iters is None else min(int(max_iters), protocol.max_iters)
    if iterations < 1:
        raise ValueError("depth: max_iters must be >= 1")
    plan = sample_plan(len(train), protocol.batch_size, iterations, seed)
    batches = training_batches(train, plan, partial(_augmented_sample, nyu_train_crop=spec.nyu_train_crop,
                                                    protocol=protocol),
                               num_workers=default_workers(device, num_workers))

    head = optimizer = None
    losses, evaluations, timer, eval_seconds = [], [], Timer(), 0.0
    for iteration in range(iterations):
        images, depths = next(batches)
        images = images.to(device)  # [B, 3, h, w]
        target = depths[:, None].to(device)  # [B, 1, h, w]
        patches, cls = features(images)
        if head is None:
            torch.manual_seed(seed)
            head = DepthBinsHead(patches.shape[1], min_depth=spec.min_depth, max_depth=spec.max_depth,
                                 num_bins=protocol.num_bins, upsample=protocol.upsample,
                                 use_cls=protocol.use_cls).to(device)
            optimizer = torch.optim.AdamW(head.parameters(), lr=protocol.lr, betas=protocol.betas,
                                          weight_decay=protocol.weight_decay)
        schedules.apply(optimizer, lr_schedule(iteration), momentum(iteration))
        prediction = head(patches, cls, target.shape[-2:])[:, None]  # [B, 1, h, w]
        warm = iteration < protocol.sigloss_warmup_calls  # SigLoss counts its own calls: one per iteration
        loss_sig = official_sig_loss(prediction, target, warm_up=warm, unbiased=protocol.sigloss_unbiased_variance)
        if protocol.gradient_loss_as_called:
            loss_grad = official_gradient_loss(prediction, target)
        else:  # the loss the code intended: per image on [H, W]
            loss_grad = sum(official_gradient_loss(p[0], t[0]) for p, t in zip(prediction, target)) / len(prediction)
        loss = loss_sig + protocol.gradient_loss_weight * loss_grad
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in head.parameters() if p.grad is not None], protocol.grad_clip)
        optimizer.step()
        losses.append({"iteration": iteration, "loss": loss.item(), "sig": loss_sig.item(), "grad": loss_grad.item(),
                       "lr": lr_schedule(iteration), "beta1": momentum(iteration)})
        done = iteration + 1
        if done == iterations or (protocol.eval_interval and done % protocol.eval_interval == 0):
            eval_timer = Timer()
            metrics = evaluate(head, features, test, spec, protocol, device, max_test_images)
            eval_seconds += eval_timer.seconds()
            evaluations.append({"iteration": done, "metrics": metrics})
    train_seconds = timer.seconds() - eval_seconds

    metrics = evaluations[-1]["metrics"]
    best = min(evaluations, key=lambda entry: entry["metrics"]["abs_rel"])
    settings = protocol_settings(protocol, spec, features, dataset, iterations)
    return finish_training_task("depth", dataset, head, settings, output_dir, iterations=iterations,
                                train_seconds=train_seconds, eval_seconds=eval_seconds, losses=losses,
                                metrics=metrics, best=best, evaluations=evaluations)


def protocol_settings(protocol: DepthProtocol, spec: DepthDataSpec, features: FrozenFeatures, dataset: str,
                      iterations: int) -> dict:
    settings = dict(asdict(protocol))
    settings.update(
        dataset=dataset, iterations_run=iterations, optimizer="AdamW (weight decay on all head parameters)",
        lr_schedule=f"mmcv CosineAnnealing from iteration 0, linear warm-up {protocol.warmup_iters} it "
                    f"(ratio {protocol.warmup_ratio}), min_lr_ratio {protocol.min_lr_ratio}",
        momentum_schedule="mmcv OneCycle beta1 0.95 -> 0.85 -> 0.95 (pct_start 0.3, cosine)",
        loss="SigLoss(warm-up 100 calls, unbiased var) + 0.5 x GradientLoss as called on [B,1,H,W]"
             + (" (identically 0)" if protocol.gradient_loss_as_called and protocol.batch_size <= 2 else ""),
        head="BNHead without BatchNorm: [patch, CLS] -> bilinear x4 -> 1x1 conv -> 256 UD bins, linear norm",
        train_augmentation=("NYUCrop, " if spec.nyu_train_crop else "") + "RandomRotate(0.5, 2.5 deg), "
        "RandomFlip(0.5), RandomCrop(416x544), ColorAug(0.5)",
        test="whole image, centre-padded" + (", flip averaged" if protocol.flip_test else ""),
        valid_depth=f"open interval ({spec.min_depth}, {spec.max_depth})",
        eval_crop="rows 45:471, cols 41:601" if spec.eval_crop else "none",
        eval_size=spec.eval_size, metric_aggregation="per image, then mean over images",
        **{"features_" + key: value for key, value in features.settings().items()},
    )
    return settings
