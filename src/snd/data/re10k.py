"""RealEstate10K / ACID in pixelSplat's chunk format (as used by MVSplat and the SnD authors).

Layout read (``root`` is the folder you pass)::

    root/<split>/000000.torch, 000001.torch, ...   chunks (``split`` is "train" or "test")
    root/<split>/index.json                         optional {scene key: chunk file name}

Each chunk is a ``torch.save``-d list of scenes, each a dict with

* ``key`` (str), ``url`` (str), ``timestamps`` (int64 ``[F]``);
* ``cameras`` float ``[F, 18]``: ``fx, fy, cx, cy`` normalised by the image size, two unused
  numbers, then the 3x4 world-to-camera matrix (OpenCV axes) row-major;
* ``images``: a list of ``F`` uint8 tensors, each the bytes of one JPEG file.

Chunks are read with ``torch.load(..., weights_only=True)`` (they hold only tensors, strings and
lists). World-to-camera becomes camera-to-world; images are scaled to cover ``image_shape`` and
centre-cropped (pixelSplat's crop shim), with the intrinsics adjusted to match.

These datasets have **no instance masks**: every view gets a single segment (all labels 0), so
mask-aware upsampling reduces to plain bilinear and blending averages over the whole image.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..cameras import check_rigid, invert_rigid
from ..safe_io import to_rgb
from .base import MultiViewDataset, as_long
from .checks import inside, read_json
from .errors import SceneDataError
from .image_io import image_to_tensor, open_image, resize_and_center_crop, resize_crop_intrinsics
from .sample import Views
from .sampler import ViewSampler

logger = logging.getLogger(__name__)

__all__ = ["RE10KDataset", "load_chunk", "convert_cameras", "re10k_default_sampler"]


#: Normalised focal lengths above this are pixel values written by mistake (the same bound as ``Views``' check).
MAX_NORMALISED_FOCAL = 50.0


def re10k_default_sampler(seed: int = 0) -> ViewSampler:
    """The authors' RealEstate10K view sampler: context 120 to 192 frames apart, one target."""
    return ViewSampler(min_gap=120, max_gap=192, num_target=1, seed=seed)


def load_chunk(path: str | Path) -> list[dict]:
    """Load one ``.torch`` chunk safely (``weights_only=True``) and check its structure."""
    from ..convert.pickles import check_sizes

    path = Path(path)
    if path.exists() and not path.is_file():  # a FIFO would block the zip check and torch.load forever
        raise SceneDataError("not a regular file (a FIFO, device or folder); expected a .torch chunk", file=str(path))
    if path.is_file() and path.stat().st_size == 0:
        raise SceneDataError("the file is empty (0 bytes); expected a .torch chunk written by torch.save", file=str(path))
    try:
        check_sizes(path)  # size fields vs the file size before torch allocates anything
        chunk = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as error:
        raise SceneDataError("chunk file does not exist", file=str(path)) from error
    except Exception as error:  # torch raises several types for corrupt or unsafe pickles
        raise SceneDataError(f"cannot load chunk with torch.load(weights_only=True): {error}", file=str(path)) from error
    if not isinstance(chunk, list):
        raise SceneDataError(f"expected a list of scene dicts, got {type(chunk).__name__}", file=str(path))
    seen: dict[str, int] = {}
    for position, example in enumerate(chunk):
        if not isinstance(example, dict):
            raise SceneDataError(f"expected a dict, got {type(example).__name__}", file=str(path), field=f"[{position}]")
        for key in ("key", "cameras", "images"):
            if key not in example:
                scene = example.get("key") if isinstance(example.get("key"), str) else None
                raise SceneDataError(f"missing field {key!r} (a scene dict holds key, cameras, images; found {sorted(map(str, example))[:8]})",
                                     scene=scene, file=str(path), field=f"[{position}].{key}")
        if not isinstance(example["key"], str):
            raise SceneDataError(f"expected a string, got {type(example['key']).__name__}", file=str(path), field=f"[{position}].key")
        if not isinstance(example["cameras"], torch.Tensor) or not example["cameras"].is_floating_point():
            raise SceneDataError("expected a float tensor [F, 18]", scene=example["key"], file=str(path), field="cameras")
        if not isinstance(example["images"], (list, tuple)):
            raise SceneDataError(f"expected a list of JPEG byte tensors, got {type(example['images']).__name__}", scene=example["key"], file=str(path), field="images")
        if example["key"] in seen:  # a dict by key would keep one of them silently
            raise SceneDataError(f"scene key listed twice in the chunk (also at [{seen[example['key']]}])", scene=example["key"], file=str(path),
                                 field=f"[{position}].key")
        seen[example["key"]] = position
    return chunk


