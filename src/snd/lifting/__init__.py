"""Lifters: context views -> per-pixel 3D Gaussians (``Lifter`` protocol, ``DepthLifter``)."""

from .base import Lifter
from .depth import DepthLifter

__all__ = ["Lifter", "DepthLifter"]
