"""Evaluation datasets in the layouts users have on disk, plus the synthetic benchmark.

Dense datasets (depth / normals / segmentation probes) return per item a dict with
``image`` ``[3, H, W]`` float in [0, 1] and, where the source has them, ``depth`` ``[H, W]``
(metres, 0 = invalid), ``normals`` ``[3, H, W]`` (camera frame), ``normal_valid`` ``[H, W]`` bool,
``semantics`` ``[H, W]`` int64 (``IGNORE_INDEX`` = unlabelled).

Pair datasets (correspondence) return ``image0``/``image1`` ``[3, H, W]``, ``depth0``/``depth1``
``[H, W]``, ``intrinsics`` ``[3, 3]`` (normalised, shared by both views) and ``pose0``/``pose1``
``[4, 4]`` camera-to-world (OpenCV axes).

Layouts:

* **synthetic**: procedural scenes from :mod:`snd.data.synthetic` (exact depth, normals, classes).
* **nyuv2** (Probe3D): ``<root>/nyuv2_snorm_all.pkl`` with ``images`` ``[N, 3, 480, 640]`` uint8,
  ``depths`` ``[N, 480, 640]`` metres, ``snorms`` ``[N, 3, 480, 640]``, ``train_indices``,
  ``test_indices`` (and optionally ``labels`` ``[N, 480, 640]`` NYU-40 ids, 0 = unlabelled).
* **scannet_pairs** (Probe3D, the 1,500 ScanNet test pairs): ``<root>/test.npz`` (``name``
  ``[P, 4]``: room, sequence, frame0, frame1), ``<root>/intrinsics.npz`` (``sceneXXXX_YY`` ->
  3x3 pixel K of the 640 x 480 images), ``<root>/sceneXXXX_YY/{color/<f>.jpg, depth/<f>.png (mm),
  pose/<f>.txt (4x4 camera-to-world)}``.
* **scannetpp** (FiT3D ``eval_data/scannetpp``): depth from split files
  ``scannetpp_{train,val}.txt`` (lines ``<image> <depth png in mm> ...``; ``None`` depth skipped);
  segmentation from ``images/{training,validation}/*.JPG`` with
  ``annotations/{training,validation}/<stem>.png`` (uint8, 0 = unlabelled, classes 1..100).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..safe_io import load_npz, open_image_file, path_inside, read_text, require_regular_file, to_rgb

IGNORE_INDEX = 255
TASKS = ("depth", "normals", "segmentation", "correspondence")
DATASETS = ("synthetic", "nyuv2", "scannet_pairs", "scannetpp")


class DenseEvalDataset(torch.utils.data.Dataset):
    """Base class: a list of dense items plus what the probes need to know about them."""

    name: str = "dense"
    tasks: tuple[str, ...] = ()
    num_classes: int | None = None
    class_names: tuple[str, ...] | None = None
    min_depth: float = 1e-3
    max_depth: float = 10.0
    nyu_crop: bool = False  # evaluate depth inside the Eigen crop (NYUv2 only)

    @property
    def cache_key(self) -> str:
        return self.name


def check_int_setting(name: str, value, low: int | None = None, optional: bool = False) -> None:
    """An integer setting (not a bool, float or string) at least ``low``; the error names the setting."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer{' or None' if optional else ''}, got {type(value).__name__} {value!r}")
    if low is not None and value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")


def _read_image(path: Path) -> torch.Tensor:
    image = open_image_file(path, what="an RGB image", error=ValueError)  # regular file, decompression bombs named
    array = np.asarray(to_rgb(image, name=str(path)), dtype=np.uint8)  # 16-bit scaled, not clipped to white
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255.0


def _read_depth_png(path: Path, scale: float = 1000.0) -> torch.Tensor:
    image = open_image_file(path, what="a 16-bit depth PNG", error=ValueError)
    if image.mode not in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        raise ValueError(f"{path}: depth map has mode {image.mode!r}; expected a single-channel 16-bit PNG (8-bit depth would read as at most 255 mm)")
    array = np.asarray(image)
    if array.ndim != 2:
        raise ValueError(f"depth map {path} should be a single-channel 16-bit PNG, got shape {array.shape}")
    return torch.from_numpy(array.astype(np.float32) / scale)


