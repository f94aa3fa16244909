"""Multi-view consistency of frozen features on synthetic scenes, with exact (ray-cast) correspondences.

For pairs of frames of held-out synthetic scenes at several baselines (relative rotations):

* **correspondence recall**: every pixel of a regular grid of view a whose surface point is visible in view b
  (exact: the scene is ray cast, occlusion included) is matched to its nearest neighbour (cosine similarity of
  bilinearly sampled patch features) among the same grid of view b; recall@t is the fraction landing within ``t``
  pixels of the true position, per pair, then averaged over the pairs of each rotation bin.
* **feature consistency**: for the same source points, the cosine similarity of a's feature with b's feature at the
  *same surface point* (sampled at its exact position in b) against b's feature at the position of *another*
  surface point (a random other source point at least ``min_negative_distance`` metres away in 3D). Reported as
  the AUC (probability that the same point is more similar than a different one) and the margin (mean difference).

Nothing is learned here, so the numbers depend on the features alone. Scenes come from ``seed`` (the experiment's
held-out seed, never used in pretraining, distillation or tuning).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

#: Scene seeds of the 3D-awareness experiment (BENCHMARKS.md "Seeds"): tuning happens on VALIDATION, numbers are
#: reported on HELD_OUT; pretraining uses snd.pretrain.nano.PRETRAIN_SCENE_SEED, distillation the run seeds (0, 1, 2...).
VALIDATION_SCENE_SEED = 30_000
HELD_OUT_SCENE_SEED = 40_000


@dataclass
class MultiViewEvalConfig:
    """Which pairs and how they are scored.

    Args:
        seed: scene seed. Default :data:`HELD_OUT_SCENE_SEED`.
        first_scene, num_scenes: scene indices ``first_scene .. first_scene + num_scenes - 1`` (the dense probes of
            the experiment use scenes 0-7 of the same seed). Defaults 100 and 8.
        image_size: square render side (a multiple of the patch size). Default 96.
        frames: frames on each scene's camera arc (100 degrees). Default 24.
        gaps, starts: pairs ``(start, start + gap)``; gaps of 2 / 7 / 13 / 22 frames are about 6 / 20 / 38 / 85 degrees
            apart (0-15 / 15-30 / 30-60 / 60-180 bins). Defaults (2, 7, 13, 22) and (0, 1).
        stride: pixel spacing of the source and candidate grids. Default 4.
        thresholds: recall thresholds in pixels (5 / 10 / 20 px of Probe3D's 160 px wide images, scaled). Default (3, 6, 12).
        bins: rotation bin edges in degrees. Default (0, 15, 30, 60, 180).
        min_negative_distance: metres between a point and its "different point" in the consistency measure. Default 0.5.
    """

    seed: int = HELD_OUT_SCENE_SEED
    first_scene: int = 100
    num_scenes: int = 8
    image_size: int = 96
    frames: int = 24
    gaps: tuple[int, ...] = (2, 7, 13, 22)
    starts: tuple[int, ...] = (0, 1)
    stride: int = 4
    thresholds: tuple[float, ...] = (3, 6, 12)
    bins: tuple[float, ...] = (0, 15, 30, 60, 180)
    min_negative_distance: float = 0.5


@dataclass
class ViewPair:
    """One pair with its exact geometry on the pixel grid (pixel centres at +0.5)."""

    image_a: torch.Tensor  # [3, S, S]
    image_b: torch.Tensor  # [3, S, S]
    sources: torch.Tensor  # [P, 2] grid pixels of a (x, y) whose surface point is visible in b
    truth: torch.Tensor  # [P, 2] their exact positions in b
    candidates: torch.Tensor  # [Q, 2] grid pixels of b
    points: torch.Tensor  # [P, 3] world points of the sources
    negatives: torch.Tensor  # [P] index of each source's "different point" (another source, far away in 3D)
    rotation: float  # relative rotation, degrees
    scene: str = ""
    frames: tuple[int, int] = (0, 0)


def _grid(size: int, stride: int) -> torch.Tensor:
    centres = torch.arange(stride // 2, size, stride, dtype=torch.float32) + 0.5
    ys, xs = torch.meshgrid(centres, centres, indexing="ij")
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1)  # [G, 2] (x, y)


def build_pairs(config: MultiViewEvalConfig | None = None) -> list[ViewPair]:
    """Render the pairs of ``config`` with their exact correspondences (ray cast, occlusions included)."""
    from snd.data.synthetic import SyntheticSceneConfig, generate_scene

    from .correspondence import relative_rotation_degrees

    config = config or MultiViewEvalConfig()
    scenes = SyntheticSceneConfig(num_scenes=config.first_scene + config.num_scenes, num_frames=config.frames,
                                  height=config.image_size, width=config.image_size, seed=config.seed)
    grid = _grid(config.image_size, config.stride)
    index = (grid - 0.5).long()  # [G, 2] integer (x, y)
    generator = torch.Generator().manual_seed(config.seed)
    pairs = []
    for scene_index in range(config.first_scene, config.first_scene + config.num_scenes):
        scene = generate_scene(scenes, scene_index)
        for start in config.starts:
            for gap in config.gaps:
                a, b = start, start + gap
                if b >= config.frames:
                    continue
                render = scene.render([a, b])
                pixels_b, valid = scene.correspondences(a, b)  # [S, S, 2], [S, S]
                keep = valid[index[:, 1], index[:, 0]]
                if int(keep.sum()) < 8:
                    continue
                sources = grid[keep]
                truth = pixels_b[index[keep, 1], index[keep, 0]]
                points = render.points[0][index[keep, 1], index[keep, 0]]
                pairs.append(ViewPair(
                    image_a=render.views.images[0], image_b=render.views.images[1], sources=sources, truth=truth,
                    candidates=grid, points=points,
                    negatives=_far_partners(points, config.min_negative_distance, generator),
                    rotation=relative_rotation_degrees(render.views.extrinsics[0], render.views.extrinsics[1]),
                    scene=scene.name, frames=(a, b),
                ))
    if not pairs:
        raise ValueError("MultiViewEvalConfig gives no pair with visible correspondences")
    return pairs


def _far_partners(points: torch.Tensor, min_distance: float, generator: torch.Generator) -> torch.Tensor:
    """For each point ``[P, 3]``, a random other point at least ``min_distance`` away (-1 when none is)."""
    distance = torch.cdist(points, points)  # [P, P]
    far = distance >= min_distance
    scores = torch.rand(distance.shape, generator=generator).masked_fill(~far, -1.0)
    partner = scores.argmax(dim=1)
    return torch.where(far.any(dim=1), partner, torch.full_like(partner, -1))


def sample_features(features: torch.Tensor, pixels: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear lookup of ``features [C, h, w]`` (covering an ``size x size`` image) at ``pixels [P, 2]`` -> ``[P, C]``."""
    grid = (pixels / size * 2 - 1).float()
    return F.grid_sample(features[None].float(), grid[None, None], mode="bilinear", align_corners=False)[0, :, 0].T


def score_pair(features_a: torch.Tensor, features_b: torch.Tensor, pair: ViewPair, size: int) -> dict:
    """Per-pair numbers: ``errors [P]`` (pixels), ``matches [P, 2]``, ``same [P]`` and ``different [P']`` cosines."""
    source = F.normalize(sample_features(features_a, pair.sources, size), dim=-1)  # [P, C]
    candidates = F.normalize(sample_features(features_b, pair.candidates, size), dim=-1)  # [Q, C]
    at_truth = F.normalize(sample_features(features_b, pair.truth, size), dim=-1)  # [P, C]
    nearest = (source @ candidates.T).argmax(dim=1)
    matches = pair.candidates[nearest]
    errors = (matches - pair.truth).norm(dim=-1)
    same = (source * at_truth).sum(-1)
    has_partner = pair.negatives >= 0
    different = (source[has_partner] * at_truth[pair.negatives[has_partner]]).sum(-1)
    return {"errors": errors, "matches": matches, "same": same[has_partner], "different": different}


def auc(positive: torch.Tensor, negative: torch.Tensor) -> float:
    """P(positive > negative) over all pairs of the two samples (ties count one half): the Mann-Whitney AUC."""
    if positive.numel() == 0 or negative.numel() == 0:
        return float("nan")
    values = torch.cat([positive, negative]).double()
    order = values.argsort()
    ranks = torch.empty_like(values)
    ranks[order] = torch.arange(1, len(values) + 1, dtype=torch.float64)
    # average ranks of ties
    unique, inverse, counts = torch.unique(values, return_inverse=True, return_counts=True)
    if (counts > 1).any():
        sums = torch.zeros(len(unique), dtype=torch.float64).index_add_(0, inverse, ranks)
        ranks = (sums / counts.double())[inverse]
    n_pos, n_neg = positive.numel(), negative.numel()
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _bin_name(low: float, high: float) -> str:
    return f"{low:g}-{high:g}"


@torch.no_grad()
def evaluate_multiview(extractor, pairs: list[ViewPair], config: MultiViewEvalConfig | None = None,
                       keep_matches: int = 0) -> tuple[dict, list[dict]]:
    """Correspondence recall by rotation bin and feature consistency of one backbone.

    Args:
        extractor: a :class:`snd.eval.features.FeatureExtractor` (or any ``images [B, 3, S, S] -> .patches [B, C, h, w]``).
        pairs: from :func:`build_pairs`.
        keep_matches: keep the per-pair scores of the first pairs (for figures).
    Returns:
        ``(metrics, kept)``: ``metrics`` has ``recall_{t}px`` (all pairs) and ``recall_{t}px_rot_{bin}``,
        ``consistency_auc`` / ``consistency_margin`` (all pairs) and ``consistency_auc_rot_{bin}``, ``num_pairs``.
    """
    config = config or MultiViewEvalConfig()
    size = config.image_size
    per_pair = []
    kept = []
    for index, pair in enumerate(pairs):
        patches = extractor(torch.stack([pair.image_a, pair.image_b])).patches
        scores = score_pair(patches[0], patches[1], pair, size)
        per_pair.append({
            "rotation": pair.rotation,
            **{f"recall_{t:g}px": float((scores["errors"] < t).float().mean()) * 100 for t in config.thresholds},
            "auc": auc(scores["same"], scores["different"]),
            "margin": float(scores["same"].mean() - scores["different"].mean()),
        })
        if index < keep_matches:
            kept.append({"pair": pair, **scores})
    metrics = {}

    def mean(rows, key):
        values = [row[key] for row in rows if math.isfinite(row[key])]
        return float(sum(values) / len(values)) if values else float("nan")

    for t in config.thresholds:
        metrics[f"recall_{t:g}px"] = mean(per_pair, f"recall_{t:g}px")
    metrics["consistency_auc"] = mean(per_pair, "auc")
    metrics["consistency_margin"] = mean(per_pair, "margin")
    for low, high in zip(config.bins[:-1], config.bins[1:]):
        rows = [row for row in per_pair if low <= row["rotation"] < high]
        for t in config.thresholds:
            metrics[f"recall_{t:g}px_rot_{_bin_name(low, high)}"] = mean(rows, f"recall_{t:g}px")
        metrics[f"consistency_auc_rot_{_bin_name(low, high)}"] = mean(rows, "auc")
    metrics["num_pairs"] = len(per_pair)
    return metrics, kept


__all__ = [
    "HELD_OUT_SCENE_SEED",
    "VALIDATION_SCENE_SEED",
    "MultiViewEvalConfig",
    "ViewPair",
    "auc",
    "build_pairs",
    "evaluate_multiview",
    "sample_features",
    "score_pair",
]
