"""MVSplat (ECCV 2024) cost-volume encoder: posed context views -> one 3D Gaussian per pixel.

`MVSplatConfig` / `MVSplatModel` are self-contained transformers classes (Hub remote code friendly);
`MVSplatLifter` adapts the model to snd's Lifter protocol and renders RGB for hole masks.
"""

from .configuration_mvsplat import MVSplatConfig
from .lifting_mvsplat import MVSplatLifter, harmonics_to_rgb, hole_mask, render_rgb
from .modeling_mvsplat import MVSplatModel, MVSplatModelOutput, MVSplatPreTrainedModel

__all__ = [
    "MVSplatConfig",
    "MVSplatLifter",
    "MVSplatModel",
    "MVSplatModelOutput",
    "MVSplatPreTrainedModel",
    "harmonics_to_rgb",
    "hole_mask",
    "render_rgb",
]
