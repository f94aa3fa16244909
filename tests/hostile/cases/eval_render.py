"""Probe cases for the evaluation datasets (``eval_data``), the renderer and depth lifter (``render``) and the
metrics and evaluation settings (``metrics``).

Every case calls the real entry point a user would: a dataset class constructed on the hostile folder and its first
item read (what the evaluation does next), ``render_features`` / ``render_gaussians`` / ``DepthLifter``, a metric's
plain function or ``evaluate.load`` module, ``evaluate_backbones`` with an :class:`EvaluationConfig`, or
``scripts/evaluate.py``'s ``main(argv)``. Inputs are generated per field x kind of damage, not picked to pass.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import shutil
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tests.hostile.harness import Case, register

REPO = Path(__file__).resolve().parents[3]
FIXTURES: dict[str, Path] = {}

NYU = "nyuv2_snorm_all.pkl"


# ------------------------------------------------------------------------------------------------------------ fixtures
def prepare(fixture_dir: Path) -> None:
    """A valid NYU pickle, a GeoNet folder, ScanNet pairs, FiT3D split-list and segmentation folders, a tiny model."""
    from tests.eval.protocols.probe3d_fixtures import write_geonet, write_nyu_pickle, write_scannet_pairs

    fixture_dir.mkdir(parents=True, exist_ok=True)
    write_nyu_pickle(fixture_dir / "nyu" / NYU, count=3, test_indices=(2, 0))
    write_geonet(fixture_dir / "geo", count=2)
    write_scannet_pairs(fixture_dir / "pairs")
    _write_split_root(fixture_dir / "depth_root")
    _write_seg_root(fixture_dir / "seg_root")
    import snd

    torch.manual_seed(0)
    snd.SnDModel(snd.SnDConfig.tiny()).save_pretrained(fixture_dir / "tiny-snd")
    FIXTURES["root"] = fixture_dir


def _write_split_root(root: Path) -> None:
    """FiT3D's NYU depth layout (``data_depth/nyu_{train,test}.txt``) with 2 + 1 frames of 48 x 64."""
    base = root / "data_depth"
    for split, names in (("train", ("a", "b")), ("test", ("c",))):
        lines = []
        for name in names:
            (base / "scene").mkdir(parents=True, exist_ok=True)
            rng = np.random.default_rng(len(name) + ord(name))
            Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(base / "scene" / f"rgb_{name}.jpg")
            Image.fromarray(np.full((48, 64), 2000, np.uint16)).save(base / "scene" / f"sync_depth_{name}.png")
            lines.append(f"/scene/rgb_{name}.jpg /scene/sync_depth_{name}.png 518.8579")
        (base / f"nyu_{split}.txt").write_text("\n".join(lines) + "\n")


def _write_seg_root(root: Path) -> None:
    """FiT3D's NYU segmentation layout (``data_sem/nyu_{train,test}_rgb`` + ``nyuv2_{train,test}_class13``)."""
    base = root / "data_sem"
    for images, labels in (("nyu_train_rgb", "nyuv2_train_class13"), ("nyu_test_rgb", "nyuv2_test_class13")):
        (base / images).mkdir(parents=True, exist_ok=True)
        (base / labels).mkdir(parents=True, exist_ok=True)
        for index in range(2):
            Image.fromarray(np.full((32, 40, 3), 60 * index, np.uint8)).save(base / images / f"{index:04d}.png")
            Image.fromarray((np.arange(32 * 40).reshape(32, 40) % 14).astype(np.uint8)).save(base / labels / f"{index:04d}.png")


def _copy(ctx, name: str) -> Path:
    source = FIXTURES["root"] / name
    target = ctx.work / name
    shutil.copytree(source, target, symlinks=True)
    return target


def _add(family, name, setup, names=(), valid=False, timeout_s=60.0, note=""):
    register(Case(family, name, setup, tuple(names), valid, timeout_s, note))


# ============================================================================================================ eval_data
# ---------------------------------------------------------------------------------- NYU pickle (two readers)
def _nyu_readers():
    from snd.eval.datasets import NYUv2Dataset
    from snd.eval.protocols.data_probe3d import NYUTestNormals

    return {
        "NYUv2Dataset": lambda path: NYUv2Dataset(path, split="test"),
        "NYUTestNormals": NYUTestNormals,
    }


def _read_first(dataset):
    """What an evaluation does after opening a dataset: its length and its first item."""
    if len(dataset) == 0:
        return dataset
    dataset[0]
    return dataset


def _nyu_arrays_dict():
    from tests.eval.protocols.probe3d_fixtures import nyu_arrays

    images, depths, snorms = nyu_arrays(2)
    return {"images": images, "depths": depths, "snorms": snorms, "train_indices": np.array([1]), "test_indices": np.array([0])}


def _payload_pickle(marker: Path) -> bytes:
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    return pickle.dumps({"images": Payload()}, protocol=2)


def _terabyte_array_pickle() -> bytes:
    return b"\x80\x03cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n\x8a\x06\x00\x00\x00\x00\x00\x01\x85C\x01b\x87R."


def _nyu_payload(kind):
    """Bytes (or a callable writing the file) of the hostile NYU pickle ``kind``."""

    def edited(change):
        def make(ctx, path):
            data = _nyu_arrays_dict()
            change(data)
            path.write_bytes(pickle.dumps(data, protocol=4))

        return make

    def raw(content):
        def make(ctx, path):
            path.write_bytes(content(ctx) if callable(content) else content)

        return make

    def valid_pickle(ctx, path):
        shutil.copy(FIXTURES["root"] / "nyu" / NYU, path)

    def truncated(ctx, path):
        valid_pickle(ctx, path)
        path.write_bytes(path.read_bytes()[:4096])

    def fifo(ctx, path):
        os.mkfifo(path)

    def directory(ctx, path):
        path.mkdir()

    def symlink_dangling(ctx, path):
        path.symlink_to(ctx.work / "gone.pkl")

    return {
        "truncated": (truncated, ("images",), "first 4 KiB of a real file (an interrupted download)"),
        "empty": (raw(b""), (), "zero bytes"),
        "random_bytes": (raw(bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8))), (), "not a pickle"),
        "text_file": (raw(b"<html>404 Not Found</html>\n"), (), "an HTML error page saved under the name"),
        "opcode_claims_tib": (raw(b"\x80\x04\x8e" + struct.pack("<Q", 2**40) + b"xx."), (), "BINBYTES8 claiming 1 TiB"),
        "array_claims_tib": (raw(_terabyte_array_pickle()), (), "_reconstruct of a (2**40,) array"),
        "code_execution": (raw(lambda ctx: _payload_pickle(ctx.marker)), (), "REDUCE os.system payload"),
        "deep_nesting": (raw(b"\x80\x02" + b"]" * 200_000 + b"."), (), "200,000 nested lists"),
        "fifo": (fifo, (), "a named pipe under the pickle's name"),
        "directory": (directory, (), "a folder under the pickle's name"),
        "dangling_symlink": (symlink_dangling, (), "a symlink to nothing"),
        "not_a_dict": (raw(pickle.dumps([1, 2, 3])), (), "a list"),
        "missing_depths": (edited(lambda d: d.pop("depths")), ("depths",), "no 'depths' key"),
        "missing_test_indices": (edited(lambda d: d.pop("test_indices")), ("test_indices",), "no 'test_indices' key"),
        "images_3d": (edited(lambda d: d.update(images=d["images"][:, 0])), ("images",), "images [N, H, W]"),
        "images_channels_last": (edited(lambda d: d.update(images=np.ascontiguousarray(d["images"].transpose(0, 2, 3, 1)))),
                                 ("images",), "images [N, H, W, 3] instead of [N, 3, H, W]"),
        "images_float01": (edited(lambda d: d.update(images=d["images"].astype(np.float32) / 255)), ("images",),
                           "images as floats in [0, 1] (would read as black)"),
        "images_strings": (edited(lambda d: d.update(images=np.array(["a", "b"]))), ("images",), "images a string array"),
        "depths_wrong_size": (edited(lambda d: d.update(depths=d["depths"][:, :240, :320].copy())), ("depths",),
                              "depths half the image size"),
        "depths_with_channel": (edited(lambda d: d.update(depths=d["depths"][:, None].copy())), ("depths",),
                                "depths [N, 1, H, W]"),
        "snorms_wrong_shape": (edited(lambda d: d.update(snorms=d["snorms"][:, :2].copy())), ("snorms",),
                               "snorms with 2 channels"),
        "fewer_depths_than_images": (edited(lambda d: d.update(depths=d["depths"][:1].copy())), ("depths",),
                                     "1 depth map for 2 images"),
        "test_index_out_of_range": (edited(lambda d: d.update(test_indices=np.array([7]))), ("test_indices",),
                                    "index 7 of 2 images"),
        "test_index_negative": (edited(lambda d: d.update(test_indices=np.array([-1]))), ("test_indices",),
                                "index -1 (numpy would wrap it)"),
        "test_indices_float": (edited(lambda d: d.update(test_indices=np.array([0.7]))), ("test_indices",),
                               "a fractional index"),
        "test_indices_empty": (edited(lambda d: d.update(test_indices=np.array([], np.int64))), ("test_indices",),
                               "an empty test split"),
        "depths_nan": (edited(lambda d: d["depths"].__setitem__((0, 100, 100), np.nan)), ("depths",),
                       "a NaN in the ground-truth depth"),
        "depths_negative": (edited(lambda d: d["depths"].__setitem__((0, 100, slice(0, 50)), -3.0)), ("depths",),
                            "negative ground-truth depth"),
    }


