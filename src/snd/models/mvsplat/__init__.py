"""MVSplat (ECCV 2024) cost-volume encoder: posed context views -> one 3D Gaussian per pixel.

`MVSplatConfig` / `MVSplatModel` are self-contained transformers classes (Hub remote code friendly);
`MVSplatLifter` adapts the model to snd's Lifter protocol and renders RGB for hole masks.
Names load on first use (``snd._lazy.lazy_exports``): the config alone does not import the model.
"""

from ..._lazy import lazy_exports

_EXPORTS = {
    "MVSplatConfig": ".configuration_mvsplat",
    "MVSplatLifter": ".lifting_mvsplat",
    "harmonics_to_rgb": ".lifting_mvsplat",
    "hole_mask": ".lifting_mvsplat",
    "render_rgb": ".lifting_mvsplat",
    "MVSplatModel": ".modeling_mvsplat",
    "MVSplatModelOutput": ".modeling_mvsplat",
    "MVSplatPreTrainedModel": ".modeling_mvsplat",
}
__all__ = list(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
