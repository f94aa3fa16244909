"""SnD backbone (DINOv2 ViT): config, model, backbone and image processor."""

from .configuration_snd_dinov2 import PRESETS, SnDConfig
from .image_processing_snd_dinov2 import SnDImageProcessor, normalize_images
from .modeling_snd_dinov2 import (
    SnDBackbone,
    SnDForDepthEstimation,
    SnDForSemanticSegmentation,
    SnDModel,
    SnDModelOutput,
    SnDPreTrainedModel,
    interpolate_position_embeddings,
)

__all__ = [
    "PRESETS",
    "SnDConfig",
    "SnDImageProcessor",
    "normalize_images",
    "SnDBackbone",
    "SnDForDepthEstimation",
    "SnDForSemanticSegmentation",
    "SnDModel",
    "SnDModelOutput",
    "SnDPreTrainedModel",
    "interpolate_position_embeddings",
]
