"""Which SnD weights the authors probe on which task, and a warning when a run differs.

The SnD authors evaluate the **with-blending** weights (``dinov2_{small,base}_snd.pth``,
``snd/dinov2-s``, ``snd/dinov2-b``) on depth, normals and segmentation, and the
**without-blending** weights (``*_snd_no_blending.pth``, ``snd/dinov2-*-no-blending``) on
multiview correspondence (SnD ``evaluation2/configs/backbone/*.yaml``: ``load_snd`` is
``with_blending`` or ``without_blending``). :func:`warn_model_choice` says so when a run probes the
other variant; models that are not recognisably SnD (plain DINOv2, custom folders) get no warning.
"""

from __future__ import annotations

import re
import warnings

DENSE_TASKS = ("depth", "normals", "segmentation")
CORRESPONDENCE_TASKS = ("correspondence",)

_NO_BLENDING = re.compile(r"(no|without)[-_ ]?blend", re.IGNORECASE)
_SND = re.compile(r"(^|[^a-z])snd([^a-z]|$)", re.IGNORECASE)


def blending_variant(model_name: str) -> str | None:
    """``"no-blending"``, ``"blending"`` or ``None`` (not recognisably an SnD checkpoint) from a name or path."""
    text = str(model_name)
    if _NO_BLENDING.search(text):
        return "no-blending"
    if _SND.search(text):
        return "blending"
    return None


def model_choice_warning(model_name: str, task: str) -> str | None:
    """The warning text for probing ``model_name`` on ``task`` against the authors' choice, else ``None``."""
    variant = blending_variant(model_name)
    if variant == "no-blending" and task in DENSE_TASKS:
        return (
            f"{model_name} is a without-blending SnD model; the SnD authors evaluate {task} with the with-blending "
            "weights (e.g. snd/dinov2-s, dinov2_small_snd.pth). Results will not match the published row."
        )
    if variant == "blending" and task in CORRESPONDENCE_TASKS:
        return (
            f"{model_name} is a with-blending SnD model; the SnD authors evaluate {task} with the without-blending "
            "weights (e.g. snd/dinov2-s-no-blending, dinov2_small_snd_no_blending.pth). Results will not match the "
            "published row."
        )
    return None


def warn_model_choice(model_name: str, task: str) -> str | None:
    """Issue :func:`model_choice_warning` as a ``UserWarning`` (if any) and return its text."""
    message = model_choice_warning(model_name, task)
    if message is not None:
        warnings.warn(message, UserWarning, stacklevel=2)
    return message
