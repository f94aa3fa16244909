"""Multi-view scene data: the sample type, loaders, view sampling and synthetic scenes.

Every source yields :class:`MultiViewSample` (context + target :class:`Views`) with OpenCV
camera-to-world extrinsics and normalised intrinsics; see ``snd.cameras``.
"""

from .base import MultiViewDataset
from .correspondence import correspondence_pairs, pixel_correspondences
from .errors import SceneDataError
from .nerfstudio import NerfstudioDataset, read_nerfstudio_scene
from .re10k import RE10KDataset, re10k_default_sampler
from .sample import MultiViewSample, Views, collate_multiview, concat_views, stack_views
from .sampler import ViewSampler
from .scannetpp import ScanNetPPDataset
from .synthetic import SEMANTIC_CLASSES, SyntheticRender, SyntheticScene, SyntheticSceneConfig, generate_scene
from .synthetic_dataset import SyntheticMultiViewDataset, render_throughput, synthetic_to_hf_dataset

__all__ = [
    "Views",
    "MultiViewSample",
    "collate_multiview",
    "concat_views",
    "stack_views",
    "ViewSampler",
    "MultiViewDataset",
    "SceneDataError",
    "ScanNetPPDataset",
    "RE10KDataset",
    "NerfstudioDataset",
    "read_nerfstudio_scene",
    "re10k_default_sampler",
    "SEMANTIC_CLASSES",
    "SyntheticSceneConfig",
    "SyntheticScene",
    "SyntheticRender",
    "generate_scene",
    "SyntheticMultiViewDataset",
    "synthetic_to_hf_dataset",
    "render_throughput",
    "pixel_correspondences",
    "correspondence_pairs",
]
