"""Choose context and target frames of a scene, deterministically per (seed, epoch, sample index)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .errors import SceneDataError


@dataclass
class ViewSampler:
    """Two context frames ``gap`` apart (``min_gap <= gap <= max_gap``) and targets between them (inclusive).

    ``context_gap="uniform"`` (default) draws the gap uniformly from ``[min_gap, max_gap]`` (capped at
    ``num_frames - 1``). The authors' released ScanNet++ configuration asks for 8 to 12 but its
    bounded sampler sets ``max_gap = min(num_views - 1, min_gap)`` ("we keep the bug untouched"),
    so the released training always uses gap ``min_gap`` = 8: ``context_gap="release_min"``.
    The left context frame is uniform over the valid positions; targets are uniform over
    ``[left + d, right - d]`` (one target view, ``d = 0``, as released).

    With ``frame_numbers`` (the number in each frame's file name), a context pair whose frame numbers
    differ by more than its position gap (frames missing in between) is rejected and redrawn, as the
    release's ScanNet++ loader does; the draw is made from the distribution that rejection sampling
    converges to (uniform gap, then uniform left over the valid pairs of that gap, renormalised), so
    it always terminates.

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
        context_gap: ``"uniform"`` (default) or ``"release_min"`` (always ``min_gap``, the release).
    """

    min_gap: int = 8
    max_gap: int = 12
    num_target: int = 1
    min_distance_to_context: int = 0
    distinct_targets: bool = True
    seed: int = 0
    epoch: int = 0
    context_gap: str = "uniform"

    def __post_init__(self) -> None:
        if self.context_gap not in ("uniform", "release_min"):
            raise ValueError(f"ViewSampler.context_gap must be 'uniform' or 'release_min', got {self.context_gap!r}")
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

    def gap_range(self, num_frames: int) -> tuple[int, int]:
        """The smallest and largest context gap drawn for a scene of ``num_frames`` frames."""
        if self.context_gap == "release_min":
            return self.min_gap, self.min_gap
        return self.min_gap, min(self.max_gap, num_frames - 1)

    def sample(
        self,
        num_frames: int,
        index: int,
        epoch: int | None = None,
        scene: str | None = None,
        frame_numbers: Sequence[int] | None = None,
    ):
        """Pick frames of a scene with ``num_frames`` frames for sample ``index``.

        Args:
            frame_numbers: optional ``[num_frames]`` file-name numbers of the frames; when given, context
                pairs with missing frame numbers between them are rejected (see the class docstring).
        Returns:
            ``(context [2], target [num_target])`` int64 numpy arrays of frame positions, context sorted.
        Raises:
            SceneDataError: the scene has fewer than ``min_gap + 1`` frames, or (with ``frame_numbers``)
                no context pair without missing frames in between.
        """
        if num_frames < self.min_frames:
            raise SceneDataError(
                f"has {num_frames} usable frames; the view sampler needs at least {self.min_frames} "
                + (f"(context views {self.min_gap} frames apart)" if self.context_gap == "release_min" else f"(context views {self.min_gap} to {self.max_gap} frames apart)"),
                scene=scene,
                field="frames",
            )
        rng = self.generator(index, epoch)
        low_gap, high_gap = self.gap_range(num_frames)
        if frame_numbers is None:
            gap = int(rng.integers(low_gap, high_gap + 1))
            left = int(rng.integers(0, num_frames - gap))
        else:
            gap, left = self._draw_contiguous_pair(rng, np.asarray(frame_numbers, dtype=np.int64), num_frames, low_gap, high_gap, scene)
        right = left + gap
        low, high = left + self.min_distance_to_context, right - self.min_distance_to_context
        choices = high - low + 1
        if self.distinct_targets and self.num_target <= choices:
            target = low + rng.choice(choices, size=self.num_target, replace=False)
        else:
            target = rng.integers(low, high + 1, size=self.num_target)
        return np.array([left, right], dtype=np.int64), np.asarray(target, dtype=np.int64)

    @staticmethod
    def _draw_contiguous_pair(rng, numbers: np.ndarray, num_frames: int, low_gap: int, high_gap: int, scene: str | None):
        """``(gap, left)`` with ``numbers[left + gap] - numbers[left] == gap``, drawn with the probabilities that
        "draw a uniform gap, a uniform left, redraw until the pair has no missing frame" converges to."""
        if numbers.shape != (num_frames,):
            raise ValueError(f"frame_numbers must have one entry per frame ({num_frames}), got shape {numbers.shape}")
        gaps, lefts, weights = [], [], []
        for gap in range(low_gap, high_gap + 1):
            valid = np.flatnonzero(numbers[gap:] - numbers[: num_frames - gap] == gap)  # [valid lefts]
            gaps.append(np.full(valid.shape, gap))
            lefts.append(valid)
            weights.append(np.full(valid.shape, 1.0 / (num_frames - gap)))  # P(gap) * P(left | gap), before rejection
        gaps, lefts, weights = np.concatenate(gaps), np.concatenate(lefts), np.concatenate(weights)
        if lefts.size == 0:
            raise SceneDataError(
                f"has no context pair {low_gap} to {high_gap} frames apart without missing frame numbers in between "
                "(data.reject_frame_gaps)",
                scene=scene,
                field="frames",
            )
        choice = int(rng.choice(lefts.size, p=weights / weights.sum()))
        return int(gaps[choice]), int(lefts[choice])
