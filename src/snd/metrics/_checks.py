"""Input checks shared by the packaged `evaluate` metrics (depth, normals, correspondence): each error names the
metric and the argument. The metric scripts import this by its absolute name, which works both as
``snd.metrics.<name>`` and from the copy ``evaluate.load`` makes of the script (snd is installed either way)."""

from __future__ import annotations

import numpy as np


def as_float_array(values, name: str, *, metric: str) -> np.ndarray:
    """``values`` as float64, or ``ValueError`` naming ``metric`` and the argument ``name``."""
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{metric}: `{name}` must be numeric arrays ({error})") from None


def check_finite(array: np.ndarray, name: str, *, metric: str) -> None:
    """``ValueError`` with the count and the first index of any NaN/Inf in ``array``."""
    bad = ~np.isfinite(array)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{metric}: `{name}` hold {int(bad.sum())} non-finite value(s) (first {float(array[index])!r} at "
                         f"index {index}); a model output must be finite")


def check_thresholds(thresholds, name: str = "thresholds", *, metric: str) -> None:
    """``ValueError`` unless ``thresholds`` is a non-empty set of finite numbers > 0."""
    values = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if values.size == 0 or not (np.isfinite(values) & (values > 0)).all():
        raise ValueError(f"{metric}: `{name}` must be finite numbers > 0, got {thresholds!r}")
