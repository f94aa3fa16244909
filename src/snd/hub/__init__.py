"""Publishing SnD backbones on the Hugging Face Hub: model cards rendered from `hub_cards/` templates,
`push_model` (weights, config, image processor and card in one commit) and the official-weights publisher."""

from .cards import (
    DATASETS,
    METRICS,
    TASKS,
    VARIANTS,
    ModelCardInfo,
    ProbeResult,
    find_template,
    render_model_card,
)
from .push import PushResult, push_model, save_for_hub, verify_pushed_model

__all__ = [
    "DATASETS",
    "METRICS",
    "TASKS",
    "VARIANTS",
    "ModelCardInfo",
    "ProbeResult",
    "PushResult",
    "find_template",
    "push_model",
    "render_model_card",
    "save_for_hub",
    "verify_pushed_model",
]
