"""Fixtures in the on-disk layouts of the Probe3D protocols (GeoNet .mat, NYU pickle, ScanNet pairs).

The MAT-file writer restates the MATLAB level-5 format from its specification (128-byte header,
tagged data elements padded to 8 bytes, small elements for <= 4 bytes, miCOMPRESSED = zlib of a
miMATRIX, column-major data), independently of the reader under test.
"""

from __future__ import annotations

import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

# numpy dtype -> (mxClass, miType)
_CLASSES = {"f8": (6, 9), "f4": (7, 7), "u1": (9, 2), "i4": (12, 5), "u2": (11, 4)}
_MI = {"f8": 9, "f4": 7, "u1": 2, "i4": 5, "u2": 4}
GEONET_MEAN = np.array([122.175, 116.169, 103.508])


def _element(kind: int, payload: bytes, endian: str) -> bytes:
    if 0 < len(payload) <= 4:  # small data element: one word (size << 16 | type), then 4 data bytes
        return struct.pack(endian + "I", (len(payload) << 16) | kind) + payload + b"\0" * (4 - len(payload))
    return struct.pack(endian + "II", kind, len(payload)) + payload + b"\0" * ((-len(payload)) % 8)


def _matrix(name: str, array: np.ndarray, endian: str, stored: str | None = None) -> bytes:
    code = array.dtype.str[1:]
    mx_class, _ = _CLASSES[code]
    stored = stored or code
    flags = _element(6, struct.pack(endian + "II", mx_class, 0), endian)
    dims = _element(5, np.asarray(array.shape if array.ndim >= 2 else (1, array.size), dtype=endian + "i4").tobytes(), endian)
    label = _element(1, name.encode("ascii"), endian)
    data = _element(_MI[stored], np.asarray(array, dtype=endian + stored).tobytes(order="F"), endian)
    return _element(14, flags + dims + label + data, endian)


def write_mat_v5(path: Path, variables: dict, compress: bool = True, endian: str = "<", stored: dict | None = None) -> Path:
    """Write ``variables`` (name -> numeric array) as a MAT v5 file; ``stored`` maps names to a smaller storage type."""
    header = b"MATLAB 5.0 MAT-file, written by the snd tests".ljust(116, b" ") + b"\0" * 8
    header += struct.pack(endian + "H", 0x0100) + (b"IM" if endian == "<" else b"MI")
    body = b""
    for name, array in variables.items():
        element = _matrix(name, np.asarray(array), endian, (stored or {}).get(name))
        if compress:
            packed = zlib.compress(element, 1)
            element = struct.pack(endian + "II", 15, len(packed)) + packed
        body += element
    path = Path(path)
    path.write_bytes(header + body)
    return path


def geonet_frame(rng: np.random.Generator, height: int = 482, width: int = 644):
    """One GeoNet-like frame (slightly larger than 480 x 640, as the loader crops ``[:480, :640]``)."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.stack([(xs / width) * 200 + 20, (ys / height) * 200 + 20, np.full_like(xs, 90.0)], axis=-1)
    rgb += rng.integers(0, 20, size=(1, 1, 3))
    rgb = np.floor(rgb)
    img = (rgb - 2 * GEONET_MEAN).astype(np.float32)  # GeoNet stores the image minus twice the mean
    depth = (1.0 + 11.0 * xs / width).astype(np.float32)  # 1 m .. 12 m: the right part exceeds 10 m
    depth[:40, :40] = 0
    normal = np.stack([np.sin(xs / 97.0), np.cos(xs / 97.0) * 0.6, np.full_like(xs, 0.8)], axis=-1)
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    normal[100:110, 200:260] = 0  # zero-length ground truth where depth is valid
    return img, depth, normal.astype(np.float32), rgb


def write_geonet(root: Path, count: int = 3, seed: int = 0) -> Path:
    folder = Path(root) / "nyu_geonet"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        img, depth, normal, _ = geonet_frame(rng)
        write_mat_v5(folder / f"bedroom_{index:04d}_out_{index}-{index:05d}.mat", {"img": img, "depth": depth, "norm": normal})
    return folder


def nyu_arrays(count: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:480, 0:640].astype(np.float32)
    images = np.stack([np.stack([xs / 3 % 255, ys / 2 % 255, np.full_like(xs, 30 * i)]) for i in range(count)])
    depths = np.stack([1.0 + 10.5 * xs / 640 + 0.1 * i for i in range(count)]).astype(np.float32)
    depths[:, :20, :] = 0
    snorms = rng.normal(size=(count, 3, 480, 640)).astype(np.float32)
    snorms /= np.linalg.norm(snorms, axis=1, keepdims=True)
    snorms[:, :, 300:310, 100:400] = 0
    return images.astype(np.uint8), depths, snorms


def write_nyu_pickle(path: Path, count: int = 3, test_indices=(2, 0), seed: int = 0) -> Path:
    images, depths, snorms = nyu_arrays(count, seed)
    data = {"images": images, "depths": depths, "snorms": snorms, "scene_types": [["bedroom"]] * count,
            "train_indices": np.array([1]), "test_indices": np.array(test_indices)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        pickle.dump(data, handle)
    return path


def look_at_pose(angle_degrees: float, offset=(0.0, 0.0, 0.0)) -> np.ndarray:
    """Camera-to-world pose rotated about the y axis."""
    angle = np.radians(angle_degrees)
    pose = np.eye(4)
    pose[:3, :3] = [[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]]
    pose[:3, 3] = offset
    return pose


def write_scannet_pairs(root: Path, pairs=((707, 0, 15, 30), (708, 1, 0, 45)), image_size=(640, 480),
                        angles=((0.0, 5.0), (0.0, 40.0))) -> Path:
    """``scannet_test_1500`` layout: test.npz, intrinsics.npz and per-scene color/depth/pose files."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    intrinsics = {}
    for (room, sequence, frame0, frame1), (angle0, angle1) in zip(pairs, angles):
        scene = f"scene{room:04d}_{sequence:02d}"
        intrinsics[scene] = np.array([[577.6, 0, 318.9], [0, 578.7, 242.7], [0, 0, 1.0]])
        for sub in ("color", "depth", "pose"):
            (root / scene / sub).mkdir(parents=True, exist_ok=True)
        for frame, angle in ((frame0, angle0), (frame1, angle1)):
            pixels = rng.integers(0, 255, size=(image_size[1] // 16, image_size[0] // 16, 3), dtype=np.uint8)
            Image.fromarray(pixels).resize(image_size, Image.NEAREST).save(root / scene / "color" / f"{frame}.jpg", quality=95)
            ys, xs = np.mgrid[0:480, 0:640]
            depth = (1500 + 2 * xs + ys).astype(np.uint16)
            valid = np.zeros_like(depth, dtype=bool)
            valid[140:340, 200:440] = True  # 50 x 60 points at 1/4 scale: keeps the brute-force kNN small
            depth[~valid] = 0
            Image.fromarray(depth).save(root / scene / "depth" / f"{frame}.png")
            np.savetxt(root / scene / "pose" / f"{frame}.txt", look_at_pose(angle, (0.1 * frame, 0, 0)), delimiter=" ")
    np.savez(root / "test.npz", name=np.array(pairs, dtype=np.int64))
    np.savez(root / "intrinsics.npz", **intrinsics)
    return root
