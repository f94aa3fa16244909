"""Synthetic scenes as a multi-view dataset, rendered on the fly or stored as a ``datasets`` dataset."""

from __future__ import annotations

import time
from collections import OrderedDict

import numpy as np
import torch
from ..progress import progress_bar as tqdm

from .base import MultiViewDataset, as_long
from .errors import SceneDataError
from .sample import Views
from .sampler import ViewSampler
from .synthetic import SyntheticScene, SyntheticSceneConfig, generate_scene

__all__ = ["SyntheticMultiViewDataset", "synthetic_to_hf_dataset", "hf_features", "render_throughput"]

_COLUMNS = ("image", "depth", "normals", "mask", "semantics", "extrinsics", "intrinsics", "near", "far")


def hf_features(height: int, width: int):
    """The ``datasets.Features`` of a stored synthetic dataset (one row per frame)."""
    import datasets

    return datasets.Features(
        {
            "scene": datasets.Value("string"),
            "frame_index": datasets.Value("int64"),
            "image": datasets.Array3D((3, height, width), "float32"),  # [3, H, W] in [0, 1]
            "depth": datasets.Array2D((height, width), "float32"),  # z-depth
            "normals": datasets.Array3D((3, height, width), "float32"),  # camera frame, OpenCV
            "mask": datasets.Array2D((height, width), "int64"),  # instance ids
            "semantics": datasets.Array2D((height, width), "int64"),  # class ids (SEMANTIC_CLASSES)
            "extrinsics": datasets.Array2D((4, 4), "float32"),  # camera-to-world, OpenCV
            "intrinsics": datasets.Array2D((3, 3), "float32"),  # normalised
            "near": datasets.Value("float32"),
            "far": datasets.Value("float32"),
        }
    )


def synthetic_to_hf_dataset(config: SyntheticSceneConfig, progress: bool = True):
    """Render every frame of ``config.num_scenes`` scenes into a ``datasets.Dataset`` (one row per frame).

    Save it with ``dataset.save_to_disk(path)``; load it back with
    :meth:`SyntheticMultiViewDataset.from_disk` (or ``datasets.load_from_disk``).
    """
    import datasets

    features = hf_features(config.height, config.width)
    parts = []
    for scene_index in tqdm(range(config.num_scenes), desc="rendering synthetic scenes", disable=not progress):
        scene = generate_scene(config, scene_index)
        views = scene.render().views
        columns = {
            "scene": [scene.name] * scene.num_frames,
            "frame_index": views.frame_indices.numpy(),
            "image": views.images.numpy(),
            "depth": views.depths.numpy(),
            "normals": views.normals.numpy(),
            "mask": views.masks.numpy(),
            "semantics": views.semantics.numpy(),
            "extrinsics": views.extrinsics.numpy(),
            "intrinsics": views.intrinsics.numpy(),
            "near": views.near.numpy(),
            "far": views.far.numpy(),
        }
        parts.append(datasets.Dataset.from_dict(columns, features=features))
    dataset = datasets.concatenate_datasets(parts)
    dataset.info.description = f"snd synthetic scenes; config: {config.to_dict()}"
    return dataset


