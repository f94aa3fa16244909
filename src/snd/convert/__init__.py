"""Checkpoint converters: DINOv2/SnD backbones from torch.hub, timm and transformers layouts (and MVSplat)."""

from .backbone import ConversionReport, convert_backbone, save_backbone
from .common import ConversionError, load_checkpoint
from .layouts import FORMATS, snd_to_torchhub, torchhub_to_snd

__all__ = [
    "ConversionError",
    "ConversionReport",
    "FORMATS",
    "convert_backbone",
    "load_checkpoint",
    "save_backbone",
    "snd_to_torchhub",
    "torchhub_to_snd",
]
