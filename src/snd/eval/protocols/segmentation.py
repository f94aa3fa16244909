"""Semantic segmentation linear probe exactly as the SnD authors ran it (``evaluation1/``, mmseg configs).

From ``baseline_configs/vits_{nyu,scannet,scannetpp}_sem_linear_config.py`` and the code they run:

* features: the last block **with** the final LayerNorm (``get_intermediate_layers(n=[8, 9, 10, 11])``,
  ``in_index=[3]``), no CLS token; images centre-padded with zeros to patch multiples.
* backbone: ``evaluation1/utils/model_utils.py`` builds timm 0.9.10's ``vit_{small,base}_patch14_dinov2``
  (``dynamic_img_size=True``) and loads the SnD ``.pth`` into it; its forward equals the SnD/DINOv2 one except
  that position embeddings are resampled by ``resample_abs_pos_embed`` (bicubic to the exact grid,
  antialiased). ``position_interpolation="timm"`` (default) makes an SnD model do the same for this task.
* head: SnD's ``BNHead`` has **no BatchNorm** (FiT3D's has SyncBN; the config's ``norm_cfg`` is
  unused): one 1x1 convolution (``conv_seg``, no dropout) on the patch grid; logits resized bilinearly
  to the labels. Initialisation: torch's default ``Conv2d`` one (weights and bias uniform in
  +-1/sqrt(C): std 0.0295 for ViT-S, 0.0208 for ViT-B), because ``evaluation1`` never calls
  ``init_weights()`` (``create_segmentor`` -> ``build_segmentor`` -> ``train_segmentor``), so the
  ``init_cfg=Normal(std=0.01, override=conv_seg)`` its decode head declares is never applied;
  ``SegmentationProtocol(init_std=0.01)`` applies it (mmseg's ``tools/train.py`` would).
  The depth head's ``conv_depth`` has no ``init_cfg``: torch's default there too.
* loss: mmseg ``CrossEntropyLoss`` with ``avg_non_ignore=False``: the sum over non-ignored pixels
  divided by **all** pixels of the batch (ignored ones included); ignore index 255.
* optimiser: AdamW lr 1e-3, weight decay 1e-4, no gradient clipping; mmcv poly decay (power 1,
  min_lr 0) with a linear warm-up over 1,500 iterations from ratio 1e-6; 320,000 iterations of batch 2
  (one GPU: ``gpu_ids = range(1)``), shuffled epochs, ``drop_last=True``.
* train augmentation per iteration: Resize (``img_scale=(2048, 512)``, ratio 0.5-2, keep ratio),
  RandomCrop 512 x 512 (``cat_max_ratio=0.75``), RandomFlip (p 0.5), PhotoMetricDistortion,
  Pad to 512 x 512 (image 0 after normalising, labels 255).
* test: resize keeping the ratio to fit (2048, 512) (short side 512 for 4:3 frames), sliding 512 x 512
  windows with stride 341, window logits averaged, resized to the original image, softmax, argmax; no flip.
* metric: mmseg mIoU: intersections and unions summed over the test set, mean over classes with a
  non-empty union.
* labels: ``reduce_zero_label`` (0 -> ignored, k -> k - 1); NYUv2 with 13 classes, ScanNet 40, ScanNet++ 100.
* NYUv2 test set per model size, as released: ``baseline_configs/vits_nyu_sem_linear_config.py`` tests on
  ``nyu_test_rgb_vis`` / ``nyuv2_test_class13_vis`` (the full set is commented out there), the ViT-B config
  on the full ``nyu_test_rgb`` / ``nyuv2_test_class13``. ``nyu_test_set="auto"`` picks ``vis`` for a
  384-wide (ViT-S) backbone and ``full`` otherwise; ``"full"`` / ``"vis"`` force one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from functools import partial

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import augment, schedules
from .common import (FrozenFeatures, Timer, default_workers, finish_training_task, resolve_device, sample_plan,
                     training_batches)
from .data import IGNORE_INDEX, segmentation_datasets
from .sliding import slide_inference


@dataclass(frozen=True)
class SegmentationProtocol:
    """Every setting of the authors' segmentation probe (defaults = their configs)."""

    max_iters: int = 320_000
    batch_size: int = 2
    lr: float = 1e-3
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_iters: int = 1_500
    warmup_ratio: float = 1e-6
    poly_power: float = 1.0
    min_lr: float = 0.0
    img_scale: tuple[int, int] = (2048, 512)
    ratio_range: tuple[float, float] = (0.5, 2.0)
    crop_size: tuple[int, int] = (512, 512)
    cat_max_ratio: float = 0.75
    flip_prob: float = 0.5
    test_crop: tuple[int, int] = (512, 512)
    test_stride: tuple[int, int] = (341, 341)
    batch_norm: bool = False  # SnD's head; FiT3D's own head has SyncBN
    final_norm: bool = True
    init_std: float | None = None  # None: torch's default Conv2d init (evaluation1 never calls init_weights)
    eval_interval: int = 40_000  # evaluation=dict(interval=40000, metric="mIoU")
    nyu_test_set: str = "auto"  # auto (ViT-S: vis, else full, as the released configs) | full | vis
    position_interpolation: str | None = "timm"  # evaluation1's timm backbone; None: the model's own setting


