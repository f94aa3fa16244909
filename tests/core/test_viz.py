"""Pictures: PCA colours follow the principal components; grids are written as PNGs without touching pyplot."""

import numpy as np
import torch
from PIL import Image

from snd import viz


def test_pca_image_separates_two_feature_clusters():
    features = torch.zeros(8, 4, 6)
    direction = torch.randn(8)
    features[:, :, :3] = direction[:, None, None]
    features[:, :, 3:] = -direction[:, None, None]
    image = viz.pca_image(features)
    assert image.shape == (4, 6, 3) and image.dtype == np.uint8
    # first component splits the halves: one half at 0, the other at 255 in the red channel
    assert {int(image[0, 0, 0]), int(image[0, 5, 0])} == {0, 255}
    assert (image[:, :3] == image[0, 0]).all() and (image[:, 3:] == image[0, 5]).all()


def test_shared_basis_keeps_colours_comparable():
    before = torch.randn(16, 5, 5)
    projection, basis = viz.pca_project(before)
    again, _ = viz.pca_project(before, basis=basis)
    assert torch.allclose(projection, again)
    # projection onto orthonormal directions preserves the centred energy of the first 3 components
    centred = before.permute(1, 2, 0).reshape(-1, 16) - basis[0]
    assert torch.allclose(projection.permute(0, 2, 3, 1).reshape(-1, 3), centred @ basis[1], atol=1e-5)


def test_colour_maps_mark_invalid_pixels_black():
    depth = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    coloured = viz.colorize_depth(depth)
    assert (coloured[0, 0] == 0).all() and coloured[1, 1].any()
    normals = torch.zeros(3, 2, 2)
    normals[2] = 1.0
    image = viz.colorize_normals(normals)
    assert (image[..., 2] == 255).all() and (image[..., 0] == 128).all()


def test_save_image_grid_writes_png_without_switching_backend(tmp_path):
    import matplotlib

    backend = matplotlib.get_backend()
    path = viz.save_image_grid([[np.zeros((4, 4, 3), np.uint8), torch.rand(3, 4, 4)]], tmp_path / "sub" / "grid.png", titles=["a", "b"])
    assert Image.open(path).format == "PNG"
    assert matplotlib.get_backend() == backend
    assert not list((tmp_path / "sub").glob(".*tmp*"))
