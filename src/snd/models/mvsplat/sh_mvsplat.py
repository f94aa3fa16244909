"""Rotating real spherical-harmonic coefficients (degrees 0-4) the way MVSplat does.

MVSplat rotates each Gaussian's camera-frame SH colour into world space with e3nn's Wigner matrices
(`rotate_sh`). e3nn's real basis is the orthonormal real SH (no Condon-Shortley phase, m = -l..l) evaluated at the
permuted direction (z, x, y). For a basis Y, the rotation matrix of degree l is the D with Y(R d) = D Y(d) for every
unit direction d; we obtain it by least squares over fixed sample directions (exact up to rounding, since the
degree-l space is closed under rotation). No e3nn dependency.
"""

from __future__ import annotations

import math

import torch


def real_harmonics(directions: torch.Tensor, degree: int) -> torch.Tensor:
    """Orthonormal real SH of one degree (m = -l..l, no Condon-Shortley phase): [..., 3] -> [..., 2l + 1]."""
    x, y, z = directions.unbind(-1)
    pi = math.pi
    if degree == 0:
        return torch.full_like(x, 0.5 / math.sqrt(pi))[..., None]
    if degree == 1:
        return math.sqrt(3 / (4 * pi)) * torch.stack([y, z, x], dim=-1)
    if degree == 2:
        return torch.stack(
            [
                0.5 * math.sqrt(15 / pi) * x * y,
                0.5 * math.sqrt(15 / pi) * y * z,
                0.25 * math.sqrt(5 / pi) * (3 * z * z - 1),
                0.5 * math.sqrt(15 / pi) * x * z,
                0.25 * math.sqrt(15 / pi) * (x * x - y * y),
            ],
            dim=-1,
        )
    if degree == 3:
        return torch.stack(
            [
                0.25 * math.sqrt(35 / (2 * pi)) * y * (3 * x * x - y * y),
                0.5 * math.sqrt(105 / pi) * x * y * z,
                0.25 * math.sqrt(21 / (2 * pi)) * y * (5 * z * z - 1),
                0.25 * math.sqrt(7 / pi) * (5 * z**3 - 3 * z),
                0.25 * math.sqrt(21 / (2 * pi)) * x * (5 * z * z - 1),
                0.25 * math.sqrt(105 / pi) * z * (x * x - y * y),
                0.25 * math.sqrt(35 / (2 * pi)) * x * (x * x - 3 * y * y),
            ],
            dim=-1,
        )
    if degree == 4:
        return torch.stack(
            [
                0.75 * math.sqrt(35 / pi) * x * y * (x * x - y * y),
                0.75 * math.sqrt(35 / (2 * pi)) * y * z * (3 * x * x - y * y),
                0.75 * math.sqrt(5 / pi) * x * y * (7 * z * z - 1),
                0.75 * math.sqrt(5 / (2 * pi)) * y * z * (7 * z * z - 3),
                3 / 16 * math.sqrt(1 / pi) * (35 * z**4 - 30 * z * z + 3),
                0.75 * math.sqrt(5 / (2 * pi)) * x * z * (7 * z * z - 3),
                3 / 8 * math.sqrt(5 / pi) * (x * x - y * y) * (7 * z * z - 1),
                0.75 * math.sqrt(35 / (2 * pi)) * x * z * (x * x - 3 * y * y),
                3 / 16 * math.sqrt(35 / pi) * (x * x * (x * x - 3 * y * y) - y * y * (3 * x * x - y * y)),
            ],
            dim=-1,
        )
    raise ValueError(f"real_harmonics supports degrees 0-4 (MVSplat uses up to 4), got {degree}")


def mvsplat_basis(directions: torch.Tensor, degree: int) -> torch.Tensor:
    """The real SH basis MVSplat's coefficients live in (e3nn's): the orthonormal basis at (z, x, y)."""
    x, y, z = directions.unbind(-1)
    return real_harmonics(torch.stack([z, x, y], dim=-1), degree)


def _sample_directions(count: int = 64) -> torch.Tensor:
    """Fixed, well-spread unit directions (Fibonacci sphere), float64."""
    index = torch.arange(count, dtype=torch.float64) + 0.5
    polar = torch.acos(1 - 2 * index / count)
    azimuth = math.pi * (1 + 5**0.5) * index
    return torch.stack([polar.sin() * azimuth.cos(), polar.sin() * azimuth.sin(), polar.cos()], dim=-1)


def wigner_matrix(rotations: torch.Tensor, degree: int) -> torch.Tensor:
    """[..., 3, 3] rotations -> [..., 2l + 1, 2l + 1] D with Y(R d) = D Y(d) in MVSplat's basis (float64 inside)."""
    if degree == 0:
        return torch.ones(*rotations.shape[:-2], 1, 1, dtype=rotations.dtype, device=rotations.device)
    samples = _sample_directions().to(rotations.device)  # [S, 3]
    basis = mvsplat_basis(samples, degree)  # [S, 2l+1]
    rotated = mvsplat_basis(torch.einsum("...ij,sj->...si", rotations.double(), samples), degree)  # [..., S, 2l+1]
    # rotated = basis @ D^T  ->  D^T = pinv(basis) @ rotated
    solution = torch.linalg.pinv(basis) @ rotated  # [..., 2l+1, 2l+1]
    return solution.transpose(-1, -2).to(rotations.dtype)


def rotate_harmonics(coefficients: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """Rotate SH coefficients [..., C, (L+1)^2] by rotations [..., 3, 3] (broadcast over the leading dims and C)."""
    count = coefficients.shape[-1]
    max_degree = math.isqrt(count) - 1
    if (max_degree + 1) ** 2 != count:
        raise ValueError(f"rotate_harmonics: {count} coefficients is not (L + 1)^2")
    pieces = [coefficients[..., :1]]
    for degree in range(1, max_degree + 1):
        matrix = wigner_matrix(rotations, degree)[..., None, :, :]  # [..., 1, 2l+1, 2l+1]
        block = coefficients[..., degree**2 : (degree + 1) ** 2]
        pieces.append(torch.einsum("...ij,...j->...i", matrix, block))
    return torch.cat(pieces, dim=-1)