def _resize_image(image: torch.Tensor, size) -> torch.Tensor:
    if size is None or tuple(image.shape[-2:]) == tuple(size):
        return image
    return F.interpolate(image[None], size=tuple(size), mode="bilinear", align_corners=False, antialias=True)[0]


# ----------------------------------------------------------------------------------- synthetic
@dataclass
class SyntheticEvalConfig:
    """The synthetic benchmark: disjoint train/test scenes rendered with exact ground truth.

    Args:
        train_scenes, test_scenes: scenes for probe training / testing (disjoint). Default 6 / 2.
        frames_per_scene: frames on each camera arc. Default 24.
        frame_stride: dense sets keep every ``frame_stride``-th frame. Default 2.
        image_size: square render size. Default 112 (8 x 8 patches of 14 px).
        pair_gaps: frame gaps of the correspondence pairs (about 4.3 degrees per frame). Default
            (2, 5, 10, 16), which spreads the pairs over the 0-15 / 15-30 / 30-60 / 60-180 bins.
        pair_starts: start frames of the pairs in each test scene. Default (0, 4).
        seed: scene seed; differs from the distillation default so the test scenes are unseen.
    """

    train_scenes: int = 6
    test_scenes: int = 2
    frames_per_scene: int = 24
    frame_stride: int = 2
    image_size: int = 112
    pair_gaps: tuple[int, ...] = (2, 5, 10, 16)
    pair_starts: tuple[int, ...] = (0, 4)
    seed: int = 1000

    #: Largest synthetic render side (a typo such as 10**6 would ask for terabytes)
    MAX_IMAGE_SIZE = 4096

    def __post_init__(self) -> None:
        for name, low in (("train_scenes", 1), ("test_scenes", 1), ("frames_per_scene", 1), ("frame_stride", 1),
                          ("image_size", 1), ("seed", 0)):
            check_int_setting(f"SyntheticEvalConfig.{name}", getattr(self, name), low)
        if self.image_size > self.MAX_IMAGE_SIZE:
            raise ValueError(f"SyntheticEvalConfig.image_size must be at most {self.MAX_IMAGE_SIZE} pixels, got {self.image_size}")
        for name in ("pair_gaps", "pair_starts"):
            values = tuple(getattr(self, name))
            for value in values:
                check_int_setting(f"SyntheticEvalConfig.{name}", value, 1 if name == "pair_gaps" else 0)
            setattr(self, name, values)

    def scene_config(self):
        from snd.data.synthetic import SyntheticSceneConfig

        return SyntheticSceneConfig(
            num_scenes=self.train_scenes + self.test_scenes,
            num_frames=self.frames_per_scene,
            height=self.image_size,
            width=self.image_size,
            seed=self.seed,
        )

    def scene_indices(self, split: str) -> range:
        if split == "train":
            return range(self.train_scenes)
        if split == "test":
            return range(self.train_scenes, self.train_scenes + self.test_scenes)
        raise ValueError(f"synthetic split must be 'train' or 'test', got {split!r}")


class SyntheticDenseDataset(DenseEvalDataset):
    """Frames of synthetic scenes with exact depth, camera-frame normals and 6 semantic classes."""

    tasks = ("depth", "normals", "segmentation")
    max_depth = 10.0

    def __init__(self, config: SyntheticEvalConfig | None = None, split: str = "train"):
        from snd.data.synthetic import SEMANTIC_CLASSES, generate_scene

        self.config = config or SyntheticEvalConfig()
        self.split = split
        self.name = f"synthetic-{split}"
        self.class_names = tuple(SEMANTIC_CLASSES)
        self.num_classes = len(SEMANTIC_CLASSES)
        scene_config = self.config.scene_config()
        frames = torch.arange(0, self.config.frames_per_scene, self.config.frame_stride)
        images, depths, normals, semantics = [], [], [], []
        for index in self.config.scene_indices(split):
            views = generate_scene(scene_config, index).render(frames).views
            images.append(views.images)
            depths.append(views.depths)
            normals.append(views.normals)
            semantics.append(views.semantics)
        self.images = torch.cat(images)
        self.depths = torch.cat(depths)
        self.normals = torch.cat(normals)
        self.semantics = torch.cat(semantics)

    @property
    def cache_key(self) -> str:
        c = self.config
        return f"synthetic-{self.split}-s{c.seed}-n{c.train_scenes}x{c.test_scenes}-f{c.frames_per_scene}-{c.frame_stride}-{c.image_size}"

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> dict:
        depth = self.depths[index]
        return {
            "image": self.images[index],
            "depth": depth,
            "normals": self.normals[index],
            "normal_valid": depth > 0,
            "semantics": self.semantics[index],
        }


