"""The lifter interface: context views in, per-pixel 3D Gaussians out."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ..data.sample import Views
from ..gaussians import Gaussians


@runtime_checkable
class Lifter(Protocol):
    """Anything that turns batched context views into per-pixel Gaussians.

    ``lifter(context)`` takes batched :class:`~snd.data.Views` (``images [B, V, 3, H, W]`` ...) and
    returns :class:`~snd.gaussians.Gaussians` with ``N = V * H * W`` Gaussians per batch element in
    ``(view, row, col)`` order, so full-resolution teacher features attach by flattening
    (``gaussians.with_features(features [B, V, C, H, W])``). Implementations: :class:`DepthLifter`
    (given depth maps) and ``snd.models.mvsplat.MVSplatLifter`` (predicted depth).
    """

    def __call__(self, context: Views) -> Gaussians: ...
