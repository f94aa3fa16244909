"""Tiny datasets written in the exact on-disk formats, built from synthetic scenes with known ground truth."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from snd.cameras import denormalize_intrinsics, invert_rigid, opengl_to_opencv
from snd.data import SyntheticSceneConfig, generate_scene

TINY = SyntheticSceneConfig(num_scenes=2, num_frames=12, height=24, width=32, seed=3)


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """[3, H, W] float in [0, 1] -> [H, W, 3] uint8."""
    return (image.permute(1, 2, 0).numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8)


def jpeg_bytes(image: torch.Tensor, quality: int = 95) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(to_uint8(image)).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def write_scannetpp_scene(root: Path, config: SyntheticSceneConfig = TINY, scene_index: int = 0, name: str | None = None,
                          bad_frames: tuple[int, ...] = (), write_depth: bool = True, frame_offset: int = 1000):
    """Write a synthetic scene as a ScanNet++ (nerfstudio) scene folder; return (scene, render, name).

    Poses are converted to OpenGL camera-to-world (diag(1,-1,-1,1) on both sides, an involution of
    snd.cameras.opengl_to_opencv), intrinsics are written in pixels, masks as 16-bit PNG, depth as
    16-bit millimetre PNG. Frame files are DSC<number>.JPG; frames in ``bad_frames`` get is_bad=True.
    """
    scene = generate_scene(config, scene_index)
    render = scene.render()
    views = render.views
    name = name or f"scene{scene_index:02d}"
    folder = Path(root) / "scenes" / name
    for sub in ("images", "instance_segmentation", "depth"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    pixel = denormalize_intrinsics(scene.intrinsics.double(), config.width, config.height)
    frames = []
    # Listed out of order on purpose: the loader sorts by the number in the file name.
    for frame in reversed(range(scene.num_frames)):
        file_name = f"DSC{frame_offset + frame:05d}.JPG"
        Image.fromarray(to_uint8(views.images[frame])).save(folder / "images" / file_name, quality=95)
        mask = views.masks[frame].numpy().astype(np.uint16)
        Image.fromarray(mask).save(folder / "instance_segmentation" / f"{file_name}.png")
        if write_depth:
            depth_mm = np.round(views.depths[frame].double().numpy() * 1000).astype(np.uint16)
            Image.fromarray(depth_mm).save(folder / "depth" / f"DSC{frame_offset + frame:05d}.png")
        opengl = opengl_to_opencv(views.extrinsics[frame].double())
        frames.append({"file_path": file_name, "transform_matrix": opengl.tolist(), "is_bad": frame in bad_frames})
    meta = {
        "fl_x": float(pixel[0, 0]), "fl_y": float(pixel[1, 1]), "cx": float(pixel[0, 2]), "cy": float(pixel[1, 2]),
        "w": config.width, "h": config.height, "camera_model": "PINHOLE", "frames": frames,
    }
    (folder / "transforms_train.json").write_text(json.dumps(meta))
    return scene, render, name


def write_split(root: Path, split: str, names: list[str]) -> None:
    (Path(root) / "metadata").mkdir(parents=True, exist_ok=True)
    (Path(root) / "metadata" / f"nvs_sem_{split}.txt").write_text("\n".join(names) + "\n")


def re10k_example(config: SyntheticSceneConfig = TINY, scene_index: int = 0, key: str | None = None):
    """A pixelSplat-format scene dict from a synthetic scene; also returns the render."""
    scene = generate_scene(config, scene_index)
    render = scene.render()
    views = render.views
    count = views.num_views
    world_to_camera = invert_rigid(views.extrinsics.double())
    cameras = torch.zeros(count, 18, dtype=torch.float32)
    cameras[:, 0] = views.intrinsics[:, 0, 0]
    cameras[:, 1] = views.intrinsics[:, 1, 1]
    cameras[:, 2] = views.intrinsics[:, 0, 2]
    cameras[:, 3] = views.intrinsics[:, 1, 2]
    cameras[:, 6:] = world_to_camera[:, :3, :].reshape(count, 12).float()
    images = [torch.frombuffer(bytearray(jpeg_bytes(views.images[i])), dtype=torch.uint8) for i in range(count)]
    example = {
        "key": key or f"re10k{scene_index:04d}",
        "url": "https://www.youtube.com/watch?v=synthetic",
        "timestamps": torch.arange(count, dtype=torch.int64) * 33_366,
        "cameras": cameras,
        "images": images,
    }
    return example, render


def write_re10k_chunks(root: Path, examples_per_chunk: list[list[dict]], split: str = "train", write_index: bool = True) -> Path:
    stage_dir = Path(root) / split
    stage_dir.mkdir(parents=True, exist_ok=True)
    index = {}
    for number, examples in enumerate(examples_per_chunk):
        name = f"{number:06d}.torch"
        torch.save(examples, stage_dir / name)
        index.update({example["key"]: name for example in examples})
    if write_index:
        (stage_dir / "index.json").write_text(json.dumps(index))
    return stage_dir
