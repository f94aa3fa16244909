"""The CPU renderer's work-saving steps change nothing but the work: exact tile lists, steps, buffers, pair counts."""

from __future__ import annotations

import math

import pytest
import torch

from snd.splatting import _torch_impl as impl
from snd.splatting import render_features
from tests.splatting.reference import dense_render, random_scene

WIDTH, HEIGHT = 44, 30  # partial tiles on both axes


def _project(scene, width=WIDTH, height=HEIGHT):
    return impl.project_gaussians(
        scene["means"][None], impl.symmetrize_upper(scene["covars"][None]), scene["opacities"][None],
        scene["viewmats"][None], scene["Ks"][None], width, height, 0.3, 0.01, 1e10,
    )


def _pairs(intersections):
    """{(tile, Gaussian)} of tile lists."""
    tiles = torch.repeat_interleave(torch.arange(intersections.tile_counts.numel()), intersections.tile_counts)
    return set(zip(tiles.tolist(), intersections.flatten_ids.tolist()))


@pytest.mark.parametrize("tile_size", [4, 16])
def test_tile_lists_keep_exactly_the_pairs_that_reach_a_pixel(tile_size):
    generator = torch.Generator().manual_seed(21)
    scene = random_scene(300, 2, WIDTH, HEIGHT, generator=generator)
    projected = _project(scene)
    tiles_x, tiles_y = math.ceil(WIDTH / tile_size), math.ceil(HEIGHT / tile_size)
    rectangle = impl.intersect_tiles(projected, tile_size, tiles_x, tiles_y, width=WIDTH, height=HEIGHT, exact=False)
    exact = impl.intersect_tiles(projected, tile_size, tiles_x, tiles_y, width=WIDTH, height=HEIGHT)

    # Brute force in float64: the largest o exp(-sigma) over the tile's pixel centres inside the image.
    means2d = projected.means2d.reshape(-1, 2)
    conics = projected.conics.reshape(-1, 3)
    opacities = projected.opacities.reshape(-1)
    reaching, near_threshold = set(), set()
    for tile, gaussian in _pairs(rectangle):
        tx, ty = tile % tiles_x, tile // tiles_x
        xs = torch.arange(tx * tile_size, min((tx + 1) * tile_size, WIDTH), dtype=torch.float64) + 0.5
        ys = torch.arange(ty * tile_size, min((ty + 1) * tile_size, HEIGHT), dtype=torch.float64) + 0.5
        dx = means2d[gaussian, 0] - xs[None, :]
        dy = means2d[gaussian, 1] - ys[:, None]
        a, b, c = conics[gaussian]
        sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
        peak = (opacities[gaussian] * torch.exp(-sigma)).max().item()
        if peak >= 1 / 255:
            reaching.add((tile, gaussian))
        elif peak >= math.exp(-impl.REACH_MARGIN) / 255:
            near_threshold.add((tile, gaussian))
    kept = _pairs(exact)
    assert reaching <= kept  # conservative: nothing that can contribute is dropped
    assert kept <= reaching | near_threshold  # and only the margin's worth of extra pairs is kept
    assert len(kept) < 0.9 * len(_pairs(rectangle))  # the rectangle lists many pairs that reach nothing
    # Lists stay depth-sorted: each tile's exact list is its rectangle list with entries removed.
    for tile in range(exact.tile_counts.numel()):
        full = rectangle.flatten_ids[rectangle.tile_offsets[tile] : rectangle.tile_offsets[tile] + rectangle.tile_counts[tile]].tolist()
        short = exact.flatten_ids[exact.tile_offsets[tile] : exact.tile_offsets[tile] + exact.tile_counts[tile]].tolist()
        assert [g for g in full if g in set(short)] == short


