"""The paper presets compute what the authors' released training computes (issue #10).

Each test restates the release's behaviour independently (its formula, a brute-force simulation of its
loop, or a closed form) and checks the switch that reproduces it; the README section "Fidelity to the
authors' release" lists the same rows.
"""

from __future__ import annotations

import dataclasses
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from snd.data import ViewSampler
from snd.distill import load_config
from snd.gaussians import Gaussians

PAPER_PRESETS = ["scannetpp_dinov2s", "scannetpp_dinov2s_no_blending", "scannetpp_dinov2b", "scannetpp_dinov2b_no_blending"]


# --------------------------------------------------------------------------------------------
# Presets


@pytest.mark.parametrize("name", PAPER_PRESETS)
def test_paper_presets_use_every_release_switch(name):
    # The release's settings, read from its code (file in davidshavin4/Splat-and-Distill in the comment).
    release = {
        ("data", "context_gap"): "release_min",  # view_sampler_bounded.py: max_gap = min(num_views - 1, min_gap)
        ("data", "min_gap"): 8,  # bounded_scannetpp.yaml
        ("data", "scene_selection"): "instance_masks",  # dataset_scannetpp.py: folders with instance_segmentation
        ("data", "keep_bad_frames"): True,  # is_bad is read but never used
        ("data", "reject_frame_gaps"): True,  # `continue` when frame numbers jump
        ("teacher", "upsample"): "mask_aware",
        ("teacher", "upsample_fallback"): "zero",  # mask_aware_bilinear_upsample_hr_mask: w_sum 0 -> weights 0
        ("teacher", "upsample_align_corners"): True,  # torch.linspace(0, W_lr - 1, out_w)
        ("teacher", "splat_covariance"): "release",  # ludvig.py extract_scales_and_rotations
        ("teacher", "opacity_clamp"): 0.99,  # graphdeco rasterizer
        ("teacher", "near_plane"): 0.2,  # graphdeco in_frustum: z <= 0.2 culled
        ("teacher", "principal_point"): "centered",  # get_fov + symmetric projection matrix
        ("teacher", "dropout_in_teacher"): True,  # the teacher is never put in eval mode
        ("teacher", "update_timing"): "before_step",  # EMA in on_after_backward at global_step % 10 == 0
        ("teacher", "holes"): "rgb",  # err_masks = (output.color == 0).all(dim=2)
        ("teacher", "momentum"): 0.999,
        ("teacher", "update_every"): 10,
        ("training", "max_steps"): 300_001,  # experiment/scannetpp.yaml
        ("training", "one_cycle_extra_steps"): 10,  # OneCycleLR(total_steps=max_steps + 10)
        ("training", "warmup_fraction"): 0.01,
        ("training", "max_grad_norm"): 0.0,  # gradient_clip_val commented out in main.py
        ("training", "float32_matmul_precision"): "high",  # main.py
        ("training", "mixed_precision"): "no",  # main.py: Trainer(...) sets no precision= -> Lightning 32-true
        ("training", "lr"): 2e-5,
        ("training", "batch_size"): 14,
        ("model", "lora_rank"): 8,
        ("model", "lora_alpha"): 8.0,
        ("model", "lora_dropout"): 0.1,
        ("loss", "student_temperature"): 1.0,
        ("loss", "teacher_temperature"): 1.0,
        ("loss", "average"): "all",
    }
    config = load_config(name)
    for (section, key), value in release.items():
        assert getattr(getattr(config, section), key) == value, (name, section, key)
    assert set(config.model.lora_target_modules) == {"qkv", "proj", "patch_embeddings.projection"}


@pytest.mark.parametrize("preset", [None, "tiny_synthetic"])
def test_embedded_default_keeps_our_choices_as_named_switches(preset):
    config = load_config(preset)
    assert (config.data.context_gap, config.teacher.splat_covariance, config.teacher.holes, config.teacher.principal_point) == (
        "uniform", "lifter", "alpha", "intrinsics")
    assert config.teacher.opacity_clamp == 0.999 and not config.teacher.dropout_in_teacher
    assert config.training.one_cycle_extra_steps == 1 and config.teacher.update_timing == "after_step"


# --------------------------------------------------------------------------------------------
# Row 1 and 8: view sampling


def test_release_min_sampler_always_draws_the_minimum_gap():
    def release_gap_bounds(num_views: int, min_gap: int) -> tuple[int, int]:
        # view_sampler_bounded.py, non-circular cameras, no warm-up: "we keep the bug untouched"
        max_gap = min(num_views - 1, min_gap)
        return min_gap, max_gap

    assert release_gap_bounds(40, 8) == (8, 8)
    release = ViewSampler(min_gap=8, max_gap=12, context_gap="release_min")
    uniform = ViewSampler(min_gap=8, max_gap=12)
    release_gaps, uniform_gaps, lefts = set(), set(), set()
    for seed in range(20):
        release.seed = uniform.seed = seed
        for index in range(25):
            context, target = release.sample(40, index)
            release_gaps.add(int(context[1] - context[0]))
            lefts.add(int(context[0]))
            assert context[0] <= target[0] <= context[1]
            context, _ = uniform.sample(40, index)
            uniform_gaps.add(int(context[1] - context[0]))
    assert release_gaps == {8}
    assert uniform_gaps == set(range(8, 13))
    assert lefts == set(range(0, 40 - 8))  # left uniform over all valid positions
    with pytest.raises(ValueError, match="context_gap"):
        ViewSampler(context_gap="widest")


