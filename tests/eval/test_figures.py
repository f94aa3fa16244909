"""Evaluation figures: the per-image metric in the title agrees with snd.metrics; files are written for each task."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from snd.eval.report import _per_image_metric, save_dense_figures
from snd.metrics import depth_metrics, normal_metrics, segmentation_metrics


class _Data:
    max_depth = 10.0
    num_classes = 3
    class_names = ("wall", "floor", "chair")

    def __init__(self):
        generator = torch.Generator().manual_seed(0)
        self.item = {
            "image": torch.rand(3, 20, 30, generator=generator),
            "depth": torch.rand(20, 30, generator=generator) * 5 + 0.5,
            "normals": torch.nn.functional.normalize(torch.randn(3, 20, 30, generator=generator), dim=0),
            "normal_valid": torch.rand(20, 30, generator=generator) > 0.2,
            "semantics": torch.randint(0, 3, (20, 30), generator=generator),
        }
        self.item["depth"][:3] = 0  # invalid rows
        self.item["semantics"][:, :4] = 255  # unlabelled columns

    def __getitem__(self, index):
        return self.item


def test_figure_titles_carry_the_images_metric(tmp_path):
    data = _Data()
    item = data[0]
    depth = item["depth"] + 0.3 * torch.randn(20, 30)
    text = _per_image_metric("depth", item, depth, data)
    expected = depth_metrics(depth[None].numpy(), item["depth"][None].numpy())["rmse"]
    assert text == f"RMSE {expected:.3f} m"
    normals = torch.nn.functional.normalize(item["normals"] + 0.5 * torch.randn(3, 20, 30), dim=0)
    text = _per_image_metric("normals", item, normals, data)
    expected = normal_metrics(normals[None].numpy(), item["normals"][None].numpy(), valid=item["normal_valid"][None].numpy())["mean"]
    assert text == f"mean angle {expected:.1f}°"
    labels = torch.randint(0, 3, (20, 30))
    text = _per_image_metric("segmentation", item, labels, data)
    expected = segmentation_metrics(labels[None].numpy(), item["semantics"][None].numpy(), num_classes=3, aggregation="image")
    assert text == f"mIoU {expected['mean_iou']:.1f}%, acc {expected['pixel_accuracy']:.1f}%"

    for task, prediction in (("depth", depth), ("normals", normals), ("segmentation", labels)):
        (path,) = save_dense_figures(task, data, [(0, prediction)], tmp_path)
        with Image.open(path) as picture:
            assert picture.width > 3 * 30 * 2 and picture.height > 20 * 2  # upscaled panels, not thumbnails
