"""Errors raised for bad input data, naming the scene, the file and the field."""

from __future__ import annotations


class SceneDataError(ValueError):
    """A sample could not be built from the data on disk.

    Attributes:
        scene: the scene (sequence) name.
        file: the offending file (path as text), or None when the problem is not tied to one file.
        field: the offending field, e.g. ``"frames[3].transform_matrix"``, ``"image"``, ``"mask"``.
        reason: what was wrong and what was expected.
    """

    def __init__(self, reason: str, *, scene: str | None = None, file: str | None = None, field: str | None = None):
        self.scene = scene
        self.file = None if file is None else str(file)
        self.field = field
        self.reason = reason
        where = []
        if scene is not None:
            where.append(f"scene {scene!r}")
        if file is not None:
            where.append(f"file {str(file)!r}")
        if field is not None:
            where.append(f"field {field!r}")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {reason}" if prefix else reason)