def test_frame_gap_rejection_matches_the_release_loop():
    # Frame numbers 100..111 with 105 missing: 11 frames.
    numbers = [n for n in range(100, 112) if n != 105]
    sampler = ViewSampler(min_gap=3, max_gap=12, context_gap="release_min", seed=1)
    valid = {left for left in range(len(numbers) - 3) if numbers[left + 3] - numbers[left] == 3}
    assert valid == {0, 1, 5, 6, 7}
    counts = {}
    for index in range(2000):
        context, _ = sampler.sample(len(numbers), index, frame_numbers=numbers)
        assert context[1] - context[0] == 3
        counts[int(context[0])] = counts.get(int(context[0]), 0) + 1
    assert set(counts) == valid
    # The release redraws (gap, left) until the pair has no missing frame: simulate that loop.
    rng = np.random.default_rng(0)
    simulated = {}
    for _ in range(8000):
        while True:
            left = int(rng.integers(0, len(numbers) - 3))
            if numbers[left + 3] - numbers[left] == 3:
                break
        simulated[left] = simulated.get(left, 0) + 1
    for left in valid:
        assert abs(counts[left] / 2000 - simulated[left] / 8000) < 0.04, (left, counts, simulated)
    # uniform gaps: joint (gap, left) probabilities are the conditional of the release's two-step draw
    sampler = ViewSampler(min_gap=3, max_gap=5, seed=2)
    drawn = {}
    for index in range(4000):
        context, _ = sampler.sample(len(numbers), index, frame_numbers=numbers)
        key = (int(context[1] - context[0]), int(context[0]))
        assert numbers[context[1]] - numbers[context[0]] == key[0]
        drawn[key] = drawn.get(key, 0) + 1
    weights = {(g, l): 1.0 / (len(numbers) - g) for g in range(3, 6) for l in range(len(numbers) - g) if numbers[l + g] - numbers[l] == g}
    total = sum(weights.values())
    assert set(drawn) == set(weights)
    for key, weight in weights.items():
        assert abs(drawn[key] / 4000 - weight / total) < 0.03, key
    # no pair at all: a clear error, not an endless loop
    from snd.data import SceneDataError

    with pytest.raises(SceneDataError, match="missing frame numbers"):
        ViewSampler(min_gap=3, max_gap=3).sample(5, 0, frame_numbers=[0, 1, 2, 4, 5])


@pytest.fixture(scope="module")
def scannetpp_root(tmp_path_factory):
    from tests.data.fixtures import write_scannetpp_scene, write_split

    root = tmp_path_factory.mktemp("scannetpp_release")
    write_scannetpp_scene(root, scene_index=0, name="scene_a", bad_frames=(5,))
    write_scannetpp_scene(root, scene_index=1, name="scene_b")
    write_scannetpp_scene(root, scene_index=0, name="scene_gap")
    # scene_gap: frame number 1006 missing from the JSON (and the disk)
    meta_path = root / "scenes" / "scene_gap" / "transforms_train.json"
    meta = json.loads(meta_path.read_text())
    meta["frames"] = [f for f in meta["frames"] if f["file_path"] != "DSC01006.JPG"]
    meta_path.write_text(json.dumps(meta))
    # a scene folder without instance masks (the release skips it)
    write_scannetpp_scene(root, scene_index=1, name="scene_nomask")
    import shutil

    shutil.rmtree(root / "scenes" / "scene_nomask" / "instance_segmentation")
    write_split(root, "train", ["scene_b"])
    write_split(root, "val", ["scene_b"])
    return root


def test_scene_selection_bad_frames_and_frame_gaps_on_a_scannetpp_folder(scannetpp_root):
    from snd.distill.build import build_dataset
    from snd.distill.config import DataConfig

    def data(**kwargs):
        return DataConfig(dataset="scannetpp", root=str(scannetpp_root), image_height=24, image_width=32, min_gap=3, max_gap=3, **kwargs)

    # The release: os.listdir(scenes) filtered by os.path.isdir(<scene>/instance_segmentation).
    expected = sorted(p.name for p in (scannetpp_root / "scenes").iterdir() if (p / "instance_segmentation").is_dir())
    assert expected == ["scene_a", "scene_b", "scene_gap"]
    release = build_dataset(data(scene_selection="instance_masks"), seed=0)
    assert [release.scene_name(i) for i in range(release.num_scenes())] == expected
    ours = build_dataset(data(), seed=0)
    assert [ours.scene_name(i) for i in range(ours.num_scenes())] == ["scene_b"]

    # is_bad frames: kept by the release (12 frames), dropped by default (11)
    kept = build_dataset(data(scene_selection="instance_masks", keep_bad_frames=True), seed=0)
    assert kept.num_frames(0) == 12 and release.num_frames(0) == 11
    assert 1005 in kept.scenes[0].frame_numbers and 1005 not in release.scenes[0].frame_numbers

    # frame gaps: scene_gap has numbers 1000..1011 without 1006; pairs 3 apart must not straddle it
    gap_index = expected.index("scene_gap")
    strict = build_dataset(data(scene_selection="instance_masks", reject_frame_gaps=True, context_gap="release_min", samples_per_scene=200), seed=0)
    loose = build_dataset(data(scene_selection="instance_masks", context_gap="release_min", samples_per_scene=200), seed=0)
    numbers = strict.scenes[gap_index].frame_numbers
    assert 1006 not in numbers and len(numbers) == 11
    straddles = {"strict": 0, "loose": 0}
    for index in range(gap_index * 200, (gap_index + 1) * 200):
        for name, dataset in (("strict", strict), ("loose", loose)):
            scene, context, _ = dataset.sample_frames(index)
            assert scene == gap_index and context[1] - context[0] == 3
            straddles[name] += numbers[context[1]] - numbers[context[0]] != 3
    assert straddles["strict"] == 0 and straddles["loose"] > 0
    sample = strict[gap_index * 200]
    frames = sample.context.frame_indices.tolist()
    assert frames[1] - frames[0] == 3


