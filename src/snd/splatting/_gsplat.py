"""CUDA backend: gsplat's fused rasterizer. Imported lazily, only when CUDA tensors are rendered.

gsplat compiles its kernels for fixed channel counts (1, 2, 3, 4, 5, 8, 9, 16, 17, 32, 33, 64,
65, 128, 129, 256, 257, 512, 513) and pads anything else up to the next power of two, refusing
more than 513 channels per kernel call. ``rasterization`` splits the channels into
``channel_chunk``-wide slices that all reuse one projection and tile sort, so any feature width
(384, 768, 1024, 1536, ...) works; the slice width trades register pressure for launches.
"""

from __future__ import annotations

import torch

MAX_CHANNELS_PER_CALL = 513  # gsplat raises above this


def rasterize_gsplat(
    means: torch.Tensor,  # [B, N, 3]
    covars: torch.Tensor,  # [B, N, 3, 3]
    opacities: torch.Tensor,  # [B, N]
    colors: torch.Tensor,  # [B, N, D] or [B, C, N, D]
    viewmats: torch.Tensor,  # [B, C, 4, 4]
    Ks: torch.Tensor,  # [B, C, 3, 3]
    width: int,
    height: int,
    near_plane: float,
    far_plane: float,
    eps2d: float,
    backgrounds: torch.Tensor | None,  # [B, C, D]
    render_depth: bool,
    tile_size: int = 16,
    channel_chunk: int = 32,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Same contract as ``_torch_impl.rasterize_torch``; gsplat's kernels are float32 only."""
    try:
        from gsplat import rasterization
    except ImportError as error:  # pragma: no cover - gsplat is a dependency
        raise ImportError("backend='gsplat' needs the gsplat package (pip install gsplat)") from error
    if not 1 <= channel_chunk <= MAX_CHANNELS_PER_CALL:
        raise ValueError(f"channel_chunk must be in [1, {MAX_CHANNELS_PER_CALL}], got {channel_chunk}")

    dtype = colors.dtype
    as_float = lambda tensor: None if tensor is None else tensor.float()  # noqa: E731
    renders, alphas, _ = rasterization(
        means=as_float(means),
        quats=None,
        scales=None,
        covars=as_float(covars),
        opacities=as_float(opacities),
        colors=as_float(colors),
        viewmats=as_float(viewmats),
        Ks=as_float(Ks),
        width=width,
        height=height,
        near_plane=near_plane,
        far_plane=far_plane,
        eps2d=eps2d,
        tile_size=tile_size,
        backgrounds=as_float(backgrounds),
        render_mode="RGB+ED" if render_depth else "RGB",
        rasterize_mode="classic",
        packed=False,
        channel_chunk=channel_chunk,
    )
    depths = None
    if render_depth:
        renders, depths = renders[..., :-1], renders[..., -1:].to(dtype)
    return renders.to(dtype), alphas.to(dtype), depths
