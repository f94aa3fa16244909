"""Model families shipped by snd, and their registration with transformers' Auto classes."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys

from .._lazy import lazy_exports as _lazy_exports

_registered = False

# Submodules load on first attribute access (`snd.models.export.export_program(model)` right after `import snd`), as
# an eager `__init__` that imported them would allow, while `import snd` stays light.
__getattr__ = _lazy_exports(__name__, {})


def register_auto_classes() -> None:
    """Register snd's configs and models with AutoConfig / AutoModel / AutoBackbone / AutoModelForDepthEstimation /
    AutoModelForSemanticSegmentation / AutoImageProcessor (and say SnD has no video processor).

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
    _defer("transformers.models.auto.modeling_auto", _patch_auto_backbone_local_folders)
    _defer("transformers.models.auto.image_processing_auto", _register_snd_image_processor)
    _defer("transformers.models.auto.video_processing_auto", _register_no_video_processor)
    _register_mvsplat(AutoConfig)
    _registered = True


# (transformers auto module, snd registration) pairs, run by after_import and again by register_defined_classes.
_DEFERRED: list[tuple[str, object]] = []


def register_defined_classes() -> None:
    """Run the deferred registrations whose transformers auto module is loaded (idempotent). Called by snd's
    class modules after their classes exist, for the case where importing transformers inside them ran the
    registration hook too early."""
    from .._lazy import _run, retry_postponed

    retry_postponed()
    for module_name, registration in list(_DEFERRED):
        if module_name in sys.modules:
            _run(module_name, [registration])  # a circular import in progress postpones it, as after_import does


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
    if _defining(f"{__name__}.snd_dinov2.modeling_snd_dinov2", "SnDForSemanticSegmentation"):
        return
    from transformers import AutoBackbone, AutoModel, AutoModelForDepthEstimation, AutoModelForSemanticSegmentation

    from .snd_dinov2.configuration_snd_dinov2 import SnDConfig
    from .snd_dinov2.modeling_snd_dinov2 import SnDBackbone, SnDForDepthEstimation, SnDForSemanticSegmentation, SnDModel

    AutoModel.register(SnDConfig, SnDModel, exist_ok=True)
    AutoBackbone.register(SnDConfig, SnDBackbone, exist_ok=True)
    AutoModelForDepthEstimation.register(SnDConfig, SnDForDepthEstimation, exist_ok=True)
    AutoModelForSemanticSegmentation.register(SnDConfig, SnDForSemanticSegmentation, exist_ok=True)
    # pipeline("image-segmentation") checks the model's class name against transformers' static name tables, not
    # the registered classes, and logs "not supported" otherwise: declare the class there too. (Lookups by config
    # class still go through the registration above; the tables' other readers skip model types transformers does
    # not ship.)
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES

    MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES.setdefault(SnDConfig.model_type, SnDForSemanticSegmentation.__name__)


def _register_no_video_processor() -> None:
    # SnD has no video processor. Saying so (an empty backend map) stops pipelines, which also look for one, from
    # guessing `SnDVideoProcessor` out of the image processor's `auto_map` and prompting for remote code.
    # (`AutoVideoProcessor.register` is gated behind torchvision, so the mapping is written directly.)
    from transformers.models.auto.video_processing_auto import VIDEO_PROCESSOR_MAPPING

    from .snd_dinov2.configuration_snd_dinov2 import SnDConfig

    VIDEO_PROCESSOR_MAPPING.register(SnDConfig, {}, exist_ok=True)


def _patch_auto_backbone_local_folders() -> None:
    """Work around `AutoBackbone.from_pretrained` in transformers 5.25 (as in 5.24), which first asks the Hub whether
    the name is a repo (to route non-repos to timm) even for a local folder: that raises for absolute paths and
    offline.

    The check is skipped for an existing local folder and in offline mode (where it could only fail); any other name
    takes transformers' own path unchanged. Applies to every backbone (DINOv2's too), which is the intended behaviour.
    Applied when transformers' ``modeling_auto`` (where ``AutoBackbone`` lives) is imported.
    """
    from transformers import AutoBackbone

    original_function = AutoBackbone.from_pretrained.__func__  # inherited from _BaseAutoBackboneClass
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
    AutoBackbone.from_pretrained = classmethod(from_pretrained)


def _base_auto_from_pretrained(cls, *args, **kwargs):
    from transformers.models.auto.auto_factory import _BaseAutoModelClass

    return _BaseAutoModelClass.from_pretrained.__func__(cls, *args, **kwargs)


def _register_snd_image_processor() -> None:
    if _defining(f"{__name__}.snd_dinov2.image_processing_snd_dinov2", "SnDImageProcessor"):
        return
    from transformers import AutoImageProcessor
    from transformers.utils import is_torchvision_available

    from .snd_dinov2.configuration_snd_dinov2 import SnDConfig
    from .snd_dinov2.image_processing_snd_dinov2 import SnDImageProcessor, SnDImageProcessorTorchvision

    backends = {"pil": SnDImageProcessor}
    if is_torchvision_available():  # snd does not depend on torchvision: that backend only where it is installed
        backends["torchvision"] = SnDImageProcessorTorchvision
    AutoImageProcessor.register(SnDConfig, image_processor_classes=backends, exist_ok=True)


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