# --------------------------------------------------------------------------------------------
# Row 5: the release's splat covariances


def _release_quaternion(matrix: torch.Tensor) -> torch.Tensor:
    """ludvig.py rotation_matrix_to_quaternion restated for one matrix (float64): identity unless a proper rotation."""
    error = (matrix.T @ matrix - torch.eye(3, dtype=matrix.dtype)).abs().max()
    if not (error < 1e-3 and torch.linalg.det(matrix) > 0):
        return torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=matrix.dtype)
    m = matrix
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    if trace > 0:
        t = torch.sqrt(trace + 1)
        q = torch.stack([0.5 * t, (m[2, 1] - m[1, 2]) / (2 * t), (m[0, 2] - m[2, 0]) / (2 * t), (m[1, 0] - m[0, 1]) / (2 * t)])
    elif m[0, 0] >= m[1, 1] and m[0, 0] >= m[2, 2]:
        t = torch.sqrt(1 + m[0, 0] - m[1, 1] - m[2, 2])
        q = torch.stack([(m[2, 1] - m[1, 2]) / (2 * t), 0.5 * t, (m[0, 1] + m[1, 0]) / (2 * t), (m[0, 2] + m[2, 0]) / (2 * t)])
    elif m[1, 1] >= m[2, 2]:
        t = torch.sqrt(1 + m[1, 1] - m[0, 0] - m[2, 2])
        q = torch.stack([(m[0, 2] - m[2, 0]) / (2 * t), (m[0, 1] + m[1, 0]) / (2 * t), 0.5 * t, (m[1, 2] + m[2, 1]) / (2 * t)])
    else:
        t = torch.sqrt(1 + m[2, 2] - m[0, 0] - m[1, 1])
        q = torch.stack([(m[1, 0] - m[0, 1]) / (2 * t), (m[0, 2] + m[2, 0]) / (2 * t), (m[1, 2] + m[2, 1]) / (2 * t), 0.5 * t])
    return q / q.norm()


def _graphdeco_covariance(scales: torch.Tensor, quaternion: torch.Tensor) -> torch.Tensor:
    """graphdeco computeCov3D: R from (r, x, y, z), M = S R (glm), Sigma = M^T M = R^T S^2 R in glm's column-major terms."""
    r, x, y, z = quaternion
    rotation = torch.stack([
        torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - r * z), 2 * (x * z + r * y)]),
        torch.stack([2 * (x * y + r * z), 1 - 2 * (x * x + z * z), 2 * (y * z - r * x)]),
        torch.stack([2 * (x * z - r * y), 2 * (y * z + r * x), 1 - 2 * (x * x + y * y)]),
    ])
    return rotation @ torch.diag(scales**2) @ rotation.T


def test_release_splat_covariance_is_sigma_squared_and_identity_for_reflections():
    from snd.distill.teacher import release_splat_covariances

    # Isotropic sigma = 0.5: the release renders std 0.25 = sigma^2 (variance sigma^4).
    covariance = 0.25 * torch.eye(3, dtype=torch.float64)
    assert torch.allclose(release_splat_covariances(covariance), 0.0625 * torch.eye(3, dtype=torch.float64))

    # Random anisotropic covariances, compared with the release's eigh -> quaternion -> rasterizer path.
    generator = torch.Generator().manual_seed(0)
    rotations = torch.linalg.qr(torch.randn(64, 3, 3, generator=generator, dtype=torch.float64)).Q
    sigmas = torch.rand(64, 3, generator=generator, dtype=torch.float64) * 0.9 + 0.1
    covariances = rotations @ torch.diag_embed(sigmas**2) @ rotations.transpose(-1, -2)
    ours = release_splat_covariances(covariances)
    variances, vectors = torch.linalg.eigh(covariances)
    reflections = 0
    for index in range(64):
        reflections += bool(torch.linalg.det(vectors[index]) < 0)
        expected = _graphdeco_covariance(variances[index], _release_quaternion(vectors[index]))
        assert torch.allclose(ours[index], expected, atol=1e-12), index
        # rendered standard deviations along the eigen-axes are the variances (sigma^2)
        assert torch.allclose(torch.linalg.eigvalsh(ours[index]).sqrt(), torch.sort(sigmas[index] ** 2).values, atol=1e-12)
    assert 0 < reflections < 64  # both branches exercised
    # a reflection keeps world axes: diag(lambda^2) in ascending eigenvalue order, whatever the true axes
    reflected = next(i for i in range(64) if torch.linalg.det(vectors[i]) < 0)
    assert torch.allclose(ours[reflected], torch.diag(variances[reflected] ** 2), atol=1e-12)


# --------------------------------------------------------------------------------------------
# Row 6: centred principal point


