"""Pretrain the ``nano-2d`` backbone: a small DINOv2-architecture ViT taught with a 2D-only self-supervised objective.

What it sees: single rendered images of synthetic scenes (no poses, no depth, no pairing of views; each image is
used on its own), so, like a 2D foundation model, it never sees 3D. What it learns from: two random crops of one
image with independent colour augmentation and flips, and

* a **dense contrastive** loss (patch level): each patch of crop 1 must pick, among every patch of crop 2 in the
  batch, the patches that cover the same image location. The targets come from the two crops' 2D geometry only
  (soft bilinear weights of the four nearest crop-2 patches); every other patch of every image is a negative.
* a **global contrastive** loss (SimCLR / InfoNCE on the CLS token): the two crops of one image against the crops
  of the other images of the batch.

InfoNCE needs no EMA teacher, centring or sharpening schedule and cannot collapse (the negatives push it apart),
which is what a one-hour CPU budget needs. The model is an ordinary :class:`snd.SnDModel` (patch 8, 64 px native
grid); :func:`pretrain` saves it with ``save_pretrained`` plus an image processor, a model card and a feature
fingerprint (``fingerprint.json``) that the tests check.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import resource
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

#: Scene seed of the pretraining images (no other part of the project uses it): see BENCHMARKS.md "Seeds".
PRETRAIN_SCENE_SEED = 20_000


@dataclass
class NanoPretrainConfig:
    """Everything that defines a nano pretraining run (saved next to the weights as ``pretrain_config.json``).

    Args:
        hidden_size, num_hidden_layers, num_attention_heads, patch_size, image_size: the ViT (``SnDConfig``).
            Default 128 wide, 4 blocks, 4 heads, patch 8, 64 px native grid (8 x 8 patches): 0.83 M parameters.
        num_scenes, frames_per_scene: the image pool: ``frames_per_scene`` evenly spaced frames of each of
            ``num_scenes`` synthetic scenes of seed ``scene_seed``. Default 400 x 8 = 3,200 images.
        render_size: side of the rendered pool images, which crops are cut from. Default 96.
        crop_scale: range of a crop's area as a fraction of the image. Default (0.25, 1.0).
        steps, batch_size, lr, weight_decay, warmup_fraction: AdamW with linear warm-up then cosine decay to 0.
        temperature: softmax temperature of both contrastive losses. Default 0.1.
        global_weight: weight of the global (CLS) loss beside the dense one. Default 0.5.
        query_fraction: fraction of the patches (drawn at random each step) that act as dense queries; every patch
            of the batch stays a key. Default 0.25 (the softmax over the batch's keys dominates the step's cost).
        projection_dim: width of the projection heads' output. Default 128.
        seed: parameter initialisation, crops and batches.
        threads: torch intra-op threads (None: torch's default).
    """

    hidden_size: int = 128
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    patch_size: int = 8
    image_size: int = 64
    num_scenes: int = 400
    frames_per_scene: int = 8
    scene_seed: int = PRETRAIN_SCENE_SEED
    render_size: int = 96
    crop_scale: tuple[float, float] = (0.25, 1.0)
    steps: int = 1800
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.05
    temperature: float = 0.1
    global_weight: float = 0.5
    query_fraction: float = 0.25
    projection_dim: int = 128
    seed: int = 0
    threads: int | None = 1

    def __post_init__(self) -> None:
        for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "patch_size", "image_size", "num_scenes",
                     "frames_per_scene", "render_size", "steps", "batch_size", "projection_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"NanoPretrainConfig.{name} must be a positive integer, got {value!r}")
        if self.batch_size < 2:
            raise ValueError("NanoPretrainConfig.batch_size must be >= 2 (contrastive losses need negatives)")
        if self.image_size % self.patch_size:
            raise ValueError(f"NanoPretrainConfig.image_size ({self.image_size}) must be a multiple of patch_size ({self.patch_size})")
        low, high = self.crop_scale
        if not 0 < low <= high <= 1:
            raise ValueError(f"NanoPretrainConfig.crop_scale must satisfy 0 < low <= high <= 1, got {self.crop_scale}")
        if not 0 < self.query_fraction <= 1:
            raise ValueError(f"NanoPretrainConfig.query_fraction must be in (0, 1], got {self.query_fraction}")
        if not (self.lr > 0 and self.temperature > 0 and 0 <= self.warmup_fraction < 1 and self.global_weight >= 0):
            raise ValueError("NanoPretrainConfig: lr and temperature must be > 0, warmup_fraction in [0, 1), global_weight >= 0")
        self.crop_scale = (float(low), float(high))

    def model_config(self):
        from ..models.snd_dinov2 import SnDConfig

        return SnDConfig(
            hidden_size=self.hidden_size, num_hidden_layers=self.num_hidden_layers, num_attention_heads=self.num_attention_heads,
            patch_size=self.patch_size, image_size=self.image_size, layerscale_value=0.1,
        )


# --------------------------------------------------------------------------------------------
# Data: a pool of single images


def render_pool(config: NanoPretrainConfig, progress: bool = True) -> torch.Tensor:
    """``[N, 3, R, R]`` images in [0, 1]: ``frames_per_scene`` evenly spaced frames of each scene of ``scene_seed``.

    Only the images are kept (no cameras, depth or masks): the pretraining is 2D-only.
    """
    from tqdm.auto import tqdm

    from ..data.synthetic import SyntheticSceneConfig, generate_scene

    scenes = SyntheticSceneConfig(num_scenes=config.num_scenes, num_frames=24, height=config.render_size,
                                  width=config.render_size, seed=config.scene_seed)
    frames = torch.linspace(0, 23, config.frames_per_scene).round().long().unique()
    images = [generate_scene(scenes, index).render(frames).views.images
              for index in tqdm(range(config.num_scenes), desc="rendering pretraining images", disable=not progress)]
    return torch.cat(images)


def sample_crops(count: int, image_size: int, scale: tuple[float, float], generator: torch.Generator) -> torch.Tensor:
    """Random resized crops: ``[count, 5]`` rows ``(x0, y0, width, height, flip)`` in units of the image side.

    Area fraction uniform in ``scale``, aspect ratio log-uniform in [3/4, 4/3], position uniform, horizontal flip with
    probability 1/2. ``image_size`` is unused by the geometry (all in [0, 1]) and kept for readability of calls.
    """
    area = torch.empty(count).uniform_(scale[0], scale[1], generator=generator)
    log_ratio = torch.empty(count).uniform_(math.log(3 / 4), math.log(4 / 3), generator=generator)
    width = (area * log_ratio.exp()).sqrt().clamp(max=1.0)
    height = (area / log_ratio.exp()).sqrt().clamp(max=1.0)
    x0 = torch.rand(count, generator=generator) * (1 - width)
    y0 = torch.rand(count, generator=generator) * (1 - height)
    flip = (torch.rand(count, generator=generator) < 0.5).float()
    return torch.stack([x0, y0, width, height, flip], dim=1)


def crop_grid(boxes: torch.Tensor, size: int) -> torch.Tensor:
    """``grid_sample`` grid ``[B, size, size, 2]`` (align_corners=False) that cuts ``boxes [B, 5]`` out of an image."""
    u = (torch.arange(size, dtype=torch.float32) + 0.5) / size  # [S] positions inside the crop, in [0, 1]
    x0, y0, width, height, flip = boxes.unbind(1)
    ux = torch.where(flip[:, None] > 0, 1 - u[None], u[None])  # [B, S]
    x = x0[:, None] + ux * width[:, None]  # image coordinates in [0, 1]
    y = y0[:, None] + u[None] * height[:, None]
    grid = torch.stack(torch.broadcast_tensors(x[:, None, :], y[:, :, None]), dim=-1)  # [B, S, S, 2] (x, y)
    return grid * 2 - 1


def crop_images(images: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """``images [B, 3, R, R]`` -> crops ``[B, 3, size, size]`` (bilinear)."""
    return F.grid_sample(images, crop_grid(boxes, size), mode="bilinear", padding_mode="border", align_corners=False)


def colour_augment(images: torch.Tensor, generator: torch.Generator, strength: float = 0.4, grayscale_p: float = 0.2) -> torch.Tensor:
    """Per-image brightness, contrast and saturation jitter (factors in ``1 +- strength``), a random hue-like
    rotation of the chroma, and grayscale with probability ``grayscale_p``. ``images [B, 3, H, W]`` in [0, 1]."""
    count = images.shape[0]

    def factor():
        return (1 + (torch.rand(count, 1, 1, 1, generator=generator) * 2 - 1) * strength)

    gray = (images * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    images = images * factor()
    mean = gray.mean(dim=(2, 3), keepdim=True)
    images = (images - mean) * factor() + mean
    gray = (images * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    images = (images - gray) * factor() + gray
    # hue: rotate the chroma (the part orthogonal to grey) about the grey axis by up to +-30 degrees
    angle = (torch.rand(count, generator=generator) * 2 - 1) * math.radians(30)
    axis = torch.full((3,), 1 / math.sqrt(3))
    cross = torch.tensor([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    outer = torch.outer(axis, axis)
    rotations = (torch.cos(angle)[:, None, None] * torch.eye(3) + torch.sin(angle)[:, None, None] * cross
                 + (1 - torch.cos(angle))[:, None, None] * outer)  # [B, 3, 3] Rodrigues
    images = torch.einsum("bij,bjhw->bihw", rotations, images)
    to_gray = torch.rand(count, 1, 1, 1, generator=generator) < grayscale_p
    gray = (images * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    images = torch.where(to_gray, gray.expand_as(images), images)
    return images.clamp(0, 1)


# --------------------------------------------------------------------------------------------
# Losses


def patch_correspondence(boxes_a: torch.Tensor, boxes_b: torch.Tensor, grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each patch centre of crop a lies in crop b's patch grid.

    Args:
        boxes_a, boxes_b: ``[B, 5]`` crops of the same images (:func:`sample_crops`).
        grid: patches per side.
    Returns:
        ``positions [B, g*g, 2]``: (column, row) in crop b's patch units (patch centres at integers 0..g-1), and
        ``inside [B, g*g]``: whether the point lies inside crop b.
    """
    u = (torch.arange(grid, dtype=torch.float32) + 0.5) / grid
    x0, y0, width, height, flip = boxes_a.unbind(1)
    ux = torch.where(flip[:, None] > 0, 1 - u[None], u[None])
    x = (x0[:, None] + ux * width[:, None])[:, None, :].expand(-1, grid, -1)  # [B, g(rows), g(cols)]
    y = (y0[:, None] + u[None] * height[:, None])[:, :, None].expand(-1, -1, grid)
    bx0, by0, bwidth, bheight, bflip = (value[:, None, None] for value in boxes_b.unbind(1))
    ub = (x - bx0) / bwidth
    ub = torch.where(bflip > 0, 1 - ub, ub)
    vb = (y - by0) / bheight
    inside = (ub >= 0) & (ub <= 1) & (vb >= 0) & (vb <= 1)
    positions = torch.stack([ub * grid - 0.5, vb * grid - 0.5], dim=-1)  # patch units
    return positions.reshape(boxes_a.shape[0], grid * grid, 2), inside.reshape(boxes_a.shape[0], grid * grid)


def soft_patch_targets(positions: torch.Tensor, inside: torch.Tensor, grid: int) -> torch.Tensor:
    """Bilinear weights ``[B, g*g (queries), B*g*g (keys)]`` over crop b's patches of the whole batch (zero rows
    for queries outside crop b); each query's weights sit on the (up to) four patches around its position in its
    own image and sum to 1."""
    batch, queries, _ = positions.shape
    position = positions.clamp(0, grid - 1)
    low = position.floor().clamp(max=grid - 1)
    frac = position - low
    low = low.long()
    high = (low + 1).clamp(max=grid - 1)
    targets = torch.zeros(batch, queries, batch * grid * grid)
    offset = (torch.arange(batch) * grid * grid)[:, None]  # [B, 1]
    for col, wx in ((low[..., 0], 1 - frac[..., 0]), (high[..., 0], frac[..., 0])):
        for row, wy in ((low[..., 1], 1 - frac[..., 1]), (high[..., 1], frac[..., 1])):
            targets.scatter_add_(2, (offset + row * grid + col)[..., None], (wx * wy * inside)[..., None])
    return targets


def dense_contrastive_loss(queries: torch.Tensor, keys: torch.Tensor, targets: torch.Tensor, temperature: float,
                           keep: torch.Tensor | None = None) -> torch.Tensor:
    """Soft-target InfoNCE: ``queries [B, Q, D]`` and ``keys [B, K, D]`` (unit vectors), ``targets [B, Q, B*K]``.

    Each query with a non-empty target row (and ``keep [B*Q]`` True, when given: a subsample of the queries, to
    bound the cost) scores every key of the batch; the loss is the cross-entropy between its softmax and the
    target weights, averaged over those queries."""
    queries = queries.reshape(-1, queries.shape[-1])  # [B*Q, D]
    targets = targets.reshape(queries.shape[0], -1)  # [B*Q, B*K]
    mass = targets.sum(-1)
    rows = mass > 0
    if keep is not None:
        rows = rows & keep
    if not rows.any():
        return queries.sum() * 0.0
    logits = queries[rows] @ keys.reshape(-1, keys.shape[-1]).T / temperature  # [kept, B*K]
    return -(targets[rows] / mass[rows, None] * logits.log_softmax(-1)).sum(-1).mean()


def global_contrastive_loss(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE between ``a [B, D]`` and ``b [B, D]`` (unit vectors): row i of a matches row i of b."""
    logits = a @ b.T / temperature
    labels = torch.arange(a.shape[0])
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


class Projector(nn.Module):
    """Linear -> GELU -> Linear, output normalised to unit length (applied per token)."""

    def __init__(self, channels: int, dim: int, hidden: int = 512) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(channels, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(x), dim=-1)


class NanoPretrainer(nn.Module):
    """The backbone and its two projection heads; :meth:`loss` computes one step's loss dict from two crops."""

    def __init__(self, config: NanoPretrainConfig) -> None:
        super().__init__()
        from ..models.snd_dinov2 import SnDModel

        self.config = config
        self.backbone = SnDModel(config.model_config())
        self.dense_head = Projector(config.hidden_size, config.projection_dim)
        self.global_head = Projector(config.hidden_size, config.projection_dim)

    def embed(self, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from ..models.snd_dinov2 import normalize_images

        output = self.backbone(pixel_values=normalize_images(crops))
        patches = output.patch_features.flatten(2).transpose(1, 2)  # [B, g*g, C]
        return self.dense_head(patches), self.global_head(output.pooler_output)

    def loss(self, crops_a, crops_b, boxes_a, boxes_b, generator: torch.Generator | None = None) -> dict:
        grid = self.config.image_size // self.config.patch_size
        dense_a, global_a = self.embed(crops_a)
        dense_b, global_b = self.embed(crops_b)
        positions_ab, inside_ab = patch_correspondence(boxes_a, boxes_b, grid)
        positions_ba, inside_ba = patch_correspondence(boxes_b, boxes_a, grid)
        temperature = self.config.temperature
        count = inside_ab.numel()
        keep_ab = keep_ba = None
        if self.config.query_fraction < 1:
            keep_ab = torch.rand(count, generator=generator) < self.config.query_fraction
            keep_ba = torch.rand(count, generator=generator) < self.config.query_fraction
        dense = 0.5 * (dense_contrastive_loss(dense_a, dense_b, soft_patch_targets(positions_ab, inside_ab, grid), temperature, keep_ab)
                       + dense_contrastive_loss(dense_b, dense_a, soft_patch_targets(positions_ba, inside_ba, grid), temperature, keep_ba))
        global_ = global_contrastive_loss(global_a, global_b, temperature)
        return {"loss": dense + self.config.global_weight * global_, "dense": dense.detach(), "global": global_.detach(),
                "overlap": 0.5 * (inside_ab.float().mean() + inside_ba.float().mean())}


# --------------------------------------------------------------------------------------------
# The run


def learning_rate(step: int, config: NanoPretrainConfig) -> float:
    """Linear warm-up to ``lr`` over ``warmup_fraction * steps``, then cosine to 0 at ``steps``."""
    warmup = int(config.warmup_fraction * config.steps)
    if step < warmup:
        return config.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, config.steps - warmup)
    return config.lr * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def fingerprint_input(image_size: int = 64) -> torch.Tensor:
    """The fixed input of the feature fingerprint: two ``image_size`` renders of a synthetic scene of seed 777."""
    from ..data.synthetic import SyntheticSceneConfig, generate_scene

    scenes = SyntheticSceneConfig(num_scenes=1, num_frames=24, height=image_size, width=image_size, seed=777)
    return generate_scene(scenes, 0).render([0, 12]).views.images


@torch.no_grad()
def feature_fingerprint(model: nn.Module) -> dict:
    """Patch features of :func:`fingerprint_input`: their shape, sum, sum of |x| and the first 8 values (float64)."""
    from ..models.snd_dinov2 import normalize_images

    model.eval()
    features = model(pixel_values=normalize_images(fingerprint_input(model.config.image_size))).patch_features.double()
    return {"shape": list(features.shape), "sum": float(features.sum()), "abs_sum": float(features.abs().sum()),
            "first": features.flatten()[:8].tolist()}


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def pretrain(config: NanoPretrainConfig, output_dir: str | Path, progress: bool = True, command: str | None = None,
             log_every: int = 50) -> dict:
    """Pretrain and save the nano backbone into ``output_dir`` (refused if it already holds a model).

    Writes ``model.safetensors`` + ``config.json`` (``SnDModel.save_pretrained``), ``preprocessor_config.json``,
    ``pretrain_config.json``, ``pretrain_log.jsonl``, ``fingerprint.json`` and a ``README.md`` model card with the
    command, seed, CPU time and the weights' SHA-256. Returns the summary dict (also in ``pretrain_summary.json``).
    """
    from tqdm.auto import tqdm

    output_dir = Path(output_dir)
    if (output_dir / "model.safetensors").exists():
        raise FileExistsError(f"{output_dir} already holds a model (model.safetensors); choose another --output-dir")
    previous_threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        wall_start, cpu_start = time.perf_counter(), _cpu_seconds()
        pool = render_pool(config, progress)
        render_cpu = _cpu_seconds() - cpu_start
        torch.manual_seed(config.seed)
        model = NanoPretrainer(config)
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        generator = torch.Generator().manual_seed(config.seed)
        output_dir.mkdir(parents=True, exist_ok=True)
        log_path = output_dir / "pretrain_log.jsonl"
        log_path.write_text("")
        model.train()
        records = []
        for step in tqdm(range(config.steps), desc="pretrain nano-2d", disable=not progress, mininterval=5.0):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, config)
            index = torch.randint(len(pool), (config.batch_size,), generator=generator)
            images = pool[index]
            boxes_a = sample_crops(config.batch_size, config.render_size, config.crop_scale, generator)
            boxes_b = sample_crops(config.batch_size, config.render_size, config.crop_scale, generator)
            crops_a = colour_augment(crop_images(images, boxes_a, config.image_size), generator)
            crops_b = colour_augment(crop_images(images, boxes_b, config.image_size), generator)
            losses = model.loss(crops_a, crops_b, boxes_a, boxes_b, generator)
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 3.0)
            optimizer.step()
            if not torch.isfinite(losses["loss"]):
                raise RuntimeError(f"nano pretraining: non-finite loss at step {step}")
            if step % log_every == 0 or step == config.steps - 1:
                record = {"step": step, "lr": learning_rate(step, config), **{k: float(v.detach()) for k, v in losses.items()}}
                records.append(record)
                with log_path.open("a") as handle:
                    handle.write(json.dumps(record) + "\n")
        wall = time.perf_counter() - wall_start
        cpu = _cpu_seconds() - cpu_start
        summary = {"wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1), "render_cpu_seconds": round(render_cpu, 1),
                   "images": len(pool), "first_loss": records[0]["loss"], "final_loss": records[-1]["loss"],
                   "threads": torch.get_num_threads(), "command": command}
        save_nano(model.backbone, config, output_dir, summary)
        return summary
    finally:
        torch.set_num_threads(previous_threads)


