"""Image processor for SnD backbones: DINOv2's preprocessing (resize 256, centre crop 224, ImageNet mean/std).

For dense features at another resolution pass `size`/`crop_size` (multiples of 14), or skip the processor and
call `normalize_images` on float images in [0, 1] (what the training and evaluation code does).
"""

from __future__ import annotations

import sys

import torch
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling
from transformers.models.bit.image_processing_pil_bit import BitImageProcessorPil


class SnDImageProcessor(BitImageProcessorPil):
    """DINOv2's evaluation transform: bicubic resize of the shorter side to 256, centre crop 224 x 224,
    rescale to [0, 1], ImageNet normalisation. Outputs `pixel_values [B, 3, H, W]`."""

    resample = PILImageResampling.BICUBIC
    image_mean = list(IMAGENET_DEFAULT_MEAN)
    image_std = list(IMAGENET_DEFAULT_STD)
    size = {"shortest_edge": 256}
    crop_size = {"height": 224, "width": 224}


def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalise float images in [0, 1]: `[..., 3, H, W]` -> `[..., 3, H, W]`."""
    if images.shape[-3] != 3:
        raise ValueError(f"normalize_images expects [..., 3, H, W], got {tuple(images.shape)}")
    mean = torch.tensor(IMAGENET_DEFAULT_MEAN, dtype=images.dtype, device=images.device)[:, None, None]
    std = torch.tensor(IMAGENET_DEFAULT_STD, dtype=images.dtype, device=images.device)[:, None, None]
    return (images - mean) / std


# save_pretrained writes an auto_map (the folder then loads with trust_remote_code=True without snd).
SnDImageProcessor.register_for_auto_class("AutoImageProcessor")
if __name__.startswith("snd."):
    # snd registers its classes with the Auto classes when transformers' auto modules load (snd._lazy); when
    # that happened during this module's own imports, the class did not exist yet: complete it now.
    sys.modules["snd.models"].register_defined_classes()

__all__ = ["SnDImageProcessor", "normalize_images"]
