"""Regressions found by the hostile-input probe (tests/hostile/cases/scene_data.py): scene metadata that was accepted
silently or refused with an unclear message."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch

from snd.data import NerfstudioDataset, RE10KDataset, SceneDataError, ScanNetPPDataset, ViewSampler
from tests.data.fixtures import re10k_example, write_re10k_chunks, write_scannetpp_scene, write_split
from tests.data.test_nerfstudio import write_nerfstudio_scene

SIZE = (24, 32)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    base = tmp_path_factory.mktemp("probe_scene_data")
    write_nerfstudio_scene(base / "nerfstudio", depth=False)
    write_scannetpp_scene(base / "scannetpp", write_depth=False)
    write_split(base / "scannetpp", "train", ["scene00"])
    example, _ = re10k_example()
    torch.save([example], base / "example.torch")
    return base


def _nerfstudio(pristine, tmp_path, change):
    scene = tmp_path / "capture"
    shutil.copytree(pristine / "nerfstudio", scene)
    meta = json.loads((scene / "transforms.json").read_text())
    change(meta)
    (scene / "transforms.json").write_text(json.dumps(meta))
    dataset = NerfstudioDataset(scene, image_shape=SIZE)
    dataset.load_views(0, list(range(dataset.num_frames(0))))


def _scannetpp(pristine, tmp_path, change):
    root = tmp_path / "root"
    shutil.copytree(pristine / "scannetpp", root)
    path = root / "scenes" / "scene00" / "transforms_train.json"
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))
    dataset = ScanNetPPDataset(root, split="train", image_shape=SIZE)
    dataset.load_views(0, list(range(dataset.num_frames(0))))


@pytest.mark.parametrize("key, value", [("cx", -1.0), ("cx", 1e30), ("cy", -1.0), ("cy", 1e30)])
def test_nerfstudio_principal_point_outside_the_image_is_refused(pristine, tmp_path, key, value):
    with pytest.raises(SceneDataError, match=rf"field '{key}'.*principal point {key}=.*outside the image"):
        _nerfstudio(pristine, tmp_path, lambda meta: meta.update({key: value}))


def test_nerfstudio_principal_point_is_checked_against_the_image_when_w_h_are_absent(pristine, tmp_path):
    def change(meta):
        del meta["w"], meta["h"]
        meta["cx"] = 40.0  # the image is 32 wide

    with pytest.raises(SceneDataError, match=r"frames\[\d+\]\.cx'.*outside the image \[0, 32\]"):
        _nerfstudio(pristine, tmp_path, change)


@pytest.mark.parametrize("value", [32.5, 1e30])
def test_nerfstudio_image_size_must_be_whole_pixels_in_range(pristine, tmp_path, value):
    with pytest.raises(SceneDataError, match=r"field 'w/h'.*whole pixels.*got w="):
        _nerfstudio(pristine, tmp_path, lambda meta: meta.update(w=value))


def test_nerfstudio_complex_npy_depth_is_refused(pristine, tmp_path):
    scene = tmp_path / "capture"
    shutil.copytree(pristine / "nerfstudio", scene)
    meta = json.loads((scene / "transforms.json").read_text())
    (scene / "depth").mkdir(exist_ok=True)
    np.save(scene / "depth" / "d.npy", np.ones(SIZE, np.complex64))
    for frame in meta["frames"]:
        frame["depth_file_path"] = "depth/d.npy"
    (scene / "transforms.json").write_text(json.dumps(meta))
    dataset = NerfstudioDataset(scene, image_shape=SIZE, load_depth=True)
    with pytest.raises(SceneDataError, match=r"d\.npy.*depth_file_path.*real-valued"):
        dataset.load_views(0, [0])


def test_a_transforms_json_fifo_is_named_as_a_fifo(pristine, tmp_path):
    scene = tmp_path / "capture"
    shutil.copytree(pristine / "nerfstudio", scene)
    (scene / "transforms.json").unlink()
    os.mkfifo(scene / "transforms.json")
    with pytest.raises(SceneDataError, match=r"transforms\.json.*named pipe"):
        NerfstudioDataset(scene, image_shape=SIZE)


@pytest.mark.parametrize("key", ["cx", "cy"])
def test_scannetpp_negative_principal_point_is_refused(pristine, tmp_path, key):
    with pytest.raises(SceneDataError, match=rf"field '{key}'.*outside the image"):
        _scannetpp(pristine, tmp_path, lambda meta: meta.update({key: -1.0}))


def test_scannetpp_duplicate_frame_names_the_file_path_field(pristine, tmp_path):
    def change(meta):
        meta["frames"][2]["file_path"] = meta["frames"][3]["file_path"]

    with pytest.raises(SceneDataError, match=r"field 'frames\[\d\]\.file_path'.*listed twice"):
        _scannetpp(pristine, tmp_path, change)


def _re10k(pristine, tmp_path, examples, index=None):
    stage = write_re10k_chunks(tmp_path, [examples])
    if index is not None:
        (stage / "index.json").write_text(json.dumps(index))
    return RE10KDataset(tmp_path, image_shape=SIZE, sampler=ViewSampler(min_gap=2, max_gap=4))


def test_re10k_duplicate_scene_key_in_a_chunk_is_refused(pristine, tmp_path):
    example = torch.load(pristine / "example.torch", weights_only=True)[0]
    with pytest.raises(SceneDataError, match=r"000000\.torch.*\[1\]\.key.*listed twice"):
        _re10k(pristine, tmp_path, [example, dict(example)], index=None)[0]


def test_re10k_index_listing_no_scenes_is_refused(pristine, tmp_path):
    example = torch.load(pristine / "example.torch", weights_only=True)[0]
    with pytest.raises(SceneDataError, match=r"index\.json.*lists no scenes"):
        _re10k(pristine, tmp_path, [example], index={})


def test_re10k_pixel_focal_lengths_name_the_chunk_and_camera(pristine, tmp_path):
    example = torch.load(pristine / "example.torch", weights_only=True)[0]
    example["cameras"][:, 0] = 1e12
    dataset = _re10k(pristine, tmp_path, [example])
    with pytest.raises(SceneDataError, match=r"000000\.torch.*field 'cameras\[\d+\]'.*normalised"):
        dataset[0]


def test_re10k_empty_chunk_says_it_is_empty(pristine, tmp_path):
    example = torch.load(pristine / "example.torch", weights_only=True)[0]
    stage = write_re10k_chunks(tmp_path, [[example]])
    (stage / "000000.torch").write_bytes(b"")
    dataset = RE10KDataset(tmp_path, image_shape=SIZE, sampler=ViewSampler(min_gap=2, max_gap=4))
    with pytest.raises(SceneDataError, match=r"000000\.torch.*empty \(0 bytes\)"):
        dataset[0]


def test_re10k_entry_missing_a_field_names_its_position(pristine, tmp_path):
    example = torch.load(pristine / "example.torch", weights_only=True)[0]
    del example["images"]
    stage = write_re10k_chunks(tmp_path, [[example]], write_index=False)
    with pytest.raises(SceneDataError, match=r"000000\.torch.*field '\[0\]\.images'.*missing field 'images'"):
        RE10KDataset(stage.parent, image_shape=SIZE, sampler=ViewSampler(min_gap=2, max_gap=4))
