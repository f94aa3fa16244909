"""The multi-view sample type every loader produces and every consumer (distillation, evaluation) reads.

Shapes are shown unbatched; :func:`collate_multiview` adds a leading batch dimension ``B`` to
every tensor and turns ``scene`` into a list of strings. Both forms validate on construction,
so a loader bug surfaces where the sample is made, with the field named, rather than three
modules later as a shape error.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

from ..cameras import check_rigid

__all__ = ["Views", "MultiViewSample", "collate_multiview", "stack_views", "concat_views"]

_OPTIONAL_FIELDS = ("depths", "normals", "semantics", "frame_indices")


def _shape(tensor: torch.Tensor) -> tuple[int, ...]:
    return tuple(tensor.shape)


@dataclass
class Views:
    """A set of ``V`` posed views of one scene (or ``B`` scenes once batched).

    Attributes:
        images: ``[V, 3, H, W]`` float32 in [0, 1].
        extrinsics: ``[V, 4, 4]`` camera-to-world, OpenCV axes (x right, y down, z forward).
        intrinsics: ``[V, 3, 3]`` normalised (``fx/W, fy/H, cx/W, cy/H``).
        near: ``[V]`` near plane (> 0).
        far: ``[V]`` far plane (> near).
        masks: ``[V, H, W]`` int64 instance labels; a single segment (all zeros) where the source has none.
        depths: optional ``[V, H, W]`` z-depth, 0 = invalid.
        normals: optional ``[V, 3, H, W]`` unit normals in the camera frame (OpenCV axes).
        semantics: optional ``[V, H, W]`` int64 class ids.
        frame_indices: optional ``[V]`` int64 frame indices in the source sequence.
    """

    images: torch.Tensor
    extrinsics: torch.Tensor
    intrinsics: torch.Tensor
    near: torch.Tensor
    far: torch.Tensor
    masks: torch.Tensor
    depths: torch.Tensor | None = None
    normals: torch.Tensor | None = None
    semantics: torch.Tensor | None = None
    frame_indices: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ validation
    @property
    def is_batched(self) -> bool:
        return self.images.ndim == 5

    @property
    def num_views(self) -> int:
        return self.images.shape[-4]

    @property
    def height(self) -> int:
        return self.images.shape[-2]

    @property
    def width(self) -> int:
        return self.images.shape[-1]

    def validate(self) -> None:
        """Check shapes, dtypes and value ranges; raise ``ValueError`` naming the offending field."""
        for name in ("images", "extrinsics", "intrinsics", "near", "far", "masks"):
            if not isinstance(getattr(self, name), torch.Tensor):
                raise TypeError(f"Views.{name} must be a torch.Tensor, got {type(getattr(self, name)).__name__}")
        images = self.images
        if images.ndim not in (4, 5) or images.shape[-3] != 3:
            raise ValueError(f"Views.images must be [V, 3, H, W] (or [B, V, 3, H, W]), got {_shape(images)}")
        if not images.is_floating_point():
            raise ValueError(f"Views.images must be floating point (float32 from the loaders) in [0, 1], got dtype {images.dtype}")
        if images.numel() and (not torch.isfinite(images).all() or images.min() < 0 or images.max() > 1):
            raise ValueError(
                f"Views.images must be finite and in [0, 1], got range [{images.min().item():.4g}, {images.max().item():.4g}]"
            )
        lead = _shape(images)[:-3]  # (V,) or (B, V)
        height, width = images.shape[-2:]

        def expect(name: str, tensor: torch.Tensor, tail: tuple[int, ...], dtypes: tuple[torch.dtype, ...]) -> None:
            expected = lead + tail
            if _shape(tensor) != expected:
                raise ValueError(f"Views.{name} must have shape {list(expected)} (leading dims of images), got {list(_shape(tensor))}")
            if tensor.dtype not in dtypes:
                raise ValueError(f"Views.{name} must have dtype in {[str(d) for d in dtypes]}, got {tensor.dtype}")

        floats = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
        expect("extrinsics", self.extrinsics, (4, 4), floats)
        reason = check_rigid(self.extrinsics)
        if reason is not None:
            raise ValueError(f"Views.extrinsics must be rigid camera-to-world transforms: {reason}")
        expect("intrinsics", self.intrinsics, (3, 3), floats)
        intrinsics = self.intrinsics
        if not torch.isfinite(intrinsics).all():
            raise ValueError("Views.intrinsics contains non-finite values")
        if (intrinsics[..., 0, 0] <= 0).any() or (intrinsics[..., 1, 1] <= 0).any():
            raise ValueError("Views.intrinsics must have positive focal lengths (fx/W, fy/H)")
        if (intrinsics[..., 0, 0] > 50).any() or (intrinsics[..., 1, 1] > 50).any():
            raise ValueError(
                "Views.intrinsics look like pixel intrinsics (fx/W > 50); normalise them with snd.cameras.normalize_intrinsics"
            )
        expect("near", self.near, (), floats)
        expect("far", self.far, (), floats)
        if (self.near <= 0).any() or not torch.isfinite(self.near).all():
            raise ValueError(f"Views.near must be finite and > 0, got min {self.near.min().item():.4g}")
        if (self.far <= self.near).any():
            raise ValueError("Views.far must be greater than Views.near for every view")
        integer = (torch.int64,)
        expect("masks", self.masks, (height, width), integer)
        if self.depths is not None:
            expect("depths", self.depths, (height, width), floats)
            if not torch.isfinite(self.depths).all() or (self.depths < 0).any():
                raise ValueError("Views.depths must be finite and >= 0 (0 marks invalid depth)")
        if self.normals is not None:
            expect("normals", self.normals, (3, height, width), floats)
            if not torch.isfinite(self.normals).all():
                raise ValueError("Views.normals contains non-finite values")
            length = self.normals.norm(dim=-3)
            # Zero vectors are allowed (no surface, e.g. invalid depth); others must be unit.
            bad = (length > 1e-6) & ((length - 1).abs() > 1e-3)
            if bad.any():
                raise ValueError("Views.normals must be unit vectors (or zero where undefined)")
        if self.semantics is not None:
            expect("semantics", self.semantics, (height, width), integer)
        if self.frame_indices is not None:
            expect("frame_indices", self.frame_indices, (), integer)

    # ------------------------------------------------------------------ helpers
    @classmethod
    def _trusted(cls, **values) -> "Views":
        """Build without validation: only for views derived (indexed, moved) from validated ones."""
        views = cls.__new__(cls)
        for field in fields(cls):
            setattr(views, field.name, values.get(field.name))
        return views

    def to(self, *args, **kwargs) -> "Views":
        """Move/cast every tensor (dtype casts apply to floating tensors only, like ``nn.Module.to``)."""
        moved = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if value is None:
                moved[field.name] = None
            elif value.is_floating_point():
                moved[field.name] = value.to(*args, **kwargs)
            else:
                device = kwargs.get("device", next((a for a in args if isinstance(a, (str, torch.device))), None))
                moved[field.name] = value.to(device) if device is not None else value
        return Views._trusted(**moved)

    def select(self, index) -> "Views":
        """Views picked along the view axis (unbatched only), e.g. ``views.select([0, 2])`` or a slice."""
        if self.is_batched:
            raise ValueError("Views.select works on unbatched views; index the batch first")
        if not isinstance(index, slice):
            positions = torch.as_tensor(index, dtype=torch.long).reshape(-1).tolist()
            if any(not -self.num_views <= p < self.num_views for p in positions):
                raise IndexError(f"Views.select: indices {positions} out of range for {self.num_views} views")
            positions = [p % self.num_views for p in positions]
            if positions and positions == list(range(positions[0], positions[0] + len(positions))):
                index = slice(positions[0], positions[0] + len(positions))  # a view, no copy
            else:
                index = torch.tensor(positions, dtype=torch.long)
        return Views._trusted(**{f.name: None if getattr(self, f.name) is None else getattr(self, f.name)[index] for f in fields(self)})

    def __getitem__(self, batch_index: int) -> "Views":
        """The unbatched views of batch element ``batch_index``."""
        if not self.is_batched:
            raise ValueError("Views[...] indexes the batch dimension; these views are unbatched (use select)")
        return Views._trusted(**{f.name: None if getattr(self, f.name) is None else getattr(self, f.name)[batch_index] for f in fields(self)})


def _combine(views: list[Views], combine, what: str) -> Views:
    if not views:
        raise ValueError(f"cannot {what} an empty list of Views")
    out = {}
    for field in fields(Views):
        values = [getattr(v, field.name) for v in views]
        present = [value is not None for value in values]
        if all(present):
            try:
                out[field.name] = combine(values)
            except RuntimeError as error:
                shapes = [list(value.shape) for value in values]
                raise ValueError(f"cannot {what} Views.{field.name}: shapes differ {shapes}") from error
        elif any(present):
            raise ValueError(f"cannot {what} Views: field {field.name!r} is set on some samples and None on others")
        else:
            out[field.name] = None
    return Views(**out)


def stack_views(views: list[Views]) -> Views:
    """Stack unbatched :class:`Views` into batched ones (leading ``B``)."""
    return _combine(views, lambda values: torch.stack(values, dim=0), "stack")


def concat_views(views: list[Views]) -> Views:
    """Concatenate unbatched views of the same scene along the view axis."""
    if any(v.is_batched for v in views):
        raise ValueError("concat_views works on unbatched Views")
    return _combine(views, lambda values: torch.cat(values, dim=0), "concatenate")


@dataclass
class MultiViewSample:
    """Context views (2), target views (>= 1) and the scene name (a list of names once collated)."""

    context: Views
    target: Views
    scene: str | list[str]

    def __post_init__(self) -> None:
        if not isinstance(self.context, Views) or not isinstance(self.target, Views):
            raise TypeError("MultiViewSample.context and .target must be Views")
        if self.context.is_batched != self.target.is_batched:
            raise ValueError("MultiViewSample.context and .target must both be batched or both unbatched")
        if self.context.num_views < 1:
            raise ValueError(f"MultiViewSample.context needs >= 1 view, got {self.context.num_views}")
        if self.target.num_views < 1:
            raise ValueError(f"MultiViewSample.target needs >= 1 view, got {self.target.num_views}")
        if self.context.is_batched:
            batch = self.context.images.shape[0]
            if self.target.images.shape[0] != batch:
                raise ValueError(
                    f"MultiViewSample batch sizes differ: context {batch}, target {self.target.images.shape[0]}"
                )
            if not isinstance(self.scene, (list, tuple)) or len(self.scene) != batch:
                raise ValueError(f"MultiViewSample.scene must be a list of {batch} names once batched, got {self.scene!r}")
            self.scene = list(self.scene)
        elif not isinstance(self.scene, str):
            raise ValueError(f"MultiViewSample.scene must be a str for an unbatched sample, got {type(self.scene).__name__}")

    @property
    def batch_size(self) -> int | None:
        return self.context.images.shape[0] if self.context.is_batched else None

    def to(self, *args, **kwargs) -> "MultiViewSample":
        return replace(self, context=self.context.to(*args, **kwargs), target=self.target.to(*args, **kwargs))

    def __getitem__(self, batch_index: int) -> "MultiViewSample":
        if not self.context.is_batched:
            raise ValueError("MultiViewSample[...] indexes the batch; this sample is unbatched")
        return MultiViewSample(self.context[batch_index], self.target[batch_index], self.scene[batch_index])


def collate_multiview(samples: list[MultiViewSample]) -> MultiViewSample:
    """``DataLoader`` collate function: stack unbatched samples into one batched sample.

    All samples must have the same number of views and the same resolution (the loaders resize).
    """
    if not samples:
        raise ValueError("collate_multiview got an empty list")
    for index, sample in enumerate(samples):
        if not isinstance(sample, MultiViewSample):
            raise TypeError(f"collate_multiview: item {index} is {type(sample).__name__}, expected MultiViewSample")
        if sample.context.is_batched:
            raise ValueError(f"collate_multiview: item {index} (scene {sample.scene!r}) is already batched")
    return MultiViewSample(
        context=stack_views([s.context for s in samples]),
        target=stack_views([s.target for s in samples]),
        scene=[s.scene for s in samples],
    )