def convert_cameras(cameras: torch.Tensor, *, scene: str | None = None, file: str | None = None):
    """``[F, 18]`` pixelSplat cameras -> (camera-to-world ``[F, 4, 4]`` OpenCV, normalised intrinsics ``[F, 3, 3]``)."""
    if not isinstance(cameras, torch.Tensor) or cameras.ndim != 2 or cameras.shape[1] != 18:
        shape = tuple(cameras.shape) if isinstance(cameras, torch.Tensor) else type(cameras).__name__
        raise SceneDataError(f"expected a [F, 18] tensor, got {shape}", scene=scene, file=file, field="cameras")
    cameras = cameras.to(torch.float64)
    count = cameras.shape[0]
    intrinsics = torch.eye(3, dtype=torch.float64).repeat(count, 1, 1)
    intrinsics[:, 0, 0], intrinsics[:, 1, 1], intrinsics[:, 0, 2], intrinsics[:, 1, 2] = cameras[:, :4].T
    world_to_camera = torch.eye(4, dtype=torch.float64).repeat(count, 1, 1)
    world_to_camera[:, :3, :] = cameras[:, 6:].reshape(count, 3, 4)
    return world_to_camera, intrinsics


class RE10KDataset(MultiViewDataset):
    """Multi-view samples from RealEstate10K / ACID chunks (see the module docstring).

    Args:
        root: dataset root holding ``<split>/*.torch``.
        split: sub-folder, ``"train"`` or ``"test"``; ``"val"`` reads ``test/`` when there is no
            ``val/`` folder (as pixelSplat validates on the test chunks). Default "train".
        image_shape: output ``(height, width)``. Default (224, 224) (the authors' RE10K config).
        sampler: view sampler. Default :func:`re10k_default_sampler` (context 120-192 frames apart).
        samples_per_scene: Default 1.
        near, far: Default 1.0 / 100.0 (the authors' config).
        skip_bad_samples: log, count and skip bad samples (e.g. scenes shorter than the sampler needs).
        max_cached_chunks: decoded chunks kept in memory. Default 2.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        image_shape: tuple[int, int] = (224, 224),
        sampler: ViewSampler | None = None,
        samples_per_scene: int = 1,
        near: float = 1.0,
        far: float = 100.0,
        skip_bad_samples: bool = False,
        max_cached_chunks: int = 2,
    ):
        super().__init__(sampler if sampler is not None else re10k_default_sampler(), samples_per_scene, skip_bad_samples)
        self.root = Path(root)
        if split == "val" and not (self.root / "val").is_dir():
            split = "test"
        self.split = split
        self.stage_dir = self.root / split
        self.image_shape = (int(image_shape[0]), int(image_shape[1]))
        self.near, self.far = float(near), float(far)
        self._chunks: OrderedDict[Path, dict[str, dict]] = OrderedDict()
        self._max_cached = max(1, max_cached_chunks)
        if not self.stage_dir.is_dir():
            raise SceneDataError(f"expected a folder of .torch chunks at {self.stage_dir}", file=str(self.stage_dir))
        chunk_paths = sorted(self.stage_dir.glob("*.torch"))
        if not chunk_paths:
            raise SceneDataError("no .torch chunks found", file=str(self.stage_dir))
        index_path = self.stage_dir / "index.json"
        entries: list[tuple[str, Path]] = []
        if index_path.is_file():
            index = read_json(index_path, what="an index.json {scene key: chunk file}")
            if not isinstance(index, dict):
                raise SceneDataError("expected an object {scene key: chunk file}", file=str(index_path))
            for key, value in index.items():
                if not isinstance(value, str):
                    raise SceneDataError(f"expected a chunk file name, got {type(value).__name__} {value!r}", file=str(index_path), field=str(key))
                entries.append((str(key), inside(self.stage_dir, value, file=str(index_path), field=str(key))))
        else:
            # No index: read every chunk once to list its scenes (slow for the full dataset; write an index.json).
            for path in tqdm(chunk_paths, desc="indexing chunks", disable=len(chunk_paths) < 8):
                entries.extend((str(example["key"]), path) for example in load_chunk(path))
        if not entries:
            source = index_path if index_path.is_file() else self.stage_dir
            raise SceneDataError("lists no scenes" if source == index_path else "the .torch chunks hold no scenes", file=str(source))
        entries.sort(key=lambda entry: (entry[1].name, entry[0]))  # chunk by chunk, for locality
        self.keys = [key for key, _ in entries]
        self.chunk_of = [path for _, path in entries]
        self._frame_counts: dict[int, int] = {}

    # ------------------------------------------------------------------ chunks
    def _chunk(self, path: Path) -> dict[str, dict]:
        if path in self._chunks:
            self._chunks.move_to_end(path)
            return self._chunks[path]
        examples = {str(example["key"]): example for example in load_chunk(path)}
        self._chunks[path] = examples
        while len(self._chunks) > self._max_cached:
            self._chunks.popitem(last=False)
        return examples

    def example(self, scene_index: int) -> dict:
        key, path = self.keys[scene_index], self.chunk_of[scene_index]
        examples = self._chunk(path)
        if key not in examples:
            raise SceneDataError("scene listed in index.json is not in its chunk", scene=key, file=str(path), field="key")
        return examples[key]

    # ------------------------------------------------------------------ dataset interface
    def num_scenes(self) -> int:
        return len(self.keys)

    def scene_name(self, scene_index: int) -> str:
        return self.keys[scene_index]

    def scene_source(self, scene_index: int) -> str:
        return str(self.chunk_of[scene_index])

    def num_frames(self, scene_index: int) -> int:
        if scene_index not in self._frame_counts:
            example = self.example(scene_index)
            count = len(example["images"])
            cameras = example["cameras"]
            if not isinstance(cameras, torch.Tensor) or cameras.ndim != 2 or cameras.shape[0] != count:
                shape = tuple(cameras.shape) if isinstance(cameras, torch.Tensor) else type(cameras).__name__
                raise SceneDataError(
                    f"expected [{count}, 18] (one row per image), got {shape}",
                    scene=self.keys[scene_index], file=str(self.chunk_of[scene_index]), field="cameras",
                )
            self._frame_counts[scene_index] = count
        return self._frame_counts[scene_index]

    def load_views(self, scene_index: int, frames: list[int]) -> Views:
        key, chunk_path = self.keys[scene_index], str(self.chunk_of[scene_index])
        example = self.example(scene_index)
        world_to_camera, intrinsics = convert_cameras(example["cameras"], scene=key, file=chunk_path)
        images, extrinsics, out_intrinsics = [], [], []
        for position in frames:
            reason = check_rigid(world_to_camera[position])
            if reason is not None:
                raise SceneDataError(f"world-to-camera pose is invalid: {reason}", scene=key, file=chunk_path, field=f"cameras[{position}]")
            if not torch.isfinite(intrinsics[position]).all() or intrinsics[position, 0, 0] <= 0 or intrinsics[position, 1, 1] <= 0:
                raise SceneDataError("intrinsics must be finite with positive focal lengths", scene=key, file=chunk_path, field=f"cameras[{position}]")
            fx, fy = float(intrinsics[position, 0, 0]), float(intrinsics[position, 1, 1])
            if fx > MAX_NORMALISED_FOCAL or fy > MAX_NORMALISED_FOCAL:
                raise SceneDataError(
                    f"focal lengths fx={fx:g}, fy={fy:g} exceed {MAX_NORMALISED_FOCAL:g}: expected intrinsics normalised by the image size "
                    "(pixelSplat's format), not pixels", scene=key, file=chunk_path, field=f"cameras[{position}]",
                )
            encoded = example["images"][position]
            if not isinstance(encoded, torch.Tensor) or encoded.dtype != torch.uint8:
                raise SceneDataError("expected a uint8 tensor of JPEG bytes", scene=key, file=chunk_path, field=f"images[{position}]")
            image = open_image(encoded.numpy().tobytes(), scene=key, field=f"images[{position}]", file=chunk_path)
            original = (image.size[1], image.size[0])
            cropped, scaled = resize_and_center_crop(to_rgb(image, name=f"{chunk_path} images[{position}]"), self.image_shape)
            images.append(image_to_tensor(cropped, None))
            out_intrinsics.append(resize_crop_intrinsics(intrinsics[position], original, scaled, self.image_shape).float())
            extrinsics.append(invert_rigid(world_to_camera[position]).float())
        count = len(frames)
        height, width = self.image_shape
        return Views(
            images=torch.stack(images),
            extrinsics=torch.stack(extrinsics),
            intrinsics=torch.stack(out_intrinsics),
            near=torch.full((count,), self.near),
            far=torch.full((count,), self.far),
            masks=torch.zeros(count, height, width, dtype=torch.int64),  # no masks in RE10K/ACID: one segment
            frame_indices=as_long(frames),
        )