def test_centered_intrinsics_reproduce_the_release_frustum():
    from snd.distill.teacher import centered_intrinsics

    centred = torch.tensor([[0.8, 0.0, 0.5], [0.0, 1.1, 0.5], [0.0, 0.0, 1.0]])
    assert torch.allclose(centered_intrinsics(centred), centred, atol=1e-6)
    # off-centre cx only (cy = 0.5): fov_x = atan(cx / fx) + atan((1 - cx) / fx), focal = 0.5 / tan(fov_x / 2)
    fx, fy, cx = 0.8, 1.1, 0.6
    shifted = torch.tensor([[fx, 0.0, cx], [0.0, fy, 0.5], [0.0, 0.0, 1.0]], dtype=torch.float64)
    fov_x = math.atan(cx / fx) + math.atan((1 - cx) / fx)
    result = centered_intrinsics(shifted)
    assert result[0, 0].item() == pytest.approx(0.5 / math.tan(fov_x / 2), rel=1e-12)
    # the vertical edge rays pass through x = 0.5, off the principal point: both have x-slope a = (0.5 - cx) / fx
    a = (0.5 - cx) / fx
    cos_y = (a * a - 0.25 / fy**2 + 1) / (a * a + 0.25 / fy**2 + 1)
    assert result[1, 1].item() == pytest.approx(0.5 / math.tan(math.acos(cos_y) / 2), rel=1e-12)
    assert result[1, 1].item() > fy  # a narrower vertical field of view than the true intrinsics
    assert (result[0, 2].item(), result[1, 2].item()) == (0.5, 0.5)
    # both off-centre: the angle between the rays through the edge midpoints (get_fov restated with numpy)
    cy = 0.42
    both = torch.tensor([[[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]]], dtype=torch.float64)

    def angle(a, b):
        ray_a = np.array([(a[0] - cx) / fx, (a[1] - cy) / fy, 1.0])
        ray_b = np.array([(b[0] - cx) / fx, (b[1] - cy) / fy, 1.0])
        return math.acos(ray_a @ ray_b / np.linalg.norm(ray_a) / np.linalg.norm(ray_b))

    result = centered_intrinsics(both)[0]
    assert result[0, 0].item() == pytest.approx(0.5 / math.tan(angle((0, 0.5), (1, 0.5)) / 2), rel=1e-10)
    assert result[1, 1].item() == pytest.approx(0.5 / math.tan(angle((0.5, 0), (0.5, 1)) / 2), rel=1e-10)


# --------------------------------------------------------------------------------------------
# Rows 5, 6, 10 end to end through SplatTeacher: alpha clamp, near culling, holes


