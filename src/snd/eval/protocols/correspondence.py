"""Multiview correspondence under ``--protocol snd``: Probe3D's ScanNet pairs evaluation, restated.

What the official code does (``evaluation2/evaluate_scannet_correspondence.py`` with
``configs/scannet_correspondence.yaml``; ``evals/utils/correspondence.py``):

* Data: the 1,500 ScanNet test pairs (LoFTR's ``scannet_test_1500``), images resized to
  480 x 640, normalised with mean 0.5 / std 0.5 (not ImageNet), depth PNG / 1000.
* Features: the last block's output **before** the final LayerNorm, input **zero-padded** to
  patch multiples (480 x 640 -> 490 x 644, 35 x 46 patches at patch 14), one forward of the two
  images of a pair.
* Depth downsampled by ``F.interpolate(scale_factor=0.25)`` (nearest) to 120 x 160, intrinsics
  rows 0-1 times 0.25; every pixel with depth > 0 is back-projected at its pixel centre
  (``+0.5``); its feature is sampled bilinearly (``grid_sample``, ``align_corners=False``) from the
  feature map stretched over the downsampled image (the padded border included, as Probe3D).
* Matching: cosine nearest neighbours (k = 2) from view 0 into view 1, ratio-test weight
  ``1 - d1 / d2`` with cosine distances ``d`` clamped at 1e-9, the ``num_corr = 1000``
  highest-weighted matches (one direction only).
* Error: the view-0 point moved into camera 1 with the true relative pose and projected with the
  scaled K, against the projection of the matched view-1 point: 2D distance in pixels of the
  1/4-scale image. Recall (%) under 5, 10 and 20 px over all matches of all pairs; recall at
  10 px per pair averaged inside relative-rotation bins 0-15, 15-30, 30-60, 60-180 degrees.

The exact nearest neighbour replaces faiss' ``GpuIndexFlatL2`` (the same neighbours for unit
vectors up to float ties). The official script sets no seed and has no randomness.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from .data_probe3d import ScanNetPairsProbe3D

PROTOCOL_VERSION = "probe3d-scannet-corr-1"
IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.5, 0.5, 0.5)
DATASETS = ("scannet_pairs",)
SCALE_FACTOR = 0.25
NUM_CORR = 1000
THRESHOLDS = (5, 10, 20)
ROTATION_BINS = (0, 15, 30, 60, 180)

SETTINGS = {
    "protocol": "snd",
    "protocol_version": PROTOCOL_VERSION,
    "source": "SnD evaluation2/evaluate_scannet_correspondence.py (Probe3D), config scannet_correspondence",
    "data": "ScanNet test pairs (scannet_test_1500: test.npz, intrinsics.npz)",
    "image_size": [480, 640],
    "image_mean": list(IMAGE_MEAN),
    "image_std": list(IMAGE_STD),
    "features": "last block output before the final LayerNorm, patch tokens only",
    "padding": "zero padding to patch multiples after normalisation (Probe3D center_padding)",
    "scale_factor": SCALE_FACTOR,
    "num_corr": NUM_CORR,
    "matching": "cosine kNN k=2 view 0 -> view 1, ratio-test weight 1 - d1/d2, top num_corr, one direction",
    "thresholds_px": list(THRESHOLDS),
    "rotation_bins_deg": list(ROTATION_BINS),
    "binned_threshold_px": 10,
    "multilayer": False,
}


def backproject(depth: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """Probe3D ``grid_to_pointcloud``: ``depth [1, H, W]`` -> camera points ``[H * W, 3]`` at pixel centres."""
    _, height, width = depth.shape
    xs = torch.linspace(0.5, width - 0.5, width).view(1, width).expand(height, width)
    ys = torch.linspace(0.5, height - 0.5, height).view(height, 1).expand(height, width)
    grid = torch.stack([xs, ys, torch.ones_like(xs)])  # [3, H, W]
    points = (depth * grid).reshape(3, height * width)
    return (intrinsics.inverse() @ points).T  # [H * W, 3]


def project(points: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """``[P, 3]`` camera points -> ``[P, 2]`` pixels (depth clamped at 1e-9, as Probe3D)."""
    uvd = points @ intrinsics.T
    return uvd[:, :2] / uvd[:, 2:3].clamp(min=1e-9)


def sample_features(features: torch.Tensor, intrinsics: torch.Tensor, points: torch.Tensor, size) -> torch.Tensor:
    """Bilinear lookup of ``features [C, h, w]`` at the projections of ``points`` in an image of ``size`` -> ``[P, C]``."""
    height, width = size
    uv = project(points, intrinsics)
    grid = torch.stack([2 * uv[:, 0] / width - 1, 2 * uv[:, 1] / height - 1], dim=-1)
    sampled = F.grid_sample(features[None], grid[None, None], align_corners=False)  # [1, C, 1, P]
    return sampled[0, :, 0].T


def ratio_test_topk(features0: torch.Tensor, features1: torch.Tensor, num_corr: int, chunk: int = 2048):
    """Probe3D ``get_correspondences_ratio_test`` (cosine, k = 2, one direction).

    Returns ``(index0 [K], index1 [K], weight [K])``, ``K = min(num_corr, P0)``, highest weight first.
    """
    if features1.shape[0] < 2:
        raise ValueError("correspondence: the second view needs at least two points with depth")
    a = F.normalize(features0, dim=-1)
    b = F.normalize(features1, dim=-1)
    weights, nearest = [], []
    for start in range(0, a.shape[0], chunk):
        similarity = a[start : start + chunk] @ b.T  # [chunk, P1]
        index = similarity.topk(2, dim=-1).indices  # nearest, second nearest
        distance = 1 - F.cosine_similarity(b[index], a[start : start + chunk, None], dim=-1)  # [chunk, 2]
        distance = distance.clamp(min=1e-9)
        weights.append(1 - distance[:, 0] / distance[:, 1].clamp(min=1e-9))
        nearest.append(index[:, 0])
    weights, nearest = torch.cat(weights), torch.cat(nearest)
    weight, index0 = torch.topk(weights, k=min(num_corr, weights.shape[0]))
    return index0, nearest[index0], weight


def pair_errors(features0, features1, depth0, depth1, intrinsics, relative_pose, num_corr: int = NUM_CORR,
                scale_factor: float = SCALE_FACTOR, match_device=None) -> torch.Tensor:
    """2D errors ``[K]`` of one pair (Probe3D ``estimate_correspondence_depth`` + the error of the script).

    ``features*`` ``[C, h, w]``; ``depth*`` ``[1, H, W]``; ``intrinsics`` ``[3, 3]`` pixels of the
    full-size image; ``relative_pose`` ``[4, 4]`` camera 0 -> camera 1. Everything runs on the
    inputs' device (CPU in the protocol, as Probe3D) except the nearest-neighbour search, which
    runs on ``match_device`` when given (Probe3D searches with faiss on the GPU).
    """
    depths = F.interpolate(torch.stack([depth0, depth1]), scale_factor=scale_factor)  # [2, 1, h', w'] nearest
    k = intrinsics.clone().float()
    k[:2, :] *= scale_factor
    points0, points1 = backproject(depths[0], k), backproject(depths[1], k)
    points0, points1 = points0[points0[:, 2] > 0], points1[points1[:, 2] > 0]
    if points0.shape[0] == 0:
        raise ValueError("correspondence: the first view has no pixel with depth")
    size = depths.shape[-2:]
    descriptors0 = sample_features(features0.float(), k, points0, size)
    descriptors1 = sample_features(features1.float(), k, points1, size)
    if match_device is not None:
        descriptors0, descriptors1 = descriptors0.to(match_device), descriptors1.to(match_device)
    index0, index1, _ = ratio_test_topk(descriptors0, descriptors1, num_corr)
    index0, index1 = index0.to(points0.device), index1.to(points1.device)
    rotation, translation = relative_pose[:3, :3].float(), relative_pose[:3, 3].float()
    moved = points0[index0] @ rotation.T + translation  # view-0 points in camera 1
    return (project(moved, k) - project(points1[index1], k)).norm(dim=1)


def rotation_angle_degrees(rotation: torch.Tensor) -> float:
    """Angle of a 3 x 3 rotation (Probe3D ``so3_rotation_angle``), degrees."""
    cosine = ((rotation[0, 0] + rotation[1, 1] + rotation[2, 2] - 1.0) * 0.5).clamp(-1, 1)
    return float(torch.acos(cosine) * 180.0 / torch.pi)


def resolve_root(data_dir: str | Path) -> Path:
    """``data_dir`` itself when it holds ``test.npz``, else ``data_dir/scannet_test_1500`` (Probe3D's ``data/``)."""
    root = Path(data_dir)
    if (root / "test.npz").is_file():
        return root
    nested = root / "scannet_test_1500"
    if (nested / "test.npz").is_file():
        return nested
    raise FileNotFoundError(f"correspondence (--protocol snd): no test.npz in {root} or {nested} (LoFTR's scannet_test_1500)")


def run(backbone, data_dir, *, dataset: str, max_iters: int | None, output_dir, device, seed: int = 0,
        batch_size: int | None = None, progress: bool = True) -> dict:
    """Probe3D's ScanNet correspondence evaluation.

    Returns ``{"task", "dataset", "metrics", "settings"}``; ``metrics``: ``recall_{5,10,20}px`` and
    ``recall_10px_rot_{0_15,15_30,30_60,60_180}`` (percent; NaN for an empty bin), ``num_pairs``.

    Args:
        backbone: a backbone module or a name / path for :func:`snd.eval.features.load_backbone`.
        data_dir: the ``scannet_test_1500`` folder or Probe3D's ``data/`` folder holding it.
        dataset: ``"scannet_pairs"``.
        max_iters: evaluate only the first ``max_iters`` pairs (smoke runs); ``None``: all pairs.
        output_dir: where ``correspondence_snd.json`` goes (``None``: nothing written).
        device: torch device of the backbone.
        seed: unused by the protocol (deterministic); recorded.
        batch_size: unused (Probe3D embeds the two images of one pair per forward); recorded.
    """
    from ...progress import progress_bar as tqdm

    from snd.metrics import correspondence_metrics

    from .normals import _backbone, _device

    if dataset not in DATASETS:
        raise ValueError(f"correspondence (--protocol snd) is defined on {DATASETS}, got dataset {dataset!r}")
    from snd.eval.features import FeatureExtractor

    pairs = ScanNetPairsProbe3D(resolve_root(data_dir))
    count = len(pairs) if max_iters is None else min(int(max_iters), len(pairs))
    device = _device(device)
    model, model_name = _backbone(backbone, device)
    extractor = FeatureExtractor(model, image_mean=IMAGE_MEAN, image_std=IMAGE_STD, final_norm=False, pad=True)
    errors, rotations = [], []
    for index in tqdm(range(count), desc="correspondence (snd)", disable=not progress, leave=False):
        item = pairs[index]
        features = extractor(torch.stack([item["rgb_0"], item["rgb_1"]])).patches  # [2, C, h, w] on CPU
        errors.append(pair_errors(features[0], features[1], item["depth_0"], item["depth_1"], item["K"], item["Rt_1"],
                                  match_device=device if device.type == "cuda" else None))
        rotations.append(rotation_angle_degrees(item["Rt_1"][:3, :3]))
    if not errors:
        raise ValueError(f"correspondence: no pair to evaluate in {pairs.root}")
    sizes = {len(e) for e in errors}
    if len(sizes) != 1:  # torch.stack in the official script: every pair must have num_corr matches
        raise ValueError(f"correspondence: pairs have different match counts {sorted(sizes)}; Probe3D needs {NUM_CORR} each")
    zeros = [torch.zeros_like(e)[:, None].repeat(1, 2).numpy() for e in errors]
    predictions = [torch.stack([e, torch.zeros_like(e)], dim=1).numpy() for e in errors]  # error along x
    metrics = correspondence_metrics(predictions, zeros, thresholds=THRESHOLDS, relative_rotations=rotations,
                                     rotation_bins=ROTATION_BINS, binned_threshold=10)
    settings = dict(SETTINGS, seed=seed, batch_size=batch_size, model=model_name, dataset=dataset,
                    pairs_total=len(pairs), pairs_evaluated=count, max_iters=max_iters,
                    patch_size=extractor.patch_size, matches_per_pair=sizes.pop())
    result = {"task": "correspondence", "dataset": dataset, "metrics": metrics, "settings": settings}
    if output_dir is not None:
        output = Path(output_dir)
        output.mkdir(parents=True, exist_ok=True)
        (output / "correspondence_snd.json").write_text(json.dumps(result, indent=2, default=str))
    return result
