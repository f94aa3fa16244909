"""SnD backbone (DINOv2 ViT): config, model, backbone and image processor.

Names load on first use (``snd._lazy.lazy_exports``): reading ``SnDConfig`` does not import the model
(``transformers.modeling_utils``) or the image-processing stack.
"""

from ..._lazy import lazy_exports

_EXPORTS = {
    "PRESETS": ".configuration_snd_dinov2",
    "SnDConfig": ".configuration_snd_dinov2",
    "SnDImageProcessor": ".image_processing_snd_dinov2",
    "SnDImageProcessorTorchvision": ".image_processing_snd_dinov2",
    "normalize_images": ".image_processing_snd_dinov2",
    "SnDBackbone": ".modeling_snd_dinov2",
    "SnDForDepthEstimation": ".modeling_snd_dinov2",
    "SnDForSemanticSegmentation": ".modeling_snd_dinov2",
    "SnDModel": ".modeling_snd_dinov2",
    "SnDModelOutput": ".modeling_snd_dinov2",
    "SnDPreTrainedModel": ".modeling_snd_dinov2",
    "interpolate_position_embeddings": ".modeling_snd_dinov2",
}
__all__ = list(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
