"""The datasets of the Probe3D protocols (normals, correspondence) in their real on-disk layouts.

* **NYU GeoNet trainval** (normals training; Probe3D ``NYU_geonet``): a folder of MATLAB
  ``.mat`` files (Qi et al.'s GeoNet release, ``data1.zip`` + ``data2.zip`` merged into
  ``nyu_geonet/``), each with ``img`` ``[H, W, 3]`` (stored minus twice the NYU channel means),
  ``depth`` ``[H, W]`` (metres) and ``norm`` ``[H, W, 3]``. Files are taken in sorted name order
  (Probe3D's loader does not shuffle ``trainval``), after deleting the sorted entries 21181 and
  6919 (Probe3D's "bad indices"; only when the folder holds more than 21,181 files, i.e. the
  real set, see :class:`GeoNetNormals`).
* **NYUv2 test** (Probe3D ``NYU_test``): ``nyuv2_snorm_all.pkl`` from Probe3D's
  ``create_nyu_pkl.py``: ``images`` ``[N, 3, 480, 640]`` uint8, ``depths`` ``[N, 480, 640]`` (raw
  depth, metres), ``snorms`` ``[N, 3, 480, 640]``, ``test_indices``. Read with an unpickler that
  only rebuilds numpy arrays and plain containers.
* **ScanNet pairs** (Probe3D ``ScanNetPairsDataset``; LoFTR's ``scannet_test_1500``):
  ``test.npz`` (``name`` ``[P, 4]``: room, sequence, frame0, frame1), ``intrinsics.npz``
  (``sceneXXXX_YY`` -> 3 x 3 K in pixels) and ``sceneXXXX_YY/{color/<f>.jpg, depth/<f>.png
  (uint16 mm), pose/<f>.txt (4 x 4 camera-to-world)}``.

Images are returned in [0, 1]; the backbone normalisation (ImageNet for NYU, 0.5 / 0.5 for the
ScanNet pairs, as Probe3D) is the feature extractor's job.
"""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ...safe_io import open_image_file, require_regular_file, to_rgb
from ..datasets import read_scannet_pairs_index

GEONET_MEAN_RGB = (122.175, 116.169, 103.508)  # Probe3D adds 2x these to the stored GeoNet images
GEONET_BAD_INDICES = (21181, 6919)  # deleted from the sorted listing, in this order (Probe3D NYU_geonet)
NYU_MAX_DEPTH = 10.0
NYU_TEST_FILE = "nyuv2_snorm_all.pkl"


# ----------------------------------------------------------------------------------- MAT-v5 reader
_MI_DTYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8", 12: "i8", 13: "u8"}
_MX_CLASSES = {6: "f8", 7: "f4", 8: "i1", 9: "u1", 10: "i2", 11: "u2", 12: "i4", 13: "u4", 14: "i8", 15: "u8"}
_MI_MATRIX, _MI_COMPRESSED = 14, 15


def _elements(buffer: bytes, endian: str, path):
    """Yield ``(type, payload)`` of the data elements in ``buffer`` (tags, small elements, padding)."""
    offset = 0
    while offset + 8 <= len(buffer):
        first, second = struct.unpack_from(endian + "II", buffer, offset)
        if first >> 16:  # small data element: size in the upper 16 bits, data in the next 4 bytes
            size, kind = first >> 16, first & 0xFFFF
            yield kind, buffer[offset + 4 : offset + 4 + size]
            offset += 8
            continue
        kind, size = first, second
        start = offset + 8
        if start + size > len(buffer):
            raise ValueError(f"{path}: truncated MAT-file element (type {kind}, {size} bytes)")
        yield kind, buffer[start : start + size]
        offset = start + size if kind == _MI_COMPRESSED else start + (size + 7) // 8 * 8


def _numeric(kind: int, payload: bytes, endian: str, path) -> np.ndarray:
    if kind not in _MI_DTYPES:
        raise ValueError(f"{path}: unsupported MAT-file data type {kind}")
    return np.frombuffer(payload, dtype=np.dtype(_MI_DTYPES[kind]).newbyteorder(endian))


