"""Tiny datasets written in the real on-disk layouts FiT3D prepares (PNG/JPEG files, split lists)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from transformers import Dinov2Config, Dinov2Model


def tiny_backbone(seed: int = 0):
    import torch

    torch.manual_seed(seed)
    config = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                          image_size=28, patch_size=14)
    return Dinov2Model(config).eval()


def _rgb(rng, height, width):
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256], -1)
    return np.clip(base + rng.integers(0, 30, (height, width, 3)), 0, 255).astype(np.uint8)


def _depth_mm(rng, height, width, max_mm=9000):
    y, _ = np.mgrid[0:height, 0:width]
    depth = 1000 + (y * (max_mm - 1000)) // max(height - 1, 1) + rng.integers(0, 50, (height, width))
    depth[:3, :3] = 0  # a few missing measurements
    return depth.astype(np.uint16)


def write_split_depth(root: Path, split_files: dict[str, int], size=(480, 640), seed: int = 0,
                      image_ext: str = ".jpg", extra_none: bool = True) -> Path:
    """``<root>/<scene>/rgb_XXXXX.jpg`` + ``sync_depth_XXXXX.png`` (mm) and split lists ``/<img> /<depth> <focal>``."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    counter = 0
    for split_file, count in split_files.items():
        lines = []
        for _ in range(count):
            scene = root / f"scene_{counter % 2:04d}"
            scene.mkdir(exist_ok=True)
            image_name, depth_name = f"rgb_{counter:05d}{image_ext}", f"sync_depth_{counter:05d}.png"
            Image.fromarray(_rgb(rng, *size)).save(scene / image_name, quality=95)
            Image.fromarray(_depth_mm(rng, *size)).save(scene / depth_name)
            lines.append(f"/{scene.name}/{image_name} /{scene.name}/{depth_name} 518.8579")
            counter += 1
        if extra_none:
            lines.append(f"/scene_0000/rgb_99999{image_ext} None 518.8579")  # skipped, as FiT3D does
        (root / split_file).write_text("\n".join(lines) + "\n")
    return root


def write_folder_segmentation(root: Path, dirs: dict[tuple[str, str], int], *, size=(48, 64), num_classes=13,
                              image_ext=".png", seed: int = 0) -> Path:
    """mmseg folders: images ``<img_dir>/<name><ext>`` and labels ``<ann_dir>/<name>.png`` (0 = unlabelled)."""
    rng = np.random.default_rng(seed)
    for (img_dir, ann_dir), count in dirs.items():
        (root / img_dir).mkdir(parents=True, exist_ok=True)
        (root / ann_dir).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            name = f"{index:06d}"
            Image.fromarray(_rgb(rng, *size)).save(root / img_dir / f"{name}{image_ext}")
            labels = np.zeros(size, dtype=np.uint8)
            width = size[1]
            for band in range(4):
                labels[:, band * width // 4:(band + 1) * width // 4] = 1 + (band + index) % num_classes
            labels[:2] = 0
            Image.fromarray(labels).save(root / ann_dir / f"{name}.png")
    return root


def write_nyuv2(root: Path, seed: int = 0) -> Path:
    """FiT3D ``eval_data/nyuv2``: ``data_depth`` (split lists, 480 x 640) and ``data_sem`` (13 classes)."""
    write_split_depth(root / "data_depth", {"nyu_train.txt": 2, "nyu_test.txt": 1}, seed=seed)
    write_folder_segmentation(root / "data_sem", {("nyu_train_rgb", "nyuv2_train_class13"): 2,
                                                  ("nyu_test_rgb", "nyuv2_test_class13"): 1}, seed=seed)
    return root


def write_scannet(root: Path, seed: int = 0) -> Path:
    write_split_depth(root, {"train_index.txt": 2, "test_index.txt": 1}, seed=seed)
    write_folder_segmentation(root, {("train/color", "train/label"): 2, ("test/color", "test/label"): 1},
                              num_classes=40, image_ext=".jpg", seed=seed)
    return root


def write_scannetpp(root: Path, seed: int = 0) -> Path:
    write_split_depth(root, {"scannetpp_train.txt": 2, "scannetpp_val.txt": 1}, size=(438, 584), seed=seed,
                      image_ext=".JPG")
    write_folder_segmentation(root, {("images/training", "annotations/training"): 2,
                                     ("images/validation", "annotations/validation"): 1},
                              num_classes=100, image_ext=".JPG", seed=seed)
    return root
