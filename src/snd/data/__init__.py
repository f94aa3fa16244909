"""Multi-view scene data: the sample type, loaders, view sampling and synthetic scenes."""

from .sample import MultiViewSample, Views, collate_multiview, concat_views, stack_views

__all__ = ["Views", "MultiViewSample", "collate_multiview", "concat_views", "stack_views"]