class SyntheticMultiViewDataset(MultiViewDataset):
    """Multi-view samples of synthetic scenes with depth, normals, masks and semantics.

    Either renders on the fly from a :class:`SyntheticSceneConfig` (only the sampled frames are
    rendered; layouts are cached), or reads a stored ``datasets`` dataset (:meth:`from_hf`,
    :meth:`from_disk`). Both give identical samples for the same config.

    Args:
        config: scene configuration (ignored when ``hf_dataset`` is given). Default ``SyntheticSceneConfig()``.
        sampler: view sampler. Default ``ViewSampler()`` (context 8-12 frames apart, one target).
        samples_per_scene: samples per scene per epoch. Default 1.
        skip_bad_samples: log, count and skip bad samples instead of raising. Default False.
        hf_dataset: a dataset made by :func:`synthetic_to_hf_dataset` (one row per frame).
    """

    def __init__(
        self,
        config: SyntheticSceneConfig | None = None,
        sampler: ViewSampler | None = None,
        samples_per_scene: int = 1,
        skip_bad_samples: bool = False,
        hf_dataset=None,
        cache_scenes: int = 64,
    ):
        super().__init__(sampler, samples_per_scene, skip_bad_samples)
        self.config = config if config is not None else SyntheticSceneConfig()
        self.hf_dataset = None
        self._cache: OrderedDict[int, SyntheticScene] = OrderedDict()
        self._cache_size = cache_scenes
        if hf_dataset is not None:
            missing = [c for c in ("scene", "frame_index", *_COLUMNS) if c not in hf_dataset.column_names]
            if missing:
                raise SceneDataError(f"is not a synthetic snd dataset: missing columns {missing}", field="columns")
            self.hf_dataset = hf_dataset.with_format("numpy")
            names = list(hf_dataset["scene"])
            frame_indices = np.asarray(hf_dataset["frame_index"])
            order: dict[str, list[int]] = {}
            for row, name in enumerate(names):
                order.setdefault(name, []).append(row)
            self._scene_names = list(order)
            # Rows of each scene sorted by frame index.
            self._scene_rows = [sorted(rows, key=lambda r: frame_indices[r]) for rows in order.values()]

    @classmethod
    def from_hf(cls, hf_dataset, **kwargs) -> "SyntheticMultiViewDataset":
        return cls(hf_dataset=hf_dataset, **kwargs)

    @classmethod
    def from_disk(cls, path, **kwargs) -> "SyntheticMultiViewDataset":
        import datasets

        return cls(hf_dataset=datasets.load_from_disk(str(path)), **kwargs)

    def save_to_disk(self, path, progress: bool = True) -> None:
        """Render every frame and save as a ``datasets`` dataset at ``path``."""
        dataset = self.hf_dataset if self.hf_dataset is not None else synthetic_to_hf_dataset(self.config, progress)
        dataset.save_to_disk(str(path))

    # ------------------------------------------------------------------ scenes
    def scene(self, scene_index: int) -> SyntheticScene:
        """The (cached) layout of scene ``scene_index`` (on-the-fly mode only)."""
        if self.hf_dataset is not None:
            raise ValueError("a dataset read from storage has no scene layouts; use the rendered frames")
        if scene_index in self._cache:
            self._cache.move_to_end(scene_index)
            return self._cache[scene_index]
        scene = generate_scene(self.config, scene_index)
        self._cache[scene_index] = scene
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return scene

    def num_scenes(self) -> int:
        return len(self._scene_names) if self.hf_dataset is not None else self.config.num_scenes

    def scene_name(self, scene_index: int) -> str:
        if self.hf_dataset is not None:
            return self._scene_names[scene_index]
        return f"synthetic_{self.config.seed}_{scene_index:05d}"

    def num_frames(self, scene_index: int) -> int:
        if self.hf_dataset is not None:
            return len(self._scene_rows[scene_index])
        return self.config.num_frames

    def load_views(self, scene_index: int, frames: list[int]) -> Views:
        if self.hf_dataset is None:
            return self.scene(scene_index).render(frames).views
        rows = [self._scene_rows[scene_index][f] for f in frames]
        batch = self.hf_dataset[rows]

        def tensor(name):
            return torch.from_numpy(np.ascontiguousarray(np.stack(batch[name]) if isinstance(batch[name], list) else batch[name]))

        return Views(
            images=tensor("image"),
            extrinsics=tensor("extrinsics"),
            intrinsics=tensor("intrinsics"),
            near=tensor("near"),
            far=tensor("far"),
            masks=tensor("mask"),
            depths=tensor("depth"),
            normals=tensor("normals"),
            semantics=tensor("semantics"),
            frame_indices=as_long(tensor("frame_index")),
        )


def render_throughput(config: SyntheticSceneConfig, num_scenes: int = 4) -> dict:
    """Measure rendering speed (views per second) over ``num_scenes`` full trajectories."""
    generate_scene(config, 0).render([0])  # warm-up
    start = time.perf_counter()
    views = 0
    for scene_index in range(num_scenes):
        views += generate_scene(config, scene_index).render().views.num_views
    seconds = time.perf_counter() - start
    return {"views": views, "seconds": seconds, "views_per_second": views / seconds, "height": config.height, "width": config.width}
