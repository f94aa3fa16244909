"""snd: Splat and Distill (ICLR 2026) as a Hugging Face package.

``import snd`` registers the SnD backbone (and the MVSplat reconstructor, when present) with
transformers' Auto classes. Importing does no downloads and touches no GPU, and stays light: the model
classes, the image processor and every subpackage (``snd.data``, ``snd.viz``, ...) load on first use
(``snd._lazy``); the Auto-class registration of the models completes when transformers' auto modules
that read it are imported.
"""

from ._lazy import lazy_exports as _lazy_exports
from .cameras import (  # noqa: F401
    camera_to_world_to_viewmat,
    denormalize_intrinsics,
    normalize_intrinsics,
    opengl_to_opencv,
)
from .gaussians import Gaussians  # noqa: F401
from .models import register_auto_classes as _register_auto_classes

_register_auto_classes()

__version__ = "0.1.0"

# Names re-exported from snd.models.snd_dinov2, imported on first use.
_EXPORTS = {
    name: ".models.snd_dinov2"
    for name in [
        "PRESETS",
        "SnDBackbone",
        "SnDConfig",
        "SnDForDepthEstimation",
        "SnDForSemanticSegmentation",
        "SnDImageProcessor",
        "SnDImageProcessorTorchvision",
        "SnDModel",
        "SnDModelOutput",
        "normalize_images",
    ]
}
# Subpackages load on first use (`snd.data`, `snd.viz`, ...), so `import snd` stays light.
_SUBMODULES = {"assets", "backbones", "cameras", "convert", "data", "distill", "eval", "gaussians", "hub", "lifting", "metrics", "models", "runtime", "splatting", "viz"}
_export = _lazy_exports(__name__, _EXPORTS)


def __getattr__(name):
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    return _export(name)


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS) | _SUBMODULES)
