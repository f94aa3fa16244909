import json
import logging
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from snd.data import SceneDataError, ScanNetPPDataset, ViewSampler, collate_multiview, pixel_correspondences
from snd.data import generate_scene
from tests.data.fixtures import TINY, write_scannetpp_scene, write_split

SAMPLER = ViewSampler(min_gap=3, max_gap=5, seed=0)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    path = tmp_path_factory.mktemp("scannetpp")
    scene, render, _ = write_scannetpp_scene(path, scene_index=0, name="scene_a", bad_frames=(5,))
    write_scannetpp_scene(path, scene_index=1, name="scene_b")
    write_split(path, "train", ["scene_a", "scene_b"])
    write_split(path, "val", ["scene_b"])
    return path, scene, render


@pytest.fixture()
def root(pristine, tmp_path):
    # A fresh copy per test: the bad-input tests damage it.
    source, scene, render = pristine
    shutil.copytree(source, tmp_path / "root")
    return tmp_path / "root", scene, render


def load_all(dataset, scene_index):
    return dataset.load_views(scene_index, list(range(dataset.num_frames(scene_index))))


def test_cameras_round_trip_through_opengl_json(root):
    # The synthetic cameras, written as OpenGL camera-to-world + pixel intrinsics, load back as the
    # same OpenCV cameras: this checks the camera convention end to end.
    path, scene, render = root
    dataset = ScanNetPPDataset(path, split="train", image_shape=(TINY.height, TINY.width), sampler=SAMPLER)
    assert [s.name for s in dataset.scenes] == ["scene_a", "scene_b"]
    usable = [f for f in range(TINY.num_frames) if f != 5]  # frame 5 is_bad
    assert dataset.num_frames(0) == len(usable)
    views = load_all(dataset, 0)
    assert views.frame_indices.tolist() == [1000 + f for f in usable]  # sorted by file number
    assert torch.allclose(views.extrinsics, render.views.extrinsics[usable], atol=1e-6)
    assert torch.allclose(views.intrinsics, render.views.intrinsics[usable], atol=1e-6)
    assert torch.equal(views.masks, render.views.masks[usable])
    assert (views.images - render.views.images[usable]).abs().mean() < 0.06  # JPEG at 24 x 32
    decoded = np.asarray(Image.open(path / "scenes/scene_a/images/DSC01000.JPG").convert("RGB"), dtype=np.float32) / 255
    assert torch.equal(views.images[0], torch.from_numpy(decoded).permute(2, 0, 1))
    assert views.near.tolist() == [1.0] * len(usable) and views.far.tolist() == [100.0] * len(usable)


def test_reprojection_with_loaded_cameras_hits_ground_truth_correspondences(root):
    path, scene, render = root
    dataset = ScanNetPPDataset(path, split="train", image_shape=(TINY.height, TINY.width), sampler=SAMPLER, load_depth=True)
    views = load_all(dataset, 0)  # frames 0-4, 6-11; depth from 16-bit millimetre PNGs
    checked = 0
    for a, b in [(0, 3), (2, 6), (4, 9)]:
        fa, fb = views.frame_indices[a].item() - 1000, views.frame_indices[b].item() - 1000
        exact_pixels, exact_valid = scene.correspondences(fa, fb)
        pixels, valid = pixel_correspondences(
            views.depths[a], views.extrinsics[a], views.intrinsics[a], views.depths[b], views.extrinsics[b], views.intrinsics[b]
        )
        both = valid & exact_valid
        assert both.sum() > 0.5 * exact_valid.sum() > 0
        error = (pixels[both] - exact_pixels[both]).norm(dim=-1)
        assert error.max() < 0.5, error.max()
        checked += int(both.sum())
    assert checked > 300