class _ConstantBackbone(nn.Module):
    """A teacher backbone whose patch features are one constant vector (so every rendered value is known)."""

    def __init__(self, value: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("value", value)

    def forward(self, pixel_values):
        count, _, height, width = pixel_values.shape
        return SimpleNamespace(patch_features=self.value[None, :, None, None].expand(count, -1, height // 14, width // 14).clone())


def _one_gaussian_lifter(depth: float, sigma: float, harmonics_dc: float | None = None, views: int = 2, size: int = 28,
                         harmonics: torch.Tensor | None = None):
    """One opaque isotropic Gaussian on the optical axis at ``depth``; every other context pixel's Gaussian is behind the camera."""

    def lift(context):
        count = views * size * size
        means = torch.zeros(1, count, 3)
        means[0, :, 2] = -5.0
        means[0, 0, 2] = depth
        covariances = torch.eye(3).expand(1, count, 3, 3).clone() * 1e-4
        covariances[0, 0] = torch.eye(3) * sigma**2
        opacities = torch.zeros(1, count)
        opacities[0, 0] = 1.0
        sh = None
        if harmonics_dc is not None:
            sh = torch.full((1, count, 3, 1), harmonics_dc)
        if harmonics is not None:
            sh = harmonics.expand(1, count, 3, -1).clone()
        return Gaussians(means=means, covariances=covariances, opacities=opacities, harmonics=sh)

    return lift


def _views(size: int = 28, views: int = 1, cx: float = 0.5):
    intrinsics = torch.tensor([[1.0, 0.0, cx], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])
    return SimpleNamespace(
        images=torch.full((1, views, 3, size, size), 0.5),
        masks=torch.zeros(1, views, size, size, dtype=torch.long),
        extrinsics=torch.eye(4).expand(1, views, 4, 4).clone(),
        intrinsics=intrinsics.expand(1, views, 3, 3).clone(),
    )


def _splat_teacher(lifter, **overrides):
    from snd.distill.teacher import EMATeacher, SplatTeacher

    teacher_config = load_config("scannetpp_dinov2s").teacher
    for key, value in overrides.items():
        setattr(teacher_config, key, value)
    value = torch.tensor([1.0, -2.0, 3.0])
    return SplatTeacher.from_config(EMATeacher(_ConstantBackbone(value)), lifter, 14, teacher_config), value


def test_opacity_clamp_and_near_plane_change_the_render_as_the_closed_form_says():
    # A huge opaque Gaussian in front of the camera: alpha = min(clamp, exp(-d)) with exp(-d) > 0.9999 at every
    # pixel, so the single-Gaussian render is exactly clamp * feature everywhere.
    far_enough = _one_gaussian_lifter(depth=0.3, sigma=50.0)
    too_near = _one_gaussian_lifter(depth=0.15, sigma=50.0)
    context, target = _views(views=2), _views()
    for clamp in (0.99, 0.999):
        splat, value = _splat_teacher(far_enough, opacity_clamp=clamp)
        out = splat(context, target, grid_size=(2, 2))
        expected = (clamp * value)[None, None, :, None, None].expand_as(out.features)
        assert torch.allclose(out.features, expected, rtol=1e-5, atol=0), clamp  # 0.99 vs 0.999: 1e-3 apart
        assert out.valid.all()
    # the release culls camera z <= 0.2: a Gaussian at z = 0.15 disappears (all holes, features zero) ...
    splat, _ = _splat_teacher(too_near)
    out = splat(context, target, grid_size=(2, 2))
    assert out.holes.all() and not out.valid.any() and torch.equal(out.features, torch.zeros_like(out.features))
    # ... and renders with gsplat's near plane 0.01
    splat, value = _splat_teacher(too_near, near_plane=0.01)
    out = splat(context, target, grid_size=(2, 2))
    assert torch.allclose(out.features, (0.99 * value)[None, None, :, None, None].expand_as(out.features), rtol=1e-5)


def test_centered_principal_point_moves_the_render_to_the_image_centre():
    # A small Gaussian on the optical axis: with the true intrinsics (cx = 0.75) it lands at x = 0.75 W, with the
    # release's centred frustum at the centre.
    lifter = _one_gaussian_lifter(depth=1.0, sigma=0.02)
    context, target = _views(views=2), _views(cx=0.75)
    for mode, expected_x in (("intrinsics", 0.75 * 28), ("centered", 14.0)):
        splat, _ = _splat_teacher(lifter, principal_point=mode, splat_covariance="lifter", holes="alpha")
        covered = ~splat(context, target, grid_size=(2, 2)).holes[0, 0]  # [H, W]
        columns = covered.nonzero()[:, 1].double() + 0.5
        assert abs(columns.mean().item() - expected_x) < 0.6, (mode, columns.mean())


def test_rgb_holes_follow_the_lifter_render_not_the_feature_splats():
    from snd.splatting import render_gaussians

    sigma, size = 0.05, 28  # true 2D std: 1.4 px (+0.3 px^2 blur); release splats: std sigma^2 -> 0.07 px
    lifter = _one_gaussian_lifter(depth=1.0, sigma=sigma, views=2, size=size)
    context, target = _views(views=2), _views()
    rgb, _ = _splat_teacher(lifter)  # the preset: release covariance, rgb holes
    alpha, _ = _splat_teacher(lifter, holes="alpha")
    rgb_holes, alpha_holes = rgb(context, target, (2, 2)).holes[0, 0], alpha(context, target, (2, 2)).holes[0, 0]
    # closed form of the RGB render's support: one Gaussian, 2D covariance (f sigma / z)^2 I + 0.3 I at the image
    # centre (pixel centres at +0.5), hole where exp(-r^2 / (2 var)) < 1/255
    focal = size * 1.0
    coords = torch.arange(size, dtype=torch.float64) + 0.5 - size / 2
    radius2 = coords[:, None] ** 2 + coords[None, :] ** 2
    expected = torch.exp(-0.5 * radius2 / ((focal * sigma) ** 2 + 0.3)) < 1 / 255
    assert torch.equal(rgb_holes, expected)
    assert alpha_holes.sum() > rgb_holes.sum()  # the sigma^2 splats cover far fewer pixels
    # the same check against the renderer with the lifter's own covariance
    gaussians = lifter(context)
    render = render_gaussians(gaussians, torch.full((1, gaussians.num_gaussians, 3), 0.5), target.extrinsics, target.intrinsics,
                              size, size, near_plane=0.2, max_alpha=0.99)
    assert torch.equal(rgb_holes, (render.renders[0, 0] == 0).all(-1))


def test_rgb_holes_include_pixels_whose_colour_is_exactly_black():
    # MVSplat harmonics with DC -2: colour max(C0 * -2 + 0.5, 0) = 0 in every channel, so the release's
    # `color == 0` test marks the covered pixels as holes; the alpha test does not.
    lifter = _one_gaussian_lifter(depth=0.3, sigma=50.0, harmonics_dc=-2.0)
    context, target = _views(views=2), _views()
    rgb, _ = _splat_teacher(lifter)
    alpha, _ = _splat_teacher(lifter, holes="alpha")
    assert rgb(context, target, (2, 2)).holes.all()
    assert not alpha(context, target, (2, 2)).holes.any()
    grey = _one_gaussian_lifter(depth=0.3, sigma=50.0, harmonics_dc=0.0)  # colour 0.5
    assert not _splat_teacher(grey)[0](context, target, (2, 2)).holes.any()
    # view dependence: DC 0 (colour 0.5 seen from anywhere on average) but the degree-1 coefficient that LUDVIG's
    # rasterizer (the release's) multiplies by the view direction's z is -2, so seen along +z the colour is
    # max(0.5 + C1 * -2, 0) = 0: a hole
    coefficients = torch.zeros(3, 4)
    coefficients[:, 2] = -2.0
    dark_ahead = _one_gaussian_lifter(depth=0.3, sigma=50.0, harmonics=coefficients)
    assert _splat_teacher(dark_ahead)[0](context, target, (2, 2)).holes.all()


def _sh_rgb(sh: np.ndarray, direction: np.ndarray, rasterizer: str) -> np.ndarray:
    """computeColorFromSH restated line by line (one Gaussian, sh [3, K], unit direction [3]): "ludvig" =
    naver/ludvig's graphdeco rasterizer (the one the release installs), "mvsplat" = dcharatan/diff-gaussian-
    rasterization-modified (MVSplat's own, "modified to match e3nn's format")."""
    c0, c1 = 0.28209479177387814, 0.4886025119029199
    c2 = [1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396]
    c3 = [-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154, -0.4570457994644658,
          1.445305721320277, -0.5900435899266435]
    deg = int(round(math.sqrt(sh.shape[1]))) - 1
    x, y, z = direction
    result = c0 * sh[:, 0]
    if rasterizer == "ludvig":
        if deg > 0:
            result = result - c1 * y * sh[:, 1] + c1 * z * sh[:, 2] - c1 * x * sh[:, 3]
            if deg > 1:
                xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
                result = result + c2[0] * xy * sh[:, 4] + c2[1] * yz * sh[:, 5] + c2[2] * (2 * zz - xx - yy) * sh[:, 6] \
                    + c2[3] * xz * sh[:, 7] + c2[4] * (xx - yy) * sh[:, 8]
                if deg > 2:
                    result = result + c3[0] * y * (3 * xx - yy) * sh[:, 9] + c3[1] * xy * z * sh[:, 10] \
                        + c3[2] * y * (4 * zz - xx - yy) * sh[:, 11] + c3[3] * z * (2 * zz - 3 * xx - 3 * yy) * sh[:, 12] \
                        + c3[4] * x * (4 * zz - xx - yy) * sh[:, 13] + c3[5] * z * (xx - yy) * sh[:, 14] \
                        + c3[6] * x * (xx - 3 * yy) * sh[:, 15]
    else:
        if deg > 0:
            result = result - c1 * x * sh[:, 1] + c1 * y * sh[:, 2] - c1 * z * sh[:, 3]
            if deg > 1:
                zz, xx, yy, zx, xy, zy = z * z, x * x, y * y, z * x, x * y, z * y
                result = result + c2[0] * zx * sh[:, 4] + c2[1] * xy * sh[:, 5] + c2[2] * (2 * yy - zz - xx) * sh[:, 6] \
                    + c2[3] * zy * sh[:, 7] + c2[4] * (zz - xx) * sh[:, 8]
                if deg > 2:
                    result = result + c3[0] * x * (3 * zz - xx) * sh[:, 9] + c3[1] * zx * y * sh[:, 10] \
                        + c3[2] * x * (4 * yy - zz - xx) * sh[:, 11] + c3[3] * y * (2 * yy - 3 * zz - 3 * xx) * sh[:, 12] \
                        + c3[4] * z * (4 * yy - zz - xx) * sh[:, 13] + c3[5] * z * (zz - xx) * sh[:, 14] \
                        + c3[6] * z * (zz - 3 * xx) * sh[:, 15]
    return np.maximum(result + 0.5, 0.0)


@pytest.mark.parametrize("rasterizer", ["ludvig", "mvsplat"])
def test_release_sh_colors_match_the_rasterizers(rasterizer):
    from snd.distill.teacher import release_sh_colors

    generator = torch.Generator().manual_seed(0)
    harmonics = torch.randn(2, 5, 3, 25, generator=generator, dtype=torch.float64) * 0.5  # degree 4, as MVSplat
    means = torch.randn(2, 5, 3, generator=generator, dtype=torch.float64) * 3
    centers = torch.randn(2, 3, 3, generator=generator, dtype=torch.float64)
    colors = release_sh_colors(harmonics, means, centers, rasterizer=rasterizer)  # [B, T, N, 3]
    assert colors.shape == (2, 3, 5, 3)
    for b in range(2):
        for t in range(3):
            for n in range(5):
                direction = (means[b, n] - centers[b, t]).numpy()
                expected = _sh_rgb(harmonics[b, n].numpy(), direction / np.linalg.norm(direction), rasterizer)
                assert np.allclose(colors[b, t, n].numpy(), expected, atol=1e-12)
    assert (colors == 0).any()  # the clamp is exercised
    # degree-4 coefficients are passed to the rasterizer but ignored
    changed = harmonics.clone()
    changed[..., 16:] += 1.0
    assert torch.equal(release_sh_colors(changed, means, centers, rasterizer=rasterizer), colors)
    # the default is the release's (LUDVIG's) evaluation, which the other one differs from
    other = release_sh_colors(harmonics, means, centers, rasterizer="mvsplat" if rasterizer == "ludvig" else "ludvig")
    assert not torch.allclose(other, colors)
    assert torch.equal(release_sh_colors(harmonics, means, centers), release_sh_colors(harmonics, means, centers, rasterizer="ludvig"))
    if rasterizer == "mvsplat":  # its sh[14] term is not the permuted polynomial; the orthonormality below is graphdeco's
        return
    # the degree <= 3 basis is orthonormal on the sphere (Fibonacci quadrature): each coefficient's function
    count = 4000
    index = torch.arange(count, dtype=torch.float64) + 0.5
    polar, azimuth = torch.acos(1 - 2 * index / count), math.pi * (1 + 5**0.5) * index
    points = torch.stack([polar.sin() * azimuth.cos(), polar.sin() * azimuth.sin(), polar.cos()], dim=-1)  # [P, 3]
    basis = []
    for k in range(16):
        unit = torch.zeros(1, count, 3, 16, dtype=torch.float64)
        unit[..., k] = 0.05
        values = release_sh_colors(unit, points[None], torch.zeros(1, 1, 3, dtype=torch.float64))[0, 0, :, 0]  # [P]
        basis.append((values - 0.5) / 0.05)
    basis = torch.stack(basis)  # [16, P]
    gram = basis @ basis.T * (4 * math.pi / count)
    assert torch.allclose(gram, torch.eye(16, dtype=torch.float64), atol=5e-3)


# --------------------------------------------------------------------------------------------
# Row 7: dropout in the teacher


def test_teacher_dropout_is_active_only_when_switched_on():
    from snd import SnDConfig, SnDModel
    from snd.distill.build import apply_finetuning
    from snd.distill.config import ModelConfig
    from snd.distill.teacher import EMATeacher, backbone_patch_features

    torch.manual_seed(0)
    model_config = ModelConfig(pretrained=None, preset="tiny", lora_dropout=0.5)
    student = apply_finetuning(SnDModel(SnDConfig.tiny()), model_config)
    with torch.no_grad():
        for name, parameter in student.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)  # B starts at zero; make the adapters (and their dropout) matter
    images = torch.rand(1, 3, 28, 28)
    for dropout in (False, True):
        teacher = EMATeacher(student, dropout=dropout)
        teacher.train()  # what a caller may do: without the switch the teacher stays in eval mode
        assert teacher.training is dropout
        lora_dropouts = [m for n, m in teacher.backbone.named_modules() if isinstance(m, nn.Dropout) and "lora_dropout" in n]
        assert lora_dropouts and all(m.training is dropout for m in lora_dropouts)
        first, second = (backbone_patch_features(teacher.backbone, images, 14) for _ in range(2))
        assert torch.equal(first, second) is (not dropout)


# --------------------------------------------------------------------------------------------
# Row 4: LoRA on the patch-embedding conv


def test_preset_lora_wraps_the_release_module_set_and_merges_exactly(tmp_path):
    from peft.tuners.lora import layer as lora_layer
    from transformers import AutoModel

    from snd import SnDConfig, SnDModel
    from snd.distill.build import apply_finetuning, load_backbone, merged_backbone

    preset = load_config("scannetpp_dinov2s", ["model.pretrained=null", "model.preset=dinov2-s"]).model
    from transformers.initialization import no_init_weights

    with no_init_weights():  # the count needs shapes, not a random init of 22M weights
        vit_s = apply_finetuning(load_backbone(preset), preset)
    # The release: peft LoraConfig(r=8, target_modules=["qkv", "proj"]) on torch.hub dinov2_vits14 wraps 12 x (qkv, proj)
    # and patch_embed.proj (Conv2d 3 -> 384, kernel 14): 12 * 8 * ((384 + 1152) + (384 + 384)) + 8 * (3 * 14 * 14 + 384)
    assert 12 * 8 * ((384 + 1152) + (384 + 384)) + 8 * (3 * 14 * 14 + 384) == 228_960
    assert sum(p.numel() for p in vit_s.parameters() if p.requires_grad) == 228_960
    del vit_s

    with pytest.raises(ValueError, match="patch_embed.proj"):  # the release's torch.hub name is refused, not ignored
        apply_finetuning(SnDModel(SnDConfig.tiny()), dataclasses.replace(preset, lora_target_modules=["qkv", "proj", "patch_embed.proj"]))

    torch.manual_seed(0)
    backbone = apply_finetuning(SnDModel(SnDConfig.tiny()), preset)
    projection = backbone.base_model.model.embeddings.patch_embeddings.projection
    assert isinstance(projection, lora_layer.Conv2d)
    with torch.no_grad():
        for name, parameter in backbone.named_parameters():
            if "lora_" in name:
                parameter.normal_(0, 0.2)
    backbone.eval()
    pixels = torch.randn(2, 3, 28, 42)
    with torch.no_grad():
        unmerged = backbone(pixel_values=pixels).patch_features
        merged = merged_backbone(backbone)
        assert not any("lora" in name for name, _ in merged.named_parameters())
        assert torch.allclose(merged(pixel_values=pixels).patch_features, unmerged, atol=1e-5)
        merged.save_pretrained(tmp_path / "merged")
        reloaded = AutoModel.from_pretrained(tmp_path / "merged").eval()
        assert torch.allclose(reloaded(pixel_values=pixels).patch_features, unmerged, atol=1e-5)
        # and the adapters (the patch conv's included) did change the model, so the comparisons can fail
        with backbone.disable_adapter():
            assert not torch.allclose(backbone(pixel_values=pixels).patch_features, unmerged, atol=1e-3)
        conv_only = merged.embeddings.patch_embeddings.projection.weight
        assert not torch.allclose(conv_only, projection.base_layer.weight, atol=1e-4)


# --------------------------------------------------------------------------------------------
# Row 9: schedule length


def test_one_cycle_spans_max_steps_plus_the_release_extra_steps():
    from snd.distill.trainer import build_scheduler

    config = load_config("scannetpp_dinov2s", ["training.max_steps=400"])
    assert config.training.one_cycle_extra_steps == 10
    parameter = nn.Parameter(torch.zeros(1))
    ours = build_scheduler(torch.optim.Adam([parameter], lr=config.training.lr), config)
    reference_optimizer = torch.optim.Adam([nn.Parameter(torch.zeros(1))], lr=config.training.lr)
    reference = torch.optim.lr_scheduler.OneCycleLR(
        reference_optimizer, config.training.lr, 400 + 10, pct_start=0.01, cycle_momentum=False, anneal_strategy="cos"
    )
    for step in range(400):
        assert ours.get_last_lr()[0] == pytest.approx(reference.get_last_lr()[0], rel=1e-9, abs=1e-15), step
        ours.optimizer.step()
        ours.step()
        reference_optimizer.step()
        reference.step()
    # with the default extra step (1) the last lr differs: the schedule is really shorter
    default = load_config("scannetpp_dinov2s", ["training.max_steps=400", "training.one_cycle_extra_steps=1"])
    short = build_scheduler(torch.optim.Adam([nn.Parameter(torch.zeros(1))], lr=default.training.lr), default)
    for _ in range(399):
        short.optimizer.step()
        short.step()
    assert short.get_last_lr()[0] < 0.1 * ours.get_last_lr()[0]


# --------------------------------------------------------------------------------------------
# EMA timing (the release updates in on_after_backward, before the optimiser step)


def test_release_ema_timing_averages_the_pre_step_weights(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from snd.distill.trainer import train

    settings = []
    original = torch.set_float32_matmul_precision
    monkeypatch.setattr(torch, "set_float32_matmul_precision", lambda value: (settings.append(value), original(value)))

    def run(name: str, timing: str, steps: int) -> tuple[dict, dict]:
        config = load_config("tiny_synthetic", [f"training.float32_matmul_precision={'high' if timing == 'before_step' else 'highest'}",
            f"training.output_dir={tmp_path / name}", f"training.max_steps={steps}", "training.schedule=constant",
            "training.checkpoint_every=0", "training.report_to=none", "teacher.update_every=1", "teacher.momentum=0.0",
            f"teacher.update_timing={timing}", "data.num_scenes=1", "data.samples_per_scene=2", "data.num_frames=10",
            "data.max_gap=9", "data.image_height=28", "data.image_width=28", "head.num_prototypes=16", "head.hidden_dim=16",
            "head.bottleneck_dim=8",
        ])
        train(config, progress=False)
        return (load_file(str(tmp_path / name / "student" / "model.safetensors")),
                load_file(str(tmp_path / name / "teacher" / "model.safetensors")))

    # momentum 0 and an update every step: the teacher is a copy of the student weights it was last averaged with
    student_1, teacher_1 = run("after", "after_step", 1)
    assert all(torch.equal(student_1[k], teacher_1[k]) for k in student_1)  # after step 1: the post-step weights
    student_2, teacher_2 = run("before", "before_step", 2)
    # before step 2 (1 step done): the weights after step 1, one step behind the final student
    assert all(torch.equal(teacher_2[k], student_1[k]) for k in student_1)
    assert not all(torch.equal(teacher_2[k], student_2[k]) for k in student_2)
    # the release's TF32 setting is applied for the run and the previous process-wide value restored after it
    assert settings == ["highest", "highest", "high", "highest"] and torch.get_float32_matmul_precision() == "highest"


def test_release_teacher_with_an_mvsplat_lifter_end_to_end(tmp_path):
    """The paper preset's teacher settings on a tiny random MVSplat: holes are exactly the zero pixels of an RGB render
    of the lifter's Gaussians (own covariances, view-dependent colours, clamp 0.99, near 0.2, centred frustum)."""
    from snd import SnDConfig, SnDModel
    from snd.data import collate_multiview
    from snd.distill.build import PreloadedScenes, build_dataset, build_lifter
    from snd.distill.config import DataConfig, LifterConfig
    from snd.distill.teacher import EMATeacher, SplatTeacher, centered_intrinsics, release_sh_colors
    from snd.models.mvsplat import MVSplatConfig, MVSplatModel
    from snd.splatting import render_gaussians

    torch.manual_seed(0)
    MVSplatModel(MVSplatConfig.tiny()).save_pretrained(tmp_path / "mvsplat")
    lifter = build_lifter(LifterConfig(kind="mvsplat", checkpoint=str(tmp_path / "mvsplat")))
    data = DataConfig(dataset="synthetic", image_height=32, image_width=32, num_scenes=1, num_frames=10, max_gap=9, context_gap="release_min")
    sample = PreloadedScenes(build_dataset(data, seed=0))[0]
    # target = the first context view: a random MVSplat's depths cover it (and leave some of it empty)
    batch = collate_multiview([type(sample)(context=sample.context, target=sample.context.select([0]), scene=sample.scene)])
    splat = SplatTeacher.from_config(EMATeacher(SnDModel(SnDConfig.tiny()), dropout=True), lifter, 14, load_config("scannetpp_dinov2s").teacher)
    targets = splat(batch.context, batch.target, grid_size=(2, 2))
    assert torch.isfinite(targets.features).all() and targets.features.shape == (1, 1, 32, 2, 2)
    gaussians = lifter(batch.context)
    colors = release_sh_colors(gaussians.harmonics, gaussians.means, batch.target.extrinsics[..., :3, 3])
    rgb = render_gaussians(gaussians, colors, batch.target.extrinsics, centered_intrinsics(batch.target.intrinsics), 32, 32,
                           near_plane=0.2, max_alpha=0.99)
    assert torch.equal(targets.holes, (rgb.renders == 0).all(-1))
    assert 0 < targets.holes.float().mean() < 0.5  # both kinds of pixels occur