def resolve_test_set(protocol: SegmentationProtocol, dataset: str, backbone) -> str:
    """``"full"`` or ``"vis"``: the test set the released config of this model size uses on ``dataset``."""
    choice = protocol.nyu_test_set
    if choice not in ("auto", "full", "vis"):
        raise ValueError(f"nyu_test_set must be auto, full or vis, got {choice!r}")
    if dataset != "nyuv2":
        return "full"
    if choice != "auto":
        return choice
    hidden = getattr(getattr(backbone, "config", None), "hidden_size", None)
    return "vis" if hidden == 384 else "full"  # vits_nyu_sem config: *_vis; vitb_nyu_sem config: full


class LinearSegmentationHead(nn.Module):
    """``BNHead`` as SnD runs it: [optional BatchNorm] + 1x1 conv on the patch grid -> ``[B, K, h, w]``."""

    def __init__(self, channels: int, num_classes: int, batch_norm: bool = False, init_std: float | None = None):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels) if batch_norm else nn.Identity()
        self.conv_seg = nn.Conv2d(channels, num_classes, kernel_size=1)  # torch default init, as evaluation1
        if init_std is not None:  # the decode head's declared init_cfg (applied only by init_weights())
            nn.init.normal_(self.conv_seg.weight, mean=0.0, std=init_std)
            nn.init.zeros_(self.conv_seg.bias)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:  # [B, C, h, w] -> [B, K, h, w]
        return self.conv_seg(self.norm(patches))


def mmseg_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """mmseg ``CrossEntropyLoss(avg_non_ignore=False)``: per-pixel CE (0 where ignored) averaged over all pixels."""
    loss = F.cross_entropy(logits, labels, reduction="none", ignore_index=ignore_index)  # [B, H, W]
    return loss.sum() / labels.numel()


def predict_logits(head: LinearSegmentationHead, features: FrozenFeatures, image: torch.Tensor,
                   protocol: SegmentationProtocol, num_classes: int) -> torch.Tensor:
    """Class probabilities ``[1, K, H, W]`` of one image ``[1, 3, H, W]`` (original size) by the test pipeline."""
    height, width = image.shape[-2:]
    size = augment.rescale_size(height, width, protocol.img_scale)
    resized = augment.resize_image(augment.quantize_uint8(image[0]), size)[None]

    def window(crop):
        patches, _ = features(crop)
        return F.interpolate(head(patches), size=crop.shape[-2:], mode="bilinear", align_corners=False)

    logits = slide_inference(window, resized, num_classes, protocol.test_crop, protocol.test_stride)
    logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
    return logits.softmax(dim=1)


def confusion(prediction: np.ndarray, labels: np.ndarray, num_classes: int, ignore_index: int = IGNORE_INDEX):
    """``[K, K]`` counts (rows ground truth, columns prediction) over non-ignored pixels."""
    valid = labels != ignore_index
    index = labels[valid].astype(np.int64) * num_classes + prediction[valid].astype(np.int64)
    return np.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def miou_from_confusion(matrix: np.ndarray) -> dict:
    """mmseg ``total_area_to_metrics``: IoU per class = I / (pred + gt - I); mIoU = nanmean; aAcc = sum I / sum gt."""
    intersect = np.diag(matrix).astype(np.float64)
    area_label, area_pred = matrix.sum(axis=1).astype(np.float64), matrix.sum(axis=0).astype(np.float64)
    union = area_label + area_pred - intersect
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = intersect / union
    return {"mean_iou": float(np.nanmean(iou) * 100), "pixel_accuracy": float(intersect.sum() / area_label.sum() * 100),
            "per_class_iou": [float(v * 100) for v in iou]}


def _augmented_sample(item: dict, rng: np.random.Generator, *, protocol: SegmentationProtocol, pad_fill):
    return augment.segmentation_train_augment(
        item["image"], item["labels"], rng, img_scale=protocol.img_scale, ratio_range=protocol.ratio_range,
        crop_size=protocol.crop_size, cat_max_ratio=protocol.cat_max_ratio, flip_prob=protocol.flip_prob,
        pad_fill=pad_fill)


def evaluate(head: LinearSegmentationHead, features: FrozenFeatures, test, num_classes: int,
             protocol: SegmentationProtocol, device, max_test_images: int | None = None) -> dict:
    """The official test pipeline over the test set; mmseg mIoU from dataset-level sums."""
    head.eval()
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    count = len(test) if max_test_images is None else min(len(test), int(max_test_images))
    with torch.no_grad():
        for index in range(count):
            item = test[index]
            probabilities = predict_logits(head, features, item["image"][None].to(device), protocol, num_classes)
            prediction = probabilities.argmax(dim=1)[0].cpu().numpy()
            matrix += confusion(prediction, item["labels"].numpy(), num_classes)
    head.train()
    metrics = miou_from_confusion(matrix)
    metrics["num_images"] = count
    return metrics