def test_resize_keeps_normalised_intrinsics_and_masks_nearest(root):
    path, _, _ = root
    render_b = generate_scene(TINY, 1).render()
    dataset = ScanNetPPDataset(path, scenes=["scene_b"], image_shape=(12, 20), sampler=SAMPLER, load_depth=True)
    views = load_all(dataset, 0)
    assert views.images.shape == (TINY.num_frames, 3, 12, 20)
    assert torch.allclose(views.intrinsics, render_b.views.intrinsics, atol=1e-6)
    # Nearest resampling: output pixel (i, j) takes source pixel (floor((i + 0.5) * 24 / 12), floor((j + 0.5) * 32 / 20)).
    rows = ((torch.arange(12) + 0.5) * TINY.height / 12).floor().long()
    columns = ((torch.arange(20) + 0.5) * TINY.width / 20).floor().long()
    assert torch.equal(views.masks, render_b.views.masks[:, rows][:, :, columns])
    expected_depth = (render_b.views.depths[:, rows][:, :, columns].double() * 1000).round() / 1000
    assert torch.allclose(views.depths.double(), expected_depth, atol=1e-6)


def test_samples_and_split_lists(root):
    path, _, _ = root
    val = ScanNetPPDataset(path, split="val", image_shape=(12, 16), sampler=SAMPLER, samples_per_scene=3)
    assert [s.name for s in val.scenes] == ["scene_b"] and len(val) == 3
    batch = collate_multiview([val[0], val[1]])
    assert batch.context.images.shape == (2, 2, 3, 12, 16) and batch.scene == ["scene_b", "scene_b"]
    gap = batch.context.frame_indices[:, 1] - batch.context.frame_indices[:, 0]
    assert ((gap >= 3) & (gap <= 5)).all()
    everything = ScanNetPPDataset(path, split=None, image_shape=(12, 16), sampler=SAMPLER)
    assert len(everything) == 2
    with pytest.raises(SceneDataError, match="nvs_sem_train.txt"):
        (path / "metadata" / "nvs_sem_train.txt").unlink()
        ScanNetPPDataset(path, split="train")


# ---------------------------------------------------------------------- bad input
def _rewrite_json(path, scene, edit):
    file = path / "scenes" / scene / "transforms_train.json"
    meta = json.loads(file.read_text())
    edit(meta)
    file.write_text(json.dumps(meta))


def _frame_entry(meta, number):
    return next(f for f in meta["frames"] if f["file_path"] == f"DSC{number:05d}.JPG")


def _load_everything(path, **kwargs):
    dataset = ScanNetPPDataset(path, scenes=["scene_a"], image_shape=(12, 16), sampler=SAMPLER, **kwargs)
    return dataset, load_all(dataset, 0)


def test_missing_image_names_scene_file_and_field(root):
    path, _, _ = root
    (path / "scenes/scene_a/images/DSC01003.JPG").unlink()
    with pytest.raises(SceneDataError, match=r"scene 'scene_a'.*DSC01003\.JPG.*frames\[\d+\]\.file_path.*absent on disk"):
        _load_everything(path)


def test_corrupt_image_and_mask(root):
    path, _, _ = root
    (path / "scenes/scene_a/images/DSC01002.JPG").write_bytes(b"not a jpeg")
    with pytest.raises(SceneDataError, match=r"scene 'scene_a'.*DSC01002\.JPG.*field 'image'.*cannot decode"):
        _load_everything(path)