def _register_nyu():
    for reader in ("NYUv2Dataset", "NYUTestNormals"):
        for kind, (make, extra, note) in _nyu_payload(None).items():
            if reader == "NYUTestNormals" and kind in ("images_float01", "test_indices_float", "depths_negative",
                                                       "fewer_depths_than_images", "images_strings"):
                continue  # one reader is enough for these

            def setup(ctx, make=make, reader=reader):
                path = ctx.work / NYU
                make(ctx, path)
                return lambda: _read_first(_nyu_readers()[reader](path))

            _add("eval_data", f"nyu_pickle/{reader}/{kind}", setup, names=(NYU,) + extra,
                 timeout_s=30 if kind == "fifo" else 60, note=note)

    def labels(value):
        def setup(ctx):
            data = _nyu_arrays_dict()
            data["labels"] = np.full((2, 480, 640), value, np.int64)
            path = ctx.work / NYU
            path.write_bytes(pickle.dumps(data, protocol=4))
            from snd.eval.datasets import NYUv2Dataset

            return lambda: _read_first(NYUv2Dataset(path, split="test"))

        return setup

    _add("eval_data", "nyu_pickle/NYUv2Dataset/labels_out_of_range", labels(200), names=(NYU, "labels"),
         note="NYU-40 labels of 200")
    _add("eval_data", "nyu_pickle/NYUv2Dataset/labels_negative", labels(-4), names=(NYU, "labels"),
         note="negative NYU-40 labels")
    _add("eval_data", "nyu_pickle/NYUv2Dataset/labels_valid", labels(40), valid=True, note="label 40 (the last class)")

    def valid(reader):
        def setup(ctx):
            path = ctx.work / NYU
            shutil.copy(FIXTURES["root"] / "nyu" / NYU, path)
            return lambda: _read_first(_nyu_readers()[reader](path))

        return setup

    _add("eval_data", "nyu_pickle/NYUv2Dataset/valid", valid("NYUv2Dataset"), valid=True, note="a real-format pickle")
    _add("eval_data", "nyu_pickle/NYUTestNormals/valid", valid("NYUTestNormals"), valid=True, note="a real-format pickle")

    def protocol_5(ctx):
        path = ctx.work / NYU
        path.write_bytes(pickle.dumps(_nyu_arrays_dict(), protocol=5))
        return lambda: _read_first(_nyu_readers()["NYUv2Dataset"](path))

    _add("eval_data", "nyu_pickle/NYUv2Dataset/valid_protocol5", protocol_5, valid=True, note="pickle protocol 5")


# ---------------------------------------------------------------------------------- GeoNet .mat
def _register_geonet():
    from tests.eval.protocols.probe3d_fixtures import write_mat_v5

    def geonet(change, note, names=(), valid=False):
        def setup(ctx):
            folder = _copy(ctx, "geo") / "nyu_geonet"
            first = sorted(folder.iterdir())[0]
            change(ctx, folder, first)
            from snd.eval.protocols.data_probe3d import GeoNetNormals

            return lambda: _read_first(GeoNetNormals(folder, drop_bad_indices=False))

        return setup, names, valid, note

    def rewrite(variables):
        def change(ctx, folder, first):
            write_mat_v5(first, variables(np.random.default_rng(0)))

        return change

    def frame(rng):
        from tests.eval.protocols.probe3d_fixtures import geonet_frame

        img, depth, normal, _ = geonet_frame(rng)
        return {"img": img, "depth": depth, "norm": normal}

    def without(key):
        return rewrite(lambda rng: {k: v for k, v in frame(rng).items() if k != key})

    def renamed(rng):
        values = frame(rng)
        values["normals"] = values.pop("norm")
        return values

    def small(rng):
        values = frame(rng)
        values["img"] = values["img"][:100, :100]
        return values

    def two_channel(rng):
        values = frame(rng)
        values["norm"] = values["norm"][..., :2].copy()
        return values

    def nan_norm(rng):
        values = frame(rng)
        values["norm"][5, 5] = np.nan
        return values

    def truncated(ctx, folder, first):
        first.write_bytes(first.read_bytes()[: first.stat().st_size // 2])

    def header_only(ctx, folder, first):
        first.write_bytes(first.read_bytes()[:128])

    def random_bytes(ctx, folder, first):
        first.write_bytes(bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8)))

    def hdf5(ctx, folder, first):
        first.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 2000)

    def bomb(ctx, folder, first):
        header = b"MATLAB 5.0 MAT-file".ljust(116, b" ") + b"\0" * 8 + struct.pack("<H", 0x0100) + b"IM"
        inner = struct.pack("<II", 14, 16) + b"\0" * (200 * 2**20)
        packed = zlib.compress(inner, 9)
        first.write_bytes(header + struct.pack("<II", 15, len(packed)) + packed)

    def declared_huge(ctx, folder, first):
        header = b"MATLAB 5.0 MAT-file".ljust(116, b" ") + b"\0" * 8 + struct.pack("<H", 0x0100) + b"IM"
        inner = struct.pack("<II", 14, 2**31) + b"\0" * 64
        packed = zlib.compress(inner, 9)
        first.write_bytes(header + struct.pack("<II", 15, len(packed)) + packed)

    def dims_huge(ctx, folder, first):
        data = bytearray(write_mat_v5(first, {"img": np.zeros((4, 4, 3), np.float32), "depth": np.zeros((4, 4), np.float32),
                                              "norm": np.zeros((4, 4, 3), np.float32)}, compress=False).read_bytes())
        # the first matrix's dimensions element: tag (8) + flags element (16) after the matrix tag (8) at byte 128
        offset = 128 + 8 + 16 + 8
        data[offset:offset + 8] = struct.pack("<ii", 2**30, 2**30)
        first.write_bytes(bytes(data))

    def fifo(ctx, folder, first):
        first.unlink()
        os.mkfifo(first)

    def empty_file(ctx, folder, first):
        first.write_bytes(b"")

    def no_mat(ctx, folder, first):
        for path in folder.iterdir():
            path.unlink()

    def big_endian(ctx, folder, first):
        write_mat_v5(first, frame(np.random.default_rng(0)), endian=">")

    def uncompressed(ctx, folder, first):
        write_mat_v5(first, frame(np.random.default_rng(0)), compress=False)

    cases = {
        "missing_norm": geonet(without("norm"), "no 'norm' variable", ("norm",)),
        "missing_img": geonet(without("img"), "no 'img' variable", ("img",)),
        "renamed_variable": geonet(rewrite(renamed), "'normals' instead of 'norm'", ("norm",)),
        "img_too_small": geonet(rewrite(small), "img 100 x 100", ("img",)),
        "norm_two_channels": geonet(rewrite(two_channel), "norm with 2 channels", ("norm",)),
        "norm_nan": geonet(rewrite(nan_norm), "a NaN ground-truth normal", ("norm",)),
        "truncated": geonet(truncated, "half a file"),
        "header_only": geonet(header_only, "only the 128-byte header"),
        "random_bytes": geonet(random_bytes, "random bytes"),
        "hdf5_v73": geonet(hdf5, "a v7.3 (HDF5) file"),
        "inflate_bomb": geonet(bomb, "16 bytes declared, 200 MB inflated"),
        "declares_2gib": geonet(declared_huge, "a compressed element declaring 2 GiB"),
        "dims_claim_2e18": geonet(dims_huge, "dimensions 2**30 x 2**30 over 48 values"),
        "fifo": geonet(fifo, "a named pipe"),
        "empty_file": geonet(empty_file, "zero bytes"),
        "valid_big_endian": geonet(big_endian, "a big-endian MAT file", valid=True),
        "valid_uncompressed": geonet(uncompressed, "an uncompressed MAT file", valid=True),
    }
    for kind, (setup, extra, valid, note) in cases.items():
        names = () if valid else (".mat",) + extra
        _add("eval_data", f"geonet_mat/{kind}", setup, names=names, valid=valid, timeout_s=30 if kind == "fifo" else 60, note=note)

    def empty_folder(ctx):
        folder = ctx.work / "nyu_geonet"
        folder.mkdir()
        from snd.eval.protocols.data_probe3d import GeoNetNormals

        return lambda: GeoNetNormals(folder)

    _add("eval_data", "geonet_mat/empty_folder", empty_folder, names=("nyu_geonet",), note="no .mat file")


