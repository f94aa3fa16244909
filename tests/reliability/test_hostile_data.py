"""Hostile data files (issue 21 part 2): named pipes, paths out of the dataset root, string matrices, duplicate
frames, 8-bit depth, extreme focal lengths, 200,000-deep or non-UTF-8 JSON, .npy headers and NYU pickles claiming
TiBs, a .mat that inflates without bound, 16-bit/CMYK/palette images and decompression bombs. Each is refused (or
converted correctly) with an error naming the file and what was expected, without hanging or allocating."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import struct
import threading
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from snd.data import SceneDataError
from snd.data.image_io import image_to_tensor, open_image
from snd.data.nerfstudio import NerfstudioDataset
from tests.data.test_nerfstudio import write_nerfstudio_scene

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")


def _without_blocking(function, path):
    """Run ``function``; fail (after unblocking the FIFO at ``path``) if it has not returned within 20 s."""
    result = {}

    def call():
        try:
            result["value"] = function()
        except Exception as error:  # noqa: BLE001 - the test inspects it
            result["error"] = error

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(timeout=20)
    if thread.is_alive():
        with open(path, "wb"):
            pass
        pytest.fail(f"blocked on the named pipe {path}")
    return result


# ------------------------------------------------------------------------------------------ nerfstudio captures
@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ns") / "my_scene"
    write_nerfstudio_scene(folder)
    return folder


@pytest.fixture()
def scene(pristine, tmp_path):
    shutil.copytree(pristine, tmp_path / "my_scene")
    return tmp_path / "my_scene"


def _edit(folder, change):
    path = folder / "transforms.json"
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def _load_all(folder, **kwargs):
    dataset = NerfstudioDataset(folder, image_shape=(24, 32), **kwargs)
    dataset.load_views(0, list(range(dataset.num_frames(0))))
    return dataset


@pytest.mark.parametrize("entry, reason", [("../outside.png", "outside"), ("/etc/hostname", "absolute"), ("images/../../x.png", "outside")])
def test_nerfstudio_paths_must_stay_inside_the_scene(scene, entry, reason):
    _edit(scene, lambda meta: meta["frames"][3].update(file_path=entry))
    with pytest.raises(SceneDataError, match=rf"transforms\.json.*field 'frames\[3\]\.file_path'.*{reason}"):
        NerfstudioDataset(scene, image_shape=(24, 32))


def test_nerfstudio_symlink_pointing_outside_is_refused(scene, tmp_path):
    outside = tmp_path / "secret.png"
    shutil.copy(scene / "images" / "frame_00001.png", outside)
    (scene / "images" / "frame_00001.png").unlink()
    (scene / "images" / "frame_00001.png").symlink_to(outside)
    with pytest.raises(SceneDataError, match=r"file_path.*resolves outside"):
        NerfstudioDataset(scene, image_shape=(24, 32))


def test_nerfstudio_depth_path_must_stay_inside(scene):
    _edit(scene, lambda meta: meta["frames"][0].update(depth_file_path="../../depth.png"))
    with pytest.raises(SceneDataError, match=r"frames\[0\]\.depth_file_path.*outside"):
        NerfstudioDataset(scene, image_shape=(24, 32))


def test_nerfstudio_string_matrix_is_refused(scene):
    def stringify(meta):
        meta["frames"][2]["transform_matrix"] = [[str(v) for v in row] for row in meta["frames"][2]["transform_matrix"]]

    _edit(scene, stringify)
    with pytest.raises(SceneDataError, match=r"field 'frames\[2\]\.transform_matrix'.*4x4 list of numbers"):
        NerfstudioDataset(scene, image_shape=(24, 32))


def test_nerfstudio_duplicate_frames_are_refused(scene):
    _edit(scene, lambda meta: meta["frames"].append(dict(meta["frames"][5])))
    with pytest.raises(SceneDataError, match=r"frame 'images/frame_\d+\.png' is listed twice"):
        NerfstudioDataset(scene, image_shape=(24, 32))


def test_nerfstudio_8_bit_depth_is_refused(scene):
    for path in (scene / "depth").iterdir():
        Image.fromarray((np.asarray(Image.open(path)) // 100).astype(np.uint8)).save(path)
    with pytest.raises(SceneDataError, match=r"depth_file_path.*16-bit.*got mode 'L'"):
        _load_all(scene, load_depth=True)


@pytest.mark.parametrize("focal", [1e30, 1e-9])
def test_extreme_focal_lengths_are_refused(scene, focal):
    _edit(scene, lambda meta: meta.update(fl_x=focal))
    with pytest.raises(SceneDataError, match=r"field 'fl_x'.*focal length .* px is outside \[0\.032, 320000\]"):
        NerfstudioDataset(scene, image_shape=(24, 32))


def test_json_nested_200000_deep_is_refused(scene):
    (scene / "transforms.json").write_text('{"frames": ' + "[" * 200_000 + "]" * 200_000 + "}")
    with pytest.raises(SceneDataError, match=r"transforms\.json.*JSON nested too deeply to parse"):
        NerfstudioDataset(scene, image_shape=(24, 32))


def test_non_utf8_json_names_the_file(scene):
    (scene / "transforms.json").write_bytes(b'{"camera_model": "PINHOLE\xff", "frames": []}')
    with pytest.raises(SceneDataError, match=r"transforms\.json.*not UTF-8 text \(byte 0xff at offset 25\)"):
        NerfstudioDataset(scene, image_shape=(24, 32))


@needs_fifo
def test_named_pipe_as_an_image_is_refused_without_blocking(scene):
    path = scene / "images" / "frame_00003.png"
    path.unlink()
    os.mkfifo(path)
    dataset = NerfstudioDataset(scene, image_shape=(24, 32))
    result = _without_blocking(lambda: dataset.load_views(0, [2]), path)
    assert isinstance(result.get("error"), SceneDataError), result
    assert "frame_00003.png" in str(result["error"]) and "not a regular file" in str(result["error"])


@needs_fifo
def test_named_pipe_as_transforms_json_is_refused_without_blocking(tmp_path):
    from snd.data.checks import read_json

    path = tmp_path / "transforms.json"
    os.mkfifo(path)
    result = _without_blocking(lambda: read_json(path, scene="s"), path)
    assert isinstance(result.get("error"), SceneDataError)
    assert "is a named pipe (FIFO), not a regular file" in str(result["error"])


def test_npy_header_claiming_terabytes_is_refused_before_allocating(scene):
    path = scene / "depth" / "frame_00001.npy"
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1048576, 1048576), }".ljust(117) + "\n"  # 4 TiB
    path.write_bytes(np.lib.format.magic(1, 0) + struct.pack("<H", len(header)) + header.encode() + np.zeros((24, 32), np.float32).tobytes())
    _edit(scene, lambda meta: meta["frames"][-1].update(depth_file_path="depth/frame_00001.npy"))
    dataset = NerfstudioDataset(scene, image_shape=(24, 32), load_depth=True)
    position = next(i for i, f in enumerate(dataset.scenes[0].frames) if f.depth_path.endswith(".npy"))
    with pytest.raises(SceneDataError, match=r"frame_00001\.npy.*header declares shape \(1048576, 1048576\).*refused before allocating"):
        dataset.load_views(0, [position])


# ------------------------------------------------------------------------------------------ images
def test_16_bit_image_is_scaled_not_clipped_to_white(tmp_path):
    grey = np.full((8, 8), 32768, dtype=np.uint16)  # mid grey
    path = tmp_path / "grey16.png"
    Image.fromarray(grey).save(path)
    image = open_image(path, scene="s", field="image")
    assert image.mode in ("I;16", "I")
    tensor = image_to_tensor(image, None)
    assert torch.allclose(tensor, torch.full_like(tensor, 128 / 255), atol=1 / 255)


@pytest.mark.parametrize("mode", ["CMYK", "P", "LA", "1"])
def test_cmyk_palette_and_other_modes_convert_to_the_right_colours(tmp_path, mode):
    rgb = Image.new("RGB", (8, 8), (200, 40, 40) if mode != "1" else (255, 255, 255))
    if mode == "LA":
        rgb = Image.new("RGB", (8, 8), (90, 90, 90))
    converted = rgb.quantize(colors=4) if mode == "P" else rgb.convert(mode)  # an exact palette, no dithering
    path = tmp_path / f"image.{'jpg' if mode == 'CMYK' else 'png'}"
    converted.save(path, quality=100) if mode == "CMYK" else converted.save(path)
    tensor = image_to_tensor(open_image(path, scene="s", field="image"), None)
    expected = torch.tensor(rgb.getpixel((0, 0)), dtype=torch.float32)[:, None, None] / 255
    assert (tensor - expected).abs().max() < 8 / 255


def test_float_image_is_refused():
    with pytest.raises(ValueError, match=r"floating-point image \(mode 'F'\)"):
        image_to_tensor(Image.new("F", (4, 4), 0.5), None)


def test_decompression_bomb_names_the_file(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    Image.new("RGB", (64, 64)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 4096 pixels > 2 x the limit: Pillow raises
    with pytest.raises(SceneDataError, match=r"bomb\.png.*field 'image'.*decompression bomb"):
        open_image(path, scene="s", field="image")
    from snd.eval.datasets import _read_image

    with pytest.raises(ValueError, match=r"bomb\.png: refused as a possible decompression bomb.*expected an RGB image"):
        _read_image(path)


@needs_fifo
def test_eval_image_readers_refuse_named_pipes(tmp_path):
    from snd.eval.protocols.data import read_depth

    path = tmp_path / "depth.png"
    os.mkfifo(path)
    result = _without_blocking(lambda: read_depth(path), path)
    assert "is a named pipe (FIFO), not a regular file; expected a 16-bit depth PNG" in str(result.get("error"))


def test_eval_8_bit_depth_is_refused(tmp_path):
    from snd.eval.protocols.data import read_depth

    path = tmp_path / "depth.png"
    Image.fromarray(np.full((4, 4), 20, np.uint8)).save(path)
    with pytest.raises(ValueError, match=r"depth\.png: depth map has mode 'L'; expected a single-channel 16-bit PNG"):
        read_depth(path)


# ------------------------------------------------------------------------------------------ NYU pickles and .mat
def _nyu_pickle(tmp_path, payload: bytes):
    path = tmp_path / "nyuv2_snorm_all.pkl"
    path.write_bytes(payload)
    return path


def test_nyu_pickle_array_claiming_terabytes_is_refused(tmp_path):
    from snd.eval.datasets import NYUv2Dataset, PickleDataError

    # _reconstruct(ndarray, (2**40,), b'b'): numpy would allocate a TiB before any data is read
    payload = b"\x80\x03cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n\x8a\x06\x00\x00\x00\x00\x00\x01\x85C\x01b\x87R."
    path = _nyu_pickle(tmp_path, payload)
    with pytest.raises(PickleDataError, match=r"nyuv2_snorm_all\.pkl: malformed or hostile pickle.*shape \(1099511627776,\).*before allocating"):
        NYUv2Dataset(path)


def test_nyu_pickle_opcode_claiming_terabytes_is_refused(tmp_path):
    from snd.eval.protocols.data_probe3d import NYUTestNormals

    # BINBYTES8 with a length of 2**40: the unpickler would ask the file object for a TiB
    path = _nyu_pickle(tmp_path, b"\x80\x04\x8e" + struct.pack("<Q", 2**40) + b"xx.")
    with pytest.raises(ValueError, match=r"nyuv2_snorm_all\.pkl: malformed or hostile pickle.*expected Probe3D's nyuv2_snorm_all\.pkl"):
        NYUTestNormals(path)


def test_truncated_nyu_pickle_names_the_file(tmp_path):
    from snd.eval.datasets import NYUv2Dataset
    from tests.eval.protocols.probe3d_fixtures import write_nyu_pickle

    path = write_nyu_pickle(tmp_path / "nyuv2_snorm_all.pkl", count=2, test_indices=(1,))
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(ValueError, match=r"nyuv2_snorm_all\.pkl: malformed or hostile pickle"):
        NYUv2Dataset(path)


def test_valid_nyu_pickle_still_loads(tmp_path):
    from snd.eval.datasets import NYUv2Dataset
    from tests.eval.protocols.probe3d_fixtures import write_nyu_pickle

    path = write_nyu_pickle(tmp_path / "nyuv2_snorm_all.pkl", count=2, test_indices=(1,))
    assert len(NYUv2Dataset(path, split="test")) == 1


def test_mat_element_inflating_past_the_bound_is_refused(tmp_path, monkeypatch):
    from snd.eval.protocols import data_probe3d
    from tests.eval.protocols.probe3d_fixtures import write_mat_v5

    path = write_mat_v5(tmp_path / "frame.mat", {"depth": np.zeros((64, 64), np.float32)})
    assert data_probe3d.load_mat_v5(path)["depth"].shape == (64, 64)
    monkeypatch.setattr(data_probe3d, "MAT_MAX_ELEMENT_BYTES", 4096)  # the element declares ~16 kB
    with pytest.raises(ValueError, match=r"frame\.mat: a compressed MAT-file element declares \d+ bytes once inflated, more than the 4096"):
        data_probe3d.load_mat_v5(path)


def test_mat_element_inflating_past_its_declared_size_is_refused(tmp_path):
    from snd.eval.protocols.data_probe3d import load_mat_v5

    header = b"MATLAB 5.0 MAT-file".ljust(116, b" ") + b"\0" * 8 + struct.pack("<H", 0x0100) + b"IM"
    inner = struct.pack("<II", 14, 16) + b"\0" * (50 * 2**20)  # declares 16 bytes, inflates to 50 MB
    packed = zlib.compress(inner, 9)
    path = tmp_path / "bomb.mat"
    path.write_bytes(header + struct.pack("<II", 15, len(packed)) + packed)
    assert path.stat().st_size < 100_000
    with pytest.raises(ValueError, match=r"bomb\.mat: a compressed MAT-file element inflates to more than its declared 16 bytes"):
        load_mat_v5(path)


@needs_fifo
def test_mat_named_pipe_is_refused_without_blocking(tmp_path):
    from snd.eval.protocols.data_probe3d import load_mat_v5

    path = tmp_path / "frame.mat"
    os.mkfifo(path)
    result = _without_blocking(lambda: load_mat_v5(path), path)
    assert "is a named pipe (FIFO), not a regular file; expected a MATLAB v5 .mat file" in str(result.get("error"))


@needs_fifo
def test_re10k_chunk_named_pipe_is_refused_without_blocking(tmp_path):
    from snd.data import RE10KDataset

    stage = tmp_path / "train"
    stage.mkdir()
    os.mkfifo(stage / "000000.torch")
    result = _without_blocking(lambda: RE10KDataset(tmp_path, image_shape=(16, 16)), stage / "000000.torch")
    assert isinstance(result.get("error"), SceneDataError), result
    assert "000000.torch" in str(result["error"]) and "not a regular file" in str(result["error"])


def test_run_check_refuses_billion_laughs_and_pipes_in_config_yaml(tmp_path):
    from snd.distill.launch import is_snd_run
    from tests.reliability.test_hostile_config import _billion_laughs

    (tmp_path / "config.yaml").write_text(_billion_laughs() + "training: {}\n")
    assert is_snd_run(tmp_path) is False
    if hasattr(os, "mkfifo"):
        other = tmp_path / "other"
        other.mkdir()
        os.mkfifo(other / "config.yaml")
        assert _without_blocking(lambda: is_snd_run(other), other / "config.yaml").get("value") is False


def test_malformed_mat_names_the_file(tmp_path):
    from snd.eval.protocols.data_probe3d import load_mat_v5
    from tests.eval.protocols.probe3d_fixtures import write_mat_v5

    path = write_mat_v5(tmp_path / "frame.mat", {"depth": np.zeros((4, 4), np.float32)}, compress=False)
    data = bytearray(path.read_bytes())
    data[140:144] = b"\xff\xff\xff\x7f"  # the array-flags element claims 2 GB, past the matrix
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"frame\.mat: (truncated|malformed)"):
        load_mat_v5(path)


def test_nyu_pickle_with_a_non_array_entry_names_the_key(tmp_path):
    from snd.eval.datasets import NYUv2Dataset

    path = tmp_path / "nyuv2_snorm_all.pkl"
    data = {"images": [[1, 2]], "depths": np.zeros((1, 2, 2)), "snorms": np.zeros((1, 3, 2, 2)), "train_indices": np.array([0]),
            "test_indices": np.array([0])}
    path.write_bytes(pickle.dumps(data, protocol=4))
    with pytest.raises(ValueError, match=r"nyuv2_snorm_all\.pkl: 'images' is list; expected a numeric numpy array"):
        NYUv2Dataset(path)


def test_extreme_focal_without_declared_size_is_refused_at_load(scene):
    def change(meta):
        meta.pop("w"), meta.pop("h")
        meta["fl_y"] = 1e12

    _edit(scene, change)
    dataset = NerfstudioDataset(scene, image_shape=(24, 32))
    with pytest.raises(SceneDataError, match=r"field 'fl_y \(frames\[\d+\]\)'.*focal length 1000000000000\.0 px is outside \[0\.024, 240000\]"):
        dataset.load_views(0, [0])


def test_scannetpp_extreme_focal_is_refused(tmp_path):
    from snd.data import ScanNetPPDataset, ViewSampler
    from tests.data.fixtures import write_scannetpp_scene, write_split

    write_scannetpp_scene(tmp_path, scene_index=0, name="scene_a")
    write_split(tmp_path, "train", ["scene_a"])
    path = tmp_path / "scenes" / "scene_a" / "transforms_train.json"
    meta = json.loads(path.read_text())
    meta["fl_x"] = 1e-9
    path.write_text(json.dumps(meta))
    with pytest.raises(SceneDataError, match=r"field 'fl_x'.*focal length 1e-09 px is outside"):
        dataset = ScanNetPPDataset(tmp_path, split="train", image_shape=(12, 16), sampler=ViewSampler(min_gap=3, max_gap=5, seed=0))
        dataset.load_views(0, [0])


def test_undecodable_image_bytes_name_chunk_and_field_without_a_python_object_repr():
    with pytest.raises(SceneDataError) as info:
        open_image(b"not an image at all", scene="scene-1", field="images[3]", file="000000.torch")
    message = str(info.value)
    assert "000000.torch" in message and "images[3]" in message and "the encoded bytes" in message
    assert "BytesIO" not in message and " at 0x" not in message
