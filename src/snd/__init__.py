"""snd: Splat and Distill (ICLR 2026) as a Hugging Face package.

``import snd`` registers the SnD backbone (and the MVSplat reconstructor, when present) with
transformers' Auto classes. Importing does no downloads and touches no GPU.
"""

from .cameras import (  # noqa: F401
    camera_to_world_to_viewmat,
    denormalize_intrinsics,
    normalize_intrinsics,
    opengl_to_opencv,
)
from .gaussians import Gaussians  # noqa: F401
from .models.snd_dinov2 import (  # noqa: F401
    PRESETS,
    SnDBackbone,
    SnDConfig,
    SnDForDepthEstimation,
    SnDForSemanticSegmentation,
    SnDImageProcessor,
    SnDModel,
    SnDModelOutput,
    normalize_images,
)
from .models import register_auto_classes as _register_auto_classes

_register_auto_classes()

__version__ = "0.1.0"

# Subpackages load on first use (`snd.data`, `snd.viz`, ...), so `import snd` stays light.
_SUBMODULES = {"backbones", "cameras", "convert", "data", "distill", "eval", "gaussians", "hub", "lifting", "metrics", "models", "splatting", "viz"}


def __getattr__(name):
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'snd' has no attribute {name!r}")
