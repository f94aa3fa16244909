"""mmcv schedule values at chosen iterations, against the formulas restated from mmcv 1.x here."""

import math

import pytest
import torch

from snd.eval.protocols import schedules


def _mmcv_cosine_with_warmup(i, base, max_iters, warmup, ratio, min_ratio):
    end = base * min_ratio
    regular = end + 0.5 * (base - end) * (1 + math.cos(math.pi * i / max_iters))
    if i < warmup:
        return regular * (1 - (1 - i / warmup) * (1 - ratio))
    return regular


@pytest.mark.parametrize("iteration", [0, 1, 6400, 12799, 12800, 153600, 307199])
def test_depth_cosine_annealing_matches_mmcv(iteration):
    lr = schedules.CosineAnnealingLR(1e-4, 307200, warmup_iters=12800, warmup_ratio=1e-3, min_lr_ratio=1e-8)
    expected = _mmcv_cosine_with_warmup(iteration, 1e-4, 307200, 12800, 1e-3, 1e-8)
    assert lr(iteration) == pytest.approx(expected, rel=1e-12)


def test_depth_cosine_landmarks():
    lr = schedules.CosineAnnealingLR(1e-4, 307200, warmup_iters=12800, warmup_ratio=1e-3, min_lr_ratio=1e-8)
    assert lr(0) == pytest.approx(1e-7)  # warm-up starts at ratio x the cosine value (= base at 0)
    # the cosine runs from iteration 0: at the end of warm-up it is already below the base lr
    assert lr(12800) == pytest.approx(1e-4 * 0.5 * (1 + math.cos(math.pi / 24)), rel=1e-6)
    assert lr(153600) == pytest.approx(0.5e-4, rel=1e-6)


@pytest.mark.parametrize("iteration,expected", [(0, 1e-9), (750, 1e-3 * (1 - 750 / 320000) * (1 - 0.5 * (1 - 1e-6))),
                                                (1500, 1e-3 * (1 - 1500 / 320000)), (160000, 0.5e-3), (319999, 1e-3 / 320000)])
def test_segmentation_poly_matches_mmcv(iteration, expected):
    lr = schedules.PolyLR(1e-3, 320000, power=1.0, min_lr=0.0, warmup_iters=1500, warmup_ratio=1e-6)
    assert lr(iteration) == pytest.approx(expected, rel=1e-9)


def test_one_cycle_momentum_matches_mmcv():
    momentum = schedules.OneCycleMomentum(307200)
    e1 = 0.3 * 307200 - 1  # mmcv: float(pct_start * max_iters) - 1

    def restated(i):
        if i <= e1:
            a, b, pct = 0.95, 0.85, i / e1
        else:
            a, b, pct = 0.85, 0.95, (i - e1) / (307199 - e1)
        return b + 0.5 * (a - b) * (1 + math.cos(math.pi * pct))

    for i in (0, 1000, int(e1 // 2), int(e1), int(e1) + 1, 200000, 307199):
        assert momentum(i) == pytest.approx(restated(i), abs=1e-12)
    assert momentum(0) == pytest.approx(0.95)
    assert momentum(int(e1)) == pytest.approx(0.85)
    assert momentum(307199) == pytest.approx(0.95)


def test_apply_sets_lr_and_beta1():
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=1.0, betas=(0.9, 0.999))
    schedules.apply(optimizer, 0.25, 0.9)
    schedules.apply(optimizer, 0.5, 0.87)
    assert optimizer.param_groups[0]["lr"] == 0.5 and optimizer.param_groups[0]["betas"] == (0.87, 0.999)
