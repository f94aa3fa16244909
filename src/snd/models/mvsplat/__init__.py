"""MVSplat (ECCV 2024) cost-volume encoder: posed context views -> one 3D Gaussian per pixel."""

from .configuration_mvsplat import MVSplatConfig
from .modeling_mvsplat import MVSplatModel, MVSplatModelOutput, MVSplatPreTrainedModel

__all__ = ["MVSplatConfig", "MVSplatModel", "MVSplatModelOutput", "MVSplatPreTrainedModel"]