def save_nano(backbone: nn.Module, config: NanoPretrainConfig, output_dir: Path, summary: dict) -> None:
    """Weights, image processor, configs, fingerprint and model card of a pretrained nano backbone."""
    from ..models.snd_dinov2 import SnDImageProcessor

    output_dir.mkdir(parents=True, exist_ok=True)
    backbone.save_pretrained(str(output_dir))
    side = config.image_size
    SnDImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side}).save_pretrained(str(output_dir))
    (output_dir / "pretrain_config.json").write_text(json.dumps(asdict(config), indent=2) + "\n")
    (output_dir / "fingerprint.json").write_text(json.dumps(feature_fingerprint(backbone), indent=2) + "\n")
    digest = hashlib.sha256((output_dir / "model.safetensors").read_bytes()).hexdigest()
    summary = {**summary, "sha256": digest, "parameters": sum(p.numel() for p in backbone.parameters())}
    (output_dir / "pretrain_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (output_dir / "README.md").write_text(_card(config, summary))


def _card(config: NanoPretrainConfig, summary: dict) -> str:
    return f"""---
library_name: transformers
license: apache-2.0
tags: [snd_dinov2, self-supervised, synthetic, nano]
---

# nano-2d: a 2D-pretrained nano ViT shipped with snd

A {summary['parameters']:,}-parameter DINOv2-architecture ViT (`SnDModel`: {config.num_hidden_layers} blocks, width
{config.hidden_size}, {config.num_attention_heads} heads, patch {config.patch_size}, native grid {config.image_size} px),
pretrained by this project on CPU with a **2D-only self-supervised objective** (dense patch-level InfoNCE between two
augmented crops of one image, whose targets come from the crops' 2D geometry, plus a global InfoNCE on the CLS token)
on {summary['images']:,} single images of synthetic scenes (scene seed {config.scene_seed}). It never saw poses, depth,
or two views of a scene together: it plays the part of a 2D foundation model in the SnD demonstration
(`scripts/experiment_3d_awareness.py`). It is a demonstration model, not a general-purpose backbone.

```python
import snd, torch
from transformers import AutoModel
model = AutoModel.from_pretrained(snd.assets.path("nano-2d"))      # offline, after `import snd`
features = model(snd.normalize_images(torch.rand(1, 3, 64, 64))).patch_features   # [1, {config.hidden_size}, 8, 8]
```

## How it was made
- Command: `{summary.get('command') or 'python scripts/pretrain_nano.py'}`
- Seed {config.seed}; {config.steps} steps of batch {config.batch_size} (two {config.image_size} px crops each),
  AdamW lr {config.lr} (warm-up {config.warmup_fraction:.0%}, cosine), weight decay {config.weight_decay},
  temperature {config.temperature}, global weight {config.global_weight}.
- Time on the project's 2-core CPU machine: {summary['cpu_seconds'] / 60:.1f} CPU-minutes
  ({summary['wall_seconds'] / 60:.1f} minutes wall, {summary['threads']} threads), of which rendering the images
  {summary['render_cpu_seconds'] / 60:.1f} CPU-minutes.
- Loss {summary['first_loss']:.3f} -> {summary['final_loss']:.3f} (`pretrain_log.jsonl`).
- `model.safetensors` SHA-256: `{summary['sha256']}`
- `fingerprint.json`: its patch features on a fixed input (`snd.pretrain.nano.fingerprint_input`), checked by the tests.
"""
