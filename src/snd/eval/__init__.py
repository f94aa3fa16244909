"""Evaluation of backbones on 3D awareness: probes on frozen features, correspondence, reports.

Quick use::

    from snd.eval import EvaluationConfig, evaluate_backbones
    evaluate_backbones(["path/to/model", "facebook/dinov2-small"],
                       EvaluationConfig(tasks=["all"], dataset="synthetic", output_dir="eval_out"))

or ``python scripts/evaluate.py --model ... --task all --dataset synthetic --output-dir eval_out``.
That is the ``quick`` protocol (cached features, not comparable with published numbers); the authors'
published protocols are :mod:`snd.eval.protocols` (``--protocol snd``, the default for real datasets).
"""

from .correspondence import PairMatches, match_pair, ratio_test_matches, relative_rotation_degrees
from .datasets import (
    IGNORE_INDEX,
    NYUv2Dataset,
    ScanNetPairsDataset,
    ScanNetPPDepthDataset,
    ScanNetPPSegmentationDataset,
    SyntheticDenseDataset,
    SyntheticEvalConfig,
    SyntheticPairsDataset,
    build_dense_dataset,
    build_pairs_dataset,
)
from .features import FeatureBatch, FeatureExtractor, extract_features, load_backbone, model_display_name
from .probes import (
    DEPTH_PROBE,
    NORMALS_PROBE,
    SEGMENTATION_PROBE,
    DepthBinsHead,
    NormalsHead,
    ProbeConfig,
    ProbeTask,
    SegmentationHead,
    evaluate_probe,
    train_probe,
)
from .report import comparison_table
from .runner import EvaluationConfig, Evaluator, evaluate_backbones

__all__ = [
    "DEPTH_PROBE", "NORMALS_PROBE", "SEGMENTATION_PROBE", "IGNORE_INDEX",
    "DepthBinsHead", "EvaluationConfig", "Evaluator", "FeatureBatch", "FeatureExtractor", "NYUv2Dataset",
    "NormalsHead", "PairMatches", "ProbeConfig", "ProbeTask", "ScanNetPPDepthDataset",
    "ScanNetPPSegmentationDataset", "ScanNetPairsDataset", "SegmentationHead", "SyntheticDenseDataset",
    "SyntheticEvalConfig", "SyntheticPairsDataset", "build_dense_dataset", "build_pairs_dataset",
    "comparison_table", "evaluate_backbones", "evaluate_probe", "extract_features", "load_backbone",
    "match_pair", "model_display_name", "ratio_test_matches", "relative_rotation_degrees", "train_probe",
]
