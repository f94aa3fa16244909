"""Multiview correspondence without training (Probe3D ScanNet protocol).

For each image pair: depth maps are downsampled (nearest) to ``scale`` (1/4) of the image, every
pixel with valid depth becomes a 3D point in its camera, its feature is sampled bilinearly from
the (frozen) patch-feature map at the pixel centre; each point of view 0 is matched to its
nearest neighbour in view 1 by cosine similarity, scored by the ratio test
``1 - d1 / d2`` (cosine distances to the first and second neighbours), and the
``num_correspondences`` best-scored matches are kept. A match's error is the 2D distance (in
pixels of the downsampled image) between the true projection of the view-0 point in view 1
(ground-truth depth and poses) and the matched view-1 pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from snd.cameras import denormalize_intrinsics, invert_rigid


@dataclass
class PairMatches:
    """Matches of one pair, in pixels of the downsampled images (pixel centres at +0.5)."""

    source: torch.Tensor  # [K, 2] view-0 pixels
    predicted: torch.Tensor  # [K, 2] matched view-1 pixels
    reference: torch.Tensor  # [K, 2] true view-1 positions of the view-0 points
    scores: torch.Tensor  # [K] ratio-test scores
    rotation_degrees: float  # relative rotation between the two cameras
    scale: float  # downsampling factor of the pixel coordinates above


def relative_rotation_degrees(pose0: torch.Tensor, pose1: torch.Tensor) -> float:
    """Angle of the rotation between two camera-to-world poses ``[4, 4]``, in degrees."""
    rotation = (invert_rigid(pose1.double()) @ pose0.double())[:3, :3]
    cosine = ((torch.diagonal(rotation).sum() - 1) / 2).clamp(-1, 1)
    return float(torch.rad2deg(torch.acos(cosine)))


def _points_and_pixels(depth: torch.Tensor, intrinsics: torch.Tensor):
    """Valid pixels of a depth map ``[h, w]`` -> (pixel centres [P, 2], camera points [P, 3])."""
    height, width = depth.shape
    ys, xs = torch.nonzero(depth > 0, as_tuple=True)
    pixels = torch.stack([xs.double() + 0.5, ys.double() + 0.5], dim=-1)
    k = denormalize_intrinsics(intrinsics.double(), width, height)
    z = depth[ys, xs].double()
    x = (pixels[:, 0] - k[0, 2]) / k[0, 0] * z
    y = (pixels[:, 1] - k[1, 2]) / k[1, 1] * z
    return pixels, torch.stack([x, y, z], dim=-1)


def _sample_features(features: torch.Tensor, pixels: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear feature ``[C, h, w]`` lookup at pixel positions of an ``height x width`` image -> [P, C]."""
    grid = torch.stack([pixels[:, 0] / width * 2 - 1, pixels[:, 1] / height * 2 - 1], dim=-1).float()
    sampled = F.grid_sample(features[None].float(), grid[None, None], mode="bilinear", align_corners=False)
    return sampled[0, :, 0].T


def ratio_test_matches(features0: torch.Tensor, features1: torch.Tensor, num_matches: int, chunk: int = 4096):
    """Cosine nearest neighbours from ``features0 [P0, C]`` into ``features1 [P1, C]`` with the ratio test.

    Returns ``(index0 [K], index1 [K], scores [K])`` for the ``K = min(num_matches, P0)`` matches
    with the highest ``1 - d1 / d2`` (d = cosine distance), best first.
    """
    if features1.shape[0] < 2:
        raise ValueError("ratio test needs at least two candidate points in the second view")
    a = F.normalize(features0.float(), dim=-1)
    b = F.normalize(features1.float(), dim=-1)
    nearest, scores = [], []
    for start in range(0, a.shape[0], chunk):
        similarity = a[start : start + chunk] @ b.T  # [chunk, P1]
        top, index = similarity.topk(2, dim=-1)
        distance = (1 - top).clamp_min(1e-9)
        scores.append(1 - distance[:, 0] / distance[:, 1])
        nearest.append(index[:, 0])
    scores, nearest = torch.cat(scores), torch.cat(nearest)
    best, index0 = scores.topk(min(num_matches, scores.shape[0]))
    return index0, nearest[index0], best


def match_pair(features0, features1, depth0, depth1, intrinsics, pose0, pose1, num_correspondences: int = 1000,
               scale: float = 0.25) -> PairMatches:
    """Probe3D-style matches of one pair.

    Args:
        features0, features1: ``[C, h, w]`` patch features covering each image.
        depth0, depth1: ``[H, W]`` z-depth, 0 = invalid.
        intrinsics: ``[3, 3]`` normalised (shared by both images).
        pose0, pose1: ``[4, 4]`` camera-to-world, OpenCV axes.
    """
    height, width = int(depth0.shape[-2] * scale), int(depth0.shape[-1] * scale)
    small0 = F.interpolate(depth0[None, None].float(), size=(height, width), mode="nearest")[0, 0]
    small1 = F.interpolate(depth1[None, None].float(), size=(height, width), mode="nearest")[0, 0]
    pixels0, points0 = _points_and_pixels(small0, intrinsics)
    pixels1, _ = _points_and_pixels(small1, intrinsics)
    if len(pixels0) == 0 or len(pixels1) < 2:
        raise ValueError("correspondence: a view of the pair has (almost) no valid depth")
    descriptors0 = _sample_features(features0, pixels0, height, width)
    descriptors1 = _sample_features(features1, pixels1, height, width)
    index0, index1, scores = ratio_test_matches(descriptors0, descriptors1, num_correspondences)

    # True position of each matched view-0 point in view 1.
    relative = invert_rigid(pose1.double()) @ pose0.double()  # camera 0 -> camera 1
    points = points0[index0] @ relative[:3, :3].T + relative[:3, 3]
    k = denormalize_intrinsics(intrinsics.double(), width, height)
    projected = points @ k.T
    reference = projected[:, :2] / projected[:, 2:3].clamp_min(1e-9)
    return PairMatches(
        source=pixels0[index0].float(),
        predicted=pixels1[index1].float(),
        reference=reference.float(),
        scores=scores,
        rotation_degrees=relative_rotation_degrees(pose0, pose1),
        scale=scale,
    )
