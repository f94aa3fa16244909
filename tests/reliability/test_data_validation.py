"""ScanNet++ and RE10K metadata are type-checked, depth maps must be 16-bit and image-sized, duplicate frames
are refused and every path read from metadata stays inside the dataset root (before, each of these passed
silently or read outside the root)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from snd.data import RE10KDataset, SceneDataError, ScanNetPPDataset, ViewSampler
from tests.data.fixtures import re10k_example, write_re10k_chunks, write_scannetpp_scene, write_split

SAMPLER = ViewSampler(min_gap=3, max_gap=5, seed=0)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    path = tmp_path_factory.mktemp("scannetpp")
    write_scannetpp_scene(path, scene_index=0, name="scene_a")
    write_split(path, "train", ["scene_a"])
    return path


@pytest.fixture()
def root(pristine, tmp_path):
    shutil.copytree(pristine, tmp_path / "root")
    return tmp_path / "root"


def _edit(root, change):
    path = root / "scenes" / "scene_a" / "transforms_train.json"
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def _load(root, **kwargs):
    dataset = ScanNetPPDataset(root, split="train", image_shape=(12, 16), sampler=SAMPLER, **kwargs)
    for scene in range(dataset.num_scenes()):
        dataset.load_views(scene, list(range(dataset.num_frames(scene))))
    return dataset


@pytest.mark.parametrize(
    "change, field, expected",
    [
        (lambda meta: meta["frames"][2].update(is_bad="false"), r"frames\[2\]\.is_bad", "expected true or false, got str 'false'"),
        (lambda meta: meta["frames"][0].update(is_bad=0), r"frames\[0\]\.is_bad", "expected true or false, got int 0"),
        (lambda meta: meta.update(fl_x=True), "fl_x", "expected a finite number > 0, got True"),
        (lambda meta: meta.update(w=True), "w/h", "expected positive image sizes"),
        (lambda meta: meta["frames"][1].update(transform_matrix=[[True, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]),
         r"frames\[1\]\.transform_matrix", "4x4 list of numbers"),
    ],
)
def test_scannetpp_metadata_types_are_checked(root, change, field, expected):
    _edit(root, change)
    with pytest.raises(SceneDataError, match=rf"field '{field}'.*({expected})"):
        _load(root)


def test_duplicate_frames_are_refused(root):
    _edit(root, lambda meta: meta["frames"].append(dict(meta["frames"][4])))
    with pytest.raises(SceneDataError, match=r"frame 'DSC\d+\.JPG' is listed twice"):
        _load(root)


@pytest.mark.parametrize("entry", ["/etc", "../../outside", "scene_a/../../x"])
def test_split_entries_must_stay_inside_the_root(root, entry):
    (root / "metadata" / "nvs_sem_train.txt").write_text(f"scene_a\n{entry}\n")
    with pytest.raises(SceneDataError, match=r"nvs_sem_train\.txt.*field 'line 2'.*(absolute|outside)"):
        _load(root)


def test_frame_file_paths_must_stay_inside_the_scene(root, tmp_path):
    outside = tmp_path / "secret.JPG"
    shutil.copy(next((root / "scenes" / "scene_a" / "images").iterdir()), outside)
    _edit(root, lambda meta: meta["frames"][0].update(file_path=str(outside)))
    with pytest.raises(SceneDataError, match=r"frames\[0\]\.file_path.*absolute"):
        _load(root)
    _edit(root, lambda meta: meta["frames"][0].update(file_path="../../../../secret.JPG"))
    with pytest.raises(SceneDataError, match=r"frames\[0\]\.file_path.*outside"):
        _load(root)


def _replace_depths(root, make):
    for path in (root / "scenes" / "scene_a" / "depth").iterdir():
        depth = np.asarray(Image.open(path))
        make(depth).save(path)


def test_depth_of_the_wrong_size_is_refused(root):
    _replace_depths(root, lambda depth: Image.fromarray(depth[:10, :10]))
    with pytest.raises(SceneDataError, match=r"field 'depth'.*depth map is 10x10 but its image is 32x24"):
        _load(root, load_depth=True)


def test_8_bit_depth_is_refused(root):
    _replace_depths(root, lambda depth: Image.fromarray((depth // 100).astype(np.uint8)))
    with pytest.raises(SceneDataError, match=r"field 'depth'.*16-bit.*got mode 'L'"):
        _load(root, load_depth=True)


def test_valid_depth_still_loads(root):
    dataset = _load(root, load_depth=True)
    views = dataset.load_views(0, [0, 1])
    assert views.depths.shape == (2, 12, 16) and bool((views.depths > 0).any())


@pytest.fixture(scope="module")
def re10k_examples():
    return [re10k_example(scene_index=i)[0] for i in range(2)]


@pytest.mark.parametrize("chunk", ["../../x.torch", "/etc/passwd", "sub/../../000000.torch"])
def test_re10k_index_entries_must_stay_inside_the_split(tmp_path, re10k_examples, chunk):
    stage = write_re10k_chunks(tmp_path, [re10k_examples])
    (tmp_path / "x.torch").write_bytes((stage / "000000.torch").read_bytes())  # a readable file outside the split
    index = json.loads((stage / "index.json").read_text())
    index[next(iter(index))] = chunk
    (stage / "index.json").write_text(json.dumps(index))
    with pytest.raises(SceneDataError, match=r"index\.json.*(absolute|outside)"):
        RE10KDataset(tmp_path, image_shape=(16, 16))


def test_re10k_index_value_types_are_checked(tmp_path, re10k_examples):
    stage = write_re10k_chunks(tmp_path, [re10k_examples])
    index = json.loads((stage / "index.json").read_text())
    index[next(iter(index))] = 0
    (stage / "index.json").write_text(json.dumps(index))
    with pytest.raises(SceneDataError, match=r"index\.json.*expected a chunk file name, got int 0"):
        RE10KDataset(tmp_path, image_shape=(16, 16))


def test_re10k_chunk_with_a_non_string_key_is_refused(tmp_path, re10k_examples):
    broken = dict(re10k_examples[0], key=7)
    write_re10k_chunks(tmp_path, [[broken]], write_index=False)
    with pytest.raises(SceneDataError, match=r"000000\.torch.*\[0\]\.key.*expected a string"):
        RE10KDataset(tmp_path, image_shape=(16, 16))


def test_re10k_chunk_asking_for_terabytes_is_refused(tmp_path, re10k_examples):
    example = dict(re10k_examples[0], timestamps=torch.zeros(1, dtype=torch.int64).expand(2**40))
    write_re10k_chunks(tmp_path, [[example]], write_index=False)
    with pytest.raises(SceneDataError, match=r"000000\.torch.*larger than the whole file"):
        RE10KDataset(tmp_path, image_shape=(16, 16))
