"""Hostile scene data: image files (``snd.data.image_io``), nerfstudio captures, ScanNet++ scenes, RE10K chunks.

Every dataset case builds the dataset the way training does and reads samples: ``dataset[0]`` and then every frame
of every scene (``load_views`` over all frames, what the epochs of a training run read sooner or later), as many
checks are lazy. Valid controls check the decoded values and raise ``AssertionError`` when a conversion is wrong, so a
wrong conversion shows up as ``refused_valid``, never as ``ok``.

Families:

* ``image``: PNG/JPEG/TIFF/WebP/GIF x {empty, truncated, random bytes, wrong extension, modes, bombs, special files},
  read with ``open_image`` + ``image_to_tensor``; a few also through a nerfstudio scene's frame file.
* ``nerfstudio``: ``transforms.json`` structure, every intrinsics field x {nan, inf, -1, 0, "text", [list], 1e30},
  distortion, camera model, transform_matrix, file_path, depth_file_path, duplicates.
* ``scannetpp``: metadata types, split entries, frame paths, depth, images, masks, poses.
* ``re10k``: index.json entries and types, chunk files (not torch, pickles, storage bombs), chunk entries.
"""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import shutil
import struct
import zipfile
import zlib
from collections import OrderedDict
from pathlib import Path

import numpy as np

from tests.hostile.harness import Case, register

FIXTURES: Path | None = None
SIZE = (24, 32)  # (height, width) of the fixtures' images


# ------------------------------------------------------------------------------------------------------------------
# Shared fixtures (built once in the parent)


def prepare(fixture_dir: Path) -> None:
    global FIXTURES
    import torch

    from tests.data.fixtures import re10k_example, write_re10k_chunks, write_scannetpp_scene, write_split
    from tests.data.test_nerfstudio import write_nerfstudio_scene

    fixture_dir.mkdir(parents=True, exist_ok=True)
    write_nerfstudio_scene(fixture_dir / "nerfstudio" / "capture")
    write_scannetpp_scene(fixture_dir / "scannetpp")
    write_split(fixture_dir / "scannetpp", "train", ["scene00"])
    example, _ = re10k_example()
    write_re10k_chunks(fixture_dir / "re10k", [[example]])
    torch.save([example], fixture_dir / "re10k_example.torch")
    FIXTURES = fixture_dir


def _fixtures() -> Path:
    if FIXTURES is None:  # run without the CLI's prepare (e.g. a direct import): build into a temporary folder
        import tempfile

        prepare(Path(tempfile.mkdtemp(prefix="snd-probe-scene-data-")))
    return FIXTURES


def _copy(name: str, ctx) -> Path:
    target = ctx.work / name
    shutil.copytree(_fixtures() / name, target, symlinks=True)
    return target


def _read_everything(dataset) -> None:
    """What training reads: sample 0, then (over the epochs) every frame of every scene."""
    dataset[0]
    for scene in range(dataset.num_scenes()):
        dataset.load_views(scene, list(range(dataset.num_frames(scene))))


def _outside_file(ctx, name: str = "secret.png") -> Path:
    """A user's file outside the data root (a symlink or path pointing out reaches it); protected."""
    outside = ctx.work / "outside"
    outside.mkdir(exist_ok=True)
    target = outside / name
    _png_bytes_to(target)
    ctx.protect(target)
    return target


# ------------------------------------------------------------------------------------------------------------------
# Image bytes


def _rgb_array(h: int = SIZE[0], w: int = SIZE[1]) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)), np.full_like(x, 128)], -1).astype(np.uint8)


def _encode(image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _valid_bytes(fmt: str) -> bytes:
    from PIL import Image

    image = Image.fromarray(_rgb_array())
    return _encode(image, fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {}))


