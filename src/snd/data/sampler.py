"""Choose context and target frames of a scene, deterministically per (seed, epoch, sample index)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import SceneDataError


@dataclass
class ViewSampler:
    """Two context frames ``gap`` apart (``min_gap <= gap <= max_gap``) and targets between them (inclusive).

    Defaults follow the authors' released ScanNet++ configuration (bounded sampler: context views
    8 to 12 frames apart, one target view, no minimum distance from the target to the context).

    The random draw depends only on ``(seed, epoch, index)``: no process-local RNG state is read or
    advanced. Under ``accelerate`` every process (and every DataLoader worker) therefore builds
    exactly the sample a single process would build for the same index, whatever shard of indices it
    is given. Call :meth:`set_epoch` (or the dataset's ``set_epoch``) to draw new views each epoch.

    Args:
        min_gap: smallest frame distance between the two context views. Default 8.
        max_gap: largest frame distance between the two context views. Default 12.
        num_target: number of target views. Default 1.
        min_distance_to_context: targets are drawn from ``[left + d, right - d]``. Default 0.
        distinct_targets: draw targets without replacement when the interval allows. Default True.
        seed: base seed. Default 0.
    """

    min_gap: int = 8
    max_gap: int = 12
    num_target: int = 1
    min_distance_to_context: int = 0
    distinct_targets: bool = True
    seed: int = 0
    epoch: int = 0

    def __post_init__(self) -> None:
        if self.min_gap < 1:
            raise ValueError(f"ViewSampler.min_gap must be >= 1, got {self.min_gap}")
        if self.max_gap < self.min_gap:
            raise ValueError(f"ViewSampler.max_gap ({self.max_gap}) must be >= min_gap ({self.min_gap})")
        if self.num_target < 1:
            raise ValueError(f"ViewSampler.num_target must be >= 1, got {self.num_target}")
        if self.min_distance_to_context < 0 or 2 * self.min_distance_to_context > self.min_gap:
            raise ValueError(
                f"ViewSampler.min_distance_to_context must be in [0, min_gap / 2], got {self.min_distance_to_context}"
            )

    @property
    def min_frames(self) -> int:
        """The fewest frames a scene needs."""
        return self.min_gap + 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def generator(self, index: int, epoch: int | None = None) -> np.random.Generator:
        epoch = self.epoch if epoch is None else epoch
        return np.random.default_rng([int(self.seed) & 0xFFFFFFFF, int(epoch), int(index)])

    def sample(self, num_frames: int, index: int, epoch: int | None = None, scene: str | None = None):
        """Pick frames of a scene with ``num_frames`` frames for sample ``index``.

        Returns:
            ``(context [2], target [num_target])`` int64 numpy arrays of frame positions, context sorted.
        Raises:
            SceneDataError: the scene has fewer than ``min_gap + 1`` frames.
        """
        if num_frames < self.min_frames:
            raise SceneDataError(
                f"has {num_frames} usable frames; the view sampler needs at least {self.min_frames} "
                f"(context views {self.min_gap} to {self.max_gap} frames apart)",
                scene=scene,
                field="frames",
            )
        rng = self.generator(index, epoch)
        gap = int(rng.integers(self.min_gap, min(self.max_gap, num_frames - 1) + 1))
        left = int(rng.integers(0, num_frames - gap))
        right = left + gap
        low, high = left + self.min_distance_to_context, right - self.min_distance_to_context
        choices = high - low + 1
        if self.distinct_targets and self.num_target <= choices:
            target = low + rng.choice(choices, size=self.num_target, replace=False)
        else:
            target = rng.integers(low, high + 1, size=self.num_target)
        return np.array([left, right], dtype=np.int64), np.asarray(target, dtype=np.int64)
