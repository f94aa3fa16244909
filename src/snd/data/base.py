"""Shared machinery of the multi-view datasets: index -> scene -> sampled frames -> MultiViewSample."""

from __future__ import annotations

import logging
from collections import Counter

import torch
from torch.utils.data import Dataset

from .errors import SceneDataError
from .sample import MultiViewSample, Views
from .sampler import ViewSampler

logger = logging.getLogger(__name__)


class MultiViewDataset(Dataset):
    """Map-style dataset of :class:`MultiViewSample` built from scenes of ordered frames.

    Sample ``index`` belongs to scene ``index // samples_per_scene``; the :class:`ViewSampler` picks
    its frames from ``(seed, epoch, index)`` alone, so results do not depend on which process or
    worker loads the index. Subclasses provide :meth:`num_scenes`, :meth:`scene_name`,
    :meth:`num_frames` and :meth:`load_views`.

    With ``skip_bad_samples=True`` a sample whose data is bad (:class:`SceneDataError`) is logged,
    counted in :attr:`bad_sample_counts` (per scene) and replaced by the next index (wrapping around);
    otherwise the error propagates. Nothing is repaired.
    """

    def __init__(self, sampler: ViewSampler | None = None, samples_per_scene: int = 1, skip_bad_samples: bool = False):
        if samples_per_scene < 1:
            raise ValueError(f"samples_per_scene must be >= 1, got {samples_per_scene}")
        self.sampler = sampler if sampler is not None else ViewSampler()
        self.samples_per_scene = samples_per_scene
        self.skip_bad_samples = skip_bad_samples
        self.bad_sample_counts: Counter[str] = Counter()

    # ---------------------------------------------------------------- subclass interface
    def num_scenes(self) -> int:
        raise NotImplementedError

    def scene_name(self, scene_index: int) -> str:
        raise NotImplementedError

    def num_frames(self, scene_index: int) -> int:
        raise NotImplementedError

    def scene_source(self, scene_index: int) -> str | None:
        """The file describing the scene (for error messages), if any."""
        return None

    def load_views(self, scene_index: int, frames: list[int]) -> Views:
        """Unbatched :class:`Views` of the frames at positions ``frames`` of the scene."""
        raise NotImplementedError

    # ---------------------------------------------------------------- dataset
    @property
    def num_bad_samples(self) -> int:
        return sum(self.bad_sample_counts.values())

    def set_epoch(self, epoch: int) -> None:
        """Draw different views per epoch (deterministically).

        Call before iterating the DataLoader: workers copy the dataset when an iterator starts, so
        with ``persistent_workers=True`` they keep the epoch they were started with.
        """
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return self.num_scenes() * self.samples_per_scene

    def sample_frames(self, index: int):
        """``(scene_index, context_frames, target_frames)`` for sample ``index`` (no file is read)."""
        scene_index = index // self.samples_per_scene
        try:
            context, target = self.sampler.sample(self.num_frames(scene_index), index, scene=self.scene_name(scene_index))
        except SceneDataError as error:
            if error.file is None and self.scene_source(scene_index) is not None:
                raise SceneDataError(error.reason, scene=error.scene, file=self.scene_source(scene_index), field=error.field) from error
            raise
        return scene_index, context.tolist(), target.tolist()

    def build_sample(self, index: int) -> MultiViewSample:
        scene_index, context, target = self.sample_frames(index)
        views = self.load_views(scene_index, context + target)
        return MultiViewSample(
            context=views.select(list(range(len(context)))),
            target=views.select(list(range(len(context), len(context) + len(target)))),
            scene=self.scene_name(scene_index),
        )

    def __getitem__(self, index: int) -> MultiViewSample:
        length = len(self)
        if not -length <= index < length:
            raise IndexError(f"sample index {index} out of range for {length} samples")
        index %= length
        if not self.skip_bad_samples:
            return self.build_sample(index)
        for attempt in range(length):
            candidate = (index + attempt) % length
            try:
                return self.build_sample(candidate)
            except SceneDataError as error:
                self.bad_sample_counts[error.scene or "?"] += 1
                logger.warning("skipping bad sample %d (%d skipped so far): %s", candidate, self.num_bad_samples, error)
        raise SceneDataError(f"all {length} samples are bad (see the warnings above)")


def as_long(values) -> torch.Tensor:
    return torch.as_tensor(values, dtype=torch.int64)
