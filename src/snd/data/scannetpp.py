"""ScanNet++ as prepared for FiT3D / Splat-and-Distill (nerfstudio ``transforms_train.json`` per scene).

Layout read (``root`` is the folder you pass)::

    root/scenes/<scene>/transforms_train.json      fl_x, fl_y, cx, cy (pixels of the ORIGINAL images),
                                                   optional w, h; frames[]: file_path, transform_matrix
                                                   (4x4 OpenGL camera-to-world), is_bad
    root/scenes/<scene>/images/<file_path>         RGB (JPEG)
    root/scenes/<scene>/instance_segmentation/<file_path>.png   16-bit instance labels
    root/scenes/<scene>/depth/<file_path stem>.png optional 16-bit depth (millimetres), load_depth=True
    root/metadata/nvs_sem_train.txt, nvs_sem_val.txt   split lists (one scene id a line);
                                                   root/splits/ is accepted too

Conventions applied (as the authors' loader): OpenGL -> OpenCV with diag(1, -1, -1, 1) on both sides;
intrinsics normalised by the size of the image file on disk (the original size), then the image
is resized to ``image_shape`` (bicubic, masks and depth nearest) with normalised intrinsics unchanged
(aspect ratio is not preserved, as in the authors' code). Frames are ordered by the number in their
file name; frames marked ``is_bad`` are dropped (``keep_bad_frames=True`` keeps them, as the authors'
loader does), and context gaps count usable frames (``reject_frame_gaps=True`` redraws context pairs
with missing frame numbers in between, as the authors' loader does).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..cameras import check_rigid, normalize_intrinsics, opengl_to_opencv
from .base import MultiViewDataset, as_long
from .checks import (
    check_depth_image, check_focal, check_principal_point, check_unique, inside, is_number, read_json, read_text_lines, require_bool,
    require_image_size, require_matrix,
)
from .errors import SceneDataError
from .image_io import image_to_tensor, labels_to_tensor, open_image
from .sample import Views
from .sampler import ViewSampler

logger = logging.getLogger(__name__)

__all__ = ["ScanNetPPDataset", "ScanNetPPScene", "read_scannetpp_scene"]

_SPLIT_FILES = {"train": "nvs_sem_train.txt", "val": "nvs_sem_val.txt"}


@dataclass
class ScanNetPPScene:
    """Parsed metadata of one scene (usable frames only, in file-number order)."""

    name: str
    directory: Path
    file_paths: list[str]
    frame_numbers: list[int]
    extrinsics_opengl: torch.Tensor  # [F, 4, 4] as stored
    pixel_intrinsics: torch.Tensor  # [3, 3] for the original image size
    declared_size: tuple[int, int] | None  # (height, width) from "h", "w" if present
    json_fields: list[str]  # JSON field of each usable frame ("frames[i]"), for error messages

    @property
    def transforms_path(self) -> Path:
        return self.directory / "transforms_train.json"


def _frame_number(file_path: str) -> int:
    match = re.search(r"\d+", Path(file_path).name)
    return int(match.group()) if match else -1


def read_scannetpp_scene(directory: Path, keep_bad_frames: bool = False) -> ScanNetPPScene:
    """Parse ``transforms_train.json`` of a scene folder; raise :class:`SceneDataError` naming the field.

    Args:
        keep_bad_frames: keep frames marked ``is_bad`` (the authors' loader). Default False (dropped).
    """
    directory = Path(directory)
    scene = directory.name
    path = directory / "transforms_train.json"
    if not path.exists():  # a FIFO or folder in its place is named as such by read_json
        raise SceneDataError(("a symlink to nothing: " if path.is_symlink() else "") + "transforms_train.json is missing", scene=scene, file=str(path))
    meta = read_json(path, scene=scene, what="ScanNet++'s transforms_train.json (UTF-8 JSON)")
    if not isinstance(meta, dict):
        raise SceneDataError("expected a JSON object at the top level", scene=scene, file=str(path))
    values = {}
    for key in ("fl_x", "fl_y", "cx", "cy"):
        value = meta.get(key)
        if not is_number(value) or (key.startswith("fl") and value <= 0):
            raise SceneDataError(f"expected a finite number{' > 0' if key.startswith('fl') else ''}, got {value!r}", scene=scene, file=str(path), field=key)
        values[key] = float(value)
    declared = None
    if "w" in meta or "h" in meta:
        declared = require_image_size(meta.get("w"), meta.get("h"), scene=scene, file=str(path), field="w/h")
        check_focal(values["fl_x"], declared[1], scene=scene, file=str(path), field="fl_x")
        check_focal(values["fl_y"], declared[0], scene=scene, file=str(path), field="fl_y")
        check_principal_point(values["cx"], values["cy"], declared[1], declared[0], scene=scene, file=str(path))
    frames = meta.get("frames")
    if not isinstance(frames, list):
        raise SceneDataError("expected a list of frames", scene=scene, file=str(path), field="frames")
    entries = []
    for position, frame in enumerate(frames):
        field = f"frames[{position}]"
        if not isinstance(frame, dict) or not isinstance(frame.get("file_path"), str):
            raise SceneDataError("expected an object with a string file_path", scene=scene, file=str(path), field=f"{field}.file_path")
        inside(directory / "images", frame["file_path"], scene=scene, file=str(path), field=f"{field}.file_path")
        if require_bool(frame.get("is_bad"), scene=scene, file=str(path), field=f"{field}.is_bad") and not keep_bad_frames:
            continue
        matrix = require_matrix(frame.get("transform_matrix"), scene=scene, file=str(path), field=f"{field}.transform_matrix")
        try:
            matrix = np.asarray(matrix, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise SceneDataError(f"expected a 4x4 number matrix ({error})", scene=scene, file=str(path), field=f"{field}.transform_matrix") from error
        if matrix.shape != (4, 4):
            raise SceneDataError(f"expected a 4x4 matrix, got shape {matrix.shape}", scene=scene, file=str(path), field=f"{field}.transform_matrix")
        entries.append((_frame_number(frame["file_path"]), frame["file_path"], matrix, field))
    entries.sort(key=lambda entry: (entry[0], entry[1]))
    check_unique([e[1] for e in entries], [f"{e[3]}.file_path" for e in entries], scene=scene, file=str(path))
    intrinsics = torch.tensor(
        [[values["fl_x"], 0.0, values["cx"]], [0.0, values["fl_y"], values["cy"]], [0.0, 0.0, 1.0]], dtype=torch.float64
    )
    scene_meta = ScanNetPPScene(
        name=scene,
        directory=directory,
        file_paths=[e[1] for e in entries],
        frame_numbers=[e[0] for e in entries],
        extrinsics_opengl=torch.tensor(np.stack([e[2] for e in entries]) if entries else np.zeros((0, 4, 4))),
        pixel_intrinsics=intrinsics,
        declared_size=declared,
        json_fields=[e[3] for e in entries],
    )
    return scene_meta


class ScanNetPPDataset(MultiViewDataset):
    """Multi-view samples from ScanNet++ scenes in the SnD/FiT3D layout (see the module docstring).

    Args:
        root: dataset root holding ``scenes/`` (and ``metadata/`` for splits).
        split: ``"train"`` / ``"val"`` (read ``metadata/nvs_sem_<split>.txt``), or None for every scene
            folder that has ``instance_segmentation/`` (the authors' behaviour). Default "train".
        scenes: explicit scene ids (overrides ``split``).
        image_shape: output ``(height, width)``. Default (576, 880), the released training resolution.
        sampler: view sampler. Default ``ViewSampler()`` (context 8-12 usable frames apart, one target).
        samples_per_scene: samples per scene per epoch. Default 1 (the authors' dataset length).
        near, far: depth bounds reported with the views. Default 1.0 / 100.0 (released config).
        load_depth: also read ``depth/<stem>.png`` (uint16, ``depth_scale`` units per metre). Default False.
        depth_scale: Default 1000 (millimetres).
        skip_bad_samples: log, count and skip bad samples (and unusable scenes) instead of raising.
        keep_bad_frames: keep frames marked ``is_bad`` (the authors' loader keeps them). Default False.
        reject_frame_gaps: redraw context pairs with missing frame numbers between them (the authors'
            loader). Default False: context gaps count usable frames.
    """

    def __init__(
        self,
        root: str | Path,
        split: str | None = "train",
        scenes: list[str] | None = None,
        image_shape: tuple[int, int] = (576, 880),
        sampler: ViewSampler | None = None,
        samples_per_scene: int = 1,
        near: float = 1.0,
        far: float = 100.0,
        load_depth: bool = False,
        depth_scale: float = 1000.0,
        skip_bad_samples: bool = False,
        keep_bad_frames: bool = False,
        reject_frame_gaps: bool = False,
    ):
        super().__init__(sampler, samples_per_scene, skip_bad_samples)
        self.keep_bad_frames, self.reject_frame_gaps = bool(keep_bad_frames), bool(reject_frame_gaps)
        self.root = Path(root)
        self.image_shape = (int(image_shape[0]), int(image_shape[1]))
        self.near, self.far = float(near), float(far)
        self.load_depth, self.depth_scale = load_depth, float(depth_scale)
        scenes_dir = self.root / "scenes"
        if not scenes_dir.is_dir():
            raise SceneDataError(f"expected a folder {scenes_dir} holding one folder per scene", file=str(scenes_dir))
        if scenes is None and split is not None:
            scenes = self._read_split(split)
        explicit = scenes is not None
        if scenes is None:
            scenes = sorted(p.name for p in scenes_dir.iterdir() if (p / "instance_segmentation").is_dir())
        self.scenes: list[ScanNetPPScene] = []
        for name in scenes:
            try:
                directory = scenes_dir / name
                if not directory.is_dir():
                    raise SceneDataError("scene folder is missing", scene=name, file=str(directory))
                if explicit and not (directory / "instance_segmentation").is_dir():
                    raise SceneDataError("instance_segmentation/ folder is missing", scene=name, file=str(directory / "instance_segmentation"))
                self.scenes.append(read_scannetpp_scene(directory, keep_bad_frames=self.keep_bad_frames))
            except SceneDataError as error:
                if not skip_bad_samples:
                    raise
                self.bad_sample_counts[name] += 1
                logger.warning("skipping bad scene %s: %s", name, error)
        if not self.scenes:
            raise SceneDataError(f"no usable scenes under {scenes_dir} (split={split!r})", file=str(scenes_dir))

    def _read_split(self, split: str) -> list[str]:
        if split not in _SPLIT_FILES:
            raise ValueError(f"split must be one of {sorted(_SPLIT_FILES)} or None, got {split!r}")
        candidates = [self.root / folder / _SPLIT_FILES[split] for folder in ("metadata", "splits")]
        for path in candidates:
            if path.is_file():
                names = [line.strip() for line in read_text_lines(path, what="a split list (one scene id a line)") if line.strip()]
                for number, name in enumerate(names, 1):  # a scene id, never a path out of scenes/
                    inside(self.root / "scenes", name, file=str(path), field=f"line {number}")
                return names
        raise SceneDataError(f"split list not found; looked for {[str(c) for c in candidates]}", file=str(candidates[0]), field=split)

    # ------------------------------------------------------------------ dataset interface
    def num_scenes(self) -> int:
        return len(self.scenes)

    def scene_name(self, scene_index: int) -> str:
        return self.scenes[scene_index].name

    def num_frames(self, scene_index: int) -> int:
        return len(self.scenes[scene_index].file_paths)

    def scene_source(self, scene_index: int) -> str:
        return str(self.scenes[scene_index].transforms_path)

    def sample_frames(self, index: int):
        """As :meth:`MultiViewDataset.sample_frames`; with ``reject_frame_gaps`` the sampler sees the frame numbers."""
        if not self.reject_frame_gaps:
            return super().sample_frames(index)
        scene_index = index // self.samples_per_scene
        meta = self.scenes[scene_index]
        try:
            context, target = self.sampler.sample(len(meta.file_paths), index, scene=meta.name, frame_numbers=meta.frame_numbers)
        except SceneDataError as error:
            raise SceneDataError(error.reason, scene=error.scene, file=str(meta.transforms_path), field=error.field) from error
        return scene_index, context.tolist(), target.tolist()

    def load_views(self, scene_index: int, frames: list[int]) -> Views:
        meta = self.scenes[scene_index]
        images, masks, depths, extrinsics, intrinsics = [], [], [], [], []
        for position in frames:
            file_path = meta.file_paths[position]
            field = meta.json_fields[position]
            pose = meta.extrinsics_opengl[position]
            reason = check_rigid(pose)
            if reason is not None:
                raise SceneDataError(f"camera pose is invalid: {reason}", scene=meta.name, file=str(meta.transforms_path), field=f"{field}.transform_matrix")
            image_path = meta.directory / "images" / file_path
            if not image_path.is_file():
                raise SceneDataError(
                    "frame listed in transforms_train.json is absent on disk", scene=meta.name, file=str(image_path), field=f"{field}.file_path"
                )
            image = open_image(image_path, scene=meta.name, field="image")
            height, width = image.size[1], image.size[0]
            if meta.declared_size is not None and meta.declared_size != (height, width):
                raise SceneDataError(
                    f"image is {width}x{height} but transforms_train.json declares w={meta.declared_size[1]}, h={meta.declared_size[0]}",
                    scene=meta.name, file=str(image_path), field="image",
                )
            mask_path = meta.directory / "instance_segmentation" / f"{file_path}.png"
            mask_image = open_image(mask_path, scene=meta.name, field="mask")
            if mask_image.size != image.size:
                raise SceneDataError(
                    f"mask is {mask_image.size[0]}x{mask_image.size[1]} but its image is {width}x{height}",
                    scene=meta.name, file=str(mask_path), field="mask",
                )
            images.append(image_to_tensor(image, self.image_shape))
            masks.append(labels_to_tensor(mask_image, self.image_shape, scene=meta.name, field="mask", file=str(mask_path)))
            if self.load_depth:
                depth_path = meta.directory / "depth" / f"{Path(file_path).stem}.png"
                depth_image = open_image(depth_path, scene=meta.name, field="depth")
                check_depth_image(depth_image, image.size, scene=meta.name, file=str(depth_path))
                depth = labels_to_tensor(depth_image, self.image_shape, scene=meta.name, field="depth", file=str(depth_path))
                depths.append(depth.float() / self.depth_scale)
            extrinsics.append(opengl_to_opencv(pose).float())
            if meta.declared_size is None:  # no w/h in the metadata: the focal lengths are checked against the image
                check_focal(float(meta.pixel_intrinsics[0, 0]), width, scene=meta.name, file=str(meta.transforms_path), field="fl_x")
                check_focal(float(meta.pixel_intrinsics[1, 1]), height, scene=meta.name, file=str(meta.transforms_path), field="fl_y")
                check_principal_point(float(meta.pixel_intrinsics[0, 2]), float(meta.pixel_intrinsics[1, 2]), width, height,
                                      scene=meta.name, file=str(meta.transforms_path))
            intrinsics.append(normalize_intrinsics(meta.pixel_intrinsics, width, height).float())
        count = len(frames)
        return Views(
            images=torch.stack(images),
            extrinsics=torch.stack(extrinsics),
            intrinsics=torch.stack(intrinsics),
            near=torch.full((count,), self.near),
            far=torch.full((count,), self.far),
            masks=torch.stack(masks),
            depths=torch.stack(depths) if self.load_depth else None,
            frame_indices=as_long([meta.frame_numbers[p] for p in frames]),
        )
