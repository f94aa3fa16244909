"""Renderer inputs that used to pass every check (issue 21 part 2): integer opacities, negative scales, zero
quaternions and a NaN ``eps2d`` are refused naming the argument (and the first offending Gaussian)."""

from __future__ import annotations

import re

import pytest
import torch

from snd.splatting import render_features
from tests.reliability.test_render_validation import _scene


def _quat_scene():
    scene = _scene()
    quats = torch.nn.functional.normalize(torch.randn(6, 4, generator=torch.Generator().manual_seed(0)), dim=-1)
    return {**scene, "covars": None, "quats": quats, "scales": torch.full((6, 3), 0.1)}


def test_integer_opacities_are_refused():
    scene = _scene()
    scene["opacities"] = torch.full((6,), 5)
    with pytest.raises(ValueError, match=r"render_features: `opacities` must be a floating-point tensor, got dtype torch\.int64"):
        render_features(**scene)


def test_negative_scales_are_refused():
    scene = _quat_scene()
    render_features(**scene)
    scene["scales"][3, 1] = -0.1
    with pytest.raises(ValueError, match=re.escape("`scales` must be >= 0 (standard deviations, not log-scales); first offending index (3,)")):
        render_features(**scene)


def test_zero_quaternions_are_refused():
    scene = _quat_scene()
    scene["quats"][2] = 0.0
    with pytest.raises(ValueError, match=re.escape("`quats` must be non-zero quaternions (w, x, y, z); first offending index (2,)")):
        render_features(**scene)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -0.3, "0.3px"])
def test_bad_eps2d_is_refused(value):
    with pytest.raises(ValueError, match=r"render_features: `eps2d` must be a (finite number >= 0|number)"):
        render_features(**_scene(), eps2d=value)


def test_valid_scalars_still_render():
    output = render_features(**_scene(), eps2d=0.0)
    assert torch.isfinite(output.renders).all()
