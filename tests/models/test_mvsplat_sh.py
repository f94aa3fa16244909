"""Real SH rotation used for MVSplat's colours: basis orthonormality (quadrature) and representation laws.

(Equality with e3nn's `wigner_D`, which MVSplat uses, was checked out of tree: max difference 8e-6 for l <= 4.)
"""

import math

import numpy as np
import pytest
import torch

from snd.models.mvsplat.sh_mvsplat import mvsplat_basis, rotate_harmonics, wigner_matrix


def random_rotations(count: int, seed: int = 0) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(count, 3, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]
    return q * torch.det(q)[:, None, None]  # proper rotations


def test_basis_is_orthonormal_on_the_sphere():
    # Gauss-Legendre in cos(polar) x uniform azimuth integrates polynomials of degree <= 8 exactly.
    nodes, weights = (torch.from_numpy(values) for values in np.polynomial.legendre.leggauss(12))
    azimuth = torch.arange(24, dtype=torch.float64) * 2 * math.pi / 24
    cos_polar, phi = torch.meshgrid(nodes, azimuth, indexing="ij")
    sin_polar = (1 - cos_polar**2).sqrt()
    directions = torch.stack([sin_polar * phi.cos(), sin_polar * phi.sin(), cos_polar], dim=-1).reshape(-1, 3)
    quadrature = (weights[:, None].expand(-1, 24) * 2 * math.pi / 24).reshape(-1)
    basis = torch.cat([mvsplat_basis(directions, degree) for degree in range(5)], dim=-1)  # [S, 25]
    gram = basis.T @ (basis * quadrature[:, None])
    torch.testing.assert_close(gram, torch.eye(25, dtype=torch.float64), atol=1e-10, rtol=0)


@pytest.mark.parametrize("degree", [1, 2, 3, 4])
def test_wigner_matrices_form_a_representation(degree):
    first, second = random_rotations(3, seed=1), random_rotations(3, seed=2)
    identity = wigner_matrix(torch.eye(3, dtype=torch.float64), degree)
    torch.testing.assert_close(identity, torch.eye(2 * degree + 1, dtype=torch.float64), atol=1e-10, rtol=0)
    product = wigner_matrix(first @ second, degree)
    torch.testing.assert_close(product, wigner_matrix(first, degree) @ wigner_matrix(second, degree), atol=1e-10, rtol=0)
    matrix = wigner_matrix(first, degree)
    torch.testing.assert_close(matrix @ matrix.transpose(-1, -2), torch.eye(2 * degree + 1, dtype=torch.float64).expand_as(matrix), atol=1e-10, rtol=0)


def test_rotated_coefficients_describe_the_rotated_function():
    """f_world(R d) = f_camera(d): evaluate both sides at random directions (degree 0 unchanged)."""
    rotation = random_rotations(1, seed=3)[0]
    coefficients = torch.randn(3, 25, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    rotated = rotate_harmonics(coefficients, rotation)
    directions = torch.nn.functional.normalize(torch.randn(50, 3, dtype=torch.float64), dim=-1)
    basis = torch.cat([mvsplat_basis(directions, degree) for degree in range(5)], dim=-1)
    moved = torch.cat([mvsplat_basis(directions @ rotation.T, degree) for degree in range(5)], dim=-1)
    torch.testing.assert_close(moved @ rotated.T, basis @ coefficients.T, atol=1e-9, rtol=0)
    torch.testing.assert_close(rotated[:, 0], coefficients[:, 0])