def _matrix(payload: bytes, endian: str, path):
    """``(name, array)`` of one miMATRIX element; non-numeric classes give ``(name, None)``."""
    parts = list(_elements(payload, endian, path))
    if len(parts) < 3:
        raise ValueError(f"{path}: malformed MAT-file matrix")
    flags = _numeric(*parts[0], endian, path)
    mx_class, complex_flag = int(flags[0]) & 0xFF, bool(int(flags[0]) & 0x800)
    dims = tuple(int(d) for d in _numeric(*parts[1], endian, path))
    name = parts[2][1].decode("latin-1")
    if mx_class not in _MX_CLASSES or complex_flag or len(parts) < 4:
        return name, None  # cells, structs, chars, sparse, complex: not part of the GeoNet files
    # The stored type, not the class type: what scipy.io.loadmat returns by default (mat_dtype=False),
    # hence what Probe3D computed with.
    data = _numeric(*parts[3], endian, path).astype(_MI_DTYPES[parts[3][0]])  # native byte order
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: variable {name!r} has {data.size} values for dimensions {dims}")
    return name, data.reshape(dims, order="F")  # MATLAB arrays are column-major


#: Largest decompressed size of one compressed MAT-file element (a GeoNet variable is at most 480 x 640 x 3 float64,
#: 7.4 MB); a 7 MB zlib stream can otherwise inflate to gigabytes.
MAT_MAX_ELEMENT_BYTES = 256 * 2**20


def _inflate(payload: bytes, endian: str, path) -> bytes:
    """Decompress one miCOMPRESSED element, bounded: the inner element's declared size (its 8-byte tag) must not
    exceed ``MAT_MAX_ELEMENT_BYTES``, and no more than that size (plus padding) is ever inflated."""
    decompressor = zlib.decompressobj()
    try:
        head = decompressor.decompress(payload, 8)
        if len(head) < 8:
            raise ValueError(f"{path}: a compressed MAT-file element holds fewer than 8 bytes (a truncated or corrupt file)")
        kind, size = struct.unpack(endian + "II", head)
        declared = 4 if kind >> 16 else size  # a small data element keeps its data inside the tag
        if declared > MAT_MAX_ELEMENT_BYTES:
            raise ValueError(
                f"{path}: a compressed MAT-file element declares {declared} bytes once inflated, more than the "
                f"{MAT_MAX_ELEMENT_BYTES} allowed (a GeoNet variable is ~7 MB); refused before inflating"
            )
        body = decompressor.decompress(decompressor.unconsumed_tail, declared + 8)
    except zlib.error as error:
        raise ValueError(f"{path}: corrupt compressed MAT-file element: {error}") from None
    if decompressor.unconsumed_tail:
        raise ValueError(f"{path}: a compressed MAT-file element inflates to more than its declared {declared} bytes; refused")
    return head + body


def load_mat_v5(path: str | Path) -> dict[str, np.ndarray]:
    """Numeric variables of a MATLAB level-5 (v5 / v6 / v7, zlib-compressed or not) ``.mat`` file.

    What ``scipy.io.loadmat`` returns for real numeric arrays (the stored dtype, MATLAB
    dimensions, as scipy's default ``mat_dtype=False``), without scipy. v7.3 files are HDF5 and are refused with a clear error.
    """
    from snd.safe_io import require_regular_file

    path = require_regular_file(path, what="a MATLAB v5 .mat file", error=ValueError)  # a FIFO would block read_bytes
    data = path.read_bytes()
    if len(data) < 128:
        raise ValueError(f"{path}: not a MAT-file (shorter than the 128-byte header)")
    if data[:8] == b"\x89HDF\r\n\x1a\n" or data[512:520] == b"\x89HDF\r\n\x1a\n":
        raise ValueError(f"{path}: MATLAB v7.3 (HDF5) file; GeoNet's files are MAT v5")
    indicator = data[126:128]
    if indicator == b"IM":
        endian = "<"
    elif indicator == b"MI":
        endian = ">"
    else:
        raise ValueError(f"{path}: not a MAT v5 file (no 'MI'/'IM' endian indicator at byte 126)")
    variables = {}
    try:
        for kind, payload in _elements(data[128:], endian, path):
            if kind == _MI_COMPRESSED:
                payload = _inflate(payload, endian, path)
                inner = list(_elements(payload, endian, path))
                if not inner:
                    continue
                kind, payload = inner[0]
            if kind != _MI_MATRIX:
                continue
            name, array = _matrix(payload, endian, path)
            if array is not None:
                variables[name] = array
    except (struct.error, IndexError, TypeError, ValueError, OverflowError, UnicodeDecodeError) as error:
        if isinstance(error, ValueError) and str(error).startswith(str(path)):
            raise
        raise ValueError(f"{path}: malformed MAT-file ({type(error).__name__}: {error}); expected a MATLAB v5 file of numeric arrays") from None
    return variables


