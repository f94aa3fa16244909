"""Model families shipped by snd, and their registration with transformers' Auto classes."""

from __future__ import annotations

import importlib
import importlib.util

_registered = False


def register_auto_classes() -> None:
    """Register snd's configs and models with AutoConfig / AutoModel / AutoBackbone / AutoImageProcessor.

    Idempotent. The configs register at once (light). The model and image-processor classes register
    when transformers' ``modeling_auto`` / ``image_processing_auto`` module is imported (at once if it
    already is; ``snd._lazy.after_import``): those are the modules whose mappings the registration fills,
    so ``AutoModel.from_pretrained`` / ``AutoImageProcessor.from_pretrained`` of a saved snd model resolve
    as before, while ``import snd`` imports neither ``transformers.modeling_utils`` nor the
    image-processing stack. The classes also call ``register_for_auto_class`` where they are defined, so
    ``save_pretrained`` writes an ``auto_map`` and the saved folder loads with ``trust_remote_code=True``
    where snd is not installed.
    """
    global _registered
    if _registered:
        return
    from transformers import AutoConfig

    from .._lazy import after_import
    from .snd_dinov2.configuration_snd_dinov2 import SnDConfig

    AutoConfig.register(SnDConfig.model_type, SnDConfig, exist_ok=True)
    SnDConfig.register_for_auto_class()
    after_import("transformers.models.auto.modeling_auto", _register_snd_models)
    after_import("transformers.models.auto.image_processing_auto", _register_snd_image_processor)
    _register_mvsplat(AutoConfig)
    _registered = True


def _register_snd_models() -> None:
    from transformers import AutoBackbone, AutoModel

    from .snd_dinov2.configuration_snd_dinov2 import SnDConfig
    from .snd_dinov2.modeling_snd_dinov2 import SnDBackbone, SnDModel

    AutoModel.register(SnDConfig, SnDModel, exist_ok=True)
    AutoBackbone.register(SnDConfig, SnDBackbone, exist_ok=True)


def _register_snd_image_processor() -> None:
    from transformers import AutoImageProcessor

    from .snd_dinov2.configuration_snd_dinov2 import SnDConfig
    from .snd_dinov2.image_processing_snd_dinov2 import SnDImageProcessor

    AutoImageProcessor.register(SnDConfig, slow_image_processor_class=SnDImageProcessor, exist_ok=True)


def _register_mvsplat(auto_config) -> None:
    # The reconstructor is optional at import time: a checkout without it still imports snd.
    if importlib.util.find_spec(f"{__name__}.mvsplat.configuration_mvsplat") is None:
        return
    from .._lazy import after_import

    configuration = importlib.import_module(f"{__name__}.mvsplat.configuration_mvsplat")
    auto_config.register(configuration.MVSplatConfig.model_type, configuration.MVSplatConfig, exist_ok=True)
    configuration.MVSplatConfig.register_for_auto_class()
    after_import("transformers.models.auto.modeling_auto", _register_mvsplat_model)


def _register_mvsplat_model() -> None:
    from transformers import AutoModel

    from .mvsplat.configuration_mvsplat import MVSplatConfig
    from .mvsplat.modeling_mvsplat import MVSplatModel

    AutoModel.register(MVSplatConfig, MVSplatModel, exist_ok=True)