class SyntheticPairsDataset(torch.utils.data.Dataset):
    """Frame pairs of the synthetic test scenes, at several baselines, with exact depth and poses."""

    name = "synthetic-pairs"

    def __init__(self, config: SyntheticEvalConfig | None = None):
        from snd.data.synthetic import generate_scene

        self.config = config or SyntheticEvalConfig()
        scene_config = self.config.scene_config()
        self.items = []
        for index in self.config.scene_indices("test"):
            scene = generate_scene(scene_config, index)
            for start in self.config.pair_starts:
                for gap in self.config.pair_gaps:
                    if start + gap >= scene.num_frames:
                        continue
                    views = scene.render([start, start + gap]).views
                    self.items.append(
                        {
                            "image0": views.images[0],
                            "image1": views.images[1],
                            "depth0": views.depths[0],
                            "depth1": views.depths[1],
                            "intrinsics": views.intrinsics[0],
                            "pose0": views.extrinsics[0],
                            "pose1": views.extrinsics[1],
                        }
                    )
        if not self.items:
            raise ValueError("SyntheticEvalConfig gives no pair: pair_starts + pair_gaps exceed frames_per_scene")

    @property
    def cache_key(self) -> str:
        c = self.config
        return f"synthetic-pairs-s{c.seed}-n{c.train_scenes}x{c.test_scenes}-{c.image_size}-{c.pair_gaps}-{c.pair_starts}"

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        return self.items[index]


