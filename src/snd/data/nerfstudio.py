"""Your own captures in nerfstudio's format (``ns-process-data`` output: ``transforms.json`` + images).

Layout read (``root`` is the folder you pass: one scene holding ``transforms.json``, or a folder of such
scene folders)::

    root/transforms.json          camera_model, fl_x, fl_y, cx, cy, w, h (pixels), optional k1..k4, p1, p2;
                                  frames[]: file_path, transform_matrix (4x4 OpenGL camera-to-world), and
                                  optionally per-frame intrinsics (any of the keys above), mask_path,
                                  depth_file_path
    root/<file_path>              RGB image (paths are relative to the folder holding transforms.json)
    root/<mask_path>              optional nerfstudio mask: 0 = pixel to ignore
    root/<depth_file_path>        optional depth: 16-bit PNG or .npy, times ``depth_unit_scale_factor``
                                  (nerfstudio's default 1e-3: millimetres) to get metres

Conventions (as the ScanNet++ reader): OpenGL -> OpenCV with diag(1, -1, -1, 1) on both sides; intrinsics
normalised by the size of the image file, then the image is resized to ``image_shape`` (bicubic; masks and
depth nearest) with normalised intrinsics unchanged. Frames are ordered by the number in their file name
and context/target views are drawn by that order with the :class:`ViewSampler`.

Camera models: ``PINHOLE``, or ``OPENCV`` whose distortion coefficients are all zero; anything else
(distortion, fisheye, equirectangular) raises :class:`SceneDataError` naming the file and field (undistort
first, e.g. ``ns-process-data`` with ``--camera-type perspective`` and COLMAP's undistorter).

nerfstudio has no instance masks, so every view is one segment (mask-aware upsampling reduces to plain
bilinear and blending averages over the whole image, as for RealEstate10K). A ``mask_path`` mask marks
pixels to ignore: their depth is set to 0 (the depth lifter gives them no Gaussian). Poses keep their own
units: COLMAP reconstructions have an arbitrary scale, so give ``near``/``far`` that bracket the scene
depth in those units (MVSplat samples depth candidates between them).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..cameras import check_rigid, normalize_intrinsics, opengl_to_opencv
from ..safe_io import check_npy_size
from .base import MultiViewDataset, as_long
from .checks import (
    _scene_error, check_depth_image, check_focal, check_principal_point, check_unique, inside, read_json, require_image_size, require_matrix,
)
from .errors import SceneDataError
from .image_io import image_to_tensor, labels_to_tensor, open_image
from .sample import Views
from .sampler import ViewSampler

logger = logging.getLogger(__name__)

__all__ = ["NerfstudioDataset", "NerfstudioScene", "read_nerfstudio_scene"]

_INTRINSIC_KEYS = ("fl_x", "fl_y", "cx", "cy")
_DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")
_UNDISTORTED_MODELS = ("PINHOLE", "OPENCV")


@dataclass
class NerfstudioFrame:
    file_path: str
    number: int
    pose_opengl: np.ndarray  # [4, 4] camera-to-world as stored
    pixel_intrinsics: np.ndarray  # [3, 3] for the image size (w, h)
    size: tuple[int, int] | None  # (height, width) declared for these intrinsics, if any
    mask_path: str | None
    depth_path: str | None
    field: str  # "frames[i]", for error messages


@dataclass
class NerfstudioScene:
    """Parsed ``transforms.json`` of one scene (frames in file-number order)."""

    name: str
    directory: Path
    frames: list[NerfstudioFrame]

    @property
    def transforms_path(self) -> Path:
        return self.directory / "transforms.json"


def _frame_number(file_path: str) -> int:
    numbers = re.findall(r"\d+", Path(file_path).name)
    return int(numbers[-1]) if numbers else -1


def _camera(values: dict, where: str, scene: str, path: Path) -> tuple[np.ndarray, tuple[int, int] | None]:
    """Pixel intrinsics and declared (h, w) from merged top-level + per-frame keys; refuse distortion."""
    model = values.get("camera_model", "PINHOLE")
    if model not in _UNDISTORTED_MODELS:
        raise SceneDataError(
            f"camera model {model!r} is not supported: expected PINHOLE (or OPENCV with zero distortion); undistort the images first",
            scene=scene, file=str(path), field=f"{where}camera_model",
        )
    for key in _DISTORTION_KEYS:
        value = values.get(key, 0.0)
        if not isinstance(value, (int, float)) or value != 0:
            raise SceneDataError(
                f"non-zero distortion {key}={value!r} ({model}): expected undistorted images (PINHOLE, or OPENCV with k1..k4, p1, p2 = 0)",
                scene=scene, file=str(path), field=f"{where}{key}",
            )
    numbers = {}
    for key in _INTRINSIC_KEYS:
        value = values.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not np.isfinite(value) or (key.startswith("fl") and value <= 0):
            raise SceneDataError(
                f"expected a finite number{' > 0' if key.startswith('fl') else ''}, got {value!r}", scene=scene, file=str(path), field=f"{where}{key}"
            )
        numbers[key] = float(value)
    size = None
    if "w" in values or "h" in values:
        size = require_image_size(values.get("w"), values.get("h"), scene=scene, file=str(path), field=f"{where}w/h")
        check_focal(numbers["fl_x"], size[1], scene=scene, file=str(path), field=f"{where}fl_x")
        check_focal(numbers["fl_y"], size[0], scene=scene, file=str(path), field=f"{where}fl_y")
        check_principal_point(numbers["cx"], numbers["cy"], size[1], size[0], scene=scene, file=str(path), field_prefix=where)
    intrinsics = np.array([[numbers["fl_x"], 0.0, numbers["cx"]], [0.0, numbers["fl_y"], numbers["cy"]], [0.0, 0.0, 1.0]])
    return intrinsics, size


def read_nerfstudio_scene(directory: str | Path) -> NerfstudioScene:
    """Parse ``directory/transforms.json``; raise :class:`SceneDataError` naming the file and field."""
    directory = Path(directory)
    scene = directory.name
    path = directory / "transforms.json"
    if not path.exists():  # a FIFO or folder in its place is named as such by read_json
        raise SceneDataError(("a symlink to nothing: " if path.is_symlink() else "") + "transforms.json is missing (expected nerfstudio's ns-process-data output)", scene=scene, file=str(path))
    meta = read_json(path, scene=scene, what="nerfstudio's transforms.json (UTF-8 JSON)")
    if not isinstance(meta, dict) or not isinstance(meta.get("frames"), list):
        raise SceneDataError("expected a JSON object with a list of frames", scene=scene, file=str(path), field="frames")
    shared = {k: v for k, v in meta.items() if k != "frames"}
    frames = []
    for position, frame in enumerate(meta["frames"]):
        where = f"frames[{position}]"
        if not isinstance(frame, dict) or not isinstance(frame.get("file_path"), str):
            raise SceneDataError("expected an object with a string file_path", scene=scene, file=str(path), field=f"{where}.file_path")
        inside(directory, frame["file_path"], scene=scene, file=str(path), field=f"{where}.file_path")
        per_frame = any(key in frame for key in (*_INTRINSIC_KEYS, *_DISTORTION_KEYS, "camera_model", "w", "h"))
        intrinsics, size = _camera({**shared, **frame}, f"{where}." if per_frame else "", scene, path)
        matrix = frame.get("transform_matrix")
        # numbers only: np.asarray(..., float64) would silently parse a matrix of strings ("1", "0", ...)
        rows = 3 if isinstance(matrix, list) and len(matrix) == 3 else 4
        require_matrix(matrix, rows, 4, scene=scene, file=str(path), field=f"{where}.transform_matrix")
        pose = np.asarray(matrix, dtype=np.float64)
        if pose.shape == (3, 4):
            pose = np.concatenate([pose, [[0.0, 0.0, 0.0, 1.0]]])
        if pose.shape != (4, 4):
            raise SceneDataError(f"expected a 4x4 matrix, got shape {pose.shape}", scene=scene, file=str(path), field=f"{where}.transform_matrix")
        for key in ("mask_path", "depth_file_path"):
            if key in frame and not isinstance(frame[key], str):
                raise SceneDataError(f"expected a path string, got {frame[key]!r}", scene=scene, file=str(path), field=f"{where}.{key}")
            if key in frame:
                inside(directory, frame[key], scene=scene, file=str(path), field=f"{where}.{key}")
        frames.append(NerfstudioFrame(
            file_path=frame["file_path"], number=_frame_number(frame["file_path"]), pose_opengl=pose, pixel_intrinsics=intrinsics,
            size=size, mask_path=frame.get("mask_path"), depth_path=frame.get("depth_file_path"), field=where,
        ))
    frames.sort(key=lambda f: (f.number, f.file_path))
    check_unique([str(Path(f.file_path)) for f in frames], [f"{f.field}.file_path" for f in frames], scene=scene, file=str(path))
    return NerfstudioScene(name=scene, directory=directory, frames=frames)


class NerfstudioDataset(MultiViewDataset):
    """Multi-view samples from nerfstudio scenes (see the module docstring).

    Args:
        root: a scene folder holding ``transforms.json``, or a folder whose sub-folders are scenes.
        image_shape: output ``(height, width)``. Default (576, 880), the SnD training resolution.
        sampler: view sampler. Default ``ViewSampler()`` (context 8-12 frames apart, one target).
        samples_per_scene: samples per scene per epoch. Default 1.
        near, far: depth bounds reported with the views, in the poses' units. Default 1.0 / 100.0.
        load_depth: read ``depth_file_path`` of every frame (needed by the depth lifter). Default False.
        depth_unit_scale_factor: depth file units to metres. Default 1e-3 (nerfstudio's: millimetres).
        skip_bad_samples: log, count and skip bad samples (and unusable scenes) instead of raising.
    """

    def __init__(
        self,
        root: str | Path,
        image_shape: tuple[int, int] = (576, 880),
        sampler: ViewSampler | None = None,
        samples_per_scene: int = 1,
        near: float = 1.0,
        far: float = 100.0,
        load_depth: bool = False,
        depth_unit_scale_factor: float = 1e-3,
        skip_bad_samples: bool = False,
    ):
        super().__init__(sampler, samples_per_scene, skip_bad_samples)
        self.root = Path(root)
        self.image_shape = (int(image_shape[0]), int(image_shape[1]))
        if not 0 < near < far:
            raise ValueError(f"NerfstudioDataset: need 0 < near < far, got {near}, {far}")
        self.near, self.far = float(near), float(far)
        self.load_depth, self.depth_unit_scale_factor = bool(load_depth), float(depth_unit_scale_factor)
        if (self.root / "transforms.json").exists() or (self.root / "transforms.json").is_symlink():
            directories = [self.root]  # not a regular file (a FIFO, a folder): read_nerfstudio_scene says so
        elif self.root.is_dir():
            directories = sorted(p for p in self.root.iterdir() if (p / "transforms.json").is_file())
        else:
            raise SceneDataError("folder does not exist", file=str(self.root))
        if not directories:
            raise SceneDataError("no transforms.json here nor in any sub-folder (expected nerfstudio's ns-process-data output)", file=str(self.root))
        self.scenes: list[NerfstudioScene] = []
        for directory in directories:
            try:
                scene = read_nerfstudio_scene(directory)
                if self.load_depth:
                    missing = [f.field for f in scene.frames if f.depth_path is None]
                    if missing:
                        raise SceneDataError(
                            f"load_depth (the depth lifter) needs depth_file_path on every frame; {len(missing)} frames have none",
                            scene=scene.name, file=str(scene.transforms_path), field=f"{missing[0]}.depth_file_path",
                        )
                self.scenes.append(scene)
            except SceneDataError as error:
                if not skip_bad_samples:
                    raise
                self.bad_sample_counts[directory.name] += 1
                logger.warning("skipping bad nerfstudio scene %s: %s", directory.name, error)
        if not self.scenes:
            raise SceneDataError("no usable nerfstudio scene", file=str(self.root))

    # ------------------------------------------------------------------ dataset interface
    def num_scenes(self) -> int:
        return len(self.scenes)

    def scene_name(self, scene_index: int) -> str:
        return self.scenes[scene_index].name

    def num_frames(self, scene_index: int) -> int:
        return len(self.scenes[scene_index].frames)

    def scene_source(self, scene_index: int) -> str:
        return str(self.scenes[scene_index].transforms_path)

    def _file(self, scene: NerfstudioScene, relative: str, field: str) -> Path:
        # inside the scene folder (no absolute paths, `..` or symlinks out), checked again here as a symlink may change
        path = inside(scene.directory, relative, scene=scene.name, file=str(scene.transforms_path), field=field)
        if not path.exists():
            raise SceneDataError("listed in transforms.json but absent on disk", scene=scene.name, file=str(path), field=field)
        if not path.is_file():
            raise SceneDataError("listed in transforms.json but not a regular file (a FIFO, device or folder)", scene=scene.name, file=str(path), field=field)
        return path

    def load_views(self, scene_index: int, frames: list[int]) -> Views:
        scene = self.scenes[scene_index]
        images, masks, depths, extrinsics, intrinsics = [], [], [], [], []
        for position in frames:
            frame = scene.frames[position]
            pose = torch.from_numpy(frame.pose_opengl)
            reason = check_rigid(pose)
            if reason is not None:
                raise SceneDataError(f"camera pose is invalid: {reason}", scene=scene.name, file=str(scene.transforms_path), field=f"{frame.field}.transform_matrix")
            image = open_image(self._file(scene, frame.file_path, f"{frame.field}.file_path"), scene=scene.name, field="image")
            width, height = image.size
            if frame.size is not None and frame.size != (height, width):
                raise SceneDataError(
                    f"image is {width}x{height} but transforms.json declares w={frame.size[1]}, h={frame.size[0]}",
                    scene=scene.name, file=str(scene.directory / frame.file_path), field=f"{frame.field}.file_path",
                )
            images.append(image_to_tensor(image, self.image_shape))
            masks.append(torch.zeros(self.image_shape, dtype=torch.int64))  # no instance masks: one segment per view
            keep = None
            if frame.mask_path is not None:
                mask_file = self._file(scene, frame.mask_path, f"{frame.field}.mask_path")
                mask_image = open_image(mask_file, scene=scene.name, field="mask")
                if mask_image.size != image.size:
                    raise SceneDataError(f"mask is {mask_image.size[0]}x{mask_image.size[1]} but its image is {width}x{height}",
                                         scene=scene.name, file=str(mask_file), field=f"{frame.field}.mask_path")
                keep = labels_to_tensor(mask_image.convert("L"), self.image_shape, scene=scene.name, field="mask", file=str(mask_file)) > 0
            if self.load_depth:
                depth_file = self._file(scene, frame.depth_path, f"{frame.field}.depth_file_path")
                depth = self._read_depth(depth_file, scene.name, (height, width), f"{frame.field}.depth_file_path")
                if keep is not None:
                    depth = depth.masked_fill(~keep, 0.0)
                depths.append(depth)
            extrinsics.append(opengl_to_opencv(pose).float())
            # intrinsics are declared for (w, h) when given, else for the image file; normalise by that size
            declared_h, declared_w = frame.size if frame.size is not None else (height, width)
            if frame.size is None:  # no w/h in transforms.json: the focal lengths are checked against the image
                check_focal(float(frame.pixel_intrinsics[0, 0]), width, scene=scene.name, file=str(scene.transforms_path), field=f"fl_x ({frame.field})")
                check_focal(float(frame.pixel_intrinsics[1, 1]), height, scene=scene.name, file=str(scene.transforms_path), field=f"fl_y ({frame.field})")
                check_principal_point(float(frame.pixel_intrinsics[0, 2]), float(frame.pixel_intrinsics[1, 2]), width, height,
                                      scene=scene.name, file=str(scene.transforms_path), field_prefix=f"{frame.field}.")
            intrinsics.append(normalize_intrinsics(torch.from_numpy(frame.pixel_intrinsics), declared_w, declared_h).float())
        count = len(frames)
        return Views(
            images=torch.stack(images),
            extrinsics=torch.stack(extrinsics),
            intrinsics=torch.stack(intrinsics),
            near=torch.full((count,), self.near),
            far=torch.full((count,), self.far),
            masks=torch.stack(masks),
            depths=torch.stack(depths) if self.load_depth else None,
            frame_indices=as_long([scene.frames[p].number for p in frames]),
        )

    def _read_depth(self, path: Path, scene: str, size: tuple[int, int], field: str) -> torch.Tensor:
        """``[H, W]`` float32 metres at ``image_shape`` (nearest), 0 where invalid."""
        if path.suffix.lower() == ".npy":
            check_npy_size(path, error=_scene_error(scene=scene, file=str(path), field=field))  # before np.load allocates
            try:
                array = np.load(path, allow_pickle=False)
            except (ValueError, OSError) as error:
                raise SceneDataError(f"cannot read .npy depth ({error})", scene=scene, file=str(path), field=field) from error
            array = np.squeeze(array)
            if array.ndim != 2 or not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
                raise SceneDataError(f"expected a 2D real-valued (integer or float) depth array, got shape {array.shape} {array.dtype}", scene=scene, file=str(path), field=field)
            if tuple(array.shape) != size:
                raise SceneDataError(f"depth is {array.shape[1]}x{array.shape[0]} but its image is {size[1]}x{size[0]}", scene=scene, file=str(path), field=field)
            image = Image.fromarray(array.astype(np.float32)).resize(self.image_shape[::-1], resample=Image.NEAREST)
            depth = torch.from_numpy(np.asarray(image, dtype=np.float32).copy())
        else:
            image = open_image(path, scene=scene, field="depth")
            if image.size != (size[1], size[0]):
                raise SceneDataError(f"depth is {image.size[0]}x{image.size[1]} but its image is {size[1]}x{size[0]}", scene=scene, file=str(path), field=field)
            # a 16-bit PNG (millimetres): an 8-bit one would read as depths up to 255 mm
            check_depth_image(image, (size[1], size[0]), scene=scene, file=str(path), field=field)
            depth = labels_to_tensor(image, self.image_shape, scene=scene, field="depth", file=str(path)).float()
        depth = depth * self.depth_unit_scale_factor
        return torch.where(torch.isfinite(depth) & (depth > 0), depth, torch.zeros_like(depth))
