"""Pieces shared by the ``--protocol snd`` tasks: device, frozen features per iteration, data order, saving."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from ..features import IMAGENET_MEAN, IMAGENET_STD, FeatureExtractor
from .sliding import center_pad


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/``"auto"`` -> CUDA when available, else CPU."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def patch_size_of(backbone: torch.nn.Module) -> int:
    """The backbone's patch size (``snd.backbones.backbone_spec``: 14 for DINOv2/SnD, 16 for DINOv3)."""
    from ...backbones import backbone_spec

    try:
        return backbone_spec(backbone).patch_size
    except ValueError as error:
        raise ValueError(f"{error}; the snd protocol pads to the patch size") from None


class FrozenFeatures:
    """Frozen backbone features of a batch of images, computed every iteration (no gradient).

    Images are centre-padded to a multiple of the patch size as FiT3D/SnD's ``CenterPadding``
    pre-hook does (with the normalisation mean in [0, 1], i.e. zeros after normalising), then
    passed to :class:`~snd.eval.features.FeatureExtractor` with ``final_norm`` as the task's
    config says. Returns ``patches [B, C, h, w]`` and ``cls [B, C]`` on ``device``.

    ``position_interpolation`` (e.g. ``"timm"``): an SnD model resizes its position embeddings this way
    during these calls (its config is restored after each); other backbones keep their own.
    """

    def __init__(self, backbone: torch.nn.Module, *, final_norm: bool, device: torch.device,
                 image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD, position_interpolation: str | None = None):
        for parameter in backbone.parameters():
            parameter.requires_grad_(False)
        self.backbone = backbone.to(device).eval()
        self.patch_size = patch_size_of(backbone)
        self.mean = tuple(float(v) for v in image_mean)
        self.device = device
        self.final_norm = final_norm
        self.extractor = FeatureExtractor(self.backbone, patch_size=self.patch_size, image_mean=image_mean,
                                          image_std=image_std, resize="none", final_norm=final_norm)
        self.position_interpolation = position_interpolation
        self._snd_configs = snd_configs(self.backbone) if position_interpolation is not None else []

    @torch.no_grad()
    def __call__(self, images: torch.Tensor):  # images [B, 3, H, W] in [0, 1]
        padded = center_pad(images.to(self.device, torch.float32), self.patch_size, fill=self.mean)
        saved = [config.position_interpolation for config in self._snd_configs]
        for config in self._snd_configs:
            config.position_interpolation = self.position_interpolation
        try:
            batch = self.extractor(padded)
        finally:
            for config, value in zip(self._snd_configs, saved):
                config.position_interpolation = value
        return batch.patches.to(self.device), batch.cls.to(self.device)

    def settings(self) -> dict:
        if self._snd_configs:
            interpolation = self.position_interpolation
        else:
            interpolation = "the backbone's own" + ("" if self.position_interpolation is None else
                                                    f" (not an SnD model, so not {self.position_interpolation!r})")
        return {"final_norm": self.final_norm, "padding": f"centre zero padding to multiples of {self.patch_size} "
                "(FiT3D CenterPadding, after normalisation)", "patch_size": self.patch_size,
                "image_mean": list(self.mean), "position_interpolation": interpolation}


def snd_configs(backbone: torch.nn.Module) -> list:
    """The distinct ``SnDConfig`` objects inside ``backbone`` (none for other models)."""
    from ...models.snd_dinov2 import SnDConfig

    found = []
    for module in backbone.modules():
        config = getattr(module, "config", None)
        if isinstance(config, SnDConfig) and all(config is not seen for seen in found):
            found.append(config)
    return found


