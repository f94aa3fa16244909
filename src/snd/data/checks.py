"""Type, path and file checks shared by the dataset loaders; each raises :class:`SceneDataError` naming the
scene, the file and the field.

* metadata types: booleans must be JSON booleans (``"false"`` is a non-empty string, i.e. true), numbers
  must be numbers (``true`` is not the number 1);
* paths read from metadata (split files, ``file_path``, RE10K ``index.json``) must stay inside the folder
  they are relative to: no absolute paths, no ``..`` escapes, no symlinks pointing out;
* depth maps must be 16-bit single-channel PNGs (millimetres) of exactly the image size;
* a frame may be listed once.
"""

from __future__ import annotations

import math
from pathlib import Path

from .errors import SceneDataError

__all__ = [
    "check_depth_image", "check_focal", "check_unique", "inside", "is_number", "read_json", "require_bool", "require_matrix",
    "require_number",
]

DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I")  # 16-bit (Pillow opens 16-bit PNGs as "I;16" or "I")


def is_number(value) -> bool:
    """A real JSON number: int or float, not a bool, finite."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def require_number(value, *, scene=None, file=None, field=None, positive: bool = False) -> float:
    if not is_number(value) or (positive and value <= 0):
        raise SceneDataError(
            f"expected a finite number{' > 0' if positive else ''}, got {type(value).__name__} {value!r}", scene=scene, file=file, field=field
        )
    return float(value)


def require_matrix(value, rows: int = 4, columns: int = 4, *, scene=None, file=None, field=None):
    """A ``rows`` x ``columns`` nested list of numbers (``true`` is not 1.0, ``"0"`` not 0; finiteness is
    left to the pose check, which names it)."""

    def number(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    if not (
        isinstance(value, list)
        and len(value) == rows
        and all(isinstance(row, list) and len(row) == columns and all(number(v) for v in row) for row in value)
    ):
        raise SceneDataError(f"expected a {rows}x{columns} list of numbers, got {str(value)[:80]}", scene=scene, file=file, field=field)
    return value


def require_bool(value, *, default: bool = False, scene=None, file=None, field=None) -> bool:
    """``value`` when it is a JSON boolean, ``default`` when absent (None); anything else is refused."""
    if value is None:
        return default
    if not isinstance(value, bool):
        raise SceneDataError(f"expected true or false, got {type(value).__name__} {value!r}", scene=scene, file=file, field=field)
    return value


def inside(base: str | Path, relative: str, *, scene=None, file=None, field=None) -> Path:
    """``base / relative``, refused when ``relative`` is absolute or resolves outside ``base``."""
    if not isinstance(relative, str) or not relative or "\x00" in relative:
        raise SceneDataError(f"expected a relative path, got {relative!r}", scene=scene, file=file, field=field)
    base = Path(base)
    candidate = Path(relative)
    if candidate.is_absolute() or candidate.drive:
        raise SceneDataError(f"path {relative!r} is absolute; paths in metadata must be relative to {base}", scene=scene, file=file, field=field)
    resolved_base = base.resolve()
    resolved = (base / candidate).resolve()
    if resolved != resolved_base and resolved_base not in resolved.parents:
        raise SceneDataError(f"path {relative!r} resolves outside {base} (to {resolved})", scene=scene, file=file, field=field)
    return base / candidate


def check_unique(names: list[str], fields: list[str], *, scene=None, file=None) -> None:
    """Refuse a frame listed twice, naming both fields."""
    seen: dict[str, str] = {}
    for name, field in zip(names, fields):
        if name in seen:
            raise SceneDataError(f"frame {name!r} is listed twice (also at {seen[name]})", scene=scene, file=file, field=field)
        seen[name] = field


def check_depth_image(depth_image, image_size: tuple[int, int], *, scene=None, file=None, field: str = "depth") -> None:
    """A depth map must be a single-channel 16-bit image (uint16 millimetres) of the image's ``(width, height)``."""
    if depth_image.mode not in DEPTH_MODES:
        raise SceneDataError(
            f"expected a 16-bit single-channel depth PNG (uint16 millimetres), got mode {depth_image.mode!r}"
            + (" (8-bit: values would be read as millimetres up to 255)" if depth_image.mode in ("L", "P", "1") else ""),
            scene=scene, file=file, field=field,
        )
    if tuple(depth_image.size) != tuple(image_size):
        raise SceneDataError(
            f"depth map is {depth_image.size[0]}x{depth_image.size[1]} but its image is {image_size[0]}x{image_size[1]}",
            scene=scene, file=file, field=field,
        )


