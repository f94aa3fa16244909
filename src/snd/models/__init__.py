"""Model families shipped by snd, and their registration with transformers' Auto classes."""

from __future__ import annotations

import importlib.util
import os

_registered = False


def register_auto_classes() -> None:
    """Register snd's configs and models with AutoConfig / AutoModel / AutoBackbone / AutoImageProcessor.

    Idempotent. Also marks the classes for `register_for_auto_class`, so `save_pretrained` writes an
    `auto_map` and the saved folder loads with `trust_remote_code=True` where snd is not installed.
    """
    global _registered
    if _registered:
        return
    from transformers import (
        AutoBackbone,
        AutoConfig,
        AutoImageProcessor,
        AutoModel,
        AutoModelForDepthEstimation,
        AutoModelForSemanticSegmentation,
    )

    from .snd_dinov2 import (
        SnDBackbone,
        SnDConfig,
        SnDForDepthEstimation,
        SnDForSemanticSegmentation,
        SnDImageProcessor,
        SnDModel,
    )

    AutoConfig.register(SnDConfig.model_type, SnDConfig, exist_ok=True)
    AutoModel.register(SnDConfig, SnDModel, exist_ok=True)
    AutoBackbone.register(SnDConfig, SnDBackbone, exist_ok=True)
    AutoModelForDepthEstimation.register(SnDConfig, SnDForDepthEstimation, exist_ok=True)
    AutoModelForSemanticSegmentation.register(SnDConfig, SnDForSemanticSegmentation, exist_ok=True)
    AutoImageProcessor.register(SnDConfig, slow_image_processor_class=SnDImageProcessor, exist_ok=True)
    SnDConfig.register_for_auto_class()
    SnDModel.register_for_auto_class("AutoModel")
    SnDBackbone.register_for_auto_class("AutoBackbone")
    SnDForDepthEstimation.register_for_auto_class("AutoModelForDepthEstimation")
    SnDForSemanticSegmentation.register_for_auto_class("AutoModelForSemanticSegmentation")
    SnDImageProcessor.register_for_auto_class("AutoImageProcessor")

    # SnD has no video processor. Saying so (an empty backend map) stops pipelines, which also look for one, from
    # guessing `SnDVideoProcessor` out of the image processor's `auto_map` and prompting for remote code.
    # (`AutoVideoProcessor.register` is gated behind torchvision, so the mapping is written directly.)
    from transformers.models.auto.video_processing_auto import VIDEO_PROCESSOR_MAPPING

    VIDEO_PROCESSOR_MAPPING.register(SnDConfig, {}, exist_ok=True)

    _register_mvsplat(AutoConfig, AutoModel)
    _patch_auto_backbone_local_folders(AutoBackbone)
    _registered = True


def _patch_auto_backbone_local_folders(auto_backbone) -> None:
    """Work around transformers 5.24's `AutoBackbone.from_pretrained`, which first asks the Hub whether the name is a
    repo (to route non-repos to timm) even for a local folder: that raises for absolute paths and offline.

    The check is skipped for an existing local folder and in offline mode (where it could only fail); any other name
    takes transformers' own path unchanged. Applies to every backbone (DINOv2's too), which is the intended behaviour.
    """
    original_function = auto_backbone.from_pretrained.__func__  # inherited from _BaseAutoBackboneClass
    if getattr(original_function, "_snd_local_folder_patch", False):
        return

    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        from huggingface_hub import constants

        if os.path.isdir(str(pretrained_model_name_or_path)) or constants.HF_HUB_OFFLINE:
            kwargs.pop("use_timm_backbone", None)
            # `_BaseAutoModelClass.from_pretrained`: the ordinary config -> model-class dispatch
            return _base_auto_from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs)
        return original_function(cls, pretrained_model_name_or_path, *model_args, **kwargs)

    from_pretrained._snd_local_folder_patch = True
    from_pretrained.__doc__ = original_function.__doc__
    auto_backbone.from_pretrained = classmethod(from_pretrained)


def _base_auto_from_pretrained(cls, *args, **kwargs):
    from transformers.models.auto.auto_factory import _BaseAutoModelClass

    return _BaseAutoModelClass.from_pretrained.__func__(cls, *args, **kwargs)


def _register_mvsplat(auto_config, auto_model) -> None:
    # The reconstructor is optional at import time: a checkout without it still imports snd.
    if importlib.util.find_spec(f"{__name__}.mvsplat") is None:
        return
    mvsplat = importlib.import_module(f"{__name__}.mvsplat")
    if not hasattr(mvsplat, "MVSplatModel"):
        return
    auto_config.register(mvsplat.MVSplatConfig.model_type, mvsplat.MVSplatConfig, exist_ok=True)
    auto_model.register(mvsplat.MVSplatConfig, mvsplat.MVSplatModel, exist_ok=True)
    mvsplat.MVSplatConfig.register_for_auto_class()
    mvsplat.MVSplatModel.register_for_auto_class("AutoModel")
