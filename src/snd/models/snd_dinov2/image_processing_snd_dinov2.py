"""Image processor for SnD backbones: DINOv2's preprocessing (resize 256, centre crop 224, ImageNet mean/std).

For dense features at another resolution pass `size`/`crop_size` (multiples of 14), or skip the processor and
call `normalize_images` on float images in [0, 1] (what the training and evaluation code does).

Two backends, as transformers' own image processors: `SnDImageProcessor` (PIL / numpy, always available; what
`AutoImageProcessor` gives where torchvision is not installed, or with `backend="pil"`) and
`SnDImageProcessorTorchvision` (torchvision, batched and on the GPU; where torchvision is installed transformers'
`AutoImageProcessor.from_pretrained` picks it by default). snd does not depend on torchvision: the torchvision
class is registered with `AutoImageProcessor` only where torchvision imports. Both save the same folder. Their
outputs agree to one or two uint8 levels after resizing, exactly without (as transformers' Bit pair:
tests/models/test_snd_image_processor_torchvision.py).
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
# The backends themselves, not transformers' Bit classes (DINOv2's processors, whose attributes `_SnDProcessing`
# restates): importing a Bit module runs its `@auto_docstring`, which imports transformers' auto modules and so
# snd's registration hook, which imports this module -- a circular import (Bit half-defined) that left SnD
# unregistered with AutoImageProcessor when a Bit processor was the first thing imported after snd.
from transformers.image_processing_backends import PilBackend, TorchvisionBackend
from transformers.image_processing_outputs import SemanticSegmentationPostProcessorOutput
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling
from transformers.utils import is_torchvision_available


class _SnDProcessing:
    """DINOv2's evaluation transform and the task models' post-processing, shared by both backends.

    The attributes are transformers' `BitImageProcessor` / `BitImageProcessorPil` (what DINOv2 checkpoints use)
    with DINOv2's sizes and ImageNet statistics."""

    resample = PILImageResampling.BICUBIC
    image_mean = list(IMAGENET_DEFAULT_MEAN)
    image_std = list(IMAGENET_DEFAULT_STD)
    size = {"shortest_edge": 256}
    default_to_square = False
    crop_size = {"height": 224, "width": 224}
    do_resize = True
    do_center_crop = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True

    def post_process_depth_estimation(self, outputs, target_sizes=None) -> list[dict[str, torch.Tensor]]:
        """`predicted_depth [B, h, w]` -> one `{"predicted_depth": [H, W]}` per image, bilinearly resized to its
        `(H, W)` in `target_sizes` when given (as the depth probe resizes to the ground truth)."""
        predicted_depth = outputs["predicted_depth"]
        if target_sizes is not None and len(target_sizes) != len(predicted_depth):
            raise ValueError(f"got {len(target_sizes)} target_sizes for a batch of {len(predicted_depth)} depth maps")
        results = []
        for index, depth in enumerate(predicted_depth):
            if target_sizes is not None:
                size = tuple(int(v) for v in target_sizes[index])
                depth = F.interpolate(depth[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
            results.append({"predicted_depth": depth})
        return results

    def post_process_semantic_segmentation(
        self, outputs, target_sizes=None, return_segmentation_scores: bool = False
    ) -> list[torch.Tensor] | list[SemanticSegmentationPostProcessorOutput]:
        """`logits [B, K, h, w]` -> one `[H, W]` map of class ids per image (logits bilinearly resized to
        `target_sizes` first when given). With `return_segmentation_scores=True`, one
        `SemanticSegmentationPostProcessorOutput` per image instead: `segmentation [H, W]` (the same map) and
        `segmentation_scores [K, H, W]` (the resized logits)."""
        logits = outputs["logits"]
        if target_sizes is not None and len(target_sizes) != len(logits):
            raise ValueError(f"got {len(target_sizes)} target_sizes for a batch of {len(logits)} logits")
        results = []
        for index, scores in enumerate(logits):
            if target_sizes is not None:
                size = tuple(int(v) for v in target_sizes[index])
                scores = F.interpolate(scores[None], size=size, mode="bilinear", align_corners=False)[0]
            segmentation = scores.argmax(dim=0)
            if return_segmentation_scores:
                results.append(
                    SemanticSegmentationPostProcessorOutput(
                        data={"segmentation": segmentation, "segmentation_scores": scores}
                    )
                )
            else:
                results.append(segmentation)
        return results


class SnDImageProcessor(_SnDProcessing, PilBackend):
    """DINOv2's evaluation transform (PIL / numpy backend): bicubic resize of the shorter side to 256, centre crop
    224 x 224, rescale to [0, 1], ImageNet normalisation. Outputs `pixel_values [B, 3, H, W]`."""


class SnDImageProcessorTorchvision(_SnDProcessing, TorchvisionBackend):
    """`SnDImageProcessor` on transformers' torchvision backend (batched, on tensors, on the GPU if they are there).
    Needs torchvision, which snd does not depend on.

    It saves the same folder as `SnDImageProcessor` (as transformers' backend pairs do: `BitImageProcessorPil` saves
    as `BitImageProcessor`): `image_processor_type` "SnDImageProcessor" and an `auto_map` to `SnDImageProcessor`, so
    a folder saved from either backend loads with either, and without torchvision (or without snd, as remote code).
    Where torchvision is installed `AutoImageProcessor.from_pretrained` picks this backend by default (transformers'
    rule), so code that saves what it loaded must not write a torchvision-only folder."""

    def __init__(self, **kwargs):
        if not is_torchvision_available():
            raise ImportError(
                "SnDImageProcessorTorchvision needs torchvision (pip install torchvision matching your torch); "
                "SnDImageProcessor does the same without it"
            )
        super().__init__(**kwargs)

    def to_dict(self):
        output = super().to_dict()
        output["image_processor_type"] = SnDImageProcessor.__name__
        auto_map = output.get("auto_map")
        if isinstance(auto_map, dict) and isinstance(auto_map.get("AutoImageProcessor"), str):
            module, _, name = auto_map["AutoImageProcessor"].rpartition(".")
            if name == type(self).__name__:
                output["auto_map"] = {**auto_map, "AutoImageProcessor": f"{module}.{SnDImageProcessor.__name__}"}
        return output


def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalise float images in [0, 1]: `[..., 3, H, W]` -> `[..., 3, H, W]`."""
    if images.shape[-3] != 3:
        raise ValueError(f"normalize_images expects [..., 3, H, W], got {tuple(images.shape)}")
    mean = torch.tensor(IMAGENET_DEFAULT_MEAN, dtype=images.dtype, device=images.device)[:, None, None]
    std = torch.tensor(IMAGENET_DEFAULT_STD, dtype=images.dtype, device=images.device)[:, None, None]
    return (images - mean) / std


# save_pretrained writes an auto_map (the folder then loads with trust_remote_code=True without snd).
SnDImageProcessor.register_for_auto_class("AutoImageProcessor")
# (this module is copied into the folder; to_dict points the auto_map at SnDImageProcessor)
SnDImageProcessorTorchvision.register_for_auto_class("AutoImageProcessor")
if __name__.startswith("snd."):
    # snd registers its classes with the Auto classes when transformers' auto modules load (snd._lazy); when
    # that happened during this module's own imports, the class did not exist yet: complete it now.
    sys.modules["snd.models"].register_defined_classes()

__all__ = ["SnDImageProcessor", "SnDImageProcessorTorchvision", "normalize_images"]
