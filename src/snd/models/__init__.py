"""Model families shipped by snd, and their registration with transformers' Auto classes."""

from __future__ import annotations

import importlib
import importlib.util
import sys

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

    from .snd_dinov2.configuration_snd_dinov2 import SnDConfig

    AutoConfig.register(SnDConfig.model_type, SnDConfig, exist_ok=True)
    SnDConfig.register_for_auto_class()
    _defer("transformers.models.auto.modeling_auto", _register_snd_models)
    _defer("transformers.models.auto.image_processing_auto", _register_snd_image_processor)
    _register_mvsplat(AutoConfig)
    _registered = True


# (transformers auto module, snd registration) pairs, run by after_import and again by register_defined_classes.
_DEFERRED: list[tuple[str, object]] = []


def register_defined_classes() -> None:
    """Run the deferred registrations whose transformers auto module is loaded (idempotent). Called by snd's
    class modules after their classes exist, for the case where importing transformers inside them ran the
    registration hook too early."""
    for module_name, registration in list(_DEFERRED):
        if module_name in sys.modules:
            registration()


def _defining(module_name: str, class_name: str) -> bool:
    """True while ``module_name`` is being imported and has not defined ``class_name`` yet: its own import of
    transformers ran the registration hook. The module then registers itself after the class (last lines)."""
    module = sys.modules.get(module_name)
    return module is not None and not hasattr(module, class_name)


def _defer(module_name: str, registration) -> None:
    from .._lazy import after_import

    _DEFERRED.append((module_name, registration))
    after_import(module_name, registration)


def _register_snd_models() -> None:
    if _defining(f"{__name__}.snd_dinov2.modeling_snd_dinov2", "SnDBackbone"):
        return
    from transformers import AutoBackbone, AutoModel

    from .snd_dinov2.configuration_snd_dinov2 import SnDConfig
    from .snd_dinov2.modeling_snd_dinov2 import SnDBackbone, SnDModel

    AutoModel.register(SnDConfig, SnDModel, exist_ok=True)
    AutoBackbone.register(SnDConfig, SnDBackbone, exist_ok=True)


def _register_snd_image_processor() -> None:
    if _defining(f"{__name__}.snd_dinov2.image_processing_snd_dinov2", "SnDImageProcessor"):
        return
    from transformers import AutoImageProcessor

    from .snd_dinov2.configuration_snd_dinov2 import SnDConfig
    from .snd_dinov2.image_processing_snd_dinov2 import SnDImageProcessor

    AutoImageProcessor.register(SnDConfig, slow_image_processor_class=SnDImageProcessor, exist_ok=True)


def _register_mvsplat(auto_config) -> None:
    # The reconstructor is optional at import time: a checkout without it still imports snd.
    if importlib.util.find_spec(f"{__name__}.mvsplat.configuration_mvsplat") is None:
        return
    configuration = importlib.import_module(f"{__name__}.mvsplat.configuration_mvsplat")
    auto_config.register(configuration.MVSplatConfig.model_type, configuration.MVSplatConfig, exist_ok=True)
    configuration.MVSplatConfig.register_for_auto_class()
    _defer("transformers.models.auto.modeling_auto", _register_mvsplat_model)


def _register_mvsplat_model() -> None:
    if _defining(f"{__name__}.mvsplat.modeling_mvsplat", "MVSplatModel"):
        return
    from transformers import AutoModel

    from .mvsplat.configuration_mvsplat import MVSplatConfig
    from .mvsplat.modeling_mvsplat import MVSplatModel

    AutoModel.register(MVSplatConfig, MVSplatModel, exist_ok=True)
