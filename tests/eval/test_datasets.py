"""Each loader reads a tiny fixture written here in the real on-disk layout."""

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from snd.eval import (
    NYUv2Dataset,
    ScanNetPairsDataset,
    ScanNetPPDepthDataset,
    ScanNetPPSegmentationDataset,
    SyntheticDenseDataset,
    SyntheticEvalConfig,
    SyntheticPairsDataset,
    build_dense_dataset,
)


def _write_rgb(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_nyuv2_probe3d_pickle(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 3, 6, 8), dtype=np.uint8)
    depths = rng.uniform(0.5, 12.0, (3, 6, 8)).astype(np.float32)
    normals = rng.normal(size=(3, 3, 6, 8)).astype(np.float32)
    labels = rng.integers(0, 41, (3, 6, 8)).astype(np.uint16)
    data = {"images": images, "depths": depths, "snorms": normals, "scene_types": [["kitchen"]] * 3,
            "train_indices": np.array([0, 2]), "test_indices": np.array([1]), "labels": labels}
    with open(tmp_path / "nyuv2_snorm_all.pkl", "wb") as handle:
        pickle.dump(data, handle)
    train = NYUv2Dataset(tmp_path, "train")
    test = build_dense_dataset("nyuv2", "segmentation", "test", tmp_path)
    assert len(train) == 2 and len(test) == 1
    item = test[0]
    np.testing.assert_allclose(item["image"].numpy(), images[1] / 255.0, rtol=1e-6)
    expected_depth = np.where(depths[1] > 10, 0, depths[1])
    np.testing.assert_allclose(item["depth"].numpy(), expected_depth)
    np.testing.assert_array_equal(item["normal_valid"].numpy(), expected_depth > 0)
    np.testing.assert_array_equal(item["semantics"].numpy(), np.where(labels[1] > 0, labels[1].astype(int) - 1, 255))
    assert train[1]["normals"].shape == (3, 6, 8)


def test_nyuv2_refuses_arbitrary_pickles(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "nyuv2_snorm_all.pkl", "wb") as handle:
        pickle.dump({"images": Evil()}, handle)
    with pytest.raises(pickle.UnpicklingError, match="builtins.print"):
        NYUv2Dataset(tmp_path)
    with pytest.raises(FileNotFoundError, match="nyuv2_snorm_all.pkl"):
        NYUv2Dataset(tmp_path / "missing")


def _scannet_pairs_fixture(root):
    rng = np.random.default_rng(1)
    scene = "scene0707_00"
    k = np.array([[577.0, 0, 319.5], [0, 578.0, 239.5], [0, 0, 1]])
    np.savez(root / "intrinsics.npz", **{scene: k})
    np.savez(root / "test.npz", name=np.array([[707, 0, 15, 30]]))
    poses = {}
    for frame in (15, 30):
        _write_rgb(root / scene / "color" / f"{frame}.jpg", rng.integers(0, 256, (240, 320, 3), dtype=np.uint8))
        depth = rng.integers(500, 4000, (480, 640)).astype(np.uint16)
        (root / scene / "depth").mkdir(parents=True, exist_ok=True)
        Image.fromarray(depth).save(root / scene / "depth" / f"{frame}.png")
        pose = np.eye(4)
        pose[:3, 3] = rng.normal(size=3)
        (root / scene / "pose").mkdir(parents=True, exist_ok=True)
        np.savetxt(root / scene / "pose" / f"{frame}.txt", pose)
        poses[frame] = (pose, depth)
    return k, poses


def test_scannet_pairs_layout(tmp_path):
    k, poses = _scannet_pairs_fixture(tmp_path)
    dataset = ScanNetPairsDataset(tmp_path)
    assert len(dataset) == 1
    item = dataset[0]
    assert item["image0"].shape == (3, 480, 640)  # resized to Probe3D's 480 x 640
    np.testing.assert_allclose(item["depth1"].numpy(), poses[30][1] / 1000.0, rtol=1e-6)
    np.testing.assert_allclose(item["pose0"].numpy(), poses[15][0], atol=1e-6)
    np.testing.assert_allclose(item["intrinsics"][0, 0].item(), 577.0 / 640)
    np.testing.assert_allclose(item["intrinsics"][1, 2].item(), 239.5 / 480)


