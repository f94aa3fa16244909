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

__all__ = ["check_depth_image", "check_unique", "inside", "is_number", "require_bool", "require_matrix", "require_number"]

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
