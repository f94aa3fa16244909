"""Parity of the pure-PyTorch renderer with gsplat's CUDA rasterizer (needs a CUDA device; skipped on CPU)."""

from __future__ import annotations

import pytest
import torch

from snd.splatting import render_features
from tests.splatting.reference import random_scene

pytestmark = pytest.mark.cuda


def cuda_scene(count, channels, width, height, cameras=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    scene = random_scene(count, channels, width, height, cameras=cameras, generator=generator)
    return {name: tensor.float().cuda() for name, tensor in scene.items()}


@pytest.mark.parametrize("channels", [1, 3, 32, 385, 768])
def test_torch_backend_matches_gsplat(channels):
    width, height = 72, 40
    scene = cuda_scene(400, channels, width, height)
    backgrounds = torch.rand(2, channels, device="cuda")
    ours = render_features(**scene, width=width, height=height, backgrounds=backgrounds, render_depth=True, backend="torch")
    theirs = render_features(**scene, width=width, height=height, backgrounds=backgrounds, render_depth=True, backend="gsplat")
    assert ours.renders.shape == theirs.renders.shape == (2, height, width, channels)
    error = (ours.renders - theirs.renders).abs()
    assert error.mean() < 1e-4 and error.max() < 1e-2
    assert (ours.alphas - theirs.alphas).abs().max() < 1e-3
    covered = theirs.alphas > 0.05
    assert (ours.depths - theirs.depths)[covered].abs().max() < 1e-2


def test_auto_backend_uses_gsplat_on_cuda_and_gradients_agree():
    width, height = 48, 32
    scene = cuda_scene(150, 8, width, height, cameras=1, seed=1)
    grads = {}
    for backend in ("torch", "auto"):
        inputs = {name: tensor.clone().requires_grad_(name in ("means", "covars", "opacities", "colors")) for name, tensor in scene.items()}
        out = render_features(**inputs, width=width, height=height, backend=backend)
        (out.renders * torch.linspace(-1, 1, 8, device="cuda")).sum().backward()
        grads[backend] = {name: inputs[name].grad for name in ("colors", "opacities", "means")}
    for name in ("colors", "opacities", "means"):
        a, b = grads["torch"][name], grads["auto"][name]
        assert torch.allclose(a, b, atol=1e-3 * max(1.0, b.abs().max().item())), name


def test_gsplat_channel_chunk_and_batch_dims():
    width, height = 40, 24
    scene = cuda_scene(200, 600, width, height, cameras=2, seed=2)  # > 513 channels: gsplat needs chunking
    batched = {name: torch.stack([tensor, tensor]) for name, tensor in scene.items()}
    for chunk in (32, 513):
        out = render_features(**batched, width=width, height=height, backend="gsplat", channel_chunk=chunk)
        reference = render_features(**scene, width=width, height=height, backend="torch")
        assert out.renders.shape == (2, 2, height, width, 600)
        assert (out.renders[1] - reference.renders).abs().max() < 1e-2


def test_benchmark_runs_on_cuda():
    from snd.benchmarks.render import main

    rows = main(["--quick", "--device", "cuda", "--repeats", "1"])
    assert rows and rows[0]["speedup"] > 1.0 and rows[0]["max_abs_difference"] < 1e-3