# ---------------------------------------------------------------------------------- ScanNet pairs
def _pairs_readers():
    from snd.eval.datasets import ScanNetPairsDataset
    from snd.eval.protocols.data_probe3d import ScanNetPairsProbe3D

    return {"ScanNetPairsDataset": ScanNetPairsDataset, "ScanNetPairsProbe3D": ScanNetPairsProbe3D}


def _register_pairs():
    scene, frame = "scene0707_00", 15  # the first pair of the fixture: (707, 0, 15, 30)

    def intrinsics_edit(change):
        def edit(root):
            with np.load(root / "intrinsics.npz") as stored:
                values = {key: stored[key].copy() for key in stored.files}
            change(values)
            np.savez(root / "intrinsics.npz", **values)

        return edit

    def test_edit(array):
        def edit(root):
            np.savez(root / "test.npz", name=array)

        return edit

    def pose_text(text):
        def edit(root):
            (root / scene / "pose" / f"{frame}.txt").write_text(text)

        return edit

    def pose_matrix(change):
        def edit(root):
            path = root / scene / "pose" / f"{frame}.txt"
            pose = np.loadtxt(path)
            change(pose)
            np.savetxt(path, pose, delimiter=" ")

        return edit

    def member_claims_tib(root):
        header = "{'descr': '<i8', 'fortran_order': False, 'shape': (1099511627776, 4), }".ljust(117) + "\n"
        with zipfile.ZipFile(root / "test.npz", "w") as archive:
            archive.writestr("name.npy", np.lib.format.magic(1, 0) + struct.pack("<H", len(header)) + header.encode() + b"\0" * 64)

    def zip_bomb(root):
        header = "{'descr': '<f8', 'fortran_order': False, 'shape': (40000000,), }".ljust(117) + "\n"
        with zipfile.ZipFile(root / "intrinsics.npz", "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("scene0707_00.npy", np.lib.format.magic(1, 0) + struct.pack("<H", len(header)) + header.encode()
                             + b"\0" * (320 * 2**20))

    def write(name, content):
        def edit(root):
            (root / name).write_bytes(content)

        return edit

    def replace_with_fifo(relative):
        def edit(root):
            (root / relative).unlink()
            os.mkfifo(root / relative)

        return edit

    def remove(relative):
        def edit(root):
            (root / relative).unlink()

        return edit

    def depth_8bit(root):
        path = root / scene / "depth" / f"{frame}.png"
        Image.fromarray((np.asarray(Image.open(path)) // 100).astype(np.uint8)).save(path)

    def depth_small(root):
        path = root / scene / "depth" / f"{frame}.png"
        Image.fromarray(np.asarray(Image.open(path))[:240, :320].copy()).save(path)

    def depth_rgb(root):
        path = root / scene / "depth" / f"{frame}.png"
        Image.fromarray(np.zeros((480, 640, 3), np.uint8)).save(path)

    def symlink_out(root):
        secret = root.parent / "secret.jpg"
        shutil.copy(root / scene / "color" / f"{frame}.jpg", secret)
        (root / scene / "color" / f"{frame}.jpg").unlink()
        (root / scene / "color" / f"{frame}.jpg").symlink_to(secret)

    frame_file = f"{scene}/pose/{frame}.txt"
    cases = {
        "test_npz_member_claims_tib": (member_claims_tib, ("test.npz",), "name.npy header claiming 2**40 x 4 int64"),
        "intrinsics_npz_zip_bomb": (zip_bomb, ("intrinsics.npz",), "320 MB of zeros deflated, header claiming 320 MB"),
        "test_npz_corrupt_zip": (write("test.npz", b"PK\x03\x04 not really a zip"), ("test.npz",), "corrupt zip"),
        "test_npz_empty": (write("test.npz", b""), ("test.npz",), "zero bytes"),
        "intrinsics_npz_random": (write("intrinsics.npz", bytes(range(256)) * 8), ("intrinsics.npz",), "random bytes"),
        "test_npz_fifo": (replace_with_fifo("test.npz"), ("test.npz",), "a named pipe"),
        "test_npz_missing": (remove("test.npz"), ("test.npz",), "no test.npz"),
        "test_npz_no_name": (lambda root: np.savez(root / "test.npz", pairs=np.zeros((2, 4), np.int64)), ("test.npz", "name"),
                             "member 'pairs' instead of 'name'"),
        "name_wrong_shape": (test_edit(np.zeros((2, 3), np.int64)), ("test.npz", "name"), "name [P, 3]"),
        "name_strings": (test_edit(np.array([["a", "b", "c", "d"]])), ("test.npz", "name"), "name holds strings"),
        "name_object_array": (lambda root: np.savez(root / "test.npz", name=np.array([{"a": 1}], dtype=object)),
                              ("test.npz", "name"), "an object array (needs pickle)"),
        "name_empty": (test_edit(np.zeros((0, 4), np.int64)), ("test.npz", "name"), "zero pairs"),
        "name_negative_frame": (test_edit(np.array([[707, 0, -15, 30]], np.int64)), ("test.npz", "name", "-15"),
                                "frame -15"),
        "intrinsics_missing_scene": (intrinsics_edit(lambda v: v.pop("scene0708_01")), ("intrinsics.npz", "scene0708_01"),
                                     "no K for a listed scene"),
        "focal_1e30": (intrinsics_edit(lambda v: v["scene0707_00"].__setitem__((0, 0), 1e30)), ("intrinsics.npz", "fx"),
                       "fx 1e30"),
        "focal_zero": (intrinsics_edit(lambda v: v["scene0707_00"].__setitem__((1, 1), 0.0)), ("intrinsics.npz", "fy"),
                       "fy 0"),
        "focal_negative": (intrinsics_edit(lambda v: v["scene0707_00"].__setitem__((0, 0), -577.6)), ("intrinsics.npz", "fx"),
                           "fx negative"),
        "focal_nan": (intrinsics_edit(lambda v: v["scene0707_00"].__setitem__((0, 0), np.nan)), ("intrinsics.npz", "scene0707_00"),
                      "fx NaN"),
        "intrinsics_2x2": (intrinsics_edit(lambda v: v.__setitem__("scene0707_00", np.eye(2))), ("intrinsics.npz", "scene0707_00"),
                           "a 2 x 2 K"),
        "pose_nan": (pose_matrix(lambda p: p.__setitem__((0, 3), np.nan)), (f"{frame}.txt",), "NaN translation"),
        "pose_inf": (pose_matrix(lambda p: p.__setitem__((1, 1), np.inf)), (f"{frame}.txt",), "inf in the rotation"),
        "pose_3x4": (pose_text("1 0 0 0\n0 1 0 0\n0 0 1 0\n"), (f"{frame}.txt",), "3 x 4 pose"),
        "pose_text": (pose_text("identity\n"), (f"{frame}.txt",), "words instead of numbers"),
        "pose_empty": (pose_text(""), (f"{frame}.txt",), "zero bytes"),
        "pose_singular": (pose_matrix(lambda p: p[:3, :3].__imul__(0.0)), (f"{frame}.txt",),
                          "all-zero rotation (ScanNet's invalid '-inf' poses are similar)"),
        "pose_scaled": (pose_matrix(lambda p: p[:3, :3].__imul__(3.0)), (f"{frame}.txt",), "rotation scaled by 3"),
        "pose_fifo": (replace_with_fifo(frame_file), (f"{frame}.txt",), "a named pipe"),
        "pose_missing": (remove(frame_file), (f"{frame}.txt",), "no pose file"),
        "color_missing": (remove(f"{scene}/color/{frame}.jpg"), (f"{frame}.jpg",), "no colour image"),
        "color_random_bytes": (write(f"{scene}/color/{frame}.jpg", bytes(range(256)) * 4), (f"{frame}.jpg",), "random bytes"),
        "depth_8bit": (depth_8bit, (f"{frame}.png",), "8-bit depth"),
        "depth_rgb": (depth_rgb, (f"{frame}.png",), "an RGB image as depth"),
        "depth_half_size": (depth_small, (f"{frame}.png",), "depth 320 x 240 for a 640 x 480 image"),
        "depth_truncated": (lambda root: (root / scene / "depth" / f"{frame}.png").write_bytes(
            (root / scene / "depth" / f"{frame}.png").read_bytes()[:300]), (f"{frame}.png",), "first 300 bytes"),
    }
    skip_probe3d = {"intrinsics_npz_zip_bomb", "test_npz_empty", "test_npz_missing", "name_object_array", "focal_negative",
                    "pose_text", "pose_empty", "color_missing", "depth_truncated", "test_npz_fifo"}
    for reader in ("ScanNetPairsDataset", "ScanNetPairsProbe3D"):
        for kind, (edit, names, note) in cases.items():
            if reader == "ScanNetPairsProbe3D" and kind in skip_probe3d:
                continue

            def setup(ctx, edit=edit, reader=reader):
                root = _copy(ctx, "pairs")
                edit(root)
                return lambda: _read_first(_pairs_readers()[reader](root))

            _add("eval_data", f"scannet_pairs/{reader}/{kind}", setup, names=names,
                 timeout_s=30 if "fifo" in kind else 60, note=note)

        def symlinked(ctx, reader=reader):
            root = _copy(ctx, "pairs")
            symlink_out(root)
            return lambda: _read_first(_pairs_readers()[reader](root))

        _add("eval_data", f"scannet_pairs/{reader}/color_symlink_out_of_root", symlinked, valid=True,
             note="a scene file symlinked to another disk is a common layout; it is only decoded as an image")

        def valid(ctx, reader=reader):
            root = _copy(ctx, "pairs")
            return lambda: _read_first(_pairs_readers()[reader](root))

        _add("eval_data", f"scannet_pairs/{reader}/valid", valid, valid=True, note="the real layout")


# ---------------------------------------------------------------------------------- split lists, depth and label images
def _register_split_lists():
    listing = "data_depth/nyu_test.txt"

    def depth_sets(edit):
        def setup(ctx):
            root = _copy(ctx, "depth_root")
            edit(ctx, root)
            from snd.eval.protocols.data import depth_datasets

            def run():
                train, test, _ = depth_datasets("nyuv2", root)
                _read_first(train)
                _read_first(test)

            return run

        return setup

    def list_text(text):
        def edit(ctx, root):
            (root / listing).write_bytes(text if isinstance(text, bytes) else text.encode())

        return edit

    def symlink_out(ctx, root):
        secret = ctx.work / "secret"
        secret.mkdir()
        Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(secret / "rgb_c.jpg")
        ctx.protect(secret)
        shutil.rmtree(root / "data_depth" / "scene")
        (root / "data_depth" / "scene").symlink_to(secret)

    def fifo(ctx, root):
        (root / listing).unlink()
        os.mkfifo(root / listing)

    def directory(ctx, root):
        (root / listing).unlink()
        (root / listing).mkdir()

    def image(name, array):
        def edit(ctx, root):
            Image.fromarray(array).save(root / "data_depth" / "scene" / name)

        return edit

    def file_bytes(name, content):
        def edit(ctx, root):
            (root / "data_depth" / "scene" / name).write_bytes(content)

        return edit

    def missing(name):
        def edit(ctx, root):
            (root / "data_depth" / "scene" / name).unlink()

        return edit

    def truncated_jpeg(ctx, root):
        path = root / "data_depth" / "scene" / "rgb_c.jpg"
        path.write_bytes(path.read_bytes()[:200])

    def bomb_png(ctx, root):
        Image.new("I;16", (30000, 30000)).save(root / "data_depth" / "scene" / "sync_depth_c.png", optimize=False)

    good = "/scene/rgb_c.jpg /scene/sync_depth_c.png 518.8579\n"
    cases = {
        "dotdot_path": (list_text("/scene/../../secret.jpg /scene/sync_depth_c.png 518.8\n"), ("nyu_test.txt",), "`..` out of the root"),
        "absolute_path": (list_text("//etc/hostname /scene/sync_depth_c.png 518.8\n"), ("nyu_test.txt",), "an absolute path"),
        "symlink_out_of_root": (symlink_out, ("nyu_train.txt", "nyu_test.txt"), "the scene folder is a symlink outside the root"),
        "missing_image": (missing("rgb_c.jpg"), ("rgb_c.jpg",), "a listed image is missing"),
        "missing_depth": (missing("sync_depth_c.png"), ("sync_depth_c.png",), "a listed depth map is missing"),
        "empty_list": (list_text(""), ("nyu_test.txt",), "an empty list"),
        "only_none_depths": (list_text("/scene/rgb_c.jpg None 518.8\n"), ("nyu_test.txt",), "every depth 'None'"),
        "one_field_line": (list_text("/scene/rgb_c.jpg\n"), ("nyu_test.txt",), "a line with one path"),
        "non_utf8": (list_text(b"/scene/rgb_c\xff.jpg /scene/sync_depth_c.png 518.8\n"), ("nyu_test.txt",), "Latin-1 byte"),
        "binary_list": (list_text(bytes(range(256)) * 4), ("nyu_test.txt",), "random bytes"),
        "list_fifo": (fifo, ("nyu_test.txt",), "a named pipe"),
        "list_directory": (directory, ("nyu_test.txt",), "a folder under the list's name"),
        "tab_separated": (list_text("/scene/rgb_c.jpg\t/scene/sync_depth_c.png\t518.8\n"), ("nyu_test.txt",),
                          "tabs instead of spaces"),
        "depth_8bit": (image("sync_depth_c.png", np.full((48, 64), 20, np.uint8)), ("sync_depth_c.png",), "8-bit depth"),
        "depth_rgb": (image("sync_depth_c.png", np.zeros((48, 64, 3), np.uint8)), ("sync_depth_c.png",), "RGB depth"),
        "depth_wrong_size": (image("sync_depth_c.png", np.full((24, 32), 2000, np.uint16)), ("sync_depth_c.png",),
                             "depth half the image size"),
        "depth_random_bytes": (file_bytes("sync_depth_c.png", bytes(range(256)) * 4), ("sync_depth_c.png",), "random bytes"),
        "depth_decompression_bomb": (bomb_png, ("sync_depth_c.png",), "a 30000 x 30000 16-bit PNG (1.8 GB decoded)"),
        "image_truncated": (truncated_jpeg, ("rgb_c.jpg",), "first 200 bytes of the JPEG"),
        "image_random_bytes": (file_bytes("rgb_c.jpg", bytes(range(256)) * 4), ("rgb_c.jpg",), "random bytes"),
        "valid_crlf_and_blank_lines": (list_text("\r\n" + good.replace("\n", "\r\n") + "\r\n"), (), "Windows line ends"),
        "valid_depth_65m": (image("sync_depth_c.png", np.full((48, 64), 65535, np.uint16)), (),
                            "16-bit depth at its maximum (65.5 m; beyond max_depth, masked)"),
    }
    for kind, (edit, names, note) in cases.items():
        valid = kind.startswith("valid")
        _add("eval_data", f"split_list/{kind}", depth_sets(edit), names=names, valid=valid,
             timeout_s=30 if "fifo" in kind else 60, note=note)

    # ScanNet++ depth reader (its own split-list parser) and the dense ScanNet++ segmentation folders
    def scannetpp_depth(text, valid=False):
        def setup(ctx):
            root = ctx.work / "scannetpp"
            (root / "s").mkdir(parents=True)
            Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(root / "s" / "a.JPG")
            Image.fromarray(np.full((16, 16), 1500, np.uint16)).save(root / "s" / "a.png")
            (root / "scannetpp_train.txt").write_bytes(text)
            from snd.eval.datasets import ScanNetPPDepthDataset

            return lambda: _read_first(ScanNetPPDepthDataset(root, "train"))

        return setup

    for kind, text, names in (
        ("dotdot_path", b"/s/a.JPG ../../../etc/passwd\n", ("scannetpp_train.txt",)),
        ("empty_list", b"", ("scannetpp_train.txt",)),
        ("non_utf8", b"/s/a\xe9.JPG /s/a.png\n", ("scannetpp_train.txt",)),
        ("missing_depth", b"/s/a.JPG /s/b.png\n", ("b.png",)),
    ):
        _add("eval_data", f"scannetpp_depth/{kind}", scannetpp_depth(text), names=names)
    _add("eval_data", "scannetpp_depth/valid", scannetpp_depth(b"/s/a.JPG /s/a.png\n"), valid=True)

    # segmentation label maps (FiT3D NYU 13 classes and ScanNet++ 100 classes)
    def seg(edit):
        def setup(ctx):
            root = _copy(ctx, "seg_root")
            edit(root / "data_sem")
            from snd.eval.protocols.data import segmentation_datasets

            def run():
                train, test, _ = segmentation_datasets("nyuv2", root, test_set="full")
                _read_first(train)
                _read_first(test)

            return run

        return setup

    def label(array, name="0000.png", folder="nyuv2_train_class13"):
        def edit(base):
            Image.fromarray(array).save(base / folder / name)

        return edit

    def remove_label(base):
        (base / "nyuv2_train_class13" / "0000.png").unlink()

    labels = (np.arange(32 * 40).reshape(32, 40) % 14).astype(np.uint8)
    for kind, edit, names, note in (
        ("label_out_of_range", label(np.where(labels == 3, 200, labels).astype(np.uint8)), ("0000.png",),
         "label 200 in a 13-class map (NYU-40 ids where class13 was expected)"),
        ("label_nyu40_ids", label((np.arange(32 * 40).reshape(32, 40) % 41).astype(np.uint8)), ("0000.png",),
         "NYU-40 ids (up to 40) in a 13-class folder"),
        ("label_rgb", label(np.zeros((32, 40, 3), np.uint8)), ("0000.png",), "an RGB label map"),
        ("label_wrong_size", label(labels[:16, :20].copy()), ("0000.png",), "label map half the image size"),
        ("label_16bit", label(labels.astype(np.uint16) * 1000), ("0000.png",), "16-bit labels up to 13000"),
        ("label_missing", remove_label, ("0000.png",), "no label for an image"),
        ("label_random_bytes", lambda base: (base / "nyuv2_train_class13" / "0000.png").write_bytes(bytes(range(256))),
         ("0000.png",), "random bytes"),
    ):
        _add("eval_data", f"segmentation/{kind}", seg(edit), names=names, note=note)
    _add("eval_data", "segmentation/valid_all_unlabelled", seg(label(np.zeros((32, 40), np.uint8))), valid=True,
         note="an image without any labelled pixel (0 = unlabelled) is legitimate")

    def scannetpp_seg(value):
        def setup(ctx):
            root = ctx.work / "scannetpp"
            (root / "images" / "training").mkdir(parents=True)
            (root / "annotations" / "training").mkdir(parents=True)
            Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(root / "images" / "training" / "a.JPG")
            Image.fromarray(np.full((16, 16), value, np.uint8)).save(root / "annotations" / "training" / "a.png")
            from snd.eval.datasets import ScanNetPPSegmentationDataset

            return lambda: _read_first(ScanNetPPSegmentationDataset(root, "train"))

        return setup

    _add("eval_data", "scannetpp_seg/label_out_of_range", scannetpp_seg(180), names=("a.png",), note="label 180 of 100 classes")
    _add("eval_data", "scannetpp_seg/valid", scannetpp_seg(100), valid=True, note="label 100 (the last class)")


_register_nyu()
_register_geonet()
_register_pairs()
_register_split_lists()


# ============================================================================================================ render
def _scene(count=6, cameras=2):
    generator = torch.Generator().manual_seed(0)
    means = torch.rand(count, 3, generator=generator) - 0.5
    means[:, 2] += 3.0
    quats = torch.nn.functional.normalize(torch.rand(count, 4, generator=generator) + 0.1, dim=-1)
    viewmats = torch.eye(4).repeat(cameras, 1, 1)
    viewmats[:, 0, 3] = torch.linspace(-0.1, 0.1, cameras)
    Ks = torch.tensor([[20.0, 0, 16], [0, 20.0, 12], [0, 0, 1]]).repeat(cameras, 1, 1)
    return dict(
        means=means, quats=quats, scales=torch.full((count, 3), 0.1), opacities=torch.full((count,), 0.8),
        colors=torch.rand(count, 4, generator=generator), viewmats=viewmats, Ks=Ks, width=32, height=24, backend="torch",
    )


def _render(change, **extra):
    def setup(ctx):
        arguments = _scene()
        change(arguments)
        arguments.update(extra)
        from snd.splatting import render_features

        return lambda: render_features(**arguments)

    return setup


def _set_value(name, index, value):
    def change(arguments):
        tensor = arguments[name].clone()
        tensor[index] = value
        arguments[name] = tensor

    return change


def _replace(name, make):
    def change(arguments):
        arguments[name] = make(arguments[name]) if callable(make) else make

    return change


def _register_render():
    nan, inf = float("nan"), float("inf")
    tensors = {"means": (0, 1), "quats": (1, 2), "scales": (2, 0), "opacities": (3,), "colors": (4, 2), "viewmats": (1, 0, 3),
               "Ks": (0, 0, 0)}
    for name, index in tensors.items():
        _add("render", f"render_features/{name}/nan", _render(_set_value(name, index, nan)), names=(name,))
        _add("render", f"render_features/{name}/inf", _render(_set_value(name, index, inf)), names=(name,))
        _add("render", f"render_features/{name}/int_dtype", _render(_replace(name, lambda t: t.round().to(torch.int64))),
             names=(name,), note="an integer tensor")
        _add("render", f"render_features/{name}/bool_dtype", _render(_replace(name, lambda t: t != 0)), names=(name,),
             note="a bool tensor")
        if name == "colors":  # D is any channel count: one channel fewer is a valid input, a Gaussian fewer is not
            _add("render", "render_features/colors/one_channel_fewer", _render(_replace(name, lambda t: t[..., :-1])), valid=True,
                 note="colors [N, D-1]: any D is valid")
        else:
            _add("render", f"render_features/{name}/wrong_shape", _render(_replace(name, lambda t: t[..., :-1])), names=(name,),
                 note="last dimension one short")
    _add("render", "render_features/means/float64", _render(_replace("means", lambda t: t.double())), valid=True,
         note="float64 means: the render runs in the means' precision")
    _add("render", "render_features/colors/float16", _render(_replace("colors", lambda t: t.half())), valid=True,
         note="half-precision features")
    _add("render", "render_features/scales/negative", _render(_set_value("scales", (1, 1), -0.1)), names=("scales",),
         note="log-scales passed as scales")
    _add("render", "render_features/opacities/negative", _render(_set_value("opacities", 2, -0.5)), names=("opacities",))
    _add("render", "render_features/opacities/above_one", _render(_set_value("opacities", 2, 3.0)), names=("opacities",),
         note="logits passed as opacities")
    _add("render", "render_features/Ks/negative_focal", _render(_set_value("Ks", (1, 1, 1), -20.0)), names=("Ks",))
    _add("render", "render_features/quats/zero", _render(_set_value("quats", 3, 0.0)), names=("quats",), note="a zero quaternion")
    _add("render", "render_features/quats/unnormalised", _render(_replace("quats", lambda t: t * 7.0)), valid=True,
         note="quaternions are normalised by the renderer (gsplat too)")
    _add("render", "render_features/viewmats/scaled", _render(_replace("viewmats", lambda t: t * 2.0)), names=("viewmats",),
         note="not a rigid transform")
    _add("render", "render_features/empty_scene",
         _render(lambda a: a.update(means=a["means"][:0], quats=a["quats"][:0], scales=a["scales"][:0],
                                    opacities=a["opacities"][:0], colors=a["colors"][:0])), valid=True,
         note="0 Gaussians: an empty image")
    _add("render", "render_features/zero_cameras",
         _render(lambda a: a.update(viewmats=a["viewmats"][:0], Ks=a["Ks"][:0])), valid=True,
         note="0 cameras: an empty batch of images")
    _add("render", "render_features/batch_mismatch",
         _render(lambda a: a.update(means=a["means"][None].repeat(2, 1, 1), quats=a["quats"][None].repeat(2, 1, 1),
                                    scales=a["scales"][None].repeat(2, 1, 1), opacities=a["opacities"][None].repeat(2, 1),
                                    colors=a["colors"][None].repeat(2, 1, 1), viewmats=a["viewmats"][None].repeat(3, 1, 1, 1),
                                    Ks=a["Ks"][None].repeat(3, 1, 1, 1))),
         names=("viewmats",), note="2 scenes but 3 batches of cameras")
    _add("render", "render_features/Ks_camera_count_mismatch", _render(_replace("Ks", lambda t: t[:1])), names=("Ks",),
         note="1 K for 2 cameras")
    _add("render", "render_features/colors_count_mismatch", _render(_replace("colors", lambda t: t[:4])), names=("colors",),
         note="features for 4 of 6 Gaussians")
    _add("render", "render_features/colors_zero_channels", _render(_replace("colors", lambda t: t[:, :0])), names=("colors",),
         note="D = 0")
    for value, valid in (("nan", False), ("inf", False), ("-1", False), ("0", False), ("1e9", False), ("32.5", False),
                         ("'32'", False), ("None", False), ("True", False)):
        for field in ("width", "height"):
            python = eval(value.replace("nan", "float('nan')").replace("inf", "float('inf')"))  # noqa: S307 - literal table
            if field == "width" and value == "1e9":
                python = 10**9
            _add("render", f"render_features/{field}/{value.strip(chr(39))}", _render(lambda a: None, **{field: python}),
                 names=(field,), timeout_s=60,
                 note="huge: must be refused up front, not allocated" if value == "1e9" else "")
    _add("render", "render_features/width_height_huge_product", _render(lambda a: None, width=200_000, height=200_000),
         names=("width", "height"), note="4e10 pixels")
    for field, values in (("eps2d", (nan, inf, -1.0)), ("near_plane", (nan, 0.0, -1.0, inf)), ("far_plane", (nan, -1.0, 0.005))):
        for value in values:
            _add("render", f"render_features/{field}/{value}", _render(lambda a: None, **{field: value}), names=(field,))
    _add("render", "render_features/far_plane/inf", _render(lambda a: None, far_plane=inf), valid=True,
         note="an infinite far plane culls nothing: legitimate")
    _add("render", "render_features/eps2d/zero", _render(lambda a: None, eps2d=0.0), valid=True, note="no 2D blur")
    _add("render", "render_features/backgrounds/nan", _render(lambda a: None, backgrounds=torch.full((2, 4), nan)),
         names=("backgrounds",))
    _add("render", "render_features/backgrounds/wrong_shape", _render(lambda a: None, backgrounds=torch.zeros(2, 3)),
         names=("backgrounds",))
    _add("render", "render_features/backgrounds/int_dtype", _render(lambda a: None, backgrounds=torch.zeros(2, 4, dtype=torch.int64)),
         names=("backgrounds",))
    _add("render", "render_features/backend/unknown", _render(lambda a: None, backend="cuda"), names=("backend",))
    _add("render", "render_features/max_alpha/nan", _render(lambda a: None, max_alpha=nan), names=("max_alpha",))
    _add("render", "render_features/tile_size/zero", _render(lambda a: None, tile_size=0), names=("tile_size",))
    _add("render", "render_features/tile_size/negative", _render(lambda a: None, tile_size=-8), names=("tile_size",))
    _add("render", "render_features/max_elements/zero", _render(lambda a: None, max_elements=0), names=("max_elements",))

    # render_gaussians (snd cameras: camera-to-world extrinsics, normalised intrinsics)
    def gaussians_case(change, **extra):
        def setup(ctx):
            from snd.gaussians import Gaussians
            from snd.splatting import render_gaussians

            count = 6
            generator = torch.Generator().manual_seed(1)
            means = torch.rand(1, count, 3, generator=generator) - 0.5
            means[..., 2] += 3.0
            arguments = dict(
                means=means, covariances=torch.diag_embed(torch.full((1, count, 3), 0.01)),
                opacities=torch.full((1, count), 0.8), features=torch.rand(1, count, 4, generator=generator),
                extrinsics=torch.eye(4).repeat(1, 2, 1, 1),
                intrinsics=torch.tensor([[1.0, 0, 0.5], [0, 1.0, 0.5], [0, 0, 1]]).repeat(1, 2, 1, 1),
                height=24, width=32,
            )
            change(arguments)
            arguments.update(extra)
            return lambda: render_gaussians(
                Gaussians(means=arguments.pop("means"), covariances=arguments.pop("covariances"),
                          opacities=arguments.pop("opacities")),
                backend="torch", **arguments)

        return setup

    def setv(name, index, value):
        def change(arguments):
            arguments[name] = arguments[name].clone()
            arguments[name][index] = value

        return change

    for name, index in (("extrinsics", (0, 1, 0, 3)), ("intrinsics", (0, 0, 0, 0)), ("features", (0, 2, 1)),
                        ("means", (0, 0, 2)), ("covariances", (0, 1, 0, 0)), ("opacities", (0, 3))):
        _add("render", f"render_gaussians/{name}/nan", gaussians_case(setv(name, index, nan)), names=(name,))
    _add("render", "render_gaussians/intrinsics/zero_focal", gaussians_case(setv("intrinsics", (0, 1, 1, 1), 0.0)),
         names=("intrinsics",))
    _add("render", "render_gaussians/extrinsics/not_rigid", gaussians_case(setv("extrinsics", (0, 0, 0, 1), 0.5)),
         names=("extrinsics",))
    _add("render", "render_gaussians/height/huge", gaussians_case(lambda a: None, height=10**7, width=10**7),
         names=("height", "width"), note="1e14 pixels")
    _add("render", "render_gaussians/extrinsics/batch_mismatch",
         gaussians_case(lambda a: a.update(extrinsics=torch.eye(4).repeat(2, 2, 1, 1),
                                           intrinsics=a["intrinsics"].repeat(2, 1, 1, 1))), names=("extrinsics",))
    _add("render", "render_gaussians/features/wrong_count", gaussians_case(lambda a: a.update(features=a["features"][:, :3])),
         names=("features",))
    _add("render", "render_gaussians/valid", gaussians_case(lambda a: None), valid=True)

    # DepthLifter: its settings and its context views
    def lifter_case(field=None, index=None, value=None, settings=None, transform=None):
        def setup(ctx):
            from snd.data import MultiViewSample, SyntheticSceneConfig, collate_multiview, generate_scene
            from snd.lifting import DepthLifter

            config = SyntheticSceneConfig(num_scenes=1, num_frames=8, height=16, width=20, seed=5)
            views = generate_scene(config, 0).render([0, 4]).views
            context = collate_multiview([MultiViewSample(views, views.select([1]), "s")]).context
            fields = {k: v.clone() if torch.is_tensor(v) else v for k, v in context.__dict__.items()}
            if field is not None:
                fields[field][index] = value
            if transform is not None:
                transform(fields)

            def run():
                broken = type(context)(**fields)
                return DepthLifter(**(settings or {}))(broken)

            return run

        return setup

    for field, index, value in (("depths", (0, 1, 3, 4), nan), ("depths", (0, 1, 3, 4), -1.0), ("depths", (0, 0, 2, 2), inf),
                                ("images", (0, 0, 1, 2, 2), nan), ("extrinsics", (0, 1, 0, 0), 3.0),
                                ("extrinsics", (0, 1, 2, 3), nan), ("intrinsics", (0, 0, 1, 1), 0.0),
                                ("intrinsics", (0, 0, 0, 0), -0.5), ("near", (0, 1), 0.0), ("near", (0, 0), nan),
                                ("far", (0, 1), 0.0), ("far", (0, 0), nan)):
        kind = "nan" if value != value else str(value)
        _add("render", f"DepthLifter/context.{field}/{kind}", lifter_case(field, index, value), names=(field,))
    for setting, value in (("opacity", nan), ("opacity", 0.0), ("opacity", 2.0), ("footprint_scale", nan),
                           ("footprint_scale", inf), ("footprint_scale", -1.0), ("thickness", nan), ("thickness", inf),
                           ("placeholder_depth", nan), ("placeholder_depth", inf), ("footprint_scale", "0.5")):
        _add("render", f"DepthLifter/{setting}/{value}", lifter_case(settings={setting: value}), names=(setting,))
    _add("render", "DepthLifter/depths_all_zero", lifter_case(transform=lambda f: f["depths"].zero_()), valid=True,
         note="no valid depth: every Gaussian transparent, legitimate")
    _add("render", "DepthLifter/valid", lifter_case(), valid=True)


_register_render()


# ============================================================================================================ metrics
def _metric(function_name, *args, **kwargs):
    def setup(ctx):
        import snd.metrics as metrics

        return lambda: getattr(metrics, function_name)(*args, **kwargs)

    return setup


def _hub_metric(metric, **kwargs):
    def setup(ctx):
        import snd.metrics

        def run():
            return snd.metrics.load(metric).compute(**kwargs)

        return run

    return setup


def _register_metrics():
    nan, inf = float("nan"), float("inf")
    gt = np.full((2, 8, 8), 2.0)
    pred = np.full((2, 8, 8), 2.5)

    def with_value(array, value, index=(0, 1, 1)):
        array = np.array(array, dtype=np.float64)
        array[index] = value
        return array

    depth_cases = {
        "predictions_nan": ((with_value(pred, nan), gt), {}, ("predictions",)),
        "predictions_inf": ((with_value(pred, inf), gt), {}, ("predictions",)),
        "predictions_all_nan": ((np.full_like(pred, nan), gt), {}, ("predictions",)),
        "shape_mismatch": ((pred[:, :4], gt), {}, ("predictions", "references")),
        "count_mismatch": ((pred[:1], gt), {}, ("predictions", "references")),
        "empty": ((np.zeros((0, 8, 8)), np.zeros((0, 8, 8))), {}, ("predictions", "references")),
        "strings": ((np.array([["a"]]), np.array([["b"]])), {}, ("predictions",)),
        "all_references_invalid": ((pred, np.zeros_like(gt)), {}, ("references",)),
        "min_depth_nan": ((pred, gt), {"min_depth": nan}, ("min_depth",)),
        "max_depth_negative": ((pred, gt), {"max_depth": -1.0}, ("max_depth",)),
        "min_above_max": ((pred, gt), {"min_depth": 5.0, "max_depth": 1.0}, ("min_depth", "max_depth")),
        "aggregation_unknown": ((pred, gt), {"aggregation": "mean"}, ("aggregation",)),
        "nyu_crop_small_maps": ((pred, gt), {"nyu_crop": True}, ("nyu_crop",)),
    }
    for kind, (args, kwargs, names) in depth_cases.items():
        _add("metrics", f"depth_metrics/{kind}", _metric("depth_metrics", *args, **kwargs), names=names)
    _add("metrics", "depth_metrics/negative_predictions", _metric("depth_metrics", -pred, gt), valid=True,
         note="a negative prediction is a (bad) model output: counted as an error, never within a threshold")
    _add("metrics", "depth_metrics/negative_references_masked", _metric("depth_metrics", pred, with_value(gt, -1.0)), valid=True,
         note="references <= 0 mark invalid pixels (documented)")
    _add("metrics", "depth_metrics/references_inf_masked", _metric("depth_metrics", pred, with_value(gt, inf)), valid=True,
         note="non-finite references are masked as invalid pixels by design (no sensor return)")
    _add("metrics", "depth_metrics/int_inputs", _metric("depth_metrics", np.full((1, 4, 4), 2), np.full((1, 4, 4), 3)), valid=True,
         note="integer depth maps convert exactly")
    _add("metrics", "depth/evaluate_load/predictions_nan", _hub_metric("depth", predictions=list(with_value(pred, nan)),
                                                                      references=list(gt)), names=("predictions",))
    _add("metrics", "depth/evaluate_load/shape_mismatch", _hub_metric("depth", predictions=list(pred[:, :4]), references=list(gt)),
         names=("predictions", "references"))

    normals = np.zeros((2, 3, 4, 4))
    normals[:, 2] = 1.0
    normal_cases = {
        "predictions_nan": ((with_value(normals, nan, (0, 0, 1, 1)), normals), {}, ("predictions",)),
        "predictions_inf": ((with_value(normals, inf, (0, 0, 1, 1)), normals), {}, ("predictions",)),
        "shape_mismatch": ((normals[:, :, :2], normals), {}, ("predictions", "references")),
        "two_channels": ((normals[:, :2], normals[:, :2]), {}, ("predictions", "references")),
        "empty": ((np.zeros((0, 3, 4, 4)), np.zeros((0, 3, 4, 4))), {}, ("predictions", "references")),
        "valid_mask_wrong_shape": ((normals, normals), {"valid": np.ones((2, 3, 3), bool)}, ("valid",)),
        "all_references_zero": ((normals, np.zeros_like(normals)), {}, ("references",)),
        "thresholds_nan": ((normals, normals), {"thresholds": (nan,)}, ("thresholds",)),
        "thresholds_negative": ((normals, normals), {"thresholds": (-5.0,)}, ("thresholds",)),
        "zero_normals_unknown": ((normals, normals), {"zero_normals": "skip"}, ("zero_normals",)),
        "aggregation_unknown": ((normals, normals), {"aggregation": "median"}, ("aggregation",)),
    }
    for kind, (args, kwargs, names) in normal_cases.items():
        _add("metrics", f"normal_metrics/{kind}", _metric("normal_metrics", *args, **kwargs), names=names)
    _add("metrics", "normal_metrics/unnormalised_predictions", _metric("normal_metrics", normals * 3.0, normals), valid=True,
         note="directions are compared, not lengths")
    _add("metrics", "normals/evaluate_load/predictions_nan",
         _hub_metric("normals", predictions=list(with_value(normals, nan, (0, 0, 1, 1))), references=list(normals)),
         names=("predictions",))

    labels = np.tile(np.arange(4), (2, 4, 1))  # [2, 4, 4] labels 0..3
    seg_cases = {
        "prediction_out_of_range": ((labels + 1, labels), {"num_labels": 4}, ("predict",)),
        "reference_out_of_range": ((labels, labels + 10), {"num_labels": 4}, ("reference",)),
        "prediction_negative": ((labels - 1, labels), {"num_labels": 4}, ("predict",)),
        "predictions_float_fractional": ((labels + 0.5, labels), {"num_labels": 4}, ("predictions",)),
        "predictions_nan": ((with_value(labels, nan, (0, 0, 0)), labels), {"num_labels": 4}, ("predictions",)),
        "shape_mismatch": ((labels[:, :2], labels), {"num_labels": 4}, ("predictions", "references")),
        "empty": ((np.zeros((0, 4, 4), np.int64), np.zeros((0, 4, 4), np.int64)), {"num_labels": 4}, ("predictions", "references")),
        "num_labels_missing": ((labels, labels), {}, ("num_labels",)),
        "num_labels_zero": ((labels, labels), {"num_labels": 0}, ("num_labels",)),
        "num_labels_negative": ((labels, labels), {"num_labels": -3}, ("num_labels",)),
        "num_labels_float": ((labels, labels), {"num_labels": 4.7}, ("num_labels",)),
        "num_labels_huge": ((labels, labels), {"num_labels": 10**7}, ("num_labels",)),
        "all_ignored": ((labels, np.full_like(labels, 255)), {"num_labels": 4}, ("ignore_index", "reference")),
        "ignore_index_nan": ((labels, labels), {"num_labels": 4, "ignore_index": nan}, ("ignore_index",)),
        "label_map_out_of_range": ((labels, labels), {"num_labels": 4, "label_map": {1: 99}}, ("reference", "label_map")),
        "aggregation_unknown": ((labels, labels), {"num_labels": 4, "aggregation": "mean"}, ("aggregation",)),
        "strings": ((np.array([["a"]]), np.array([["b"]])), {"num_labels": 4}, ("predictions",)),
    }
    for kind, (args, kwargs, names) in seg_cases.items():
        _add("metrics", f"segmentation_metrics/{kind}", _metric("segmentation_metrics", *args, **kwargs), names=names)
    _add("metrics", "segmentation_metrics/ignore_index_negative_one",
         _metric("segmentation_metrics", labels, np.where(labels == 3, -1, labels), num_labels=4, ignore_index=-1), valid=True,
         note="ignore_index -1 (the Hub's default for some datasets)")
    _add("metrics", "segmentation_metrics/prediction_at_ignored_pixel_out_of_range",
         _metric("segmentation_metrics", np.where(labels == 3, 77, labels), np.where(labels == 3, 255, labels), num_labels=4),
         valid=True, note="predictions at ignored pixels are not scored")
    _add("metrics", "segmentation_metrics/ignore_index_in_range", _metric("segmentation_metrics", labels, labels, num_labels=4,
                                                                          ignore_index=2), valid=True,
         note="ignoring one real class (e.g. background) is a legitimate choice")
    _add("metrics", "segmentation_metrics/reduce_labels", _metric("segmentation_metrics", labels, labels + 1, num_labels=4,
                                                                  reduce_labels=True), valid=True)
    _add("metrics", "mean_iou/evaluate_load/reference_out_of_range",
         _hub_metric("mean_iou", predictions=list(labels), references=list(labels + 10), num_labels=4), names=("reference",))

    points = [np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([[5.0, 6.0]])]
    corr_cases = {
        "predictions_nan": (([with_value(points[0], nan, (0, 0)), points[1]], points), {}, ("predictions", "pair 0")),
        "predictions_inf": (([with_value(points[0], inf, (1, 1)), points[1]], points), {}, ("predictions", "pair 0")),
        "references_nan": ((points, [with_value(points[0], nan, (0, 0)), points[1]]), {}, ("references", "pair 0")),
        "pair_count_mismatch": ((points[:1], points), {}, ("predict", "references")),
        "point_count_mismatch": (([points[0][:1], points[1]], points), {}, ("pair 0",)),
        "odd_coordinates": (([np.array([1.0, 2.0, 3.0]), points[1]], points), {}, ("pair 0",)),
        "empty": (([], []), {}, ("pair",)),
        "thresholds_negative": ((points, points), {"thresholds": (-5,)}, ("thresholds",)),
        "thresholds_nan": ((points, points), {"thresholds": (nan,)}, ("thresholds",)),
        "rotations_count_mismatch": ((points, points), {"relative_rotations": [10.0]}, ("rotations",)),
        "rotations_nan": ((points, points), {"relative_rotations": [nan, 20.0]}, ("relative_rotations", "rotation")),
        "rotation_bins_unsorted": ((points, points), {"relative_rotations": [10.0, 20.0], "rotation_bins": (0, 60, 30)},
                                   ("rotation_bins",)),
        "aggregation_unknown": ((points, points), {"aggregation": "x"}, ("aggregation",)),
    }
    for kind, (args, kwargs, names) in corr_cases.items():
        _add("metrics", f"correspondence_metrics/{kind}", _metric("correspondence_metrics", *args, **kwargs), names=names)
    _add("metrics", "correspondence_metrics/one_empty_pair", _metric("correspondence_metrics", [points[0], np.zeros((0, 2))],
                                                                     [points[0], np.zeros((0, 2))]), valid=True,
         note="a pair without matches is skipped (documented)")

    # evaluation settings: EvaluationConfig fields through evaluate_backbones, and scripts/evaluate.py flags
    def evaluation(overrides, synthetic=None):
        def setup(ctx):
            from snd.eval.datasets import SyntheticEvalConfig
            from snd.eval.runner import EvaluationConfig, evaluate_backbones

            small = dict(train_scenes=1, test_scenes=1, frames_per_scene=6, frame_stride=3, image_size=28,
                         pair_gaps=(2,), pair_starts=(0,))
            small.update(synthetic or {})
            settings = dict(tasks=["depth"], dataset="synthetic", output_dir=str(ctx.work / "out"), probe_epochs=1,
                            num_figures=0, progress=False, num_correspondences=50)
            settings.update(overrides)

            def run():
                config = EvaluationConfig(synthetic=SyntheticEvalConfig(**small), **settings)
                return evaluate_backbones({"tiny": str(FIXTURES["root"] / "tiny-snd")}, config)

            return run

        return setup

    for field, values in (
        ("feature_batch_size", (0, -1, nan, "8")),
        ("probe_epochs", (0, -1, nan)),
        ("probe_max_steps", (0, -5)),
        ("num_correspondences", (0, -1)),
        ("correspondence_scale", (0.0, -0.25, nan, inf)),
        ("num_figures", (-1, nan)),
        ("seed", (nan, "zero")),
        ("tasks", (["depht"], [], "depth")),
        ("dataset", ("nyu",)),
        ("device", ("gpu7",)),
    ):
        for value in values:
            overrides = {field: value}
            if field in ("num_correspondences", "correspondence_scale"):
                overrides["tasks"] = ["correspondence"]
            _add("metrics", f"EvaluationConfig/{field}/{value!r}", evaluation(overrides), names=(field,), timeout_s=120)
    for field, values in (("train_scenes", (0, -1)), ("test_scenes", (0,)), ("frames_per_scene", (0,)), ("frame_stride", (0, -2)),
                          ("image_size", (0, -28, 10**6)), ("seed", (nan,))):
        for value in values:
            _add("metrics", f"SyntheticEvalConfig/{field}/{value!r}", evaluation({}, {field: value}), names=(field,), timeout_s=120)
    _add("metrics", "EvaluationConfig/valid_minimal", evaluation({}), valid=True, timeout_s=120)
    _add("metrics", "EvaluationConfig/num_figures/0", evaluation({"num_figures": 0}), valid=True, timeout_s=120,
         note="no figures is a legitimate choice")
    _add("metrics", "EvaluationConfig/seed/-1", evaluation({"seed": -1}), valid=True, timeout_s=120,
         note="torch accepts negative seeds")
    _add("metrics", "EvaluationConfig/probe_max_steps/1", evaluation({"probe_max_steps": 1}), valid=True, timeout_s=120)

    def script(flags):
        def setup(ctx):
            spec = importlib.util.spec_from_file_location("evaluate_script", REPO / "scripts" / "evaluate.py")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            argv = ["--model", str(FIXTURES["root"] / "tiny-snd"), "--task", "depth", "--output-dir", str(ctx.work / "report"),
                    "--probe-epochs", "1", "--synthetic-train-scenes", "1", "--synthetic-test-scenes", "1",
                    "--synthetic-image-size", "28", "--synthetic-frame-stride", "3", "--num-figures", "0",
                    "--no-progress", "--num-threads", "1"] + flags
            return lambda: module.main(argv)

        return setup

    for flag, value in (("--batch-size", "0"), ("--batch-size", "-4"), ("--probe-epochs", "-1"), ("--probe-max-steps", "0"),
                        ("--num-correspondences", "0"), ("--correspondence-scale", "nan"), ("--correspondence-scale", "-1"),
                        ("--num-figures", "-2"), ("--synthetic-image-size", "0"), ("--synthetic-frame-stride", "0"),
                        ("--synthetic-train-scenes", "0"), ("--num-threads", "-1")):
        extra = ["--task", "correspondence"] if flag.startswith("--num-corr") or flag.startswith("--corr") else []
        names = (flag, flag.lstrip("-").replace("-", "_"))
        if flag == "--batch-size":
            names += ("feature_batch_size",)
        if flag == "--num-threads":
            names = (flag,)  # torch's own "set_num_threads expects a positive integer" must not count as naming it
        if flag.startswith("--synthetic-"):
            names += (flag[len("--synthetic-"):].replace("-", "_"),)
        _add("metrics", f"evaluate.py/{flag}={value}", script([flag, value] + extra), names=names, timeout_s=120)


_register_metrics()