def test_scannet_pairs_missing_intrinsics(tmp_path):
    _scannet_pairs_fixture(tmp_path)
    np.savez(tmp_path / "test.npz", name=np.array([[1, 0, 15, 30]]))
    with pytest.raises(ValueError, match="scene0001_00"):
        ScanNetPairsDataset(tmp_path)


def test_scannetpp_fit3d_depth_and_segmentation_layouts(tmp_path):
    rng = np.random.default_rng(2)
    lines = []
    for index in range(3):
        image = f"scenes/abc/images/DSC{index:05d}.JPG"
        _write_rgb(tmp_path / image, rng.integers(0, 256, (8, 10, 3), dtype=np.uint8))
        depth_name = f"scenes/abc/depth/DSC{index:05d}.png"
        (tmp_path / depth_name).parent.mkdir(parents=True, exist_ok=True)
        depth = rng.integers(0, 25000, (8, 10)).astype(np.uint16)
        Image.fromarray(depth).save(tmp_path / depth_name)
        lines.append(f"/{image} {depth_name if index else 'None'} 518.8")
    (tmp_path / "scannetpp_train.txt").write_text("\n".join(lines) + "\n")
    depth_set = ScanNetPPDepthDataset(tmp_path, "train")
    assert len(depth_set) == 2  # the 'None' line is skipped
    item = depth_set[0]
    raw = np.asarray(Image.open(tmp_path / "scenes/abc/depth/DSC00001.png")).astype(np.float32) / 1000
    expected = np.where((raw > 20) | (raw < 1e-3), 0, raw)
    np.testing.assert_allclose(item["depth"].numpy(), expected, rtol=1e-6)

    for split in ("training", "validation"):
        for index in range(2):
            _write_rgb(tmp_path / "images" / split / f"img{index}.JPG", rng.integers(0, 256, (8, 10, 3), dtype=np.uint8))
            labels = rng.integers(0, 101, (8, 10)).astype(np.uint8)
            (tmp_path / "annotations" / split).mkdir(parents=True, exist_ok=True)
            Image.fromarray(labels).save(tmp_path / "annotations" / split / f"img{index}.png")
    seg = ScanNetPPSegmentationDataset(tmp_path, "test")
    assert len(seg) == 2 and seg.num_classes == 100
    labels = np.asarray(Image.open(tmp_path / "annotations/validation/img1.png")).astype(int)
    np.testing.assert_array_equal(seg[1]["semantics"].numpy(), np.where(labels > 0, labels - 1, 255))
    with pytest.raises(ValueError, match="normals"):
        build_dense_dataset("scannetpp", "normals", "train", tmp_path)
    (tmp_path / "annotations/training/img0.png").unlink()
    with pytest.raises(FileNotFoundError, match="img0.png"):
        ScanNetPPSegmentationDataset(tmp_path, "train")


def test_synthetic_sets_are_disjoint_and_consistent():
    config = SyntheticEvalConfig(train_scenes=1, test_scenes=1, frames_per_scene=12, frame_stride=4, image_size=28,
                                 pair_gaps=(2, 8), pair_starts=(0,))
    train, test = SyntheticDenseDataset(config, "train"), SyntheticDenseDataset(config, "test")
    assert len(train) == len(test) == 3
    assert not torch.equal(train[0]["image"], test[0]["image"])
    item = test[0]
    assert item["semantics"].max() < test.num_classes
    torch.testing.assert_close(item["normals"].norm(dim=0), torch.ones(28, 28))
    pairs = SyntheticPairsDataset(config)
    assert len(pairs) == 2
    torch.testing.assert_close(pairs[0]["image0"], test[0]["image"])
