"""MVSplat as an snd lifter (context `Views` -> `Gaussians`) and its RGB render for hole masks.

Unlike the model files, this module uses the snd package (Views, Gaussians, the renderer), so it is not part
of the Hub remote code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ...gaussians import Gaussians
from ...splatting.validate import check_finite, check_gaussians, check_views
from .modeling_mvsplat import SH_C0, MVSplatModel

if TYPE_CHECKING:
    from ...data.sample import Views
    from ...splatting import RenderOutput


def harmonics_to_rgb(harmonics: torch.Tensor) -> torch.Tensor:
    """[..., 3, K] SH coefficients -> [..., 3] view-independent RGB: `max(SH_C0 * DC + 0.5, 0)` (3DGS convention)."""
    return (SH_C0 * harmonics[..., 0] + 0.5).clamp_min(0.0)


def render_rgb(
    gaussians: Gaussians,
    extrinsics: torch.Tensor,  # [B, C, 4, 4] camera-to-world, OpenCV
    intrinsics: torch.Tensor,  # [B, C, 3, 3] normalised
    height: int,
    width: int,
    backend: str = "auto",
    **kwargs,
) -> "RenderOutput":
    """Render the Gaussians' degree-0 colours into target cameras (black background): renders [B, C, H, W, 3].

    Pixels that no Gaussian reaches render exactly 0; :func:`hole_mask` turns that into the mask SnD uses to
    ignore them in the distillation loss.
    """
    from ...splatting import render_gaussians

    if gaussians.harmonics is None:
        raise ValueError("render_rgb: these Gaussians carry no harmonics (colours); lift them with MVSplatLifter")
    colors = harmonics_to_rgb(gaussians.harmonics)  # [B, N, 3]
    return render_gaussians(gaussians, colors, extrinsics, intrinsics, height, width, backend=backend, **kwargs)


def hole_mask(renders: torch.Tensor) -> torch.Tensor:
    """[..., H, W, D] renders -> [..., H, W] bool, True where every channel is exactly 0 (SnD's `color == 0` test)."""
    return (renders == 0).all(dim=-1)


class MVSplatLifter:
    """A :class:`~snd.lifting.Lifter` backed by a (frozen) `MVSplatModel`.

    `lifter(context)` runs the model on batched context views (`images [B, V, 3, H, W]`, cameras, near/far) and
    returns `Gaussians` with `N = V * H * W` in (view, row, col) order and SH colours in `harmonics`.
    The model runs under `torch.no_grad()` in eval mode unless `requires_grad=True`.
    """

    def __init__(self, model: MVSplatModel, requires_grad: bool = False):
        self.model = model
        self.requires_grad = requires_grad

    @classmethod
    def from_pretrained(cls, name_or_path: str, **kwargs) -> "MVSplatLifter":
        return cls(MVSplatModel.from_pretrained(name_or_path, **kwargs).eval())

    def __call__(self, context: "Views", validate: bool = True) -> Gaussians:
        """Lift batched ``context`` views; ``validate`` checks the views first and the Gaussians after (ValueError naming them)."""
        if context.images.ndim != 5:
            raise ValueError(f"MVSplatLifter: context must be batched (images [B, V, 3, H, W]), got images {tuple(context.images.shape)}")
        if validate:
            check_views(context, "MVSplatLifter")
        parameter = next(self.model.parameters())
        device, dtype = parameter.device, parameter.dtype
        inputs = [tensor.to(device=device, dtype=dtype) for tensor in (context.images, context.extrinsics, context.intrinsics, context.near, context.far)]
        if self.requires_grad:
            output = self.model(*inputs)
        else:
            self.model.eval()
            with torch.no_grad():
                output = self.model(*inputs)
        if validate:  # NaN weights give NaN Gaussians, which the renderer would cull silently
            check_gaussians(output.means, output.covariances, output.opacities, where="MVSplatLifter output")
            check_finite(output.harmonics, "harmonics", "MVSplatLifter output")
        return Gaussians(means=output.means, covariances=output.covariances, opacities=output.opacities, harmonics=output.harmonics)

    def render_rgb(self, gaussians: Gaussians, target: "Views", backend: str = "auto", **kwargs) -> "RenderOutput":
        """RGB render of `gaussians` into the batched `target` views (renders [B, C, H, W, 3])."""
        return render_rgb(gaussians, target.extrinsics, target.intrinsics, target.height, target.width, backend=backend, **kwargs)


__all__ = ["MVSplatLifter", "harmonics_to_rgb", "hole_mask", "render_rgb"]