@pytest.mark.parametrize("opaque", [False, True])
def test_pair_counts_match_the_dense_reference(opaque):
    generator = torch.Generator().manual_seed(22)
    scene = random_scene(200, 3, WIDTH, HEIGHT, generator=generator, behind=0.0)
    if opaque:  # pixels stop at T <= 1e-4: stopped pairs must not be counted (nor blended)
        scene["opacities"] = 0.95 + 0.049 * torch.rand(200, generator=generator, dtype=torch.float64)
    reference = {}
    ref_render, _, _ = dense_render(
        scene["means"], scene["covars"], scene["opacities"], scene["colors"], scene["viewmats"][0], scene["Ks"][0],
        WIDTH, HEIGHT, stats=reference,
    )
    stats = {}
    for max_elements in (1 << 20, 2000):  # one step per tile, and many steps carrying T
        stats = {}
        renders, _, _ = impl.rasterize_torch(
            scene["means"][None], scene["covars"][None], scene["opacities"][None], scene["colors"][None],
            scene["viewmats"][None], scene["Ks"][None], WIDTH, HEIGHT, 0.01, 1e10, 0.3, None, False,
            max_elements=max_elements, stats=stats,
        )
        assert stats["contributing_pairs"] == reference["contributing_pairs"] > 0
        assert stats["pixels"] == WIDTH * HEIGHT
        assert stats["contributing_pairs"] <= stats["evaluated_pairs"]
        assert (renders[0, 0] - ref_render).abs().max() < 1e-9


@pytest.mark.parametrize("max_elements", [1 << 20, 3000])
def test_grad_path_matches_no_grad_path_across_steps_and_stops(max_elements):
    generator = torch.Generator().manual_seed(23)
    scene = random_scene(250, 4, WIDTH, HEIGHT, generator=generator, behind=0.0)
    scene["opacities"][:120] = 0.97  # some pixels stop
    with torch.no_grad():
        fast = render_features(**scene, width=WIDTH, height=HEIGHT, render_depth=True, backend="torch", max_elements=max_elements)
    inputs = {name: tensor.clone().requires_grad_(name in ("means", "colors", "opacities")) for name, tensor in scene.items()}
    recorded = render_features(**inputs, width=WIDTH, height=HEIGHT, render_depth=True, backend="torch", max_elements=max_elements)
    for a, b in zip(fast, recorded):
        assert (a - b.detach()).abs().max() < 1e-12
    (recorded.renders.sum() + recorded.depths.sum()).backward()
    assert all(torch.isfinite(inputs[name].grad).all() and inputs[name].grad.abs().sum() > 0 for name in ("means", "colors", "opacities"))
    # the gradient is the derivative: <grad, d> equals the central difference of the (float64) render along d, per input
    for name in ("means", "colors", "opacities"):
        direction = torch.randn(scene[name].shape, generator=generator, dtype=scene[name].dtype)
        step = 1e-6

        def total(sign):
            with torch.no_grad():
                moved = render_features(**{**scene, name: scene[name] + sign * step * direction}, width=WIDTH, height=HEIGHT,
                                        render_depth=True, backend="torch", max_elements=max_elements)
            return float(moved.renders.sum() + moved.depths.sum())

        numeric = (total(1) - total(-1)) / (2 * step)
        analytic = float((inputs[name].grad * direction).sum())
        assert abs(analytic - numeric) <= 1e-4 * max(1.0, abs(numeric)), (name, analytic, numeric)


def test_workspace_buffers_are_reused_between_renders():
    generator = torch.Generator().manual_seed(24)
    scene = random_scene(300, 8, WIDTH, HEIGHT, generator=generator)
    impl.release_workspace()
    with torch.no_grad():
        first = render_features(**scene, width=WIDTH, height=HEIGHT, backend="torch").renders
        pointers = {key: buffer.data_ptr() for key, buffer in impl._workspace().buffers.items()}
        second = render_features(**scene, width=WIDTH, height=HEIGHT, backend="torch").renders
    assert pointers and {key: buffer.data_ptr() for key, buffer in impl._workspace().buffers.items()} == pointers
    assert torch.equal(first, second)
    impl.release_workspace()
    assert impl._workspace().buffers == {}