# ----------------------------------------------------------------------------------- NYUv2
class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a Probe3D pickle needs nothing else."""

    _ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"), ("builtins", "slice"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),  # pickle protocol 5 arrays
    }

    #: bytes any one array may claim (set per file: its size; a real array's data is stored in the file)
    max_bytes: int = 1 << 62

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: only numpy arrays are expected")
        found = super().find_class(module, name)
        if name == "_reconstruct":
            return self._checked_reconstruct(found)
        if name == "_frombuffer":
            return _checked_frombuffer(found)
        if (module, name) == ("numpy", "ndarray"):
            return _CheckedNdarray(self.max_bytes)
        return found

    def _checked_reconstruct(self, reconstruct):
        limit = self.max_bytes

        def checked(subtype, shape, dtype):
            subtype = np.ndarray if isinstance(subtype, _CheckedNdarray) else subtype
            _check_claim(shape, dtype, limit)
            return reconstruct(subtype, shape, dtype)

        return checked


def _check_claim(shape, dtype, limit: int) -> None:
    """Refuse an array shape whose bytes exceed ``limit`` (the pickle's file size) before numpy allocates it."""
    dims = shape if isinstance(shape, (tuple, list)) else (shape,)
    count = 1
    for dim in dims:
        if not isinstance(dim, (int, np.integer)) or dim < 0:
            raise pickle.UnpicklingError(f"array shape {shape!r} is not a tuple of non-negative integers")
        count *= int(dim)
    itemsize = np.dtype(dtype).itemsize if not isinstance(dtype, bytes) else 1
    if count * max(itemsize, 1) > limit:
        raise pickle.UnpicklingError(
            f"an array of shape {tuple(dims)} ({count * max(itemsize, 1)} bytes) is claimed, more than the {limit}-byte file "
            "holds; refused before allocating"
        )


def _checked_frombuffer(frombuffer):
    """numpy's protocol-5 array rebuild: the shape must describe exactly the buffer the file holds."""

    def checked(buffer, dtype, shape, order):
        dims = shape if isinstance(shape, (tuple, list)) else (shape,)
        _check_claim(dims, dtype, len(memoryview(buffer).cast("B")))
        return frombuffer(buffer, dtype, shape, order)

    return checked


class _CheckedNdarray:
    """``numpy.ndarray`` as a pickle may call it (``ndarray(shape, dtype)`` allocates): the size is checked first."""

    def __init__(self, limit: int):
        self.limit = limit

    def __call__(self, shape, dtype=float, *args, **kwargs):
        _check_claim(shape, dtype, self.limit)
        return np.ndarray(shape, dtype, *args, **kwargs)


class PickleDataError(pickle.UnpicklingError, ValueError):
    """A data pickle is malformed, or asks for code or memory it should not; the message names the file."""


def load_numpy_pickle(path: str | Path, what: str = "a pickle of numpy arrays"):
    """Unpickle numpy arrays and plain containers from ``path`` without running code or over-allocating.

    The file (a regular file; a FIFO would block) is read into memory once, so an opcode claiming TiBs of bytes
    finds the data short instead of asking the OS for them; every array shape is checked against the file size
    before numpy allocates it. A malformed file raises :class:`PickleDataError` (a ``ValueError``) naming the file and what was expected.
    """
    import io
    import pickletools

    from ..safe_io import require_regular_file

    path = require_regular_file(path, what=what, error=ValueError)
    data = path.read_bytes()
    try:
        for _ in pickletools.genops(io.BytesIO(data)):  # framing: lengths within the file, a STOP at the end
            pass
        unpickler = _NumpyOnlyUnpickler(io.BytesIO(data))
        unpickler.max_bytes = len(data)
        return unpickler.load()
    except (pickle.UnpicklingError, ValueError, EOFError, TypeError, AttributeError, IndexError, KeyError, MemoryError,
            OverflowError, RecursionError) as error:
        raise PickleDataError(f"{path}: malformed or hostile pickle ({type(error).__name__}: {str(error)[:300]}); expected {what}") from None


def check_nyu_arrays(data: dict, path, split_keys=("test_indices",), where: str = "NYUv2") -> dict[str, np.ndarray]:
    """Shapes, dtypes and index ranges of a Probe3D NYU pickle's arrays, each error naming the file and the key:
    ``images`` [N, 3, H, W] uint8, ``depths`` [N, H, W], ``snorms`` [N, 3, H, W], ``labels`` [N, H, W] integers (optional)
    and the split's index arrays: non-empty integers in [0, N). Returns the index arrays as int64."""
    for key in ("images", "depths", "snorms"):
        value = data[key]
        if not isinstance(value, np.ndarray) or value.dtype.kind not in "biuf":
            kind = value.dtype if isinstance(value, np.ndarray) else type(value).__name__
            raise ValueError(f"{where}: {path}: '{key}' is {kind}; expected a numeric numpy array")
    images = data["images"]
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"{where}: {path}: 'images' should be [N, 3, H, W] uint8, got shape {images.shape}")
    if images.dtype != np.uint8:
        raise ValueError(f"{where}: {path}: 'images' is {images.dtype}; expected uint8 pixel values 0..255 (as Probe3D's "
                         "create_nyu_pkl.py writes them)")
    count, _, height, width = images.shape
    expected = {"depths": (count, height, width), "snorms": (count, 3, height, width)}
    labels = data.get("labels")
    if labels is not None:
        if not isinstance(labels, np.ndarray) or labels.dtype.kind not in "iu":
            raise ValueError(f"{where}: {path}: 'labels' should be an integer array of NYU-40 ids, got "
                             f"{labels.dtype if isinstance(labels, np.ndarray) else type(labels).__name__}")
        expected["labels"] = (count, height, width)
    for key, shape in expected.items():
        if tuple(data[key].shape) != shape:
            raise ValueError(f"{where}: {path}: '{key}' has shape {tuple(data[key].shape)}; expected {shape} to match "
                             f"'images' {tuple(images.shape)}")
    indices = {}
    for key in split_keys:
        raw = np.asarray(data[key])
        if raw.dtype.kind not in "iu":
            raise ValueError(f"{where}: {path}: '{key}' is {raw.dtype}; expected integer image indices")
        raw = raw.astype(np.int64).reshape(-1)
        if raw.size == 0:
            raise ValueError(f"{where}: {path}: '{key}' is empty; the split has no image")
        bad = raw[(raw < 0) | (raw >= count)]
        if bad.size:
            raise ValueError(f"{where}: {path}: '{key}' holds {bad[:5].tolist()}, outside [0, {count}) ({count} images)")
        indices[key] = raw
    return indices


