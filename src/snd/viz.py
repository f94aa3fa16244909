"""Pictures people would rather look at than read: PCA of features, depth and normal colour maps, grids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def pca_project(features: torch.Tensor, components: int = 3, basis: torch.Tensor | None = None):
    """Project feature maps on their leading principal components.

    Args:
        features: ``[C, h, w]`` or ``[B, C, h, w]``.
        basis: optional ``(mean [C], directions [C, k])`` from an earlier call, so several maps (for example
            before and after distillation) share one colour space.
    Returns:
        ``(projection [B, k, h, w], (mean, directions))``.
    """
    if features.ndim == 3:
        features = features[None]
    if features.ndim != 4:
        raise ValueError(f"pca_project expects [C, h, w] or [B, C, h, w], got {tuple(features.shape)}")
    batch, channels, height, width = features.shape
    flat = features.detach().float().permute(0, 2, 3, 1).reshape(-1, channels)
    if basis is None:
        mean = flat.mean(0)
        centred = flat - mean
        # Right singular vectors = principal directions; fixed sign so pictures are reproducible.
        _, _, right = torch.linalg.svd(centred, full_matrices=False)
        directions = right[:components].T
        signs = torch.sign(directions[directions.abs().argmax(0), torch.arange(directions.shape[1])])
        directions = directions * torch.where(signs == 0, torch.ones_like(signs), signs)
        basis = (mean, directions)
    mean, directions = basis
    projection = (flat - mean) @ directions
    if projection.shape[1] < components:  # fewer channels than components: pad with zeros
        projection = torch.nn.functional.pad(projection, (0, components - projection.shape[1]))
    projection = projection.reshape(batch, height, width, -1).permute(0, 3, 1, 2)
    return projection, basis


def pca_image(features: torch.Tensor, basis=None, size: tuple[int, int] | None = None) -> np.ndarray:
    """Feature maps as RGB pictures: the first three principal components scaled to [0, 255].

    Args:
        features: ``[C, h, w]`` or ``[B, C, h, w]``.
        basis: optional shared PCA basis from :func:`pca_project`.
        size: optional ``(H, W)`` to upsample to (nearest, so patches stay visible).
    Returns:
        ``uint8 [h, w, 3]`` (or ``[B, h, w, 3]`` for batched input).
    """
    single = features.ndim == 3
    projection, _ = pca_project(features, 3, basis)
    low = projection.amin(dim=(0, 2, 3), keepdim=True)
    high = projection.amax(dim=(0, 2, 3), keepdim=True)
    scaled = (projection - low) / (high - low).clamp_min(1e-8)
    if size is not None:
        scaled = torch.nn.functional.interpolate(scaled, size=size, mode="nearest")
    image = (scaled.permute(0, 2, 3, 1).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return image[0] if single else image


def _colormap(values: np.ndarray, name: str) -> np.ndarray:
    import matplotlib

    return (matplotlib.colormaps[name](values)[..., :3] * 255).astype(np.uint8)


def colorize_depth(depth, valid=None, cmap: str = "turbo", vmin: float | None = None, vmax: float | None = None) -> np.ndarray:
    """Depth ``[H, W]`` -> ``uint8 [H, W, 3]`` (near warm, far cool with turbo reversed); invalid pixels black."""
    depth = np.asarray(torch.as_tensor(depth).detach().float().cpu())
    valid = (depth > 0) & np.isfinite(depth) if valid is None else np.asarray(valid, dtype=bool)
    if not valid.any():
        return np.zeros(depth.shape + (3,), dtype=np.uint8)
    low = float(depth[valid].min()) if vmin is None else vmin
    high = float(depth[valid].max()) if vmax is None else vmax
    scaled = np.clip((depth - low) / max(high - low, 1e-8), 0, 1)
    image = _colormap(1.0 - scaled, cmap)
    image[~valid] = 0
    return image


def colorize_normals(normals, valid=None) -> np.ndarray:
    """Unit normals ``[3, H, W]`` -> ``uint8 [H, W, 3]`` via the usual ``(n + 1) / 2`` mapping; invalid black."""
    normals = np.asarray(torch.as_tensor(normals).detach().float().cpu())
    image = ((np.transpose(normals, (1, 2, 0)) + 1.0) * 0.5).clip(0, 1)
    image = (image * 255).round().astype(np.uint8)
    if valid is not None:
        image[~np.asarray(valid, dtype=bool)] = 0
    return image


def colorize_labels(labels, ignore_index: int | None = None) -> np.ndarray:
    """Integer label maps ``[H, W]`` -> ``uint8 [H, W, 3]`` with a fixed pseudo-random palette."""
    labels = np.asarray(torch.as_tensor(labels).cpu()).astype(np.int64)
    palette = np.random.default_rng(0).integers(40, 256, size=(max(int(labels.max(initial=0)) + 1, 1), 3)).astype(np.uint8)
    image = palette[np.clip(labels, 0, None)]
    if ignore_index is not None:
        image[labels == ignore_index] = 0
    return image


def to_uint8_image(image) -> np.ndarray:
    """Float ``[3, H, W]`` in [0, 1] (tensor or array) or ``uint8 [H, W, 3]`` -> ``uint8 [H, W, 3]``."""
    array = np.asarray(torch.as_tensor(image).detach().cpu()) if not isinstance(image, np.ndarray) else image
    if array.dtype == np.uint8:
        return array
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = np.transpose(array, (1, 2, 0))
    return (np.clip(array, 0, 1) * 255).round().astype(np.uint8)


def save_image_grid(rows: list[list[np.ndarray]], path: str | Path, titles: list[str] | None = None, scale: float = 2.0) -> Path:
    """Save a grid of pictures (rows of ``uint8 [H, W, 3]`` arrays) as one PNG, written atomically."""
    # A bare Figure with its own Agg canvas: no pyplot, so notebooks keep their inline backend.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    num_rows, num_cols = len(rows), max(len(row) for row in rows)
    figure = Figure(figsize=(scale * num_cols, scale * num_rows))
    FigureCanvasAgg(figure)
    axes = figure.subplots(num_rows, num_cols, squeeze=False)
    for row_index, row in enumerate(rows):
        for col_index in range(num_cols):
            axis = axes[row_index][col_index]
            axis.axis("off")
            if col_index < len(row):
                axis.imshow(to_uint8_image(row[col_index]), interpolation="nearest")
                if titles is not None and row_index == 0 and col_index < len(titles):
                    axis.set_title(titles[col_index], fontsize=9)
    figure.tight_layout()
    temporary = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(temporary, dpi=100)
    temporary.replace(path)
    return path


__all__ = [
    "pca_project",
    "pca_image",
    "colorize_depth",
    "colorize_normals",
    "colorize_labels",
    "to_uint8_image",
    "save_image_grid",
]
