"""nerfstudio captures (``transforms.json`` + images) as distillation data: a fixture written in nerfstudio's layout
from a synthetic scene with known geometry."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from snd.cameras import denormalize_intrinsics, opengl_to_opencv, project_points
from snd.data import SceneDataError, SyntheticSceneConfig, generate_scene
from snd.data.nerfstudio import NerfstudioDataset
from tests.data.fixtures import to_uint8

SCENE = SyntheticSceneConfig(num_scenes=1, num_frames=12, height=24, width=32, seed=5)


def write_nerfstudio_scene(folder: Path, config: SyntheticSceneConfig = SCENE, per_frame_intrinsics: bool = False,
                           depth: bool = True, camera_model: str = "OPENCV"):
    """ns-process-data's layout: images/frame_%05d.png, depth/frame_%05d.png (uint16 mm), transforms.json with OpenGL
    camera-to-world poses and (shared or per-frame) pixel intrinsics; frames listed out of order."""
    scene = generate_scene(config, 0)
    views = scene.render().views
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "depth").mkdir(exist_ok=True)
    pixel = denormalize_intrinsics(scene.intrinsics.double(), config.width, config.height)
    camera = {"camera_model": camera_model, "fl_x": float(pixel[0, 0]), "fl_y": float(pixel[1, 1]), "cx": float(pixel[0, 2]),
              "cy": float(pixel[1, 2]), "w": config.width, "h": config.height, "k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0}
    frames = []
    for frame in reversed(range(scene.num_frames)):
        name = f"frame_{frame + 1:05d}.png"
        Image.fromarray(to_uint8(views.images[frame])).save(folder / "images" / name)
        entry = {"file_path": f"images/{name}", "transform_matrix": opengl_to_opencv(views.extrinsics[frame].double()).tolist()}
        if depth:
            Image.fromarray(np.round(views.depths[frame].double().numpy() * 1000).astype(np.uint16)).save(folder / "depth" / name)
            entry["depth_file_path"] = f"depth/{name}"
        if per_frame_intrinsics:
            entry.update(camera)
        frames.append(entry)
    meta = {"frames": frames} if per_frame_intrinsics else {**camera, "frames": frames}
    (folder / "transforms.json").write_text(json.dumps(meta, indent=1))
    return scene, views


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    folder = tmp_path_factory.mktemp("nerfstudio") / "my_scene"
    scene, views = write_nerfstudio_scene(folder)
    return folder, scene, views


@pytest.mark.parametrize("per_frame", [False, True])
@pytest.mark.parametrize("image_shape", [(24, 32), (48, 64)])
def test_cameras_reproject_a_known_point_to_the_expected_pixel(tmp_path, per_frame, image_shape):
    folder = tmp_path / "scene"
    scene, views = write_nerfstudio_scene(folder, per_frame_intrinsics=per_frame)
    dataset = NerfstudioDataset(folder, image_shape=image_shape)
    assert dataset.num_scenes() == 1 and dataset.num_frames(0) == 12
    # a known surface point: pixel (row 10, col 20) of frame 2, unprojected with the synthetic depth and camera
    a, b = 2, 6
    fx, fy, cx, cy = (float(v) for v in (denormalize_intrinsics(scene.intrinsics.double(), 32, 24)[i, j] for i, j in ((0, 0), (1, 1), (0, 2), (1, 2))))
    row, col = 10, 20
    z = float(views.depths[a, row, col])
    camera_point = np.array([(col + 0.5 - cx) / fx * z, (row + 0.5 - cy) / fy * z, z])
    pose_a = views.extrinsics[a].double().numpy()
    world = pose_a[:3, :3] @ camera_point + pose_a[:3, 3]
    # expected pixel in frame b, computed from the synthetic camera by hand, at the loaded resolution
    pose_b = views.extrinsics[b].double().numpy()
    in_b = pose_b[:3, :3].T @ (world - pose_b[:3, 3])
    scale_x, scale_y = image_shape[1] / 32, image_shape[0] / 24
    expected = np.array([(fx * in_b[0] / in_b[2] + cx) * scale_x, (fy * in_b[1] / in_b[2] + cy) * scale_y])
    loaded = dataset.load_views(0, [a, b])
    assert loaded.frame_indices.tolist() == [a + 1, b + 1]  # ordered by the number in the file name
    pixels, _ = project_points(torch.tensor(world)[None].float(), loaded.extrinsics[1], loaded.intrinsics[1], *image_shape)
    assert np.abs(pixels[0].double().numpy() - expected).max() < 0.5
    # and back into frame a, where it came from
    pixels, _ = project_points(torch.tensor(world)[None].float(), loaded.extrinsics[0], loaded.intrinsics[0], *image_shape)
    assert np.abs(pixels[0].double().numpy() - np.array([(col + 0.5) * scale_x, (row + 0.5) * scale_y])).max() < 0.5
    assert loaded.masks.unique().tolist() == [0]  # no instance masks: one segment per view


def test_depth_png_npy_and_ignore_masks(capture, tmp_path):
    folder, scene, views = capture
    dataset = NerfstudioDataset(folder, image_shape=(24, 32), load_depth=True)
    depth = dataset.load_views(0, [3]).depths[0]
    assert torch.allclose(depth, views.depths[3].float(), atol=6e-4)  # millimetre quantisation
    # .npy depth in millimetres and a nerfstudio mask (0 = ignore) on frame 3
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    meta = json.loads((copy / "transforms.json").read_text())
    entry = next(f for f in meta["frames"] if f["file_path"].endswith("00004.png"))
    np.save(copy / "depth" / "frame_00004.npy", (views.depths[3].double().numpy() * 1000).astype(np.float32))
    entry["depth_file_path"] = "depth/frame_00004.npy"
    ignore = np.full((24, 32), 255, dtype=np.uint8)
    ignore[:, :10] = 0
    (copy / "masks").mkdir()
    Image.fromarray(ignore).save(copy / "masks" / "frame_00004.png")
    entry["mask_path"] = "masks/frame_00004.png"
    (copy / "transforms.json").write_text(json.dumps(meta))
    loaded = NerfstudioDataset(copy, image_shape=(24, 32), load_depth=True).load_views(0, [3])
    assert torch.allclose(loaded.depths[0][:, 10:], views.depths[3, :, 10:].float(), atol=1e-4)
    assert torch.equal(loaded.depths[0][:, :10], torch.zeros(24, 10))
    assert torch.equal(loaded.images, dataset.load_views(0, [3]).images)


def test_distorted_cameras_and_missing_files_are_refused_clearly(capture, tmp_path):
    folder, _, _ = capture

    def variant(name, edit):
        copy = tmp_path / name
        shutil.copytree(folder, copy)
        meta = json.loads((copy / "transforms.json").read_text())
        edit(meta)
        (copy / "transforms.json").write_text(json.dumps(meta))
        return copy

    with pytest.raises(SceneDataError, match="non-zero distortion k1") as error:
        NerfstudioDataset(variant("k1", lambda m: m.update(k1=0.02)))
    assert error.value.field == "k1" and error.value.file.endswith("transforms.json")
    with pytest.raises(SceneDataError, match="OPENCV_FISHEYE"):
        NerfstudioDataset(variant("fisheye", lambda m: m.update(camera_model="OPENCV_FISHEYE")))
    with pytest.raises(SceneDataError) as error:
        NerfstudioDataset(variant("frame_k2", lambda m: m["frames"][3].update(k2=-0.1)))
    assert error.value.field == "frames[3].k2"
    NerfstudioDataset(variant("pinhole", lambda m: [m.pop(k) for k in ("k1", "k2", "p1", "p2")] and m.update(camera_model="PINHOLE")))
    with pytest.raises(SceneDataError, match="depth_file_path"):
        NerfstudioDataset(variant("nodepth", lambda m: m["frames"][0].pop("depth_file_path")), load_depth=True)
    missing = variant("missing", lambda m: None)
    (missing / "images" / "frame_00005.png").unlink()
    with pytest.raises(SceneDataError, match="absent on disk") as error:
        NerfstudioDataset(missing).load_views(0, [4])
    assert error.value.file.endswith("frame_00005.png")
    with pytest.raises(SceneDataError, match="transforms.json"):
        NerfstudioDataset(tmp_path / "k1" / "images")


def test_near_far_are_validated():
    from snd.distill import ConfigError, load_config

    with pytest.raises(ConfigError, match="data.near"):
        load_config(None, ["data.near=5", "data.far=1"])
    with pytest.raises(ValueError, match="near < far"):
        NerfstudioDataset("unused", near=2.0, far=1.0)


def test_a_folder_of_captures_trains_three_steps_with_the_mvsplat_lifter(tmp_path):
    """`--data.dataset nerfstudio --data.root DIR` end to end: two depth-less captures, a tiny random MVSplat."""
    from safetensors.torch import load_file

    from snd.distill import load_config
    from snd.distill.trainer import train
    from snd.models.mvsplat import MVSplatConfig, MVSplatModel

    root = tmp_path / "captures"
    write_nerfstudio_scene(root / "kitchen", depth=False)
    write_nerfstudio_scene(root / "office", depth=False, per_frame_intrinsics=True)
    torch.manual_seed(0)
    MVSplatModel(MVSplatConfig.tiny()).save_pretrained(tmp_path / "mvsplat")
    config = load_config("tiny_synthetic", [  # the tiny random student
        "data.dataset=nerfstudio", f"data.root={root}", "data.near=0.5", "data.far=20", "data.image_height=32", "data.image_width=32",
        "data.samples_per_scene=2", "data.preload=false", "lifter.kind=mvsplat", f"lifter.checkpoint={tmp_path / 'mvsplat'}",
        "training.max_steps=3", "training.batch_size=1", "training.checkpoint_every=0", "training.report_to=none",
        "head.num_prototypes=16", "head.hidden_dim=16", "head.bottleneck_dim=8", f"training.output_dir={tmp_path / 'run'}",
    ])
    result = train(config, progress=False)
    assert result.steps == 3 and np.isfinite(result.final_loss)
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["steps"] == 3
    student = load_file(str(tmp_path / "run" / "student" / "model.safetensors"))
    assert all(torch.isfinite(v).all() for v in student.values())


def test_depth_lifter_teacher_targets_on_a_capture(capture):
    """With depth files the depth lifter lifts the capture's context views into a target view: almost no holes."""
    from snd import SnDConfig, SnDModel
    from snd.data import collate_multiview
    from snd.distill.build import build_dataset, build_lifter
    from snd.distill.config import DataConfig, LifterConfig
    from snd.distill.teacher import EMATeacher, SplatTeacher

    folder, _, _ = capture
    data = DataConfig(dataset="nerfstudio", root=str(folder), image_height=28, image_width=42, min_gap=4, max_gap=6)
    dataset = build_dataset(data, seed=0, load_depth=True)
    batch = collate_multiview([dataset[0]])
    assert batch.context.depths is not None and (batch.context.depths > 0).float().mean() > 0.9
    torch.manual_seed(0)
    splat = SplatTeacher(EMATeacher(SnDModel(SnDConfig.tiny())), build_lifter(LifterConfig(kind="depth")), patch_size=14)
    targets = splat(batch.context, batch.target, grid_size=(2, 3))
    assert targets.features.shape[-2:] == (2, 3) and torch.isfinite(targets.features).all()
    assert targets.holes.float().mean() < 0.2