def check_nyu_item(path, index: int, depth: np.ndarray, labels: np.ndarray | None = None, where: str = "NYUv2") -> None:
    """One NYU frame's ground truth: finite, non-negative depth; NYU-40 labels in 0..40."""
    bad = ~np.isfinite(depth) | (depth < 0)
    if bad.any():
        y, x = np.argwhere(bad)[0]
        raise ValueError(f"{where}: {path}: 'depths'[{index}] holds {float(depth[y, x])!r} at pixel ({y}, {x}) ({int(bad.sum())} such); "
                         "expected finite depths >= 0 in metres (0 = no measurement)")
    if labels is not None and labels.size and (labels.min() < 0 or labels.max() > 40):
        raise ValueError(f"{where}: {path}: 'labels'[{index}] ranges {labels.min()}..{labels.max()}; expected NYU-40 ids 0..40 "
                         "(0 = unlabelled)")


class NYUv2Dataset(DenseEvalDataset):
    """NYUv2 as Probe3D prepares it (``nyuv2_snorm_all.pkl``); depth above 10 m is invalid.

    Normals are valid where depth is (Probe3D's mask). Segmentation needs an optional ``labels``
    array (NYU-40 ids, 0 = unlabelled) in the pickle. Depth is evaluated inside the Eigen crop.
    """

    max_depth = 10.0
    nyu_crop = True
    FILE_NAME = "nyuv2_snorm_all.pkl"

    def __init__(self, root: str | Path, split: str = "train"):
        path = Path(root)
        path = path / self.FILE_NAME if path.is_dir() else path
        if not path.is_file():
            raise FileNotFoundError(f"NYUv2: {path} not found (expected Probe3D's {self.FILE_NAME})")
        if split not in ("train", "test"):
            raise ValueError(f"NYUv2 split must be 'train' or 'test', got {split!r}")
        data = load_numpy_pickle(path, f"Probe3D's {self.FILE_NAME} (a dict of numpy arrays)")
        if not isinstance(data, dict):
            raise ValueError(f"NYUv2: {path} should hold a dict of arrays, got {type(data).__name__}")
        for key in ("images", "depths", "snorms", "train_indices", "test_indices"):
            if key not in data:
                raise ValueError(f"NYUv2: {path} has no '{key}' entry (keys: {sorted(data)})")
        self.path = path
        self.split = split
        self.name = f"nyuv2-{split}"
        self.indices = check_nyu_arrays(data, path, (f"{split}_indices",))[f"{split}_indices"]
        self.images, self.depths, self.snorms = data["images"], data["depths"], data["snorms"]
        self.labels = data.get("labels")
        self.tasks = ("depth", "normals") + (("segmentation",) if self.labels is not None else ())
        self.num_classes = 40 if self.labels is not None else None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict:
        i = int(self.indices[index])
        raw_labels = None if self.labels is None else np.asarray(self.labels[i])
        check_nyu_item(self.path, i, np.asarray(self.depths[i]), raw_labels)
        depth = torch.from_numpy(np.asarray(self.depths[i], dtype=np.float32).copy())
        depth[depth > self.max_depth] = 0
        item = {
            "image": torch.from_numpy(np.asarray(self.images[i], dtype=np.float32)) / 255.0,
            "depth": depth,
            "normals": torch.from_numpy(np.asarray(self.snorms[i], dtype=np.float32).copy()),
            "normal_valid": depth > 0,
        }
        if self.labels is not None:
            labels = torch.from_numpy(raw_labels.astype(np.int64))
            item["semantics"] = torch.where(labels > 0, labels - 1, torch.full_like(labels, IGNORE_INDEX))
        return item