def run(backbone: torch.nn.Module, data_dir, *, dataset: str, max_iters: int | None = None, output_dir=None,
        device=None, seed: int = 0, batch_size: int | None = None, max_test_images: int | None = None,
        num_workers: int | None = None, protocol: SegmentationProtocol | None = None, progress: bool = False,
        nyu_test_set: str | None = None) -> dict:
    """Train the authors' segmentation probe on ``dataset`` and evaluate it; returns metrics and ``settings``.

    ``max_iters`` stops after that many iterations of the *official* schedule (the learning rate
    still follows the 320,000-iteration poly curve); ``batch_size`` overrides the official 2.
    The test set is evaluated every ``protocol.eval_interval`` iterations (official: 40,000) and
    at the end; ``metrics`` are the last evaluation's, ``evaluations`` lists all.
    ``num_workers``: loader processes for the augmentation (default 0 on CPU, 4 on GPU).
    ``nyu_test_set``: overrides ``protocol.nyu_test_set`` (``auto`` / ``full`` / ``vis``).
    """
    protocol = protocol or SegmentationProtocol()
    if batch_size is not None:
        protocol = replace(protocol, batch_size=int(batch_size))
    if nyu_test_set is not None:
        protocol = replace(protocol, nyu_test_set=nyu_test_set)
    device = resolve_device(device)
    test_set = resolve_test_set(protocol, dataset, backbone)
    train, test, spec = segmentation_datasets(dataset, data_dir, test_set=test_set)
    features = FrozenFeatures(backbone, final_norm=protocol.final_norm, device=device,
                              position_interpolation=protocol.position_interpolation)
    lr_schedule = schedules.PolyLR(protocol.lr, protocol.max_iters, protocol.poly_power, protocol.min_lr,
                                   protocol.warmup_iters, protocol.warmup_ratio)
    iterations = protocol.max_iters if max_iters is None else min(int(max_iters), protocol.max_iters)
    if iterations < 1:
        raise ValueError("segmentation: max_iters must be >= 1")
    plan = sample_plan(len(train), protocol.batch_size, iterations, seed)
    batches = training_batches(train, plan, partial(_augmented_sample, protocol=protocol, pad_fill=features.mean),
                               num_workers=default_workers(device, num_workers))

    head = optimizer = None
    losses, evaluations, timer, eval_seconds = [], [], Timer(), 0.0
    for iteration in range(iterations):
        images, labels = next(batches)
        images = images.to(device)  # [B, 3, 512, 512]
        labels = labels.to(device)  # [B, 512, 512]
        patches, _ = features(images)
        if head is None:
            torch.manual_seed(seed)
            head = LinearSegmentationHead(patches.shape[1], spec.num_classes, protocol.batch_norm,
                                          protocol.init_std).to(device)
            optimizer = torch.optim.AdamW(head.parameters(), lr=protocol.lr, betas=protocol.betas,
                                          weight_decay=protocol.weight_decay)
        schedules.apply(optimizer, lr_schedule(iteration))
        logits = F.interpolate(head(patches), size=labels.shape[-2:], mode="bilinear", align_corners=False)
        loss = mmseg_cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append({"iteration": iteration, "loss": loss.item(), "lr": lr_schedule(iteration)})
        done = iteration + 1
        if done == iterations or (protocol.eval_interval and done % protocol.eval_interval == 0):
            eval_timer = Timer()
            metrics = evaluate(head, features, test, spec.num_classes, protocol, device, max_test_images)
            eval_seconds += eval_timer.seconds()
            evaluations.append({"iteration": done, "metrics": metrics})
    train_seconds = timer.seconds() - eval_seconds
    metrics = evaluations[-1]["metrics"]

    settings = dict(asdict(protocol))
    settings.update(
        dataset=dataset, num_classes=spec.num_classes, iterations_run=iterations, test_set=test_set,
        test_images=len(test),
        optimizer="AdamW, no gradient clipping",
        lr_schedule=f"mmcv poly (power {protocol.poly_power}) with linear warm-up {protocol.warmup_iters} it "
                    f"(ratio {protocol.warmup_ratio})",
        head="1x1 conv on last-layer patch tokens" + (" after BatchNorm" if protocol.batch_norm else ", no BatchNorm")
             + (", torch default init (init_weights never called)" if protocol.init_std is None
                else f", normal init std {protocol.init_std}"),
        loss="mmseg cross-entropy, sum over labelled pixels / all pixels",
        train_augmentation="Resize((2048,512), ratio 0.5-2), RandomCrop(512, cat_max_ratio 0.75), RandomFlip(0.5), "
                           "PhotoMetricDistortion, Pad(512)",
        test=f"resize to fit {protocol.img_scale}, sliding {protocol.test_crop} windows stride {protocol.test_stride}",
        metric="mmseg mIoU (dataset-level intersections / unions)",
        **{"features_" + key: value for key, value in features.settings().items()},
    )
    return finish_training_task("segmentation", dataset, head, settings, output_dir, iterations=iterations,
                                train_seconds=train_seconds, eval_seconds=eval_seconds, losses=losses,
                                metrics=metrics, evaluations=evaluations)
