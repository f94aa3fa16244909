"""The Gaussians container shared by the lifters (depth, MVSplat), the renderer and the teacher."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch


@dataclass
class Gaussians:
    """Per-pixel 3D Gaussians of a batch of scenes.

    Lifters emit one Gaussian per context pixel in ``(view, row, col)`` order, i.e.
    ``N = V * H * W`` and index ``n = (v * H + y) * W + x``, so full-resolution teacher
    features ``[B, V, C, H, W]`` attach by ``features.permute(0, 1, 3, 4, 2).reshape(B, N, C)``.

    Attributes:
        means: ``[B, N, 3]`` world-space centres.
        covariances: ``[B, N, 3, 3]`` world-space covariances.
        opacities: ``[B, N]`` in [0, 1].
        features: optional ``[B, N, D]`` per-Gaussian features/colours to splat.
        harmonics: optional ``[B, N, 3, K]`` spherical-harmonic colour coefficients (MVSplat).
    """

    means: torch.Tensor
    covariances: torch.Tensor
    opacities: torch.Tensor
    features: torch.Tensor | None = None
    harmonics: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.means.ndim != 3 or self.means.shape[-1] != 3:
            raise ValueError(f"Gaussians.means must be [B, N, 3], got {tuple(self.means.shape)}")
        batch, count = self.means.shape[:2]
        if tuple(self.covariances.shape) != (batch, count, 3, 3):
            raise ValueError(
                f"Gaussians.covariances must be [B, N, 3, 3] = {(batch, count, 3, 3)}, got {tuple(self.covariances.shape)}"
            )
        if tuple(self.opacities.shape) != (batch, count):
            raise ValueError(f"Gaussians.opacities must be [B, N] = {(batch, count)}, got {tuple(self.opacities.shape)}")
        if self.features is not None and tuple(self.features.shape[:2]) != (batch, count):
            raise ValueError(f"Gaussians.features must be [B, N, D] with B, N = {(batch, count)}, got {tuple(self.features.shape)}")

    @property
    def batch_size(self) -> int:
        return self.means.shape[0]

    @property
    def num_gaussians(self) -> int:
        return self.means.shape[1]

    def with_features(self, features: torch.Tensor) -> "Gaussians":
        """A copy carrying ``features`` ``[B, N, D]`` (or ``[B, V, D, H, W]`` per-pixel maps, flattened in lift order)."""
        if features.ndim == 5:
            batch, views, channels, height, width = features.shape
            features = features.permute(0, 1, 3, 4, 2).reshape(batch, views * height * width, channels)
        return replace(self, features=features)

    def to(self, *args, **kwargs) -> "Gaussians":
        def move(tensor):
            return None if tensor is None else tensor.to(*args, **kwargs)

        return Gaussians(
            means=move(self.means),
            covariances=move(self.covariances),
            opacities=move(self.opacities),
            features=move(self.features),
            harmonics=move(self.harmonics),
        )

    def detach(self) -> "Gaussians":
        def detach(tensor):
            return None if tensor is None else tensor.detach()

        return Gaussians(detach(self.means), detach(self.covariances), detach(self.opacities), detach(self.features), detach(self.harmonics))
