"""Distillation: the SnD step (EMA teacher, splatting augmentation, prototype loss) and its Accelerate loop.

Main entry: ``accelerate launch scripts/distill.py`` -> :func:`snd.distill.main`; in Python,
``snd.distill.train(snd.distill.load_config("default"))``.
"""

from .config import ConfigError, DistillConfig, SourceNotFoundError, apply_overrides, config_from_dict, load_config, preset_names
from .heads import DINOHead
from .loss import CosineDistillLoss, PrototypeCrossEntropy
from .teacher import (
    EMATeacher,
    SplatTeacher,
    TeacherTargets,
    blend_segments,
    downsample_features,
    downsample_holes,
    mask_aware_upsample,
)
from .trainer import NonFiniteLossError, TrainResult, distill_step, train
from .cli import resolve_config, run

__all__ = [
    "ConfigError",
    "CosineDistillLoss",
    "DINOHead",
    "DistillConfig",
    "EMATeacher",
    "NonFiniteLossError",
    "PrototypeCrossEntropy",
    "SourceNotFoundError",
    "SplatTeacher",
    "TeacherTargets",
    "TrainResult",
    "apply_overrides",
    "blend_segments",
    "config_from_dict",
    "distill_step",
    "downsample_features",
    "downsample_holes",
    "load_config",
    "resolve_config",
    "run",
    "mask_aware_upsample",
    "preset_names",
    "train",
]