def _scene_error(scene=None, file=None, field=None):
    """An ``error`` factory for :mod:`snd.safe_io` raising :class:`SceneDataError` (the file is named once)."""

    def make(message: str) -> SceneDataError:
        prefix = f"{file}: "
        return SceneDataError(message[len(prefix):] if file is not None and message.startswith(prefix) else message,
                              scene=scene, file=file, field=field)

    return make


def read_json(path: str | Path, *, scene=None, what: str = "a JSON file"):
    """Parse a metadata JSON file: a regular file (a FIFO would block), UTF-8, not nested beyond the parser's depth;
    every failure is a :class:`SceneDataError` naming the scene and file."""
    from ..safe_io import load_json

    return load_json(path, what=what, error=_scene_error(scene=scene, file=str(path)))


def read_text_lines(path: str | Path, *, scene=None, what: str = "a text file") -> list[str]:
    from ..safe_io import read_text

    return read_text(path, what=what, error=_scene_error(scene=scene, file=str(path))).splitlines()


#: Focal lengths beyond these multiples of the image size are refused: a focal length of 1e30 pixels (or 1e-30)
#: overflows the projection to inf/0 in float32 and renders nothing, without an error.
FOCAL_RANGE = (1e-3, 1e4)


def check_focal(value: float, extent: float, *, scene=None, file=None, field=None) -> float:
    """A focal length in pixels within ``FOCAL_RANGE`` x the image extent (width for fl_x, height for fl_y)."""
    low, high = FOCAL_RANGE[0] * extent, FOCAL_RANGE[1] * extent
    if not low <= value <= high:
        raise SceneDataError(
            f"focal length {value!r} px is outside [{low:g}, {high:g}] ({FOCAL_RANGE[0]:g} to {FOCAL_RANGE[1]:g} times the "
            f"image size {extent:g} px); expected a pinhole focal length in pixels",
            scene=scene, file=file, field=field,
        )
    return value


#: Largest image side accepted in metadata (``w``, ``h``): a size of 1e30 is a corrupt field, not a camera.
MAX_IMAGE_SIDE = 100_000


def require_image_size(width, height, *, scene=None, file=None, field: str = "w/h") -> tuple[int, int]:
    """``(height, width)`` from metadata ``w``, ``h``: positive whole numbers of pixels up to ``MAX_IMAGE_SIDE``
    (``32.5`` is refused rather than truncated to 32, ``true`` is not 1)."""
    if not all(is_number(v) and 0 < v <= MAX_IMAGE_SIDE and float(v).is_integer() for v in (width, height)):
        raise SceneDataError(
            f"expected positive image sizes w, h in whole pixels (at most {MAX_IMAGE_SIDE}), got w={width!r}, h={height!r}",
            scene=scene, file=file, field=field,
        )
    return int(height), int(width)


def check_principal_point(cx: float, cy: float, width: float, height: float, *, scene=None, file=None, field_prefix: str = "") -> None:
    """The principal point ``(cx, cy)`` in pixels must lie on the image ``[0, width] x [0, height]`` (what every
    undistorted capture has; ``-1`` or ``1e30`` is a corrupt field, and a normalised value would be caught by the
    focal-length range)."""
    for key, value, extent in (("cx", cx, width), ("cy", cy, height)):
        if not 0 <= value <= extent:
            raise SceneDataError(
                f"principal point {key}={value!r} px is outside the image [0, {extent:g}] px; expected pixels",
                scene=scene, file=file, field=f"{field_prefix}{key}",
            )
