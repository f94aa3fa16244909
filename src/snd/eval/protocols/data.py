"""Datasets of the authors' depth and segmentation probes, in the on-disk layouts FiT3D prepares.

``--data-dir`` for each ``--dataset`` (FiT3D's ``eval_data/...``; the SnD authors' configs use the same):

* ``nyuv2`` (FiT3D ``eval_data/nyuv2``)
    - depth: ``data_depth/nyu_train.txt``, ``data_depth/nyu_test.txt``; each line
      ``/<scene>/rgb_XXXXX.jpg /<scene>/sync_depth_XXXXX.png <focal>`` relative to ``data_depth``
      (depth PNG in millimetres, ``depth_scale`` 1000; a depth of ``None`` skips the line).
    - segmentation: ``data_sem/{nyu_train_rgb, nyu_test_rgb}/*.png`` with labels
      ``data_sem/{nyuv2_train_class13, nyuv2_test_class13}/<same name>.png``: the 13-class NYUv2
      labels (0 = unlabelled, 1..13 = bed, books, ceiling, chair, floor, furniture, objects,
      painting, sofa, table, tv, wall, window). :func:`nyu40_to_nyu13` converts NYU-40 label maps.
    ``--data-dir`` may also point at ``data_depth`` / ``data_sem`` themselves.
* ``scannet`` (FiT3D ``eval_data/scannet_probe``)
    - depth: ``train_index.txt``, ``test_index.txt`` (same line format as NYU's lists).
    - segmentation: ``{train,test}/color/*.jpg`` with ``{train,test}/label/<same name>.png`` (NYU-40 ids, 0 = unlabelled).
* ``scannetpp`` (FiT3D ``eval_data/scannetpp_probe``)
    - depth: ``scannetpp_train.txt``, ``scannetpp_val.txt`` (same line format).
    - segmentation: ``images/{training,validation}/*.JPG`` with ``annotations/{training,validation}/<stem>.png``
      (0 = unlabelled, 1..100).

All label maps go through mmseg's ``reduce_zero_label``: 0 -> 255 (ignored), ``k`` -> ``k - 1``.
Items: ``image`` ``[3, H, W]`` float RGB in [0, 1]; ``depth`` ``[H, W]`` metres (as stored, 0 = no
measurement); ``labels`` ``[H, W]`` int64.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ...safe_io import open_image_file, path_inside, read_text, to_rgb

IGNORE_INDEX = 255

# The 13 NYUv2 classes (FiT3D / SnD ``NYUV2Dataset.CLASSES``) and NYU-40 -> NYU-13 (ankurhanda's
# nyuv2-meta-data ``class13Mapping``, the labels FiT3D's ``nyuv2_*_class13`` folders hold).
NYU13_CLASSES = ("bed", "books", "ceiling", "chair", "floor", "furniture", "objects", "painting", "sofa", "table",
                 "tv", "wall", "window")
NYU40_TO_NYU13 = (0, 12, 5, 6, 1, 4, 9, 10, 12, 13, 6, 8, 6, 13, 10, 6, 13, 6, 7, 7, 5, 7, 3, 2, 6, 11, 7, 7, 7, 7,
                  7, 7, 6, 7, 7, 7, 7, 7, 7, 6, 7)


def nyu40_to_nyu13(labels) -> np.ndarray:
    """Map NYU-40 ids (0 = unlabelled, 1..40) to the 13-class ids (0 = unlabelled, 1..13)."""
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() > 40):
        raise ValueError(f"nyu40_to_nyu13: labels must be NYU-40 ids in 0..40, got range {labels.min()}..{labels.max()}")
    return np.asarray(NYU40_TO_NYU13, dtype=np.uint8)[labels]


def reduce_zero_label(labels: np.ndarray) -> np.ndarray:
    """mmseg ``reduce_zero_label``: 0 -> 255, k -> k - 1 (and a stored 255 stays 255)."""
    labels = labels.astype(np.int64)
    labels[labels == 0] = 256
    labels = labels - 1
    labels[labels == 254] = IGNORE_INDEX
    return labels


def read_image(path: Path) -> torch.Tensor:
    """An RGB image file as ``[3, H, W]`` float in [0, 1]."""
    image = open_image_file(path, what="an RGB image", error=ValueError)  # regular file, decompression bombs named
    array = np.asarray(to_rgb(image, name=str(path)), dtype=np.float32)  # 16-bit scaled, not clipped to white
    return torch.from_numpy(array).permute(2, 0, 1).contiguous() / 255.0


def read_depth(path: Path, depth_scale: float = 1000.0) -> torch.Tensor:
    """A 16-bit depth PNG as ``[H, W]`` metres (``png / depth_scale``), as ``DepthLoadAnnotations`` reads it."""
    image = open_image_file(path, what="a 16-bit depth PNG", error=ValueError)
    if image.mode not in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        raise ValueError(f"{path}: depth map has mode {image.mode!r}; expected a single-channel 16-bit PNG (8-bit depth would read as at most 255 mm)")
    array = np.asarray(image, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"depth map {path} should be a single-channel PNG, got shape {array.shape}")
    return torch.from_numpy(array / depth_scale)


def read_labels(path: Path) -> np.ndarray:
    array = np.asarray(open_image_file(path, what="a single-channel label PNG", error=ValueError))
    if array.ndim != 2:
        raise ValueError(f"label map {path} should be a single-channel PNG, got shape {array.shape}")
    return array


def check_label_range(labels: np.ndarray, num_classes: int, path) -> None:
    """Stored labels (before ``reduce_zero_label``) must be 0 (unlabelled), 1..num_classes, or 255 (ignored)."""
    bad = (labels != 255) & ((labels < 0) | (labels > num_classes))
    if bad.any():
        values = np.unique(labels[bad])
        raise ValueError(f"{path}: label map holds {values[:5].tolist()} ({int(bad.sum())} pixels); expected 0 (unlabelled), "
                         f"1..{num_classes} or 255 (ignored) for this {num_classes}-class dataset")


def _strip(path: str) -> str:
    return path[1:] if path[:1] in ("/", "\\") else path


class SplitListDepthDataset(torch.utils.data.Dataset):
    """Depth pairs from a FiT3D split list (``<image> <depth png> [focal]`` per line), sorted by image path."""

    def __init__(self, root: str | Path, split_file: str, depth_scale: float = 1000.0):
        self.root = Path(root)
        self.split_path = self.root / split_file
        if not self.split_path.is_file():
            raise FileNotFoundError(f"depth split list {self.split_path} not found")
        self.depth_scale = depth_scale
        self.items = []
        for number, line in enumerate(read_text(self.split_path, what="a FiT3D split list").splitlines(), 1):
            fields = line.strip().split(" ")
            if not fields or fields == [""]:
                continue
            if len(fields) < 2:
                raise ValueError(f"{self.split_path}:{number}: expected '<image> <depth png> [focal]', got {line!r}")
            if fields[1] == "None":
                continue
            where = f"{self.split_path}:{number}"  # root-relative paths only: no `..` or symlinks out of the root
            self.items.append((path_inside(self.root, _strip(fields[0]), where=where), path_inside(self.root, _strip(fields[1]), where=where)))
        self.items.sort(key=lambda item: str(item[0]))
        if not self.items:
            raise ValueError(f"{self.split_path} lists no image with a depth map")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        image_path, depth_path = self.items[index]
        image, depth = read_image(image_path), read_depth(depth_path, self.depth_scale)
        if tuple(depth.shape) != tuple(image.shape[-2:]):
            raise ValueError(f"{depth_path}: depth {tuple(depth.shape)} does not match image {image_path} "
                             f"{tuple(image.shape[-2:])}")
        return {"image": image, "depth": depth, "name": str(image_path.relative_to(self.root))}


class FolderSegmentationDataset(torch.utils.data.Dataset):
    """mmseg ``CustomDataset``: every ``img_suffix`` file under ``img_dir`` (recursive, sorted) with its label."""

    def __init__(self, img_dir: str | Path, ann_dir: str | Path, img_suffix: str, seg_map_suffix: str = ".png",
                 num_classes: int | None = None):
        self.img_dir, self.ann_dir = Path(img_dir), Path(ann_dir)
        self.num_classes = num_classes  # stored labels must be 0 (unlabelled), 1..num_classes or 255 (ignored)
        if not self.img_dir.is_dir():
            raise FileNotFoundError(f"segmentation images: folder {self.img_dir} not found")
        if not self.ann_dir.is_dir():
            raise FileNotFoundError(f"segmentation labels: folder {self.ann_dir} not found")
        images = sorted(p for p in self.img_dir.rglob(f"*{img_suffix}") if p.is_file())
        if not images:
            raise ValueError(f"segmentation images: no '*{img_suffix}' file in {self.img_dir}")
        self.items = []
        for image in images:
            relative = str(image.relative_to(self.img_dir))
            label = self.ann_dir / (relative[: -len(img_suffix)] + seg_map_suffix)
            if not label.is_file():
                raise FileNotFoundError(f"segmentation labels: {label} (for {image}) not found")
            self.items.append((image, label))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        image_path, label_path = self.items[index]
        image = read_image(image_path)
        labels = read_labels(label_path)
        if labels.shape != tuple(image.shape[-2:]):
            raise ValueError(f"{label_path}: labels {labels.shape} do not match image {tuple(image.shape[-2:])}")
        if self.num_classes is not None:
            check_label_range(labels, self.num_classes, label_path)
        return {"image": image, "labels": torch.from_numpy(reduce_zero_label(labels)),
                "name": str(image_path.relative_to(self.img_dir))}


# ------------------------------------------------------------------------------ dataset specs
@dataclass(frozen=True)
class DepthDataSpec:
    """Where a dataset's depth lists are and how the authors' config treats them."""

    subdir: str | None
    train_list: str
    test_list: str
    max_depth: float
    nyu_train_crop: bool  # NYUCrop in the train pipeline
    eval_crop: bool  # eigen_crop=True: evaluate inside rows 45:471, cols 41:601
    eval_size: tuple[int, int] | None = None  # ScanNet++: ground truth resized to this before the metrics
    min_depth: float = 1e-3
    depth_scale: float = 1000.0


@dataclass(frozen=True)
class SegmentationDataSpec:
    subdir: str | None
    train_dirs: tuple[str, str]
    test_dirs: tuple[str, str]
    img_suffix: str
    num_classes: int
    seg_map_suffix: str = ".png"
    vis_test_dirs: tuple[str, str] | None = None  # the smaller test set a released config uses instead


# Test sets a released segmentation config can name: "full" (``test_dirs``) or "vis" (``vis_test_dirs``).
SEGMENTATION_TEST_SETS = ("full", "vis")


DEPTH_DATA = {
    "nyuv2": DepthDataSpec("data_depth", "nyu_train.txt", "nyu_test.txt", max_depth=10.0, nyu_train_crop=True,
                           eval_crop=True),
    # ScanNet's config comments NYUCrop out of training but keeps eigen_crop=True for the metrics.
    "scannet": DepthDataSpec(None, "train_index.txt", "test_index.txt", max_depth=10.0, nyu_train_crop=False,
                             eval_crop=True),
    "scannetpp": DepthDataSpec(None, "scannetpp_train.txt", "scannetpp_val.txt", max_depth=20.0,
                               nyu_train_crop=False, eval_crop=False, eval_size=(584, 876)),
}

SEGMENTATION_DATA = {
    "nyuv2": SegmentationDataSpec("data_sem", ("nyu_train_rgb", "nyuv2_train_class13"),
                                  ("nyu_test_rgb", "nyuv2_test_class13"), ".png", num_classes=13,
                                  vis_test_dirs=("nyu_test_rgb_vis", "nyuv2_test_class13_vis")),
    "scannet": SegmentationDataSpec(None, ("train/color", "train/label"), ("test/color", "test/label"), ".jpg",
                                    num_classes=40),
    "scannetpp": SegmentationDataSpec(None, ("images/training", "annotations/training"),
                                      ("images/validation", "annotations/validation"), ".JPG", num_classes=100),
}


def _root(data_dir: str | Path, subdir: str | None, marker: str) -> Path:
    root = Path(data_dir)
    if subdir and not (root / marker).exists() and (root / subdir / marker).exists():
        return root / subdir
    if subdir and (root / subdir).is_dir() and not (root / marker).exists():
        return root / subdir
    return root


def depth_datasets(dataset: str, data_dir: str | Path) -> tuple[SplitListDepthDataset, SplitListDepthDataset, DepthDataSpec]:
    """Train and test depth datasets of ``dataset`` (``nyuv2``, ``scannet``, ``scannetpp``) under ``data_dir``."""
    if dataset not in DEPTH_DATA:
        raise ValueError(f"--protocol snd depth: dataset must be one of {sorted(DEPTH_DATA)}, got {dataset!r}")
    spec = DEPTH_DATA[dataset]
    root = _root(data_dir, spec.subdir, spec.train_list)
    return (SplitListDepthDataset(root, spec.train_list, spec.depth_scale),
            SplitListDepthDataset(root, spec.test_list, spec.depth_scale), spec)


def segmentation_datasets(dataset: str, data_dir: str | Path, test_set: str = "full"):
    """Train and test segmentation datasets of ``dataset`` under ``data_dir`` (see the module docstring).

    ``test_set``: ``"full"`` or ``"vis"`` (NYUv2 only: ``nyu_test_rgb_vis`` / ``nyuv2_test_class13_vis``,
    the folders the released ViT-S config ``baseline_configs/vits_nyu_sem_linear_config.py`` tests on).
    """
    if dataset not in SEGMENTATION_DATA:
        raise ValueError(f"--protocol snd segmentation: dataset must be one of {sorted(SEGMENTATION_DATA)}, "
                         f"got {dataset!r}")
    spec = SEGMENTATION_DATA[dataset]
    if test_set not in SEGMENTATION_TEST_SETS:
        raise ValueError(f"segmentation test_set must be one of {SEGMENTATION_TEST_SETS}, got {test_set!r}")
    if test_set == "vis" and spec.vis_test_dirs is None:
        raise ValueError(f"segmentation: dataset {dataset!r} has no 'vis' test set (only nyuv2 does)")
    root = _root(data_dir, spec.subdir, spec.train_dirs[0])
    train = FolderSegmentationDataset(root / spec.train_dirs[0], root / spec.train_dirs[1], spec.img_suffix,
                                      spec.seg_map_suffix, spec.num_classes)
    test_dirs = spec.vis_test_dirs if test_set == "vis" else spec.test_dirs
    if test_set == "vis" and not (root / test_dirs[0]).is_dir():
        raise FileNotFoundError(
            f"segmentation: the released ViT-S NYUv2 config tests on {root / test_dirs[0]} and {root / test_dirs[1]}, "
            "which are not there; pass --nyu-seg-test-set full (SegmentationProtocol(nyu_test_set='full')) to test "
            "on the full nyu_test_rgb set, as the released ViT-B config does")
    test = FolderSegmentationDataset(root / test_dirs[0], root / test_dirs[1], spec.img_suffix, spec.seg_map_suffix,
                                     spec.num_classes)
    return train, test, spec