# ----------------------------------------------------------------------------------- GeoNet trainval
class GeoNetNormals(torch.utils.data.Dataset):
    """NYU GeoNet ``trainval`` frames as Probe3D's ``NYU_geonet`` reads them (before augmentation).

    Each item: ``image`` ``[3, 480, 640]`` in [0, 1] (``img + 2 x mean`` cast to uint8, then / 255),
    ``depth`` ``[1, 480, 640]`` metres with depth > 10 set to 0, ``snorm`` ``[3, 480, 640]``.

    Args:
        root: the ``nyu_geonet`` folder of ``.mat`` files.
        drop_bad_indices: delete Probe3D's two bad entries (21181, then 6919) of the sorted
            listing. ``"auto"`` (default) does so when the folder has more than 21,181 files (the
            real set) and warns otherwise (a subset or a fixture); ``True`` requires it; ``False``
            keeps every file.
    """

    name = "nyu-geonet-trainval"
    BAD_INDICES = GEONET_BAD_INDICES

    def __init__(self, root: str | Path, drop_bad_indices: bool | str = "auto"):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"NYU GeoNet: {self.root} is not a folder (expected Probe3D's nyu_geonet/ of .mat files)")
        # every .mat entry but folders: a named pipe or dangling link is refused by name when read, not silently skipped
        files = sorted(p.name for p in self.root.iterdir() if p.suffix == ".mat" and not p.is_dir())
        if not files:
            raise ValueError(f"NYU GeoNet: no .mat file in {self.root}")
        bad_indices = self.BAD_INDICES
        enough = len(files) > max(bad_indices)
        if drop_bad_indices is True and not enough:
            raise ValueError(
                f"NYU GeoNet: {self.root} has {len(files)} files; Probe3D's bad indices {bad_indices} need the full set"
            )
        self.dropped: tuple[str, ...] = ()
        if drop_bad_indices is True or (drop_bad_indices == "auto" and enough):
            dropped = []
            for index in bad_indices:  # 21181 first, so 6919 still refers to the sorted listing
                dropped.append(files.pop(index))
            self.dropped = tuple(dropped)
        elif drop_bad_indices == "auto":
            warnings.warn(
                f"NYU GeoNet: {self.root} has {len(files)} .mat files, not the full GeoNet set; Probe3D's bad-index "
                f"removal {bad_indices} is skipped",
                stacklevel=2,
            )
        elif drop_bad_indices is not False:
            raise ValueError(f"drop_bad_indices must be True, False or 'auto', got {drop_bad_indices!r}")
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict:
        path = self.root / self.files[index]
        variables = load_mat_v5(path)
        for key in ("img", "depth", "norm"):
            if key not in variables:
                raise ValueError(f"NYU GeoNet: {path} has no numeric variable {key!r} (has {sorted(variables)})")
        image = np.array(variables["img"][:480, :640], copy=True)  # [480, 640, 3], stored dtype (sums truncate to it)
        depth = np.array(variables["depth"][:480, :640], copy=True)  # [480, 640], stored dtype
        normals = np.asarray(variables["norm"][:480, :640], dtype=np.float32)  # [480, 640, 3]
        if image.shape != (480, 640, 3) or depth.shape != (480, 640) or normals.shape != (480, 640, 3):
            raise ValueError(
                f"NYU GeoNet: {path}: expected img [>=480, >=640, 3], depth [>=480, >=640], norm [>=480, >=640, 3]; "
                f"got {variables['img'].shape}, {variables['depth'].shape}, {variables['norm'].shape}"
            )
        for key, values in (("depth", depth), ("norm", normals)):
            bad = ~np.isfinite(values)
            if bad.any():
                where = tuple(int(v) for v in np.argwhere(bad)[0])
                raise ValueError(f"NYU GeoNet: {path}: variable {key!r} holds a non-finite value at {where} ({int(bad.sum())} "
                                 "such); expected finite ground truth")
        for channel, mean in enumerate(GEONET_MEAN_RGB):
            image[:, :, channel] = image[:, :, channel] + 2 * mean
        image = image.astype(np.uint8)  # as Probe3D (values outside [0, 255] wrap as numpy casts them)
        depth[depth > NYU_MAX_DEPTH] = 0  # in the stored dtype, as Probe3D
        return {
            "image": torch.from_numpy(image).permute(2, 0, 1).float() / 255.0,  # [3, 480, 640]
            "depth": torch.from_numpy(depth.astype(np.float32))[None],  # [1, 480, 640]
            "snorm": torch.from_numpy(normals.copy()).permute(2, 0, 1),  # [3, 480, 640]
            "file": self.files[index],
        }


