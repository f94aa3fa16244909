"""Surface normals under ``--protocol snd``: Probe3D's ``train_snorm.py`` as the SnD authors ran it.

What the official code does (``evaluation2/train_snorm.py`` with ``configs/snorm_training.yaml``,
``probe/snorm_linear.yaml``, ``optimizer/ten_epoch.yaml``, ``dataset/nyu.yaml``), restated here:

* Backbone features: the last block's output **before** the final LayerNorm (Probe3D
  ``DINO.forward``, ``layer=-1``), images ImageNet-normalised then **zero-padded** to patch
  multiples (480 x 480 -> 490 x 490, 35 x 35 patches at patch 14). Frozen, no gradient.
* Data: train on NYU GeoNet ``trainval`` (every frame, sorted file order, **not shuffled**, batch 8,
  last batch kept), test on Probe3D's NYUv2 test split; both on the **480 x 480 centre crop**
  (``[..., 80:-80]``).
* Train augmentation (``augment_train=True``; ``"train" in "trainval"``): colour jitter
  (brightness, contrast, saturation, hue 0.2) with p = 0.8 on the full frame, then the centre
  crop, then a square random resized crop (scale 0.5-1, ratio 1, nearest, back to 480 x 480)
  with p = 0.5, applied to image, depth and normals alike. No flip, no rotation
  (``rotateflip=False``).
* Head (``SurfaceNormalHead``, ``uncertainty_aware=True``, linear, kernel 1): features x4
  bilinear (``align_corners=False``) -> 1x1 conv to **4 channels** (normal + uncertainty) ->
  bicubic to the target size with ``align_corners=True``.
* Loss: uncertainty-aware angular loss (Bae et al.) over pixels with depth > 0:
  ``kappa = elu(k) + 1.01``, ``loss = log(1 + exp(-kappa pi)) - log(1 + kappa^2) + kappa * angle``,
  ``angle = acos(clamp(cos_sim(n, gt), -1 + 1e-4, 1 - 1e-4))``.
* Optimiser: AdamW (lr 5e-4, torch defaults: betas 0.9 / 0.999, weight decay 0.01), 10 epochs,
  ``LambdaLR`` with ``cosine_decay_linear_warmup`` (1.5 warm-up epochs from 1 % to 100 %, then a
  quarter cosine down to 1 %), stepped after every batch.
* Metrics (``evaluate_surface_norm``): per-image angular RMSE and % of pixels under 11.25, 22.5
  and 30 degrees over depth > 0, then the mean over images. Ground-truth normals of zero length
  inside that mask count as **90 degrees** (cosine similarity with a zero vector is 0); this is
  how the published numbers were computed, so this protocol reproduces it
  (``zero_normals="count_90"``).

Not reproduced (no effect on the numbers): the per-epoch validation passes, DDP. The official
script sets no random seed; ``seed`` here seeds augmentation and the probe initialisation.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .augment import nearest_indices  # noqa: F401  (OpenCV INTER_NEAREST index rule, shared with segmentation)
from .data_probe3d import NYU_TEST_FILE, GeoNetNormals, NYUTestNormals

PROTOCOL_VERSION = "probe3d-snorm-1"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_MARGIN = 80  # Probe3D centre crop: [..., 80:-80] on 480 x 640 frames -> 480 x 480
DATASETS = ("nyuv2",)

SETTINGS = {
    "protocol": "snd",
    "protocol_version": PROTOCOL_VERSION,
    "source": "SnD evaluation2/train_snorm.py (Probe3D), configs snorm_training + snorm_linear + ten_epoch + nyu",
    "train_data": "NYU GeoNet trainval (sorted, not shuffled; Probe3D bad indices 21181, 6919 removed)",
    "test_data": "NYUv2 test split (Probe3D nyuv2_snorm_all.pkl)",
    "crop": "480x480 centre crop ([..., 80:-80]) for train and test",
    "features": "last block output before the final LayerNorm, patch tokens only",
    "padding": "zero padding to patch multiples after ImageNet normalisation (Probe3D center_padding)",
    "image_mean": list(IMAGENET_MEAN),
    "image_std": list(IMAGENET_STD),
    "augmentation": "ColorJitter(0.2, 0.2, 0.2, 0.2) p=0.8 on the full frame; RandomResizedCrop(480, scale 0.5-1, ratio 1, nearest) p=0.5",
    "head": "x4 bilinear (align_corners=False) -> 1x1 conv -> 4 channels (normal + kappa) -> bicubic align_corners=True",
    "loss": "uncertainty-aware angular loss, kappa = elu + 1.01, angle clamp eps 1e-4, mean over depth > 0",
    "optimizer": "AdamW lr 5e-4 (betas 0.9/0.999, weight decay 0.01)",
    "schedule": "LambdaLR cosine_decay_linear_warmup: 10 epochs, 1.5 warm-up epochs, min factor 0.01, per batch",
    "batch_size": 8,
    "epochs": 10,
    "warmup_epochs": 1.5,
    "lr": 5e-4,
    "metric": "per-image angular RMSE and % < 11.25/22.5/30 deg over depth > 0, mean over images",
    "zero_normals": "count_90",
}


# ----------------------------------------------------------------------------------- transforms
def center_crop(tensor: torch.Tensor, margin: int = CROP_MARGIN) -> torch.Tensor:
    """Probe3D's centre crop ``[..., margin:-margin]`` on the last (width) axis."""
    return tensor[..., margin:-margin]


