"""Pretraining of the small backbones the project ships (``nano-2d``: see :mod:`snd.pretrain.nano`)."""

from .nano import NanoPretrainConfig, pretrain

__all__ = ["NanoPretrainConfig", "pretrain"]
