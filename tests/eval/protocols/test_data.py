"""Loaders of the FiT3D on-disk layouts, on fixtures written in those layouts; the 13-class mapping."""

import numpy as np
import pytest
from PIL import Image

from snd.eval.protocols import data

from .fixtures import write_nyuv2, write_scannet, write_scannetpp

# NYU-40 class -> 13-class name, restated by name (ankurhanda nyuv2-meta-data class13Mapping)
_BY_NAME = {
    "wall": "wall", "floor": "floor", "cabinet": "furniture", "bed": "bed", "chair": "chair", "sofa": "sofa",
    "table": "table", "door": "wall", "window": "window", "bookshelf": "furniture", "picture": "painting",
    "counter": "furniture", "blinds": "window", "desk": "table", "shelves": "furniture", "curtain": "window",
    "dresser": "furniture", "pillow": "objects", "mirror": "objects", "floor mat": "floor", "clothes": "objects",
    "ceiling": "ceiling", "books": "books", "refrigerator": "furniture", "television": "tv", "paper": "objects",
    "towel": "objects", "shower curtain": "objects", "box": "objects", "whiteboard": "objects", "person": "objects",
    "night stand": "furniture", "toilet": "objects", "sink": "objects", "lamp": "objects", "bathtub": "objects",
    "bag": "objects", "otherstructure": "objects", "otherfurniture": "furniture", "otherprop": "objects",
}
_NYU40 = list(_BY_NAME)


def test_nyu40_to_nyu13_by_class_name():
    for index, name in enumerate(_NYU40, start=1):
        expected = data.NYU13_CLASSES.index(_BY_NAME[name]) + 1
        assert data.nyu40_to_nyu13(np.array([index]))[0] == expected, name
    assert data.nyu40_to_nyu13(np.array([[0, 1], [22, 25]])).tolist() == [[0, 12], [3, 11]]
    with pytest.raises(ValueError, match="0..40"):
        data.nyu40_to_nyu13(np.array([41]))


def test_reduce_zero_label():
    assert data.reduce_zero_label(np.array([0, 1, 13, 255], dtype=np.uint8)).tolist() == [255, 0, 12, 255]


def test_nyuv2_layout(tmp_path):
    root = write_nyuv2(tmp_path / "nyuv2")
    for data_dir in (root, root / "data_depth"):
        train, test, spec = data.depth_datasets("nyuv2", data_dir)
        assert len(train) == 2 and len(test) == 1 and spec.nyu_train_crop and spec.max_depth == 10.0
    item = train[0]
    path = train.items[0][1]
    assert item["image"].shape == (3, 480, 640)
    stored = np.asarray(Image.open(path), dtype=np.float32)
    assert np.allclose(item["depth"].numpy(), stored / 1000.0)
    seg_train, seg_test, seg_spec = data.segmentation_datasets("nyuv2", root)
    assert len(seg_train) == 2 and len(seg_test) == 1 and seg_spec.num_classes == 13
    labels = seg_train[0]["labels"]
    raw = np.asarray(Image.open(seg_train.items[0][1]))
    assert (labels.numpy() == data.reduce_zero_label(raw)).all() and labels[0, 0] == 255


def test_scannet_and_scannetpp_layouts(tmp_path):
    scannet = write_scannet(tmp_path / "scannet_probe")
    train, test, spec = data.depth_datasets("scannet", scannet)
    assert len(train) == 2 and not spec.nyu_train_crop and spec.eval_crop
    seg_train, _, seg_spec = data.segmentation_datasets("scannet", scannet)
    assert seg_spec.num_classes == 40 and seg_train.items[0][0].suffix == ".jpg"
    scannetpp = write_scannetpp(tmp_path / "scannetpp_probe")
    train, test, spec = data.depth_datasets("scannetpp", scannetpp)
    assert spec.max_depth == 20.0 and spec.eval_size == (584, 876) and not spec.eval_crop
    assert train[0]["image"].shape == (3, 438, 584)
    _, seg_test, seg_spec = data.segmentation_datasets("scannetpp", scannetpp)
    assert seg_spec.num_classes == 100 and len(seg_test) == 1


def test_clear_errors(tmp_path):
    root = write_nyuv2(tmp_path / "nyuv2")
    (root / "data_depth" / "nyu_train.txt").write_text("only_one_field\n")
    with pytest.raises(ValueError, match=r"nyu_train.txt:1"):
        data.depth_datasets("nyuv2", root)
    next((root / "data_sem" / "nyuv2_test_class13").iterdir()).unlink()
    with pytest.raises(FileNotFoundError, match="nyuv2_test_class13"):
        data.segmentation_datasets("nyuv2", root)
    with pytest.raises(ValueError, match="dataset must be one of"):
        data.depth_datasets("kitti", root)


def test_nyuv2_segmentation_test_set_per_model_size_as_released(tmp_path):
    # baseline_configs/vits_nyu_sem_linear_config.py: img_dir="nyu_test_rgb_vis", ann_dir="nyuv2_test_class13_vis"
    # (the full set commented out); vitb_nyu_sem_linear_config.py: "nyu_test_rgb", "nyuv2_test_class13".
    from types import SimpleNamespace

    from snd.eval.protocols.segmentation import SegmentationProtocol, resolve_test_set

    from .fixtures import write_folder_segmentation

    root = write_nyuv2(tmp_path / "nyuv2")
    vits = SimpleNamespace(config=SimpleNamespace(hidden_size=384))
    vitb = SimpleNamespace(config=SimpleNamespace(hidden_size=768))
    auto = SegmentationProtocol()
    assert resolve_test_set(auto, "nyuv2", vits) == "vis" and resolve_test_set(auto, "nyuv2", vitb) == "full"
    assert resolve_test_set(auto, "scannet", vits) == "full"
    assert resolve_test_set(SegmentationProtocol(nyu_test_set="full"), "nyuv2", vits) == "full"
    with pytest.raises(FileNotFoundError, match="nyu-seg-test-set full"):
        data.segmentation_datasets("nyuv2", root, test_set="vis")
    write_folder_segmentation(root / "data_sem", {("nyu_test_rgb_vis", "nyuv2_test_class13_vis"): 3}, seed=1)
    _, vis, _ = data.segmentation_datasets("nyuv2", root, test_set="vis")
    _, full, _ = data.segmentation_datasets("nyuv2", root)
    assert len(vis) == 3 and len(full) == 1 and vis.img_dir.name == "nyu_test_rgb_vis"
    with pytest.raises(ValueError, match="no 'vis' test set"):
        data.segmentation_datasets("scannet", root, test_set="vis")