def _blend(image: torch.Tensor, other: torch.Tensor, ratio: float) -> torch.Tensor:
    return (ratio * image + (1.0 - ratio) * other).clamp(0.0, 1.0)


def _grayscale(image: torch.Tensor) -> torch.Tensor:  # [3, H, W] -> [1, H, W]
    return (0.2989 * image[0] + 0.587 * image[1] + 0.114 * image[2])[None]


def rgb_to_hsv(image: torch.Tensor) -> torch.Tensor:
    """``[3, H, W]`` RGB in [0, 1] -> HSV in [0, 1] (torchvision's tensor formulas)."""
    r, g, b = image.unbind(0)
    maxc, minc = image.max(0).values, image.min(0).values
    equal = maxc == minc
    chroma = maxc - minc
    ones = torch.ones_like(maxc)
    saturation = chroma / torch.where(equal, ones, maxc)
    divisor = torch.where(equal, ones, chroma)
    rc, gc, bc = (maxc - r) / divisor, (maxc - g) / divisor, (maxc - b) / divisor
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    hue = torch.fmod((hr + hg + hb) / 6.0 + 1.0, 1.0)
    return torch.stack([hue, saturation, maxc])


def hsv_to_rgb(image: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_hsv`."""
    h, s, v = image.unbind(0)
    sector = torch.floor(h * 6.0)
    fraction = h * 6.0 - sector
    sector = sector.to(torch.int64) % 6
    p = (v * (1.0 - s)).clamp(0.0, 1.0)
    q = (v * (1.0 - s * fraction)).clamp(0.0, 1.0)
    t = (v * (1.0 - s * (1.0 - fraction))).clamp(0.0, 1.0)
    table = torch.stack([  # [3 channels, 6 sectors, H, W]
        torch.stack([v, q, p, p, t, v]), torch.stack([t, v, v, q, p, p]), torch.stack([p, p, t, v, v, q])
    ])
    return table.gather(1, sector[None, None].expand(3, 1, *sector.shape))[:, 0]


def adjust_hue(image: torch.Tensor, factor: float) -> torch.Tensor:
    hsv = rgb_to_hsv(image)
    hsv = torch.stack([torch.remainder(hsv[0] + factor, 1.0), hsv[1], hsv[2]])
    return hsv_to_rgb(hsv)


def color_jitter(image: torch.Tensor, generator: torch.Generator | None = None, strength: float = 0.2,
                 p: float = 0.8) -> torch.Tensor:
    """``RandomApply([ColorJitter(s, s, s, s)], p)`` on a ``[3, H, W]`` image in [0, 1] (torchvision semantics).

    With probability ``p``: brightness, contrast, saturation factors uniform in ``[1 - s, 1 + s]``
    and a hue shift uniform in ``[-s, s]``, applied in a random order; contrast blends with the
    mean grey level of the whole image.
    """
    if torch.rand(1, generator=generator).item() >= p:
        return image
    order = torch.randperm(4, generator=generator).tolist()
    factors = [float(torch.empty(1).uniform_(1 - strength, 1 + strength, generator=generator)) for _ in range(3)]
    hue = float(torch.empty(1).uniform_(-strength, strength, generator=generator))
    for op in order:
        if op == 0:
            image = _blend(image, torch.zeros_like(image), factors[0])
        elif op == 1:
            image = _blend(image, _grayscale(image).mean(), factors[1])
        elif op == 2:
            image = _blend(image, _grayscale(image), factors[2])
        else:
            image = adjust_hue(image, hue)
    return image


def random_resized_crop(tensors: list[torch.Tensor], generator: torch.Generator | None = None,
                        scale: tuple[float, float] = (0.5, 1.0), p: float = 0.5) -> list[torch.Tensor]:
    """Square random resized crop shared by ``[C, H, W]`` tensors, back to ``H x W``, with probability ``p``.

    albumentations 1.3.1 ``RandomResizedCrop(H, W, scale, ratio=(1, 1), interpolation=INTER_NEAREST)``:
    side ``round(sqrt(U(scale) * H * W))`` (Python rounding), top-left corner uniform over the
    valid integer positions, OpenCV nearest-neighbour resize (:func:`nearest_indices`).
    """
    if torch.rand(1, generator=generator).item() >= p:
        return tensors
    height, width = tensors[0].shape[-2:]
    area = float(torch.empty(1).uniform_(scale[0], scale[1], generator=generator)) * height * width
    side = int(round(math.sqrt(area)))
    side = max(1, min(side, height, width))
    top = int(torch.randint(0, height - side + 1, (1,), generator=generator))
    left = int(torch.randint(0, width - side + 1, (1,), generator=generator))
    rows = top + nearest_indices(side, height)  # [H]
    cols = left + nearest_indices(side, width)  # [W]
    return [t[:, rows][:, :, cols] for t in tensors]


class GeoNetTrainTransform(torch.utils.data.Dataset):
    """GeoNet frames with Probe3D's training transform: jitter (full frame) -> centre crop -> random resized crop.

    Each draw uses its own generator seeded from ``(seed, epoch, index)``, so results do not
    depend on the number of DataLoader workers; call :meth:`set_epoch` before each epoch.
    """

    def __init__(self, base: GeoNetNormals, augment: bool = True, seed: int = 0):
        self.base, self.augment, self.seed, self.epoch = base, augment, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.base)

    def generator(self, index: int) -> torch.Generator:
        state = np.random.SeedSequence([self.seed, self.epoch, int(index)]).generate_state(2, dtype=np.uint32)
        return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))

    def __getitem__(self, index: int) -> dict:
        item = self.base[index]
        generator = self.generator(index)
        image = color_jitter(item["image"], generator) if self.augment else item["image"]
        image, depth, snorm = (center_crop(t) for t in (image, item["depth"], item["snorm"]))
        if self.augment:
            image, depth, snorm = random_resized_crop([image, depth, snorm], generator)
        return {"image": image, "depth": depth, "snorm": snorm}


class NYUTestTransform(torch.utils.data.Dataset):
    """Probe3D's NYU test items on the 480 x 480 centre crop."""

    def __init__(self, base: NYUTestNormals):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict:
        item = self.base[index]
        return {key: center_crop(item[key]) for key in ("image", "depth", "snorm")}


# ----------------------------------------------------------------------------------- head and loss
class UncertaintyNormalsHead(nn.Module):
    """Probe3D ``SurfaceNormalHead(head_type="linear", kernel_size=1)``.

    ``forward(features [B, C, h, w], size)`` -> ``[B, 4, H, W]`` (3 normal channels, not normalised,
    plus the uncertainty logit): x4 bilinear, 1x1 conv, bicubic ``align_corners=True`` to ``size``.
    ``uncertainty_aware=False`` gives 3 channels.
    """

    def __init__(self, channels: int, uncertainty_aware: bool = True, kernel_size: int = 1, upsample: int = 4):
        super().__init__()
        self.upsample = upsample
        self.conv = nn.Conv2d(channels, 4 if uncertainty_aware else 3, kernel_size, padding=kernel_size // 2)

    def forward(self, features: torch.Tensor, size=None) -> torch.Tensor:
        x = F.interpolate(features, scale_factor=self.upsample, mode="bilinear", align_corners=False)
        x = self.conv(x)  # [B, 4, 4h, 4w]
        if size is not None:
            x = F.interpolate(x, size=tuple(size), mode="bicubic", align_corners=True)
        return x


def uncertainty_angular_loss(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                             uncertainty_aware: bool = True, eps: float = 1e-4) -> torch.Tensor:
    """Probe3D ``angular_loss``: mean over ``mask`` ``[B, 1, H, W]`` of the (uncertainty-aware) angle.

    ``prediction`` ``[B, 4, H, W]`` (normal, kappa logit) or ``[B, 3, H, W]``; ``target`` ``[B, 3, H, W]``.
    Zero-length targets inside the mask give cos_sim 0, an angle of pi / 2, as in Probe3D.
    """
    if mask.ndim != 4:
        raise ValueError(f"angular loss: mask should be [B, 1, H, W], got {tuple(mask.shape)}")
    mask = mask[:, 0].bool()
    expected = 4 if uncertainty_aware else 3
    if prediction.shape[1] != expected:
        raise ValueError(f"angular loss: uncertainty_aware={uncertainty_aware} needs {expected} channels, got {prediction.shape[1]}")
    angle = F.cosine_similarity(prediction[:, :3], target, dim=1).clamp(-1 + eps, 1 - eps).acos()  # [B, H, W]
    if uncertainty_aware:
        kappa = F.elu(prediction[:, 3]) + 1.01
        loss = torch.log(1 + torch.exp(-kappa * math.pi)) - torch.log(kappa.pow(2) + 1) + kappa * angle
    else:
        loss = angle
    return loss[mask].mean()


def lr_factor(step: float, max_step: float, warmup_step: float, min_factor: float = 0.01) -> float:
    """Probe3D ``cosine_decay_linear_warmup``: the ``LambdaLR`` factor at scheduler step ``step``."""
    if not max_step > warmup_step:
        raise ValueError(f"schedule: max_step ({max_step}) must exceed warmup_step ({warmup_step})")
    spread = 1 - min_factor
    if step <= warmup_step:
        return spread * (step / warmup_step) + min_factor
    return spread * math.cos(0.5 * math.pi * (step - warmup_step) / (max_step - warmup_step)) + min_factor


# ----------------------------------------------------------------------------------- run
def resolve_paths(data_dir: str | Path) -> tuple[Path, Path]:
    """``(geonet folder, test pickle)`` under ``data_dir`` (Probe3D's ``data/`` layout).

    Accepts ``data_dir/nyu_geonet/`` + ``data_dir/nyuv2/nyuv2_snorm_all.pkl`` (Probe3D) or
    ``data_dir/nyuv2_snorm_all.pkl``.
    """
    root = Path(data_dir)
    geonet = root / "nyu_geonet"
    test = next((p for p in (root / "nyuv2" / NYU_TEST_FILE, root / NYU_TEST_FILE) if p.is_file()), None)
    if not geonet.is_dir():
        raise FileNotFoundError(f"normals (--protocol snd): {geonet} not found; expected Probe3D's data/nyu_geonet/ (GeoNet .mat files)")
    if test is None:
        raise FileNotFoundError(
            f"normals (--protocol snd): no {NYU_TEST_FILE} in {root / 'nyuv2'} or {root} (Probe3D's NYUv2 test pickle)"
        )
    return geonet, test


def _collate(items: list[dict]) -> dict:
    return {key: torch.stack([item[key] for item in items]) for key in ("image", "depth", "snorm")}


def _device(device) -> torch.device:
    """``None`` / ``"auto"``: CUDA when available, else CPU."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _backbone(backbone, device):
    if isinstance(backbone, (str, Path)):
        from snd.eval.features import load_backbone

        return load_backbone(str(backbone), device=device), str(backbone)
    config = getattr(backbone, "config", None)
    return backbone.to(device).eval(), str(getattr(config, "_name_or_path", "") or type(backbone).__name__)


def _extractor(model):
    from snd.eval.features import FeatureExtractor

    return FeatureExtractor(model, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD, final_norm=False, pad=True)


#: Probe3D reports rmse and the three "within" fractions; mean and median (per image, then averaged) are extra.
METRIC_KEYS = ("rmse", "within_11.25", "within_22.5", "within_30", "mean", "median")


def evaluate_probe(extractor, head: nn.Module, loader, device, zero_normals: str = "count_90") -> dict:
    """Probe3D ``validate``: per-image metrics over depth > 0, mean over images.

    ``zero_normals="count_90"`` (Probe3D, default) scores zero-length ground truth inside the mask
    as 90 degrees; ``"exclude"`` leaves those pixels out.
    """
    from snd.metrics import normal_metrics

    totals: dict[str, float] = {}
    count = 0
    head.eval()
    with torch.inference_mode():
        for batch in loader:
            features = extractor(batch["image"]).patches.to(device)  # [B, C, h, w]
            target = batch["snorm"].to(device)
            prediction = head(features, size=target.shape[-2:])[:, :3]  # [B, 3, H, W]
            valid = (batch["depth"][:, 0] > 0).numpy()  # [B, H, W]
            if zero_normals == "exclude":
                valid &= (batch["snorm"].norm(dim=1) > 0).numpy()
            for i in range(len(target)):
                if not valid[i].any():
                    if zero_normals == "exclude":
                        continue  # no pixel to score: the image is left out
                    scores = dict.fromkeys(METRIC_KEYS, 0.0)  # Probe3D: num_valid clamped to 1 -> all zero
                else:
                    scores = normal_metrics(prediction[i : i + 1].cpu().numpy(), target[i : i + 1].cpu().numpy(),
                                            valid=valid[i : i + 1], zero_normals=zero_normals)
                for key in METRIC_KEYS:
                    totals[key] = totals.get(key, 0.0) + scores[key]
                count += 1
    return {key: value / max(count, 1) for key, value in totals.items()} | {"num_images": count}


def run(backbone, data_dir, *, dataset: str, max_iters: int | None, output_dir, device, seed: int = 0,
        batch_size: int | None = None, num_workers: int | None = None, drop_bad_indices: bool | str = "auto",
        zero_normals: str = "count_90", progress: bool = True) -> dict:
    """Train and test the Probe3D normals probe exactly as the SnD authors did.

    Returns ``{"task", "dataset", "metrics", "settings", "iterations_run", "final_train_loss"}``;
    ``metrics``: ``rmse``, ``within_11.25``, ``within_22.5``, ``within_30`` (percent), ``mean``,
    ``median`` (degrees), ``num_images``.

    Args:
        backbone: a backbone module or a name / path for :func:`snd.eval.features.load_backbone`.
        data_dir: Probe3D's ``data/`` folder (see :func:`resolve_paths`).
        dataset: ``"nyuv2"`` (the only dataset of this protocol).
        max_iters: stop training after this many iterations (smoke runs); the learning-rate
            schedule keeps its official 10-epoch length. ``None``: the full 10 epochs.
        output_dir: where ``normals_snd.json`` and the probe weights (``normals_probe.safetensors``) go.
        device: torch device for the backbone and the probe.
        seed: seeds augmentation (per frame and epoch, independent of workers) and the probe initialisation.
        batch_size: overrides the official 8 (recorded in ``settings``).
        num_workers: data-loading processes (default: 2 on CUDA as Probe3D, else 0).
        drop_bad_indices: see :class:`~snd.eval.protocols.data_probe3d.GeoNetNormals`.
        zero_normals: ``"count_90"`` (the official metric and the published numbers) or ``"exclude"``
            (a deviation: zero-length ground-truth normals left out of the test metric; recorded).
    """
    from ...progress import progress_bar as tqdm

    from snd.metrics.normals.normals import ZERO_NORMALS

    if dataset not in DATASETS:
        raise ValueError(f"normals (--protocol snd) is defined on {DATASETS}, got dataset {dataset!r}")
    if zero_normals not in ZERO_NORMALS:
        raise ValueError(f"normals: zero_normals must be one of {ZERO_NORMALS}, got {zero_normals!r}")
    device = _device(device)
    torch.manual_seed(seed)
    np.random.seed(seed)
    geonet_dir, test_path = resolve_paths(data_dir)
    train_set = GeoNetTrainTransform(GeoNetNormals(geonet_dir, drop_bad_indices=drop_bad_indices), seed=seed)
    test_set = NYUTestTransform(NYUTestNormals(test_path))
    batch = int(batch_size or SETTINGS["batch_size"])
    workers = (2 if device.type == "cuda" else 0) if num_workers is None else int(num_workers)
    workers = min(workers, os.cpu_count() or 1)
    loader_args = dict(batch_size=batch, shuffle=False, drop_last=False, num_workers=workers, collate_fn=_collate,
                       pin_memory=device.type == "cuda")
    train_loader = torch.utils.data.DataLoader(train_set, **loader_args)
    test_loader = torch.utils.data.DataLoader(test_set, **loader_args)

    model, model_name = _backbone(backbone, device)
    extractor = _extractor(model)
    with torch.no_grad():  # the feature width, from one test image (any backbone)
        channels = extractor(test_set[0]["image"][None]).patches.shape[1]
    head = UncertaintyNormalsHead(channels).to(device)
    optimizer = torch.optim.AdamW(head.parameters(), lr=SETTINGS["lr"])
    steps_per_epoch = len(train_loader)
    total_steps = SETTINGS["epochs"] * steps_per_epoch
    warmup_steps = SETTINGS["warmup_epochs"] * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total_steps, warmup_steps))
    limit = total_steps if max_iters is None else min(int(max_iters), total_steps)

    step, epoch, losses = 0, 0, []
    bar = tqdm(total=limit, desc="normals (snd)", disable=not progress, leave=False)
    while step < limit:
        train_set.set_epoch(epoch)  # before the iterator (and its workers) is created
        epoch += 1
        for batch_items in train_loader:
            if step >= limit:
                break
            head.train()
            with torch.no_grad():
                features = extractor(batch_items["image"]).patches.to(device)  # [B, C, h, w], frozen
            target = batch_items["snorm"].to(device)
            mask = batch_items["depth"].to(device) > 0  # [B, 1, H, W]
            optimizer.zero_grad()
            prediction = head(features, size=target.shape[-2:])  # [B, 4, H, W]
            loss = uncertainty_angular_loss(prediction, target, mask)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            step += 1
            bar.update(1)
    bar.close()

    metrics = evaluate_probe(extractor, head, test_loader, device, zero_normals=zero_normals)
    settings = dict(SETTINGS, zero_normals=zero_normals, batch_size=batch, seed=seed, model=model_name, dataset=dataset,
                    train_frames=len(train_set), test_frames=len(test_set), steps_per_epoch=steps_per_epoch,
                    schedule_iterations=total_steps, iterations_run=step, max_iters=max_iters,
                    patch_size=extractor.patch_size, dropped_files=list(train_set.base.dropped),
                    full_schedule=step == total_steps)
    result = {"task": "normals", "dataset": dataset, "metrics": metrics, "settings": settings,
              "iterations_run": step, "final_train_loss": losses[-1] if losses else float("nan")}
    if output_dir is not None:
        from .common import save_head

        output = Path(output_dir)
        save_head(head, output / "normals_probe.safetensors", settings)  # weights + settings as metadata
        (output / "normals_snd.json").write_text(json.dumps(result, indent=2, default=str))
    return result