# ----------------------------------------------------------------------------------- NYUv2 test
class NYUTestNormals(torch.utils.data.Dataset):
    """Probe3D's NYUv2 test split (``NYU_test``) from ``nyuv2_snorm_all.pkl``.

    Items as :class:`GeoNetNormals` (``image`` in [0, 1], ``depth`` ``[1, H, W]`` > 10 m set to 0,
    ``snorm`` ``[3, H, W]``) plus ``nyu_index``; full 480 x 640 frames (the protocol crops).
    """

    name = "nyuv2-test"

    def __init__(self, root: str | Path):
        from snd.eval.datasets import check_nyu_arrays, load_numpy_pickle

        path = Path(root)
        path = path / NYU_TEST_FILE if path.is_dir() else path
        if not path.is_file():
            raise FileNotFoundError(f"NYUv2 test: {path} not found (expected Probe3D's {NYU_TEST_FILE})")
        data = load_numpy_pickle(path, f"Probe3D's {NYU_TEST_FILE} (a dict of numpy arrays)")
        if not isinstance(data, dict):
            raise ValueError(f"NYUv2 test: {path} should hold a dict, got {type(data).__name__}")
        for key in ("images", "depths", "snorms", "test_indices"):
            if key not in data:
                raise ValueError(f"NYUv2 test: {path} has no '{key}' entry (keys: {sorted(data)})")
        self.path = path
        self.indices = [int(i) for i in check_nyu_arrays(data, path, ("test_indices",), "NYUv2 test")["test_indices"]]
        self.images, self.depths, self.snorms = data["images"], data["depths"], data["snorms"]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict:
        from snd.eval.datasets import check_nyu_item

        i = self.indices[index]
        check_nyu_item(self.path, i, np.asarray(self.depths[i]), where="NYUv2 test")
        image = torch.from_numpy(np.asarray(self.images[i], dtype=np.uint8).copy()).float() / 255.0  # [3, H, W]
        depth = np.array(self.depths[i], copy=True)
        depth[depth > NYU_MAX_DEPTH] = 0  # in the stored dtype, as Probe3D
        depth = torch.from_numpy(depth.astype(np.float32))
        snorm = torch.from_numpy(np.array(self.snorms[i], dtype=np.float32, copy=True))
        if snorm.shape != (3,) + tuple(depth.shape) or tuple(image.shape[-2:]) != tuple(depth.shape):
            raise ValueError(
                f"NYUv2 test: {self.path}: item {i}: image {tuple(image.shape)}, depth {tuple(depth.shape)} and "
                f"snorm {tuple(snorm.shape)} do not match ([3, H, W], [H, W], [3, H, W])"
            )
        return {"image": image, "depth": depth[None], "snorm": snorm, "nyu_index": i}


