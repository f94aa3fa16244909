import math

import pytest
import torch

from snd.data import (
    SEMANTIC_CLASSES,
    SyntheticMultiViewDataset,
    SyntheticSceneConfig,
    ViewSampler,
    collate_multiview,
    generate_scene,
    pixel_correspondences,
    correspondence_pairs,
)

CONFIG = SyntheticSceneConfig(num_scenes=3, num_frames=12, height=24, width=32, seed=11, min_objects=4, max_objects=6)


@pytest.fixture(scope="module")
def scene():
    return generate_scene(CONFIG, 1)


@pytest.fixture(scope="module")
def render(scene):
    return scene.render()


def test_deterministic_by_seed_and_subset_rendering_is_identical(scene, render):
    again = generate_scene(CONFIG, 1).render([3, 7])
    assert torch.equal(again.views.images, render.views.images[[3, 7]])
    assert torch.equal(again.views.depths, render.views.depths[[3, 7]])
    other = generate_scene(SyntheticSceneConfig(**{**CONFIG.to_dict(), "seed": 12}), 1).render([3])
    assert not torch.equal(other.views.images, render.views.images[[3]])


def test_outputs_have_the_contract_types(render):
    views = render.views
    assert views.images.shape == (12, 3, 24, 32) and views.images.dtype == torch.float32
    assert views.masks.dtype == torch.int64 and views.semantics.dtype == torch.int64
    assert views.frame_indices.tolist() == list(range(12))
    assert 0 <= views.images.min() and views.images.max() <= 1 and views.images.std() > 0.05
    assert set(views.semantics.unique().tolist()) <= set(range(len(SEMANTIC_CLASSES)))


def test_depth_is_z_depth_of_the_exact_surface_points(scene, render):
    # Independent pinhole model: z-depth is the third camera coordinate of the world point.
    views = render.views
    world_to_camera = torch.linalg.inv(views.extrinsics.double())
    points = render.points.double().reshape(12, -1, 3)
    camera = points @ world_to_camera[:, :3, :3].transpose(1, 2) + world_to_camera[:, None, :3, 3]
    assert torch.allclose(camera[..., 2].float(), views.depths.reshape(12, -1), rtol=1e-4, atol=1e-4)
    # And each point projects back onto its own pixel centre.
    width, height = CONFIG.width, CONFIG.height
    fx, fy = scene.intrinsics[0, 0] * width, scene.intrinsics[1, 1] * height
    u = fx * camera[..., 0] / camera[..., 2] + scene.intrinsics[0, 2] * width
    v = fy * camera[..., 1] / camera[..., 2] + scene.intrinsics[1, 2] * height
    ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    assert (u - xs.reshape(-1)).abs().max() < 1e-3 and (v - ys.reshape(-1)).abs().max() < 1e-3