# ----------------------------------------------------------------------------------- ScanNet++
class ScanNetPPDepthDataset(DenseEvalDataset):
    """ScanNet++ depth in FiT3D's layout (split file of image / depth-png pairs, depth in mm, max 20 m)."""

    tasks = ("depth",)
    max_depth = 20.0

    def __init__(self, root: str | Path, split: str = "train", depth_scale: float = 1000.0):
        self.root = Path(root)
        split_name = {"train": "scannetpp_train.txt", "test": "scannetpp_val.txt", "val": "scannetpp_val.txt"}.get(split)
        if split_name is None:
            raise ValueError(f"ScanNet++ split must be 'train' or 'test', got {split!r}")
        split_file = self.root / split_name
        if not split_file.is_file():
            raise FileNotFoundError(f"ScanNet++ depth: split file {split_file} not found")
        self.name = f"scannetpp-depth-{split}"
        self.depth_scale = depth_scale
        self.items = []
        for line_number, line in enumerate(read_text(split_file, what="a FiT3D split list").splitlines(), 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < 2:
                raise ValueError(f"{split_file}:{line_number}: expected '<image> <depth> ...', got {line!r}")
            if fields[1] == "None":
                continue
            where = f"{split_file}:{line_number}"
            self.items.append((path_inside(self.root, fields[0].lstrip("/\\"), where=where), path_inside(self.root, fields[1].lstrip("/\\"), where=where)))
        self.items.sort()
        if not self.items:
            raise ValueError(f"ScanNet++ depth: {split_file} lists no image with depth")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        image_path, depth_path = self.items[index]
        image = _read_image(image_path)
        depth = _read_depth_png(depth_path, self.depth_scale)
        if depth.shape != image.shape[-2:]:
            raise ValueError(f"{depth_path}: depth {tuple(depth.shape)} does not match image {tuple(image.shape[-2:])}")
        depth[(depth < self.min_depth) | (depth > self.max_depth)] = 0
        return {"image": image, "depth": depth}


class ScanNetPPSegmentationDataset(DenseEvalDataset):
    """ScanNet++ semantics in FiT3D's mmseg layout: 100 classes, label 0 = unlabelled (reduce_zero_label)."""

    tasks = ("segmentation",)
    num_classes = 100

    def __init__(self, root: str | Path, split: str = "train"):
        folder = {"train": "training", "test": "validation", "val": "validation"}.get(split)
        if folder is None:
            raise ValueError(f"ScanNet++ split must be 'train' or 'test', got {split!r}")
        self.root = Path(root)
        image_dir, annotation_dir = self.root / "images" / folder, self.root / "annotations" / folder
        if not image_dir.is_dir():
            raise FileNotFoundError(f"ScanNet++ segmentation: {image_dir} not found")
        self.name = f"scannetpp-seg-{split}"
        images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        self.items = []
        for image in images:
            annotation = annotation_dir / f"{image.stem}.png"
            if not annotation.is_file():
                raise FileNotFoundError(f"ScanNet++ segmentation: no annotation {annotation} for {image}")
            self.items.append((image, annotation))
        if not self.items:
            raise ValueError(f"ScanNet++ segmentation: no image in {image_dir}")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        image_path, annotation_path = self.items[index]
        image = _read_image(image_path)
        annotation = open_image_file(annotation_path, what="a single-channel label PNG", error=ValueError)
        stored = np.asarray(annotation)
        if stored.ndim != 2:
            raise ValueError(f"{annotation_path}: label map should be a single-channel PNG, got shape {stored.shape}")
        from .protocols.data import check_label_range

        check_label_range(stored, self.num_classes, annotation_path)
        labels = torch.from_numpy(stored.astype(np.int64))
        if labels.shape != image.shape[-2:]:
            raise ValueError(f"{annotation_path}: labels {tuple(labels.shape)} do not match image {tuple(image.shape[-2:])}")
        labels = torch.where(labels > 0, labels - 1, torch.full_like(labels, IGNORE_INDEX))
        return {"image": image, "semantics": labels}


# ----------------------------------------------------------------------------------- ScanNet pairs
def read_scannet_pairs_index(root: Path) -> tuple[dict[str, np.ndarray], list[tuple[str, int, int]]]:
    """LoFTR's ``scannet_test_1500`` index (``test.npz`` ``name [P, 4]``, ``intrinsics.npz`` per scene) ->
    ``(intrinsics {scene: K as stored}, pairs [(scene, frame0, frame1)])``; every pair's scene must have intrinsics."""
    for file_name in ("test.npz", "intrinsics.npz"):
        if not (root / file_name).is_file():
            raise FileNotFoundError(f"ScanNet pairs: {root / file_name} not found (LoFTR's scannet_test_1500 layout)")
    # regular files only, member sizes checked before numpy allocates them
    intrinsics = load_npz(root / "intrinsics.npz", what="LoFTR's intrinsics.npz (scene -> 3 x 3 K)")
    test = load_npz(root / "test.npz", what="LoFTR's test.npz (a 'name' array [P, 4])")
    if "name" not in test:
        raise ValueError(f"ScanNet pairs: {root / 'test.npz'} has no 'name' array (has {sorted(test)})")
    names = np.asarray(test["name"])
    for scene, k in intrinsics.items():
        k = np.asarray(k)
        if k.dtype.kind not in "iuf" or k.shape[-2:] != (3, 3) or not np.isfinite(k).all():
            raise ValueError(f"ScanNet pairs: {root / 'intrinsics.npz'}: {scene!r} is {k.dtype} {k.shape}; expected a finite 3 x 3 K in pixels")
        fx, fy = float(k[..., 0, 0].flat[0]), float(k[..., 1, 1].flat[0])
        if not (0.64 <= fx <= 6.4e6 and 0.48 <= fy <= 4.8e6):  # 1e-3 to 1e4 times the 640 x 480 ScanNet frames
            raise ValueError(
                f"ScanNet pairs: {root / 'intrinsics.npz'}: {scene!r} has focal lengths fx={fx!r}, fy={fy!r} px; expected "
                "1e-3 to 1e4 times the 640 x 480 image size (pixels)"
            )
    if names.ndim != 2 or names.shape[1] != 4:
        raise ValueError(f"ScanNet pairs: {root / 'test.npz'}: 'name' should be [P, 4] (room, sequence, frame0, frame1), got {names.shape}")
    if names.dtype.kind not in "iu":
        raise ValueError(f"ScanNet pairs: {root / 'test.npz'}: 'name' is {names.dtype}; expected integers (room, sequence, frame0, frame1)")
    if names.shape[0] == 0:
        raise ValueError(f"ScanNet pairs: {root / 'test.npz'}: 'name' lists no pair")
    if (names < 0).any():
        raise ValueError(f"ScanNet pairs: {root / 'test.npz'}: 'name' row {int(np.argwhere(names < 0)[0][0])} holds a negative "
                         "id; expected room, sequence, frame0, frame1 >= 0")
    pairs = []
    for room, sequence, frame0, frame1 in names.astype(np.int64):
        scene = f"scene{room:04d}_{sequence:02d}"
        if scene not in intrinsics:
            raise ValueError(f"ScanNet pairs: {root / 'intrinsics.npz'} has no entry {scene!r}")
        pairs.append((scene, int(frame0), int(frame1)))
    return intrinsics, pairs


def check_rigid_pose(pose: np.ndarray, path, tolerance: float = 1e-2) -> None:
    """A camera-to-world pose read from ``path`` must be rigid: orthonormal rotation with det +1, last row 0 0 0 1
    (a scaled, sheared or all-zero rotation would give wrong ground-truth correspondences without an error)."""
    rotation = pose[:3, :3]
    error = np.abs(rotation.T @ rotation - np.eye(3)).max()
    if error > tolerance or np.linalg.det(rotation) <= 0 or np.abs(pose[3] - [0, 0, 0, 1]).max() > tolerance:
        raise ValueError(f"pose {path} is not a rigid camera-to-world transform (|R^T R - I| = {error:.3g}, det R = "
                         f"{np.linalg.det(rotation):.3g}, last row {pose[3].tolist()}); expected an orthonormal rotation with "
                         "det +1 and last row 0 0 0 1")


def check_scannet_depth_size(depth_shape, path, expected=(480, 640)) -> None:
    """ScanNet pairs' depth maps must be the 640 x 480 frames ``intrinsics.npz`` describes (pixel K)."""
    if tuple(depth_shape[-2:]) != tuple(expected):
        raise ValueError(f"{path}: depth map is {depth_shape[-1]} x {depth_shape[-2]} pixels; expected {expected[1]} x "
                         f"{expected[0]}, the frames intrinsics.npz describes")


class ScanNetPairsDataset(torch.utils.data.Dataset):
    """The ScanNet test pairs in Probe3D's layout; images resized to 480 x 640 as Probe3D does."""

    name = "scannet-pairs"
    IMAGE_SIZE = (480, 640)

    def __init__(self, root: str | Path):
        self.root = Path(root)
        intrinsics, self.pairs = read_scannet_pairs_index(self.root)
        self.intrinsics = {key: value.astype(np.float64) for key, value in intrinsics.items()}

    @property
    def cache_key(self) -> str:
        return f"scannet-pairs-{len(self.pairs)}"

    def __len__(self) -> int:
        return len(self.pairs)

    def _pose(self, path: Path) -> torch.Tensor:
        require_regular_file(path, what="a 4 x 4 pose text file", error=ValueError)  # np.loadtxt would block on a FIFO
        try:
            pose = np.loadtxt(path)
        except (OSError, ValueError) as error:
            raise ValueError(f"cannot read pose {path}: {error}") from error
        if pose.shape != (4, 4) or not np.isfinite(pose).all():
            raise ValueError(f"pose {path} should be a finite 4x4 camera-to-world matrix, got shape {pose.shape}")
        check_rigid_pose(pose, path)
        return torch.from_numpy(pose).float()

    def __getitem__(self, index: int) -> dict:
        scene, frame0, frame1 = self.pairs[index]
        folder = self.root / scene
        height, width = self.IMAGE_SIZE
        k = self.intrinsics[scene][:3, :3]
        # Probe3D's intrinsics are for the 640 x 480 frames; store them normalised.
        intrinsics = torch.tensor(k, dtype=torch.float32) / torch.tensor([[640.0], [480.0], [1.0]])
        item = {"intrinsics": intrinsics}
        for slot, frame in (("0", frame0), ("1", frame1)):
            item[f"image{slot}"] = _resize_image(_read_image(folder / "color" / f"{frame}.jpg"), (height, width))
            item[f"depth{slot}"] = _read_depth_png(folder / "depth" / f"{frame}.png")
            check_scannet_depth_size(item[f"depth{slot}"].shape, folder / "depth" / f"{frame}.png")
            item[f"pose{slot}"] = self._pose(folder / "pose" / f"{frame}.txt")
        return item


# ----------------------------------------------------------------------------------- factory
def build_dense_dataset(dataset: str, task: str, split: str, data_dir: str | Path | None = None,
                        synthetic: SyntheticEvalConfig | None = None) -> DenseEvalDataset:
    """The dense dataset of ``dataset`` for ``task`` ('depth', 'normals', 'segmentation') and split."""
    if dataset == "synthetic":
        return SyntheticDenseDataset(synthetic, split)
    if data_dir is None:
        raise ValueError(f"--data-dir is required for dataset {dataset!r}")
    if dataset == "nyuv2":
        result = NYUv2Dataset(data_dir, split)
    elif dataset == "scannetpp":
        if task == "depth":
            return ScanNetPPDepthDataset(data_dir, split)
        if task == "segmentation":
            return ScanNetPPSegmentationDataset(data_dir, split)
        raise ValueError(f"ScanNet++ (FiT3D layout) has no ground truth for task {task!r}")
    else:
        raise ValueError(f"dataset {dataset!r} has no dense {task} split; dense datasets: synthetic, nyuv2, scannetpp")
    if task not in result.tasks:
        raise ValueError(f"dataset {dataset!r} at {data_dir} has no ground truth for task {task!r}")
    return result


def build_pairs_dataset(dataset: str, data_dir: str | Path | None = None,
                        synthetic: SyntheticEvalConfig | None = None) -> torch.utils.data.Dataset:
    """Image pairs for the correspondence task."""
    if dataset == "synthetic":
        return SyntheticPairsDataset(synthetic)
    if dataset == "scannet_pairs":
        if data_dir is None:
            raise ValueError("--data-dir is required for dataset 'scannet_pairs'")
        return ScanNetPairsDataset(data_dir)
    raise ValueError(f"dataset {dataset!r} has no correspondence pairs; use 'synthetic' or 'scannet_pairs'")


def supported_tasks(dataset: str) -> tuple[str, ...]:
    """Tasks a dataset name can serve (before looking at the files)."""
    return {
        "synthetic": ("depth", "normals", "segmentation", "correspondence"),
        "nyuv2": ("depth", "normals", "segmentation"),
        "scannetpp": ("depth", "segmentation"),
        "scannet_pairs": ("correspondence",),
    }[dataset]