def test_corrupt_and_missing_mask(root):
    path, _, _ = root
    (path / "scenes/scene_a/instance_segmentation/DSC01001.JPG.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(SceneDataError, match=r"DSC01001\.JPG\.png.*field 'mask'"):
        _load_everything(path)
    (path / "scenes/scene_a/instance_segmentation/DSC01001.JPG.png").unlink()
    with pytest.raises(SceneDataError, match=r"DSC01001\.JPG\.png.*field 'mask'.*does not exist"):
        _load_everything(path)


def test_mask_of_a_different_size(root):
    path, _, _ = root
    Image.fromarray(np.zeros((10, 10), dtype=np.uint16)).save(path / "scenes/scene_a/instance_segmentation/DSC01004.JPG.png")
    with pytest.raises(SceneDataError, match=r"DSC01004\.JPG\.png.*field 'mask'.*mask is 10x10 but its image is 32x24"):
        _load_everything(path)


def test_rgb_mask_is_rejected(root):
    path, _, _ = root
    Image.fromarray(np.zeros((24, 32, 3), dtype=np.uint8)).save(path / "scenes/scene_a/instance_segmentation/DSC01004.JPG.png")
    with pytest.raises(SceneDataError, match=r"field 'mask'.*single-channel"):
        _load_everything(path)


@pytest.mark.parametrize(
    "matrix, reason",
    [
        ([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, float("nan")], [0, 0, 0, 1]], "non-finite"),
        ([[2, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], "not orthonormal"),
        ([[1, 0, 0], [0, 1, 0], [0, 0, 1]], "4x4"),
    ],
)
def test_bad_poses(root, matrix, reason):
    path, _, _ = root
    _rewrite_json(path, "scene_a", lambda meta: _frame_entry(meta, 1007).update(transform_matrix=matrix))
    with pytest.raises(SceneDataError, match=rf"scene 'scene_a'.*transforms_train\.json.*frames\[\d+\]\.transform_matrix.*{reason}"):
        _load_everything(path)


def test_bad_intrinsics_and_declared_size(root):
    path, _, _ = root
    _rewrite_json(path, "scene_a", lambda meta: meta.pop("fl_y"))
    with pytest.raises(SceneDataError, match=r"transforms_train\.json.*field 'fl_y'"):
        _load_everything(path)
    _rewrite_json(path, "scene_a", lambda meta: meta.update(fl_y=20.0, w=64))
    with pytest.raises(SceneDataError, match=r"field 'image'.*declares w=64"):
        _load_everything(path)


def test_too_few_frames(root):
    path, _, _ = root
    _rewrite_json(path, "scene_a", lambda meta: meta.update(frames=meta["frames"][:3]))
    dataset = ScanNetPPDataset(path, scenes=["scene_a"], image_shape=(12, 16), sampler=SAMPLER)
    with pytest.raises(SceneDataError, match=r"scene 'scene_a'.*transforms_train\.json.*field 'frames'.*3 usable frames.*at least 4"):
        dataset[0]


def test_skip_bad_samples_logs_counts_and_skips(root, caplog):
    path, _, _ = root
    # Scene a's sampled frames include a missing image in every sample: it can't be loaded.
    for frame in range(TINY.num_frames):
        if frame != 5:
            (path / f"scenes/scene_a/images/DSC{1000 + frame:05d}.JPG").unlink()
    dataset = ScanNetPPDataset(path, split="train", image_shape=(12, 16), sampler=SAMPLER, samples_per_scene=2)
    with pytest.raises(SceneDataError):
        dataset[0]
    skipping = ScanNetPPDataset(path, split="train", image_shape=(12, 16), sampler=SAMPLER, samples_per_scene=2, skip_bad_samples=True)
    with caplog.at_level(logging.WARNING, logger="snd.data.base"):
        samples = [skipping[i] for i in range(4)]
    assert [s.scene for s in samples] == ["scene_b"] * 4
    assert skipping.bad_sample_counts["scene_a"] == 3 and skipping.num_bad_samples == 3  # index 0 -> 1 -> 2, then 1 -> 2
    assert "skipping bad sample" in caplog.text and "absent on disk" in caplog.text


def test_listed_scene_without_masks(root):
    path, _, _ = root
    shutil.rmtree(path / "scenes/scene_a/instance_segmentation")
    with pytest.raises(SceneDataError, match=r"scene 'scene_a'.*instance_segmentation"):
        ScanNetPPDataset(path, split="train")
    dataset = ScanNetPPDataset(path, split="train", skip_bad_samples=True, image_shape=(12, 16), sampler=SAMPLER)
    assert [s.name for s in dataset.scenes] == ["scene_b"] and dataset.bad_sample_counts["scene_a"] == 1