def test_points_lie_on_their_primitives_with_matching_normals(scene, render):
    views = render.views
    points = render.points.reshape(-1, 3)
    ids = views.masks.reshape(-1)
    normals_world = torch.einsum("vij,vjhw->vhwi", views.extrinsics[:, :3, :3], views.normals).reshape(-1, 3)
    room = scene.room
    checked = 0
    for i, (cx, cy, cz, r) in enumerate(scene.spheres.tolist()):
        sel = ids == 6 + len(scene.boxes) + i
        if sel.any():
            offset = points[sel] - torch.tensor([cx, cy, cz])
            assert torch.allclose(offset.norm(dim=-1), torch.full((int(sel.sum()),), r), atol=1e-3)
            assert torch.allclose(normals_world[sel], offset / r, atol=1e-2)
            checked += 1
    floor = ids == 4
    assert floor.any() and points[floor, 2].abs().max() < 1e-3
    assert torch.allclose(normals_world[floor], torch.tensor([0.0, 0.0, 1.0]).expand(int(floor.sum()), 3), atol=1e-5)
    for wall, (axis, value) in enumerate([(0, -room[0] / 2), (0, room[0] / 2), (1, -room[1] / 2), (1, room[1] / 2)]):
        sel = ids == wall
        if sel.any():
            assert (points[sel, axis] - value).abs().max() < 1e-3
            checked += 1
    for i, (bx, by, bz, hx, hy, hz, yaw) in enumerate(scene.boxes.tolist()):
        sel = ids == 6 + i
        if sel.any():
            c, s = math.cos(yaw), math.sin(yaw)
            local = (points[sel] - torch.tensor([bx, by, bz])) @ torch.tensor([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
            slack = (local.abs() - torch.tensor([hx, hy, hz])).max(dim=-1).values  # 0 on the surface
            assert slack.abs().max() < 1e-3
            checked += 1
    assert checked >= 2
    # Camera-frame normals are unit and face the camera (negative dot with the viewing ray).
    rays = torch.einsum("vij,vjhw->vhwi", views.extrinsics[:, :3, :3].transpose(1, 2), (render.points - views.extrinsics[:, None, None, :3, 3]).permute(0, 3, 1, 2))
    assert torch.allclose(views.normals.norm(dim=1), torch.ones(12, 24, 32), atol=1e-4)
    assert ((views.normals.permute(0, 2, 3, 1) * rays).sum(-1) < 1e-4).all()


def test_depth_based_correspondences_match_exact_ray_cast_ground_truth(scene, render):
    views = render.views
    a, b = 2, 6
    exact_pixels, exact_valid = scene.correspondences(a, b)
    pixels, valid = pixel_correspondences(
        views.depths[a], views.extrinsics[a], views.intrinsics[a], views.depths[b], views.extrinsics[b], views.intrinsics[b]
    )
    assert exact_valid.float().mean() > 0.3  # the views overlap substantially
    both = exact_valid & valid
    assert (pixels[both] - exact_pixels[both]).abs().max() < 0.05
    # Judged at pixel resolution, the depth test errs only at depth edges: it rarely accepts a point
    # just behind an occluder's silhouette, and rejects visible points next to edges or at grazing
    # angles (many at 24 x 32 pixels).
    assert (valid & ~exact_valid).sum() <= 0.02 * valid.sum()
    assert both.sum() >= 0.8 * exact_valid.sum()
    # Occluded pixels exist and are rejected by both.
    inside = (exact_pixels[..., 0] >= 0) & (exact_pixels[..., 0] < 32) & (exact_pixels[..., 1] >= 0) & (exact_pixels[..., 1] < 24)
    pixels_a, pixels_b = correspondence_pairs(pixels, valid)
    assert pixels_a.shape == pixels_b.shape == (int(valid.sum()), 2)
    assert inside.sum() >= exact_valid.sum()


def test_batched_correspondences_agree_with_single_pair(render):
    views = render.views
    pixels, valid = pixel_correspondences(
        views.depths[[0, 1]], views.extrinsics[[0, 1]], views.intrinsics[[0, 1]],
        views.depths[[4, 5]], views.extrinsics[[4, 5]], views.intrinsics[[4, 5]],
    )
    single, single_valid = pixel_correspondences(
        views.depths[1], views.extrinsics[1], views.intrinsics[1], views.depths[5], views.extrinsics[5], views.intrinsics[5]
    )
    assert torch.equal(valid[1], single_valid) and torch.allclose(pixels[1], single)


def test_occlusion_check_rejects_a_point_hidden_behind_an_object(scene, render):
    views = render.views
    pixels, valid = pixel_correspondences(
        views.depths[0], views.extrinsics[0], views.intrinsics[0], views.depths[8], views.extrinsics[8], views.intrinsics[8]
    )
    exact_pixels, exact_valid = scene.correspondences(0, 8)
    x, y = exact_pixels[..., 0], exact_pixels[..., 1]
    inside = (x >= 0) & (x < 32) & (y >= 0) & (y < 24)
    occluded = inside & ~exact_valid & (views.depths[0] > 0)
    assert occluded.sum() >= 10, "scene chosen so that objects hide parts of the room between these frames"
    assert valid[occluded].float().mean() < 0.05  # all but silhouette-edge pixels are rejected


def test_dataset_samples_and_hf_round_trip(tmp_path):
    dataset = SyntheticMultiViewDataset(CONFIG, ViewSampler(min_gap=3, max_gap=6), samples_per_scene=2)
    assert len(dataset) == 6
    sample = dataset[3]
    assert sample.scene == "synthetic_11_00001"
    assert sample.context.num_views == 2 and sample.target.num_views == 1
    gap = sample.context.frame_indices[1] - sample.context.frame_indices[0]
    assert 3 <= gap <= 6
    dataset.save_to_disk(tmp_path / "synthetic", progress=False)
    stored = SyntheticMultiViewDataset.from_disk(tmp_path / "synthetic", sampler=ViewSampler(min_gap=3, max_gap=6), samples_per_scene=2)
    assert len(stored) == 6
    for index in (0, 3, 5):
        a, b = dataset[index], stored[index]
        assert a.scene == b.scene
        for name in ("images", "extrinsics", "intrinsics", "depths", "normals", "masks", "semantics", "frame_indices", "near", "far"):
            assert torch.equal(getattr(a.context, name), getattr(b.context, name)), name
            assert torch.equal(getattr(a.target, name), getattr(b.target, name)), name
    batch = collate_multiview([stored[0], stored[1]])
    assert batch.context.images.shape == (2, 2, 3, 24, 32)


def test_config_validation():
    with pytest.raises(ValueError, match="min_objects"):
        SyntheticSceneConfig(min_objects=5, max_objects=2)
    with pytest.raises(ValueError, match="horizontal_fov_degrees"):
        SyntheticSceneConfig(horizontal_fov_degrees=180)