class EpochSampler:
    """mmcv ``IterLoader`` over a shuffled ``DataLoader(drop_last=True)``: a new permutation every epoch."""

    def __init__(self, size: int, batch_size: int, rng: np.random.Generator):
        if size < batch_size:
            raise ValueError(f"training set has {size} items, fewer than one batch of {batch_size} (drop_last=True)")
        self.size, self.batch_size, self.rng = size, batch_size, rng
        self._queue: list[int] = []
        self.epoch = 0

    def next(self) -> list[int]:
        if len(self._queue) < self.batch_size:
            order = self.rng.permutation(self.size).tolist()
            self._queue = order[: len(order) - len(order) % self.batch_size]
            self.epoch += 1
        batch, self._queue = self._queue[: self.batch_size], self._queue[self.batch_size:]
        return batch


def sample_plan(size: int, batch_size: int, iterations: int, seed: int) -> np.ndarray:
    """``[iterations, batch_size, 2]``: the dataset index and an augmentation seed of every training sample.

    Indices follow :class:`EpochSampler` (shuffled epochs, ``drop_last=True``); every sample gets
    its own seed, so augmentation does not depend on how many loader workers run it.
    """
    rng = np.random.default_rng(seed)
    sampler = EpochSampler(size, batch_size, rng)
    indices = np.array([sampler.next() for _ in range(iterations)], dtype=np.int64).reshape(iterations, batch_size)
    seeds = rng.integers(0, 2**63 - 1, size=(iterations, batch_size), dtype=np.int64)
    return np.stack([indices, seeds], axis=-1)


class AugmentedSamples(torch.utils.data.Dataset):
    """Sample ``k`` of a plan (iteration ``k // B``, slot ``k % B``): ``augment(item, rng)`` of its dataset item."""

    def __init__(self, dataset, plan: np.ndarray, augment):
        self.dataset, self.plan, self.augment = dataset, plan.reshape(-1, 2), augment

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, k: int):
        index, seed = (int(v) for v in self.plan[k])
        return self.augment(self.dataset[index], np.random.default_rng(seed))


def training_batches(dataset, plan: np.ndarray, augment, num_workers: int = 0):
    """Batches (tuples of stacked tensors) of a :func:`sample_plan`, loaded by ``num_workers`` processes."""
    loader = torch.utils.data.DataLoader(AugmentedSamples(dataset, plan, augment), batch_size=plan.shape[1],
                                         shuffle=False, num_workers=num_workers,
                                         persistent_workers=False, pin_memory=torch.cuda.is_available())
    return iter(loader)


def default_workers(device: torch.device, num_workers: int | None) -> int:
    if num_workers is not None:
        return int(num_workers)
    return 0 if device.type == "cpu" else 4


class Timer:
    def __init__(self):
        self.start = time.perf_counter()

    def seconds(self) -> float:
        return time.perf_counter() - self.start


def save_head(head: torch.nn.Module, path: Path, metadata: dict) -> Path:
    """Trained probe weights (safetensors) with the protocol settings as JSON metadata."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: value.detach().cpu().contiguous() for name, value in head.state_dict().items()}
    save_file(tensors, str(path), metadata={"settings": json.dumps(metadata, default=str)})
    return path


def finish_training_task(task: str, dataset: str, head: torch.nn.Module, settings: dict, output_dir, *,
                         iterations: int, train_seconds: float, eval_seconds: float, losses: list[dict],
                         **fields) -> dict:
    """The result of a trained-probe task (depth, segmentation): ``metrics``/``evaluations`` and any other
    ``fields`` plus timing and the loss tail; with ``output_dir``, also ``<task>_head.safetensors`` and
    ``<task>.json`` there."""
    result = {"task": task, "dataset": dataset, **fields, "settings": settings, "iterations_run": iterations,
              "train_seconds": train_seconds, "eval_seconds": eval_seconds,
              "iterations_per_second": iterations / max(train_seconds, 1e-9),
              "final_loss": losses[-1]["loss"], "loss_log": losses[-50:]}
    if output_dir is not None:
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        save_head(head, output_dir / f"{task}_head.safetensors", settings)
        (output_dir / f"{task}.json").write_text(json.dumps(result, indent=2, default=str))
    return result
