"""Model families shipped by snd, and their registration with transformers' Auto classes."""

from __future__ import annotations

import importlib.util

_registered = False


def register_auto_classes() -> None:
    """Register snd's configs and models with AutoConfig / AutoModel / AutoBackbone / AutoImageProcessor.

    Idempotent. Also marks the classes for `register_for_auto_class`, so `save_pretrained` writes an
    `auto_map` and the saved folder loads with `trust_remote_code=True` where snd is not installed.
    """
    global _registered
    if _registered:
        return
    from transformers import AutoBackbone, AutoConfig, AutoImageProcessor, AutoModel

    from .snd_dinov2 import SnDBackbone, SnDConfig, SnDImageProcessor, SnDModel

    AutoConfig.register(SnDConfig.model_type, SnDConfig, exist_ok=True)
    AutoModel.register(SnDConfig, SnDModel, exist_ok=True)
    AutoBackbone.register(SnDConfig, SnDBackbone, exist_ok=True)
    AutoImageProcessor.register(SnDConfig, slow_image_processor_class=SnDImageProcessor, exist_ok=True)
    SnDConfig.register_for_auto_class()
    SnDModel.register_for_auto_class("AutoModel")
    SnDBackbone.register_for_auto_class("AutoBackbone")
    SnDImageProcessor.register_for_auto_class("AutoImageProcessor")

    _register_mvsplat(AutoConfig, AutoModel)
    _registered = True


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
