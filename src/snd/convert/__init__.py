"""Checkpoint converters: DINOv2/SnD backbones from torch.hub, timm and transformers layouts, original DINOv3 ViTs
(to transformers DINOv3ViTModel), and MVSplat."""

from .backbone import ConversionReport, convert_backbone, save_backbone
from .common import ConversionError, load_checkpoint
from .dinov3 import convert_dinov3_hub
from .layouts import FORMATS, snd_to_torchhub, torchhub_to_snd

__all__ = [
    "ConversionError",
    "ConversionReport",
    "FORMATS",
    "convert_backbone",
    "convert_dinov3_hub",
    "load_checkpoint",
    "save_backbone",
    "snd_to_torchhub",
    "torchhub_to_snd",
]