def _png_bytes_to(path: Path) -> None:
    path.write_bytes(_valid_bytes("PNG"))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_with_header(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares ``width`` x ``height`` RGB, with a tiny (short) IDAT."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _png_chunk(b"IEND", b"")


EXTENSIONS = {"PNG": ".png", "JPEG": ".jpg", "TIFF": ".tif", "WEBP": ".webp"}


def _image_thunk(path: Path, check=None):
    from snd.data.image_io import image_to_tensor, open_image

    def thunk():
        image = open_image(path, scene=None, field="image")
        tensor = image_to_tensor(image, None)
        if tensor.shape[0] != 3 or not tensor.isfinite().all() or tensor.min() < 0 or tensor.max() > 1:
            raise AssertionError(f"bad tensor {tuple(tensor.shape)} in [{tensor.min()}, {tensor.max()}]")
        if check is not None:
            check(tensor)

    return thunk


def _near(tensor, rgb, at=(0, 0), tol=3 / 255):
    value = tensor[:, at[0], at[1]].tolist()
    if any(abs(a - b / 255) > tol for a, b in zip(value, rgb)):
        raise AssertionError(f"pixel {at} decoded as {[round(v * 255) for v in value]}, expected {list(rgb)}")


def _register_image_cases() -> None:
    from PIL import Image

    def add(name, make, *, valid=False, check=None, note="", timeout_s=60.0, file=None):
        def setup(ctx):
            path = make(ctx)
            return _image_thunk(path, check)

        names = () if valid else ((file,) if file else ())
        register(Case("image", name, setup, names=names, valid=valid, note=note, timeout_s=timeout_s))

    def writer(fname, data_fn):
        def make(ctx):
            path = ctx.work / fname
            path.write_bytes(data_fn())
            return path

        return make

    rng = np.random.default_rng(0)
    random_bytes = rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()
    for fmt, ext in EXTENSIONS.items():
        low = fmt.lower()
        add(f"{low}/empty", writer(f"frame{ext}", lambda: b""), file=f"frame{ext}", note="0-byte file (interrupted download)")
        add(f"{low}/truncated", writer(f"frame{ext}", lambda fmt=fmt: _valid_bytes(fmt)[: len(_valid_bytes(fmt)) // 2]),
            file=f"frame{ext}", note="first half of a valid file")
        add(f"{low}/header-only", writer(f"frame{ext}", lambda fmt=fmt: _valid_bytes(fmt)[:16]), file=f"frame{ext}",
            note="16 bytes: the magic number and nothing else")
        add(f"{low}/random", writer(f"frame{ext}", lambda: random_bytes), file=f"frame{ext}", note="random bytes")
        add(f"{low}/html-error-page", writer(f"frame{ext}", lambda: b"<!DOCTYPE html><html><body>404 Not Found</body></html>\n"),
            file=f"frame{ext}", note="a download that saved the server's error page")
        other = "JPEG" if fmt != "JPEG" else "PNG"
        add(f"{low}/wrong-extension", writer(f"frame{ext}", lambda other=other: _valid_bytes(other)), valid=True,
            check=lambda t: _near(t, (0, 0, 128), tol=8 / 255), note=f"a valid {other} named {ext}: decoded by content")
        add(f"{low}/1x1", writer(f"frame{ext}", lambda fmt=fmt: _encode(Image.new("RGB", (1, 1), (200, 10, 10)), fmt, **({"quality": 100} if fmt in ("JPEG", "WEBP") else {}))),
            valid=True, check=lambda t: _near(t, (200, 10, 10), tol=12 / 255), note="a 1x1 image")

    # modes that convert: the values must come out right
    def png_of(array, mode=None, **kwargs):
        return lambda: _encode(Image.fromarray(array, mode) if mode else Image.fromarray(array), "PNG", **kwargs)

    sixteen = np.full(SIZE, 65535, np.uint16)
    sixteen[:, : SIZE[1] // 2] = 32768
    add("png/16-bit-grey", writer("depthlike.png", png_of(sixteen)), valid=True,
        check=lambda t: (_near(t, (128, 128, 128), at=(0, 0)), _near(t, (255, 255, 255), at=(0, SIZE[1] - 1))),
        note="16-bit grey photo: scaled by 255/65535, not clipped")
    add("tiff/16-bit-grey", writer("frame.tif", lambda: _encode(Image.fromarray(sixteen), "TIFF")), valid=True,
        check=lambda t: _near(t, (128, 128, 128)), note="16-bit grey TIFF")

    def one_bit():
        image = Image.new("1", (SIZE[1], SIZE[0]), 0)
        image.paste(1, (0, 0, 4, 4))
        return _encode(image, "PNG")

    add("png/1-bit", writer("frame.png", one_bit), valid=True,
        check=lambda t: (_near(t, (255, 255, 255), at=(0, 0)), _near(t, (0, 0, 0), at=(10, 10))), note="bilevel PNG")

    def palette(transparency: bool):
        def make():
            image = Image.new("P", (SIZE[1], SIZE[0]), 0)
            image.putpalette([10, 200, 30, 250, 5, 5] + [0] * (256 * 3 - 6))
            image.paste(1, (0, 0, 8, 8))
            kwargs = {"transparency": 1} if transparency else {}
            return _encode(image, "PNG", **kwargs)

        return make

    for transparency in (False, True):
        add(f"png/palette{'-transparency' if transparency else ''}", writer("frame.png", palette(transparency)), valid=True,
            check=lambda t: (_near(t, (250, 5, 5), at=(0, 0)), _near(t, (10, 200, 30), at=(20, 20))),
            note="palette PNG" + (" with a transparent index (alpha dropped, colour kept)" if transparency else ""))

    def gif():
        image = Image.new("P", (SIZE[1], SIZE[0]), 0)
        image.putpalette([10, 200, 30, 250, 5, 5] + [0] * (256 * 3 - 6))
        return _encode(image, "GIF")

    add("gif/palette", writer("frame.gif", gif), valid=True, check=lambda t: _near(t, (10, 200, 30)), note="GIF palette image")

    def animated():
        frames = [Image.new("RGB", (SIZE[1], SIZE[0]), colour) for colour in ((250, 5, 5), (5, 5, 250))]
        return _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)

    add("gif/animated", writer("frame.gif", animated), valid=True, check=lambda t: _near(t, (250, 5, 5), tol=10 / 255),
        note="animated GIF: the first frame is read")

    def cmyk():
        image = Image.new("CMYK", (SIZE[1], SIZE[0]), (0, 255, 255, 0))  # red
        return _encode(image, "JPEG", quality=100)

    add("jpeg/cmyk", writer("frame.jpg", cmyk), valid=True, check=lambda t: _near(t, (255, 0, 0), tol=12 / 255), note="CMYK JPEG")
    add("tiff/cmyk", writer("frame.tif", lambda: _encode(Image.new("CMYK", (SIZE[1], SIZE[0]), (255, 0, 255, 0)), "TIFF")),
        valid=True, check=lambda t: _near(t, (0, 255, 0)), note="CMYK TIFF")
    la = np.zeros((*SIZE, 2), np.uint8)
    la[..., 0], la[..., 1] = 90, 40
    add("png/LA", writer("frame.png", png_of(la, "LA")), valid=True, check=lambda t: _near(t, (90, 90, 90)),
        note="grey + alpha: the grey is kept")
    rgba = np.zeros((*SIZE, 4), np.uint8)
    rgba[..., :3], rgba[..., 3] = (30, 60, 90), 0
    add("png/RGBA", writer("frame.png", png_of(rgba, "RGBA")), valid=True, check=lambda t: _near(t, (30, 60, 90)),
        note="RGBA, fully transparent: the colour is kept")
    add("webp/RGBA", writer("frame.webp", lambda: _encode(Image.fromarray(rgba, "RGBA"), "WEBP", lossless=True, exact=True)), valid=True,
        check=lambda t: _near(t, (30, 60, 90)), note="lossless RGBA WebP (exact: colour kept under alpha 0)")
    grey = np.full(SIZE, 77, np.uint8)
    add("jpeg/grey", writer("frame.jpg", lambda: _encode(Image.fromarray(grey), "JPEG", quality=100)), valid=True,
        check=lambda t: _near(t, (77, 77, 77)), note="8-bit grey JPEG")

    def exif_rotated():
        image = Image.fromarray(_rgb_array())
        exif = Image.Exif()
        exif[0x0112] = 6  # orientation: rotate 90 CW to display
        return _encode(image, "JPEG", quality=95, exif=exif.tobytes())

    add("jpeg/exif-rotated", writer("frame.jpg", exif_rotated), valid=True,
        check=lambda t: (None if tuple(t.shape[1:]) == SIZE else (_ for _ in ()).throw(AssertionError(f"shape {tuple(t.shape)}"))),
        note="EXIF orientation 6: pixels read as stored (as COLMAP and nerfstudio do; intrinsics refer to stored pixels)")
    # modes with no defined range or out of range
    add("tiff/float-F", writer("frame.tif", lambda: _encode(Image.fromarray(np.full(SIZE, 0.5, np.float32)), "TIFF")),
        file="frame.tif", note="32-bit float TIFF (mode F): no defined intensity range")
    add("tiff/int32-I-out-of-range", writer("frame.tif", lambda: _encode(Image.fromarray(np.full(SIZE, 1 << 20, np.int32)), "TIFF")),
        file="frame.tif", note="32-bit integer TIFF with values > 65535")
    add("tiff/int32-I-negative", writer("frame.tif", lambda: _encode(Image.fromarray(np.full(SIZE, -5, np.int32)), "TIFF")),
        file="frame.tif", note="32-bit integer TIFF with negative values")
    add("tiff/int32-I-in-range", writer("frame.tif", lambda: _encode(Image.fromarray(np.full(SIZE, 65535, np.int32)), "TIFF")),
        valid=True, check=lambda t: _near(t, (255, 255, 255)), note="32-bit integer TIFF holding 16-bit values")
    # header lies and bombs
    add("png/zero-size-header", writer("frame.png", lambda: _png_with_header(0, 0)), file="frame.png", note="IHDR declares 0x0")
    add("png/zero-width-header", writer("frame.png", lambda: _png_with_header(0, 24)), file="frame.png", note="IHDR declares 0x24")
    add("png/bomb-header", writer("frame.png", lambda: _png_with_header(100_000, 100_000)), file="frame.png",
        note="IHDR declares 100000x100000 (10 Gpixel) in a 100-byte file", timeout_s=60)
    add("png/bomb-below-pillow-limit", writer("frame.png", lambda: _png_with_header(12_000, 12_000)), file="frame.png",
        note="IHDR declares 12000x12000 (144 Mpixel, under Pillow's error limit) with almost no data", timeout_s=60)

    def compressed_bomb():
        # a real, fully valid 8000x8000 black PNG: a few hundred KiB that decode to 192 MB
        return _encode(Image.new("RGB", (8000, 8000)), "PNG", compress_level=9)

    add("png/compressed-large", writer("frame.png", compressed_bomb), valid=True, timeout_s=120,
        note="a valid 8000x8000 PNG (64 Mpixel): large but legitimate, under Pillow's limit")

    def tiff_bomb():
        data = bytearray(_encode(Image.new("L", (8, 8)), "TIFF"))
        # rewrite ImageWidth/ImageLength (tags 256/257) to 200000
        offset = struct.unpack("<I", data[4:8])[0]
        count = struct.unpack("<H", data[offset:offset + 2])[0]
        for i in range(count):
            entry = offset + 2 + 12 * i
            tag, kind = struct.unpack("<HH", data[entry:entry + 4])
            if tag in (256, 257):
                if kind == 3:
                    data[entry + 8:entry + 10] = struct.pack("<H", 60000)
                else:
                    data[entry + 8:entry + 12] = struct.pack("<I", 200000)
        return bytes(data)

    add("tiff/bomb-header", writer("frame.tif", tiff_bomb), file="frame.tif", note="TIFF declaring a huge image in a tiny file")

    # special files
    def fifo(ctx):
        path = ctx.work / "frame.png"
        os.mkfifo(path)
        return path

    add("special/fifo", fifo, file="frame.png", note="a FIFO named frame.png (a read would block)", timeout_s=20)

    def directory(ctx):
        path = ctx.work / "frame.png"
        path.mkdir()
        return path

    add("special/directory", directory, file="frame.png", note="a folder named frame.png")
    add("special/missing", lambda ctx: ctx.work / "frame.png", file="frame.png", note="no such file")

    def dangling(ctx):
        path = ctx.work / "frame.png"
        path.symlink_to(ctx.work / "gone.png")
        return path

    add("special/dangling-symlink", dangling, file="frame.png", note="a symlink to nothing")

    def device(ctx):
        path = ctx.work / "frame.png"
        path.symlink_to("/dev/zero")
        return path

    add("special/symlink-to-dev-zero", device, file="frame.png", note="a symlink to /dev/zero (a read without end)", timeout_s=20)

    def symlink_out(ctx):
        target = _outside_file(ctx)
        path = ctx.work / "frame.png"
        path.symlink_to(target)
        return path

    add("special/symlink-valid", symlink_out, valid=True, check=lambda t: _near(t, (0, 0, 128)),
        note="a symlink to a valid image (open_image has no root; roots are checked by the datasets)")

    # through a dataset reader: a nerfstudio frame file
    def via_nerfstudio(name, data_fn, *, valid=False, check=None, note=""):
        def setup(ctx):
            from snd.data import NerfstudioDataset

            scene = _copy("nerfstudio", ctx) / "capture"
            target = scene / "images" / "frame_00003.png"
            target.unlink()
            target.write_bytes(data_fn())

            def thunk():
                dataset = NerfstudioDataset(scene, image_shape=SIZE)
                _read_everything(dataset)
                if check is not None:
                    views = dataset.load_views(0, [2])
                    check(views.images[0])

            return thunk

        register(Case("image", f"nerfstudio-frame/{name}", setup, names=() if valid else ("frame_00003.png",), valid=valid, note=note))

    via_nerfstudio("empty", lambda: b"", note="0-byte frame file")
    via_nerfstudio("truncated", lambda: _valid_bytes("PNG")[: len(_valid_bytes("PNG")) // 2], note="truncated frame PNG (first half)")
    via_nerfstudio("random", lambda: random_bytes, note="random bytes as a frame")
    via_nerfstudio("float-tiff", lambda: _encode(Image.fromarray(np.full(SIZE, 0.5, np.float32)), "TIFF"), note="float TIFF named .png")
    via_nerfstudio("bomb-header", lambda: _png_with_header(100_000, 100_000), note="header declares 10 Gpixel")
    via_nerfstudio("wrong-size", lambda: _encode(Image.fromarray(_rgb_array(12, 16)), "PNG"), note="16x12 frame but w=32, h=24 declared")
    via_nerfstudio("palette", palette(False), valid=True, check=lambda t: _near(t, (250, 5, 5)), note="palette PNG frame")
    via_nerfstudio("16-bit", png_of(sixteen), valid=True, check=lambda t: _near(t, (128, 128, 128)), note="16-bit grey frame")


# ------------------------------------------------------------------------------------------------------------------
# nerfstudio


def _nerfstudio_case(name, mutate, *, names=(), valid=False, note="", load_depth=False, timeout_s=60.0):
    """``mutate(meta: dict, scene: Path, ctx) -> dict | bytes | None`` edits the copied capture's transforms.json."""

    def setup(ctx):
        from snd.data import NerfstudioDataset

        scene = _copy("nerfstudio", ctx) / "capture"
        path = scene / "transforms.json"
        meta = json.loads(path.read_text())
        result = mutate(meta, scene, ctx)
        if not isinstance(result, (dict, list, bytes, str)):  # the mutation edited meta in place
            result = meta
        if isinstance(result, bytes):
            path.write_bytes(result)
        elif isinstance(result, str):
            path.write_text(result)
        else:
            path.write_text(json.dumps(result))

        def thunk():
            dataset = NerfstudioDataset(scene, image_shape=SIZE, load_depth=load_depth)
            _read_everything(dataset)

        return thunk

    register(Case("nerfstudio", name, setup, names=tuple(names), valid=valid, note=note, timeout_s=timeout_s))


HOSTILE_NUMBERS = {"nan": math.nan, "inf": math.inf, "negative": -1.0, "zero": 0.0, "string": "text", "list": [1.0], "huge": 1e30}


def _set(key, value, *, frame=None):
    def mutate(meta, scene, ctx):
        target = meta if frame is None else meta["frames"][frame]
        target[key] = value

    return mutate


def _register_nerfstudio_cases() -> None:
    T = "transforms.json"
    # the file itself
    _nerfstudio_case("file/empty", lambda m, s, c: b"", names=(T,), note="0-byte transforms.json")
    _nerfstudio_case("file/truncated", lambda m, s, c: json.dumps(m).encode()[:300], names=(T,), note="cut-off JSON")
    _nerfstudio_case("file/non-utf8", lambda m, s, c: b'{"frames": [], "camera_model": "\xff\xfe"}', names=(T,), note="Latin-1 bytes")
    _nerfstudio_case("file/deep-nesting", lambda m, s, c: "[" * 100_000 + "]" * 100_000, names=(T,), note="100000 nested lists")
    _nerfstudio_case("file/top-level-list", lambda m, s, c: [m], names=(T, "frames"), note="a list instead of an object")
    _nerfstudio_case("file/no-frames", lambda m, s, c: {k: v for k, v in m.items() if k != "frames"}, names=(T, "frames"), note="no frames key")
    _nerfstudio_case("file/frames-empty", _set("frames", []), names=(T, "frames"), note="frames: []")
    _nerfstudio_case("file/frames-object", _set("frames", {"0": {}}), names=(T, "frames"), note="frames is an object")
    _nerfstudio_case("file/frame-not-object", lambda m, s, c: m["frames"].__setitem__(0, "images/frame_00001.png"),
                     names=(T, "frames[0]"), note="a frame that is a string")

    def replace_file(make):
        def mutate(meta, scene, ctx):
            (scene / T).unlink()
            make(scene / T)
            return None

        return mutate

    def setup_special(make):
        def setup(ctx):
            from snd.data import NerfstudioDataset

            scene = _copy("nerfstudio", ctx) / "capture"
            (scene / T).unlink()
            make(scene / T)
            return lambda: _read_everything(NerfstudioDataset(scene, image_shape=SIZE))

        return setup

    register(Case("nerfstudio", "file/fifo", setup_special(os.mkfifo), names=(T,), timeout_s=20, note="transforms.json is a FIFO"))
    register(Case("nerfstudio", "file/directory", setup_special(lambda p: p.mkdir()), names=(T,), note="transforms.json is a folder"))
    register(Case("nerfstudio", "file/dangling-symlink", setup_special(lambda p: p.symlink_to(p.parent / "gone.json")), names=(T,),
                  note="transforms.json is a symlink to nothing"))

    # every intrinsics field x hostile values
    for key in ("fl_x", "fl_y", "cx", "cy", "w", "h"):
        for label, value in HOSTILE_NUMBERS.items():
            names = (key,) if key not in ("w", "h") else ("w/h", f"{key}=", f"'{key}'")
            valid, note = False, f"{key} = {value!r}"
            if key in ("cx", "cy") and label == "zero":
                valid, note = True, f"{key} = 0: principal point on the image border; odd but a defined camera"
            _nerfstudio_case(f"intrinsics/{key}/{label}", _set(key, value), names=names, valid=valid, note=note)
        _nerfstudio_case(f"intrinsics/{key}/missing", lambda m, s, c, key=key: m.pop(key) and None,
                         names=(key,) if key not in ("w", "h") else ("w/h", f"{key}=", f"'{key}'"), note=f"{key} absent")
        _nerfstudio_case(f"intrinsics/{key}/per-frame-nan", _set(key, math.nan, frame=4),
                         names=(key,) if key not in ("w", "h") else ("w/h", f"{key}=", f"'{key}'"), note=f"frames[4].{key} = NaN")
    _nerfstudio_case("intrinsics/w-h-missing", lambda m, s, c: (m.pop("w"), m.pop("h")) and None, valid=True,
                     note="no w, h: the image file's size is used")
    _nerfstudio_case("intrinsics/w-float", _set("w", 32.0), valid=True, note="w = 32.0 (an integral float)")
    _nerfstudio_case("intrinsics/w-fractional", _set("w", 32.5), names=("w/h", "w=", "'w'"), note="w = 32.5")
    _nerfstudio_case("intrinsics/w-bool", _set("w", True), names=("w/h", "w=", "'w'"), note="w = true")
    _nerfstudio_case("intrinsics/fl_x-bool", _set("fl_x", True), names=("fl_x",), note="fl_x = true")
    _nerfstudio_case("intrinsics/fl_x-normalised", lambda m, s, c: m.__setitem__("fl_x", m["fl_x"] / 32) or m.__setitem__("fl_y", m["fl_y"] / 24),
                     valid=True, note="focal lengths divided by the image size (~1 px): tiny but within the accepted range")

    # distortion and camera model
    for key in ("k1", "k2", "k3", "k4", "p1", "p2"):
        for label, value in (("nan", math.nan), ("string", "0"), ("nonzero", 0.1)):
            _nerfstudio_case(f"distortion/{key}/{label}", _set(key, value), names=(key,), note=f"{key} = {value!r}")
    _nerfstudio_case("distortion/k1-zero-int", _set("k1", 0), valid=True, note="k1 = 0 (an integer zero)")
    for label, value in (("fisheye", "OPENCV_FISHEYE"), ("lowercase", "pinhole"), ("number", 5), ("list", ["PINHOLE"]), ("null", None)):
        _nerfstudio_case(f"camera_model/{label}", _set("camera_model", value), names=("camera_model",), note=f"camera_model = {value!r}")
    _nerfstudio_case("camera_model/pinhole", _set("camera_model", "PINHOLE"), valid=True, note="PINHOLE")

    # transform_matrix
    def matrix(fn):
        def mutate(meta, scene, ctx):
            meta["frames"][3]["transform_matrix"] = fn(meta["frames"][3]["transform_matrix"])

        return mutate

    F = "transform_matrix"
    _nerfstudio_case("transform_matrix/string-entries", matrix(lambda m: [[str(v) for v in row] for row in m]), names=(F,), note="numbers as strings")
    _nerfstudio_case("transform_matrix/3x4", matrix(lambda m: m[:3]), valid=True, note="3x4 (nerfstudio accepts it; the last row is implied)")
    _nerfstudio_case("transform_matrix/3x3", matrix(lambda m: [row[:3] for row in m[:3]]), names=(F,), note="3x3")
    _nerfstudio_case("transform_matrix/nan", matrix(lambda m: [[math.nan if (i, j) == (0, 3) else v for j, v in enumerate(row)] for i, row in enumerate(m)]),
                     names=(F,), note="NaN translation")
    _nerfstudio_case("transform_matrix/inf", matrix(lambda m: [[math.inf if (i, j) == (1, 1) else v for j, v in enumerate(row)] for i, row in enumerate(m)]),
                     names=(F,), note="inf in the rotation")
    _nerfstudio_case("transform_matrix/singular", matrix(lambda m: [[0.0] * 4 for _ in range(3)] + [[0, 0, 0, 1]]), names=(F,), note="zero rotation")
    _nerfstudio_case("transform_matrix/scaled", matrix(lambda m: [[v * 2 if j < 3 and i < 3 else v for j, v in enumerate(row)] for i, row in enumerate(m)]),
                     names=(F,), note="rotation scaled by 2 (non-rigid)")
    _nerfstudio_case("transform_matrix/reflection", matrix(lambda m: [[-v if i == 0 and j < 3 else v for j, v in enumerate(row)] for i, row in enumerate(m)]),
                     names=(F,), note="det = -1")
    _nerfstudio_case("transform_matrix/bad-last-row", matrix(lambda m: m[:3] + [[0, 0, 1, 1]]), names=(F,), note="last row [0,0,1,1]")
    _nerfstudio_case("transform_matrix/not-a-list", matrix(lambda m: "identity"), names=(F,), note="a string")
    _nerfstudio_case("transform_matrix/flat", matrix(lambda m: [v for row in m for v in row]), names=(F,), note="16 numbers, flat")
    _nerfstudio_case("transform_matrix/missing", lambda m, s, c: m["frames"][3].pop(F) and None, names=(F,), note="absent")
    _nerfstudio_case("transform_matrix/bool-entries", matrix(lambda m: [[True if (i, j) == (0, 0) else v for j, v in enumerate(row)] for i, row in enumerate(m)]),
                     names=(F,), note="true instead of 1.0")

    # file_path
    def file_path(value_fn):
        def mutate(meta, scene, ctx):
            meta["frames"][3]["file_path"] = value_fn(meta, scene, ctx)

        return mutate

    P = "file_path"
    _nerfstudio_case("file_path/dotdot", file_path(lambda m, s, c: (_outside_file(c), "../outside/secret.png")[1]), names=(P,), note="../ out of the scene")
    _nerfstudio_case("file_path/absolute", file_path(lambda m, s, c: str(_outside_file(c))), names=(P,), note="absolute path to a file outside")

    def symlink_out(m, s, c):
        target = _outside_file(c)
        (s / "images" / "link.png").symlink_to(target)
        return "images/link.png"

    _nerfstudio_case("file_path/symlink-out", file_path(symlink_out), names=(P, "link.png"), note="a symlink in images/ pointing out of the scene")
    _nerfstudio_case("file_path/missing", file_path(lambda m, s, c: "images/frame_09999.png"), names=(P, "frame_09999.png"), note="no such file")

    def fifo(m, s, c):
        os.mkfifo(s / "images" / "pipe.png")
        return "images/pipe.png"

    _nerfstudio_case("file_path/fifo", file_path(fifo), names=(P, "pipe.png"), timeout_s=20, note="a FIFO")
    _nerfstudio_case("file_path/directory", file_path(lambda m, s, c: "images"), names=(P, "images"), note="a folder")
    _nerfstudio_case("file_path/empty-string", file_path(lambda m, s, c: ""), names=(P,), note="empty string")
    _nerfstudio_case("file_path/number", file_path(lambda m, s, c: 3), names=(P,), note="a number")
    _nerfstudio_case("file_path/nul", file_path(lambda m, s, c: "images/frame\x00.png"), names=(P,), note="a NUL byte")
    _nerfstudio_case("file_path/duplicate", file_path(lambda m, s, c: m["frames"][4]["file_path"]), names=(P,), note="two frames name the same file")
    _nerfstudio_case("file_path/duplicate-spelled-differently", file_path(lambda m, s, c: "./" + m["frames"][4]["file_path"]), names=(P,),
                     note="the same file as ./images/...")
    _nerfstudio_case("file_path/duplicate-frame", lambda m, s, c: m["frames"].append(dict(m["frames"][0])) and None, names=(P,),
                     note="a frame listed twice")
    _nerfstudio_case("file_path/dot-slash", file_path(lambda m, s, c: "./" + m["frames"][3]["file_path"]), valid=True, note="./images/... (nerfstudio writes this)")

    # depth_file_path (load_depth=True)
    def depth(value_fn=None, content=None):
        def mutate(meta, scene, ctx):
            frame = meta["frames"][3]
            if value_fn is not None:
                frame["depth_file_path"] = value_fn(meta, scene, ctx)
            if content is not None:
                target = scene / frame["depth_file_path"]
                target.unlink()
                target.write_bytes(content())

        return mutate

    D = "depth_file_path"
    _nerfstudio_case("depth/dotdot", depth(lambda m, s, c: (_outside_file(c), "../outside/secret.png")[1]), names=(D,), load_depth=True, note="../ out")
    _nerfstudio_case("depth/absolute", depth(lambda m, s, c: str(_outside_file(c))), names=(D,), load_depth=True, note="absolute path")
    _nerfstudio_case("depth/missing-file", depth(lambda m, s, c: "depth/none.png"), names=(D, "none.png"), load_depth=True, note="no such file")
    _nerfstudio_case("depth/number", depth(lambda m, s, c: 7), names=(D,), load_depth=True, note="a number")
    _nerfstudio_case("depth/absent-on-a-frame", lambda m, s, c: m["frames"][3].pop(D) and None, names=(D,), load_depth=True,
                     note="one frame without depth_file_path")
    name3 = "frame_00009.png"  # frames are listed in reverse: frames[3] is frame_00009
    _nerfstudio_case("depth/8-bit", depth(content=lambda: _encode(__import__("PIL.Image").Image.fromarray(np.full(SIZE, 200, np.uint8)), "PNG")),
                     names=(D, name3), load_depth=True, note="8-bit depth PNG")
    _nerfstudio_case("depth/rgb", depth(content=lambda: _valid_bytes("PNG")), names=(D, name3), load_depth=True, note="an RGB PNG as depth")
    _nerfstudio_case("depth/wrong-size", depth(content=lambda: _encode(__import__("PIL.Image").Image.fromarray(np.full((12, 16), 2000, np.uint16)), "PNG")),
                     names=(D, name3), load_depth=True, note="16x12 depth for a 32x24 image")
    _nerfstudio_case("depth/float-tiff", depth(content=lambda: _encode(__import__("PIL.Image").Image.fromarray(np.full(SIZE, 2.0, np.float32)), "TIFF")),
                     names=(D, name3), load_depth=True, note="float TIFF named .png")
    _nerfstudio_case("depth/empty", depth(content=lambda: b""), names=(D, name3), load_depth=True, note="0-byte depth")

    def npy(array_fn, name="d.npy", raw=None):
        def value(meta, scene, ctx):
            path = scene / "depth" / name
            if raw is not None:
                path.write_bytes(raw())
            else:
                np.save(path, array_fn())
            return f"depth/{name}"

        return value

    _nerfstudio_case("depth/npy-float-valid", depth(npy(lambda: np.full(SIZE, 2.5, np.float32))), valid=True, load_depth=True, note="float32 .npy metres*1000")
    _nerfstudio_case("depth/npy-wrong-size", depth(npy(lambda: np.full((5, 5), 2.5, np.float32))), names=(D, "d.npy"), load_depth=True, note="5x5 .npy")
    _nerfstudio_case("depth/npy-3d", depth(npy(lambda: np.full((2, *SIZE), 2.5, np.float32))), names=(D, "d.npy"), load_depth=True, note="[2, H, W] .npy")
    _nerfstudio_case("depth/npy-object", depth(npy(None, raw=lambda: _npy_object_bytes())), names=(D, "d.npy"), load_depth=True,
                     note="an object-dtype .npy (pickle)")

    def npy_bomb():
        header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000, 1000000), }"
        header += " " * (118 - len(header)) + "\n"
        return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + b"\x00" * 64

    _nerfstudio_case("depth/npy-bomb", depth(npy(None, raw=npy_bomb)), names=(D, "d.npy"), load_depth=True, note=".npy header declaring 4 TB")
    _nerfstudio_case("depth/npy-bool", depth(npy(lambda: np.ones(SIZE, bool))), names=(D, "d.npy"), load_depth=True, note="a boolean .npy")
    _nerfstudio_case("depth/npy-complex", depth(npy(lambda: np.ones(SIZE, np.complex64))), names=(D, "d.npy"), load_depth=True, note="a complex .npy")
    _nerfstudio_case("depth/fifo", depth(lambda m, s, c: (os.mkfifo(s / "depth" / "pipe.png"), "depth/pipe.png")[1]), names=(D, "pipe.png"),
                     load_depth=True, timeout_s=20, note="a FIFO")
    _nerfstudio_case("mask/rgb-wrong-size", lambda m, s, c: ((s / "m.png").write_bytes(_encode(__import__("PIL.Image").Image.fromarray(_rgb_array(5, 5)), "PNG")),
                                                             m["frames"][3].__setitem__("mask_path", "m.png"))[0] and None,
                     names=("mask_path", "m.png"), note="a 5x5 mask for a 32x24 image")
    _nerfstudio_case("mask/dotdot", lambda m, s, c: m["frames"][3].__setitem__("mask_path", "../outside/secret.png") or _outside_file(c) and None,
                     names=("mask_path",), note="mask path out of the scene")


class _Payload:
    """Unpickling this runs ``Path(marker).touch()``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def _npy_object_bytes() -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------------------------------
# ScanNet++


def _scannetpp_case(name, mutate, *, names=(), valid=False, note="", load_depth=False, scenes=None, timeout_s=60.0):
    def setup(ctx):
        from snd.data import ScanNetPPDataset

        root = _copy("scannetpp", ctx)
        scene = root / "scenes" / "scene00"
        path = scene / "transforms_train.json"
        meta = json.loads(path.read_text())
        result = mutate(meta, root, scene, ctx)
        if not isinstance(result, (dict, list, bytes)):  # the mutation edited meta in place
            result = meta
        if isinstance(result, bytes):
            path.write_bytes(result)
        else:
            path.write_text(json.dumps(result))

        def thunk():
            dataset = ScanNetPPDataset(root, split="train", scenes=scenes, image_shape=SIZE, load_depth=load_depth)
            _read_everything(dataset)

        return thunk

    register(Case("scannetpp", name, setup, names=tuple(names), valid=valid, note=note, timeout_s=timeout_s))


def _register_scannetpp_cases() -> None:
    T = "transforms_train.json"
    _scannetpp_case("file/empty", lambda m, r, s, c: b"", names=(T,), note="0-byte metadata")
    _scannetpp_case("file/non-utf8", lambda m, r, s, c: b'{"fl_x": "\xff"}', names=(T,), note="Latin-1 bytes")
    _scannetpp_case("file/top-level-list", lambda m, r, s, c: [m], names=(T,), note="a list")

    def special_scannetpp(name, make, note):
        def setup(ctx):
            from snd.data import ScanNetPPDataset

            root = _copy("scannetpp", ctx)
            path = root / "scenes" / "scene00" / T
            path.unlink()
            make(path)
            return lambda: _read_everything(ScanNetPPDataset(root, split="train", image_shape=SIZE))

        register(Case("scannetpp", name, setup, names=(T,), note=note, timeout_s=20))

    special_scannetpp("file/fifo", os.mkfifo, "transforms_train.json is a FIFO")
    special_scannetpp("file/directory", lambda p: p.mkdir(), "transforms_train.json is a folder")
    special_scannetpp("file/missing", lambda p: None, "transforms_train.json absent")
    for key in ("fl_x", "fl_y", "cx", "cy"):
        for label in ("nan", "string", "list", "negative"):
            _scannetpp_case(f"metadata/{key}/{label}", _set_scannetpp(key, HOSTILE_NUMBERS[label]), names=(key,), note=f"{key} = {HOSTILE_NUMBERS[label]!r}")
    _scannetpp_case("metadata/w/string", _set_scannetpp("w", "32"), names=("w/h", "w=", "'w'"), note='w = "32"')
    _scannetpp_case("metadata/h/zero", _set_scannetpp("h", 0), names=("w/h", "h=", "'h'"), note="h = 0")
    _scannetpp_case("metadata/w/wrong", _set_scannetpp("w", 64), names=("w/h", "w=", "'w'"), note="w = 64 for 32-pixel-wide images")
    _scannetpp_case("metadata/is_bad/string", lambda m, r, s, c: m["frames"][2].__setitem__("is_bad", "false"), names=("is_bad",), note='is_bad = "false"')
    _scannetpp_case("metadata/is_bad/int", lambda m, r, s, c: m["frames"][2].__setitem__("is_bad", 0), names=("is_bad",), note="is_bad = 0")
    _scannetpp_case("metadata/frames-not-list", _set_scannetpp("frames", "all"), names=("frames",), note='frames = "all"')
    _scannetpp_case("metadata/no-w-h", lambda m, r, s, c: (m.pop("w"), m.pop("h")) and None, valid=True, note="w, h absent: image size used")

    # split entries
    def split(lines):
        def mutate(meta, root, scene, ctx):
            (root / "metadata" / "nvs_sem_train.txt").write_text("\n".join(lines(root, ctx)) + "\n")

        return mutate

    def outside_scene(root, ctx):
        other = ctx.work / "elsewhere"
        shutil.copytree(root / "scenes" / "scene00", other / "scene00")
        ctx.protect(other)
        return other

    _scannetpp_case("split/dotdot", split(lambda r, c: (outside_scene(r, c), ["../../elsewhere/scene00"])[1]), names=("nvs_sem_train.txt",),
                    note="a split entry leaving scenes/")
    _scannetpp_case("split/absolute", split(lambda r, c: [str(outside_scene(r, c) / "scene00")]), names=("nvs_sem_train.txt",),
                    note="an absolute split entry")

    def symlinked(root, ctx):
        other = outside_scene(root, ctx)
        (root / "scenes" / "linked").symlink_to(other / "scene00")
        return ["linked"]

    _scannetpp_case("split/symlink-out", split(symlinked), names=("nvs_sem_train.txt", "linked"), note="scenes/linked -> outside the root")
    _scannetpp_case("split/missing-scene", split(lambda r, c: ["scene00", "scene99"]), names=("scene99",), note="a listed scene is absent")
    _scannetpp_case("split/non-utf8", lambda m, r, s, c: (r / "metadata" / "nvs_sem_train.txt").write_bytes(b"scene00\n\xff\xfe\n") and None,
                    names=("nvs_sem_train.txt",), note="Latin-1 bytes in the split list")
    _scannetpp_case("split/crlf", split(lambda r, c: ["scene00\r"]), valid=True, note="Windows line endings")

    # frame paths
    def frame_path(value):
        def mutate(meta, root, scene, ctx):
            _outside_file(ctx, "secret.JPG")
            meta["frames"][2]["file_path"] = value(ctx)

        return mutate

    _scannetpp_case("frames/dotdot", frame_path(lambda c: "../../../../outside/secret.JPG"), names=("file_path",), note="../ out of images/")
    _scannetpp_case("frames/absolute", frame_path(lambda c: str(c.work / "outside" / "secret.JPG")), names=("file_path",), note="an absolute path")

    def frame_symlink(meta, root, scene, ctx):
        target = _outside_file(ctx, "secret.JPG")
        (scene / "images" / "link.JPG").symlink_to(target)
        meta["frames"][2]["file_path"] = "link.JPG"

    _scannetpp_case("frames/symlink-out", frame_symlink, names=("file_path", "link.JPG"), note="a symlink in images/ pointing out")
    _scannetpp_case("frames/duplicate", lambda m, r, s, c: m["frames"][2].__setitem__("file_path", m["frames"][3]["file_path"]),
                    names=("file_path",), note="two frames, one file")
    _scannetpp_case("frames/missing-image", lambda m, r, s, c: (s / "images" / m["frames"][2]["file_path"]).unlink(),
                    names=("DSC01009.JPG",), note="an image listed but absent")
    _scannetpp_case("frames/missing-mask", lambda m, r, s, c: (s / "instance_segmentation" / (m["frames"][2]["file_path"] + ".png")).unlink(),
                    names=("DSC01009.JPG.png",), note="its instance mask absent")
    _scannetpp_case("frames/rgb-mask", lambda m, r, s, c: (s / "instance_segmentation" / (m["frames"][2]["file_path"] + ".png")).write_bytes(_valid_bytes("PNG")),
                    names=("DSC01009.JPG.png",), note="an RGB PNG as instance mask")
    _scannetpp_case("frames/mask-wrong-size", lambda m, r, s, c: (s / "instance_segmentation" / (m["frames"][2]["file_path"] + ".png")).write_bytes(
        _encode(__import__("PIL.Image").Image.fromarray(np.zeros((5, 5), np.uint16)), "PNG")), names=("DSC01009.JPG.png",), note="5x5 mask")
    _scannetpp_case("frames/image-random-bytes", lambda m, r, s, c: (s / "images" / m["frames"][2]["file_path"]).write_bytes(os.urandom(2048)),
                    names=("DSC01009.JPG",), note="random bytes as JPEG")
    # depth
    _scannetpp_case("depth/8-bit", lambda m, r, s, c: (s / "depth" / "DSC01009.png").write_bytes(
        _encode(__import__("PIL.Image").Image.fromarray(np.full(SIZE, 9, np.uint8)), "PNG")), names=("DSC01009.png",), load_depth=True, note="8-bit depth")
    _scannetpp_case("depth/wrong-size", lambda m, r, s, c: (s / "depth" / "DSC01009.png").write_bytes(
        _encode(__import__("PIL.Image").Image.fromarray(np.full((12, 16), 900, np.uint16)), "PNG")), names=("DSC01009.png",), load_depth=True, note="half-size depth")
    _scannetpp_case("depth/missing", lambda m, r, s, c: (s / "depth" / "DSC01009.png").unlink(), names=("DSC01009.png",), load_depth=True, note="no depth file")
    # poses
    def pose(fn):
        def mutate(meta, root, scene, ctx):
            meta["frames"][2]["transform_matrix"] = fn(meta["frames"][2]["transform_matrix"])

        return mutate

    _scannetpp_case("pose/nan", pose(lambda m: [[math.nan] * 4] + m[1:]), names=("transform_matrix",), note="NaN row")
    _scannetpp_case("pose/singular", pose(lambda m: [[0.0] * 4] * 3 + [[0, 0, 0, 1]]), names=("transform_matrix",), note="zero rotation")
    _scannetpp_case("pose/3x4", pose(lambda m: m[:3]), names=("transform_matrix",), note="3x4 (ScanNet++ writes 4x4)")
    _scannetpp_case("pose/strings", pose(lambda m: [[str(v) for v in row] for row in m]), names=("transform_matrix",), note="strings")


def _set_scannetpp(key, value):
    def mutate(meta, root, scene, ctx):
        meta[key] = value

    return mutate


# ------------------------------------------------------------------------------------------------------------------
# RE10K


def _re10k_case(name, mutate, *, names=(), valid=False, note="", timeout_s=60.0):
    """``mutate(stage: Path, ctx, example: dict)``: edit the copied train/ folder (chunk 000000.torch, index.json)."""

    def setup(ctx):
        import torch

        from snd.data import RE10KDataset, ViewSampler

        root = _copy("re10k", ctx)
        stage = root / "train"
        example = torch.load(_fixtures() / "re10k_example.torch", weights_only=True)[0]
        mutate(stage, ctx, example)

        def thunk():
            dataset = RE10KDataset(root, split="train", image_shape=SIZE, sampler=ViewSampler(min_gap=2, max_gap=4))
            _read_everything(dataset)

        return thunk

    register(Case("re10k", name, setup, names=tuple(names), valid=valid, note=note, timeout_s=timeout_s))


def _save_chunk(entries, path: Path) -> None:
    import torch

    torch.save(entries, path)


def _edit_example(edit):
    def mutate(stage, ctx, example):
        result = edit(example)
        _save_chunk([example if result is None else result], stage / "000000.torch")

    return mutate


def _crafted_torch_zip(path: Path, obj_reduce, storage_numel: int, payload_bytes: int = 64) -> None:
    """A zip-format torch file whose pickle builds ``obj_reduce`` with a storage claiming ``storage_numel`` floats."""
    import torch

    class Storage:
        pass

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, Storage):
                return ("storage", torch.FloatStorage, "0", "cpu", storage_numel)
            return None

    class Rebuild:
        def __init__(self, shape):
            self.shape = shape

        def __reduce__(self):
            stride = tuple(int(np.prod(self.shape[i + 1:])) for i in range(len(self.shape)))
            return (torch._utils._rebuild_tensor_v2, (Storage(), 0, self.shape, stride, False, OrderedDict()))

    buffer = io.BytesIO()
    Pickler(buffer, protocol=2).dump(obj_reduce(Rebuild))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", buffer.getvalue())
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/data/0", b"\x00" * payload_bytes)
        archive.writestr("archive/version", "3\n")


def _register_re10k_cases() -> None:
    I, C = "index.json", "000000.torch"

    def index(value):
        def mutate(stage, ctx, example):
            content = value(stage, ctx)
            (stage / I).write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())

        return mutate

    def outside_chunk(stage, ctx):
        other = ctx.work / "outside"
        other.mkdir(exist_ok=True)
        shutil.copy(stage / C, other / "x.torch")
        ctx.protect(other / "x.torch")
        return other / "x.torch"

    _re10k_case("index/dotdot", index(lambda s, c: (outside_chunk(s, c), {"re10k0000": "../../outside/x.torch"})[1]), names=(I, "re10k0000"),
                note="an entry leaving train/")
    _re10k_case("index/absolute", index(lambda s, c: {"re10k0000": str(outside_chunk(s, c))}), names=(I, "re10k0000"), note="an absolute chunk path")

    def index_symlink(s, c):
        (s / "link.torch").symlink_to(outside_chunk(s, c))
        return {"re10k0000": "link.torch"}

    _re10k_case("index/symlink-out", index(index_symlink), names=(I, "link.torch", "re10k0000"), note="a chunk symlink pointing out")
    _re10k_case("index/number-value", index(lambda s, c: {"re10k0000": 0}), names=(I, "re10k0000"), note="a number instead of a file name")
    _re10k_case("index/list-value", index(lambda s, c: {"re10k0000": [C]}), names=(I, "re10k0000"), note="a list instead of a file name")
    _re10k_case("index/null-value", index(lambda s, c: {"re10k0000": None}), names=(I, "re10k0000"), note="null")
    _re10k_case("index/top-level-list", index(lambda s, c: [["re10k0000", C]]), names=(I,), note="a list of pairs")
    _re10k_case("index/empty-object", index(lambda s, c: {}), names=(I,), note="{}: no scenes")
    _re10k_case("index/empty-file", index(lambda s, c: b""), names=(I,), note="0-byte index.json")
    _re10k_case("index/non-utf8", index(lambda s, c: b'{"\xff": "000000.torch"}'), names=(I,), note="Latin-1 bytes")
    _re10k_case("index/deep-nesting", index(lambda s, c: b"[" * 100_000 + b"]" * 100_000), names=(I,), note="100000 nested lists")
    _re10k_case("index/unknown-key", index(lambda s, c: {"re10k0000": C, "ghost": C}), names=("ghost",), note="a key its chunk lacks")
    _re10k_case("index/missing-chunk", index(lambda s, c: {"re10k0000": "000009.torch"}), names=("000009.torch", "re10k0000"), note="a chunk absent")
    _re10k_case("index/chunk-is-directory", index(lambda s, c: ((s / "dir.torch").mkdir(), {"re10k0000": "dir.torch"})[1]),
                names=("dir.torch",), note="a folder named dir.torch")
    _re10k_case("index/chunk-fifo", index(lambda s, c: (os.mkfifo(s / "pipe.torch"), {"re10k0000": "pipe.torch"})[1]),
                names=("pipe.torch",), timeout_s=20, note="a FIFO named pipe.torch")
    _re10k_case("index/absent", lambda s, c, e: (s / I).unlink(), valid=True, note="no index.json: the chunks are scanned")

    # chunk files that are not torch files
    def chunk_bytes(data):
        def mutate(stage, ctx, example):
            (stage / C).write_bytes(data(stage, ctx))

        return mutate

    _re10k_case("chunk/empty", chunk_bytes(lambda s, c: b""), names=(C,), note="0-byte chunk")
    _re10k_case("chunk/random", chunk_bytes(lambda s, c: os.urandom(4096)), names=(C,), note="random bytes")
    _re10k_case("chunk/text", chunk_bytes(lambda s, c: b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n"), names=(C,),
                note="a Git LFS pointer")
    _re10k_case("chunk/truncated", chunk_bytes(lambda s, c: (s / C).read_bytes()[:2000]), names=(C,), note="first 2000 bytes")
    _re10k_case("chunk/zip-not-torch", chunk_bytes(lambda s, c: _zip_of({"hello.txt": b"hi"})), names=(C,), note="a zip without data.pkl")
    _re10k_case("chunk/pickle-payload", chunk_bytes(lambda s, c: pickle.dumps([_Payload(c.marker)])), names=(C,), note="a plain pickle running a command")

    def zip_payload(s, c):
        return _zip_of({"archive/data.pkl": pickle.dumps([_Payload(c.marker)], protocol=2), "archive/version": b"3\n", "archive/byteorder": b"little"})

    _re10k_case("chunk/zip-pickle-payload", chunk_bytes(zip_payload), names=(C,), note="a torch zip whose data.pkl runs a command")

    def storage_bomb(stage, ctx, example):
        _crafted_torch_zip(stage / C, lambda rebuild: [{"key": "re10k0000", "cameras": rebuild((10**6, 18)), "images": []}], 10**12)

    _re10k_case("chunk/storage-bomb", storage_bomb, names=(C,), note="a storage declaring 4 TB in a small zip")

    def shape_bomb(stage, ctx, example):
        _crafted_torch_zip(stage / C, lambda rebuild: [{"key": "re10k0000", "cameras": rebuild((10**9, 18)), "images": []}], 16)

    _re10k_case("chunk/view-larger-than-storage", shape_bomb, names=(C,), note="a tensor view larger than its 16-float storage")
    _re10k_case("chunk/not-a-list", lambda s, c, e: _save_chunk({"re10k0000": e}, s / C), names=(C,), note="a dict at the top level")
    _re10k_case("chunk/entry-without-key", _edit_example(lambda e: {"scene": e}), names=(C, "key"), note="an entry dict without key/cameras/images")
    _re10k_case("chunk/entry-not-dict", lambda s, c, e: _save_chunk(["re10k0000"], s / C), names=(C,), note="a string entry")
    _re10k_case("chunk/empty-list", lambda s, c, e: _save_chunk([], s / C), names=(C, "re10k0000"), note="an empty chunk")

    # entries
    def set_field(key, value):
        def edit(example):
            example[key] = value(example) if callable(value) else value

        return _edit_example(edit)

    _re10k_case("entry/key-int", set_field("key", 5), names=("key",), note="key = 5")
    _re10k_case("entry/key-missing", _edit_example(lambda e: e.pop("key") and None), names=("key",), note="no key")
    _re10k_case("entry/duplicate-key", lambda s, c, e: _save_chunk([e, dict(e)], s / C), names=("re10k0000",), note="the same key twice in a chunk")
    import torch

    _re10k_case("cameras/17-columns", set_field("cameras", lambda e: e["cameras"][:, :17].clone()), names=(C, "'cameras"), note="[F, 17]")
    _re10k_case("cameras/1d", set_field("cameras", lambda e: e["cameras"].reshape(-1).clone()), names=(C, "'cameras"), note="flattened")
    _re10k_case("cameras/int", set_field("cameras", lambda e: e["cameras"].long()), names=(C, "'cameras"), note="int64 cameras")
    _re10k_case("cameras/float64", set_field("cameras", lambda e: e["cameras"].double()), valid=True, note="float64 cameras")
    _re10k_case("cameras/fewer-rows", set_field("cameras", lambda e: e["cameras"][:-1].clone()), names=(C, "'cameras"), note="one row fewer than images")
    _re10k_case("cameras/more-rows", set_field("cameras", lambda e: torch.cat([e["cameras"], e["cameras"][:1]])), names=(C, "'cameras"),
                note="one row more than images")
    def cameras_with(fn):
        def value(e):
            cameras = e["cameras"].clone()
            fn(cameras)
            return cameras

        return set_field("cameras", value)

    _re10k_case("cameras/nan-pose", cameras_with(lambda c: c[:, 9].fill_(math.nan)), names=(C, "'cameras"), note="NaN translation")
    _re10k_case("cameras/nan-focal", cameras_with(lambda c: c[:, 0].fill_(math.nan)), names=(C, "'cameras"), note="NaN fx")
    _re10k_case("cameras/inf-focal", cameras_with(lambda c: c[:, 1].fill_(math.inf)), names=(C, "'cameras"), note="inf fy")
    _re10k_case("cameras/negative-focal", cameras_with(lambda c: c[:, 0].fill_(-1.0)), names=(C, "'cameras"), note="fx < 0")
    _re10k_case("cameras/pixel-focal", cameras_with(lambda c: c[:, 0].fill_(1e12)), names=(C, "'cameras"), note="fx = 1e12 (normalised expected)")
    _re10k_case("cameras/nan-principal-point", cameras_with(lambda c: c[:, 2].fill_(math.nan)), names=(C, "'cameras"), note="NaN cx")
    _re10k_case("cameras/zero-rotation", cameras_with(lambda c: c[:, 6:].fill_(0.0)), names=(C, "'cameras"), note="all-zero pose")
    _re10k_case("cameras/list", set_field("cameras", lambda e: e["cameras"].tolist()), names=(C, "'cameras"), note="a nested list")
    _re10k_case("images/not-list", set_field("images", lambda e: e["images"][0]), names=("images",), note="one tensor instead of a list")
    _re10k_case("images/random-bytes", set_field("images", lambda e: [torch.randint(0, 256, (500,), dtype=torch.uint8)] * len(e["images"])),
                names=("images",), note="bytes that are not an image")
    _re10k_case("images/float", set_field("images", lambda e: [t.float() for t in e["images"]]), names=("images",), note="float tensors")
    _re10k_case("images/2d", set_field("images", lambda e: [t.reshape(1, -1) for t in e["images"]]), valid=True,
                note="[1, N] uint8 tensors: the same JPEG bytes, decoded correctly")
    _re10k_case("images/strings", set_field("images", lambda e: ["frame.jpg"] * len(e["images"])), names=("images",), note="file names")
    _re10k_case("images/empty", set_field("images", []), names=("images", "cameras"), note="no images (cameras still F rows)")
    _re10k_case("images/bomb-png", set_field("images", lambda e: [torch.frombuffer(bytearray(_png_with_header(100_000, 100_000)), dtype=torch.uint8)]
                                              * len(e["images"])), names=("images",), note="PNG bytes declaring 10 Gpixel")
    _re10k_case("images/truncated-jpeg", set_field("images", lambda e: [t[: len(t) // 2].clone() for t in e["images"]]), names=("images",),
                note="half of each JPEG")
    _re10k_case("images/png-valid", set_field("images", lambda e: [torch.frombuffer(bytearray(_valid_bytes("PNG")), dtype=torch.uint8)]
                                               * len(e["images"])), valid=True, note="PNG bytes instead of JPEG: decodable")


def _zip_of(members: dict) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


_register_image_cases()
_register_nerfstudio_cases()
_register_scannetpp_cases()
_register_re10k_cases()
