"""Iteration-based learning-rate and momentum schedules with mmcv's semantics.

The authors' probes (FiT3D-style mmseg/mmcv configs under ``evaluation1/``) run an
``IterBasedRunner`` whose hooks set the optimiser's learning rate and Adam ``beta1`` *before*
every iteration ``i`` (0-based), from ``i`` and the run length ``max_iters``. These functions
restate mmcv 1.x's hooks (``mmcv/runner/hooks/lr_updater.py``, ``momentum_updater.py``):

* ``CosineAnnealingLrUpdaterHook`` (``by_epoch=False``)::

      regular(i) = end + 0.5 * (base - end) * (cos(pi * i / max_iters) + 1),  end = base * min_lr_ratio

  The cosine runs from iteration 0 (it does not wait for the warm-up to end).
* ``PolyLrUpdaterHook``::

      regular(i) = (base - min_lr) * (1 - i / max_iters) ** power + min_lr

* linear warm-up (``warmup="linear"``), applied on top of the regular value while ``i < warmup_iters``::

      k = (1 - i / warmup_iters) * (1 - warmup_ratio);  lr(i) = regular(i) * (1 - k)

* ``OneCycleMomentumUpdaterHook`` (``momentum_config=dict(policy="OneCycle")``, defaults
  ``base_momentum=0.85``, ``max_momentum=0.95``, ``pct_start=0.3``, cosine annealing, two phases):
  phase 1 ends at ``e1 = pct_start * max_iters - 1`` and anneals 0.95 -> 0.85 with
  ``pct = i / e1``; phase 2 ends at ``e2 = max_iters - 1`` and anneals 0.85 -> 0.95 with
  ``pct = (i - e1) / (e2 - e1)``; ``anneal_cos(a, b, pct) = b + 0.5 * (a - b) * (cos(pi * pct) + 1)``.
  For Adam/AdamW this sets ``betas[0]``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


def annealing_cos(start: float, end: float, factor: float) -> float:
    """mmcv ``annealing_cos``: cosine from ``start`` (factor 0) to ``end`` (factor 1)."""
    return end + 0.5 * (start - end) * (math.cos(math.pi * factor) + 1)


def linear_warmup(value: float, iteration: int, warmup_iters: int, warmup_ratio: float) -> float:
    """mmcv's linear warm-up of a regular value at ``iteration`` (no change once ``iteration >= warmup_iters``)."""
    if warmup_iters <= 0 or iteration >= warmup_iters:
        return value
    k = (1 - iteration / warmup_iters) * (1 - warmup_ratio)
    return value * (1 - k)


@dataclass(frozen=True)
class CosineAnnealingLR:
    """``lr_config=dict(policy="CosineAnnealing", warmup="linear", ..., by_epoch=False)``."""

    base_lr: float
    max_iters: int
    warmup_iters: int = 0
    warmup_ratio: float = 0.1
    min_lr_ratio: float = 0.0

    def __call__(self, iteration: int) -> float:
        regular = annealing_cos(self.base_lr, self.base_lr * self.min_lr_ratio, iteration / self.max_iters)
        return linear_warmup(regular, iteration, self.warmup_iters, self.warmup_ratio)

    def settings(self) -> dict:
        return {"policy": "CosineAnnealing (mmcv, by iteration)", **asdict(self)}


@dataclass(frozen=True)
class PolyLR:
    """``lr_config=dict(policy="poly", warmup="linear", power=..., min_lr=..., by_epoch=False)``."""

    base_lr: float
    max_iters: int
    power: float = 1.0
    min_lr: float = 0.0
    warmup_iters: int = 0
    warmup_ratio: float = 0.1

    def __call__(self, iteration: int) -> float:
        coeff = (1 - iteration / self.max_iters) ** self.power
        regular = (self.base_lr - self.min_lr) * coeff + self.min_lr
        return linear_warmup(regular, iteration, self.warmup_iters, self.warmup_ratio)

    def settings(self) -> dict:
        return {"policy": "poly (mmcv, by iteration)", **asdict(self)}


@dataclass(frozen=True)
class OneCycleMomentum:
    """``momentum_config=dict(policy="OneCycle")``: Adam ``beta1`` 0.95 -> 0.85 -> 0.95 (two cosine phases)."""

    max_iters: int
    base_momentum: float = 0.85
    max_momentum: float = 0.95
    pct_start: float = 0.3

    def __call__(self, iteration: int) -> float:
        phases = (
            (float(self.pct_start * self.max_iters) - 1, self.max_momentum, self.base_momentum),
            (self.max_iters - 1, self.base_momentum, self.max_momentum),
        )
        start_iter = 0.0
        for index, (end_iter, start, end) in enumerate(phases):
            if iteration <= end_iter or index == len(phases) - 1:
                return annealing_cos(start, end, (iteration - start_iter) / (end_iter - start_iter))
            start_iter = end_iter
        raise AssertionError("unreachable")

    def settings(self) -> dict:
        return {"policy": "OneCycle momentum (mmcv, beta1)", **asdict(self)}


def apply(optimizer, lr: float, beta1: float | None = None) -> None:
    """Set every parameter group's learning rate (and Adam ``beta1``) as mmcv's hooks do before an iteration."""
    for group in optimizer.param_groups:
        group["lr"] = lr
        if beta1 is not None:
            group["betas"] = (beta1, group["betas"][1])