# ----------------------------------------------------------------------------------- ScanNet pairs
class ScanNetPairsProbe3D(torch.utils.data.Dataset):
    """The 1,500 ScanNet test pairs exactly as Probe3D's ``ScanNetPairsDataset`` returns them.

    Each item: ``rgb_0``/``rgb_1`` ``[3, 480, 640]`` in [0, 1] (PIL bilinear resize to 480 x 640
    when the JPEG has another size), ``depth_0``/``depth_1`` ``[1, H, W]`` metres (PNG / 1000,
    native size), ``K`` ``[3, 3]`` pixels (``intrinsics.npz``, unchanged), ``Rt_1`` ``[4, 4]`` the
    relative pose ``inv(pose_1) @ pose_0`` (computed in float64, returned as float32).
    """

    name = "scannet-pairs-1500"
    IMAGE_SIZE = (480, 640)

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.intrinsics, self.pairs = read_scannet_pairs_index(self.root)
        for scene, _, _ in self.pairs:
            if np.shape(self.intrinsics[scene]) != (3, 3):
                raise ValueError(f"ScanNet pairs: intrinsics of {scene} should be 3 x 3, got {np.shape(self.intrinsics[scene])}")

    def __len__(self) -> int:
        return len(self.pairs)

    def _rgb(self, path: Path) -> torch.Tensor:
        image = to_rgb(open_image_file(path, what="a ScanNet pairs colour image", error=ValueError), name=str(path))
        height, width = self.IMAGE_SIZE
        if image.size != (width, height):
            image = image.resize((width, height), Image.BILINEAR)  # torchvision Resize on a PIL image
        array = np.asarray(image, dtype=np.uint8)
        return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255.0  # [3, 480, 640]

    @staticmethod
    def _depth(path: Path) -> torch.Tensor:
        image = open_image_file(path, what="a ScanNet pairs 16-bit depth PNG", error=ValueError)
        if image.mode not in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
            raise ValueError(f"{path}: depth map has mode {image.mode!r}; expected a single-channel 16-bit PNG (8-bit depth would read as at most 255 mm)")
        array = np.array(image)
        if array.ndim != 2:
            raise ValueError(f"ScanNet pairs: depth {path} should be a single-channel 16-bit PNG, got shape {array.shape}")
        from snd.eval.datasets import check_scannet_depth_size

        check_scannet_depth_size(array.shape, path)
        return torch.tensor(array).float()[None] / 1000.0  # [1, H, W]

    @staticmethod
    def _pose(path: Path) -> torch.Tensor:
        require_regular_file(path, what="a 4 x 4 pose text file", error=ValueError)  # np.loadtxt would block on a FIFO
        try:
            pose = np.loadtxt(path, delimiter=" ")
        except (OSError, ValueError) as error:
            raise ValueError(f"ScanNet pairs: cannot read pose {path}: {error}") from error
        if pose.shape != (4, 4) or not np.isfinite(pose).all():
            raise ValueError(f"ScanNet pairs: pose {path} should be a finite 4 x 4 camera-to-world matrix, got {pose.shape}")
        from snd.eval.datasets import check_rigid_pose

        check_rigid_pose(pose, path)
        return torch.tensor(pose)  # float64

    def __getitem__(self, index: int) -> dict:
        scene, frame0, frame1 = self.pairs[index]
        folder = self.root / scene
        pose0, pose1 = self._pose(folder / "pose" / f"{frame0}.txt"), self._pose(folder / "pose" / f"{frame1}.txt")
        return {
            "scene": scene,
            "frame_0": frame0,
            "frame_1": frame1,
            "K": torch.tensor(self.intrinsics[scene]).float(),
            "rgb_0": self._rgb(folder / "color" / f"{frame0}.jpg"),
            "rgb_1": self._rgb(folder / "color" / f"{frame1}.jpg"),
            "depth_0": self._depth(folder / "depth" / f"{frame0}.png"),
            "depth_1": self._depth(folder / "depth" / f"{frame1}.png"),
            "Rt_1": (pose1.inverse() @ pose0).float(),  # camera 0 -> camera 1
        }
