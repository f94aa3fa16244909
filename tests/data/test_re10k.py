import io

import pytest
import torch
from PIL import Image

from snd.cameras import project_points, unproject_depth
from snd.data import RE10KDataset, SceneDataError, ViewSampler, collate_multiview, re10k_default_sampler
from snd.data.re10k import load_chunk
from tests.data.fixtures import TINY, re10k_example, write_re10k_chunks

SAMPLER = ViewSampler(min_gap=3, max_gap=5, seed=0)


@pytest.fixture(scope="module")
def examples():
    first, render_first = re10k_example(scene_index=0, key="aaaa")
    second, render_second = re10k_example(scene_index=1, key="bbbb")
    return [first, second], [render_first, render_second]


@pytest.fixture()
def root(tmp_path, examples):
    (first, second), _ = examples
    write_re10k_chunks(tmp_path, [[first], [second]])
    return tmp_path


def test_chunks_with_jpeg_byte_tensors_load_under_weights_only(root):
    chunk = torch.load(root / "train" / "000000.torch", weights_only=True)
    assert isinstance(chunk, list) and chunk[0]["key"] == "aaaa"
    assert chunk[0]["images"][0].dtype == torch.uint8 and chunk[0]["cameras"].shape == (TINY.num_frames, 18)
    assert Image.open(io.BytesIO(chunk[0]["images"][0].numpy().tobytes())).format == "JPEG"


def test_cameras_convert_to_opencv_camera_to_world(root, examples):
    _, renders = examples
    dataset = RE10KDataset(root, image_shape=(TINY.height, TINY.width), sampler=SAMPLER)
    assert dataset.keys == ["aaaa", "bbbb"] and dataset.num_frames(1) == TINY.num_frames
    views = dataset.load_views(1, list(range(TINY.num_frames)))
    truth = renders[1].views
    assert torch.allclose(views.extrinsics, truth.extrinsics, atol=1e-5)
    assert torch.allclose(views.intrinsics, truth.intrinsics, atol=1e-6)
    assert (views.images - truth.images).abs().mean() < 0.06
    assert torch.equal(views.masks, torch.zeros(TINY.num_frames, TINY.height, TINY.width, dtype=torch.int64))  # one segment
    assert views.near.tolist() == [1.0] * TINY.num_frames and views.far.tolist() == [100.0] * TINY.num_frames


def test_crop_keeps_geometry_consistent(root, examples):
    # Cropping 24 x 32 to 16 x 16: scale 2/3 (covers 16 x 21.3 -> 16 x 21), centre crop 2 columns on the left.
    _, renders = examples
    truth = renders[0].views
    dataset = RE10KDataset(root, image_shape=(16, 16), sampler=SAMPLER)
    views = dataset.load_views(0, [0, 4])
    assert views.images.shape == (2, 3, 16, 16)
    # A world point seen at a full-size pixel must project to the scaled, shifted position in the crop.
    points = unproject_depth(truth.depths[[0, 4]], truth.extrinsics[[0, 4]], truth.intrinsics[[0, 4]]).reshape(2, -1, 3)
    full, _ = project_points(points, truth.extrinsics[[0, 4]], truth.intrinsics[[0, 4]], TINY.height, TINY.width)
    cropped, _ = project_points(points, views.extrinsics, views.intrinsics, 16, 16)
    scale = torch.tensor([21 / 32, 16 / 24])
    offset = torch.tensor([(21 - 16) // 2, 0.0])
    assert torch.allclose(cropped, full * scale - offset, atol=1e-3)


def test_val_split_reads_test_chunks(tmp_path, examples):
    (first, _), _ = examples
    write_re10k_chunks(tmp_path, [[first]], split="test")
    dataset = RE10KDataset(tmp_path, split="val", image_shape=(16, 16), sampler=SAMPLER)
    assert dataset.split == "test" and dataset.keys == ["aaaa"]
    with pytest.raises(SceneDataError, match="expected a folder of .torch chunks"):
        RE10KDataset(tmp_path, split="train")


def test_samples_collate_and_default_sampler(root):
    dataset = RE10KDataset(root, image_shape=(16, 16), sampler=SAMPLER, samples_per_scene=2)
    assert len(dataset) == 4
    batch = collate_multiview([dataset[i] for i in range(4)])
    assert batch.scene == ["aaaa", "aaaa", "bbbb", "bbbb"]
    assert batch.context.images.shape == (4, 2, 3, 16, 16) and batch.target.images.shape == (4, 1, 3, 16, 16)
    assert re10k_default_sampler().min_gap == 120 and re10k_default_sampler().max_gap == 192
    # The authors' sampler needs 121 frames: these 12-frame scenes are too short.
    with pytest.raises(SceneDataError, match=r"scene 'aaaa'.*000000\.torch.*at least 121"):
        RE10KDataset(root, image_shape=(16, 16))[0]


def test_without_index_json_chunks_are_scanned(tmp_path, examples):
    (first, second), _ = examples
    write_re10k_chunks(tmp_path, [[second, first]], write_index=False)
    dataset = RE10KDataset(tmp_path, image_shape=(16, 16), sampler=SAMPLER)
    assert dataset.keys == ["aaaa", "bbbb"]
    assert dataset[1].scene == "bbbb"


def test_bad_chunks_and_scenes(tmp_path, examples):
    (first, second), _ = examples
    stage = tmp_path / "train"
    stage.mkdir()
    (stage / "000000.torch").write_bytes(b"garbage")
    with pytest.raises(SceneDataError, match=r"000000\.torch.*weights_only"):
        load_chunk(stage / "000000.torch")

    broken = dict(first, key="broken", images=list(first["images"]))
    broken["images"][3] = torch.tensor([1, 2, 3], dtype=torch.uint8)
    bad_pose = dict(second, key="badpose", cameras=second["cameras"].clone())
    bad_pose["cameras"][2, 6] = 5.0  # scales the rotation: not rigid
    write_re10k_chunks(tmp_path, [[broken, bad_pose]])
    dataset = RE10KDataset(tmp_path, image_shape=(16, 16), sampler=SAMPLER)
    with pytest.raises(SceneDataError, match=r"scene 'badpose'.*000000\.torch.*cameras\[2\].*not orthonormal"):
        dataset.load_views(dataset.keys.index("badpose"), [2])
    with pytest.raises(SceneDataError, match=r"scene 'broken'.*field 'images\[3\]'.*cannot decode"):
        dataset.load_views(dataset.keys.index("broken"), [3])
    short = dict(first, key="short", cameras=first["cameras"][:5])
    write_re10k_chunks(tmp_path, [[short]])
    with pytest.raises(SceneDataError, match=r"scene 'short'.*field 'cameras'.*\[12, 18\]"):
        RE10KDataset(tmp_path, image_shape=(16, 16), sampler=SAMPLER)[0]


def test_skip_bad_samples(tmp_path, examples):
    (first, second), _ = examples
    broken = dict(first, images=[torch.tensor([0], dtype=torch.uint8)] * len(first["images"]))
    write_re10k_chunks(tmp_path, [[broken], [second]])
    dataset = RE10KDataset(tmp_path, image_shape=(16, 16), sampler=SAMPLER, skip_bad_samples=True)
    assert dataset[0].scene == "bbbb" and dataset.bad_sample_counts["aaaa"] == 1
