"""What ``scripts/distill.py`` calls once it has parsed its arguments."""

from __future__ import annotations

from .config import DistillConfig, load_config
from .trainer import TrainResult, train


def resolve_config(
    config: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    output_dir: str | None = None,
    max_steps: int | None = None,
    seed: int | None = None,
    push_to_hub: str | None = None,
) -> DistillConfig:
    """The run's config: a YAML file or shipped preset (None: the embedded default), then ``key=value``
    overrides, then the dedicated command-line options (which win)."""
    overrides = list(overrides)
    if output_dir is not None:
        overrides.append(f"training.output_dir={output_dir}")
    if max_steps is not None:
        overrides.append(f"training.max_steps={max_steps}")
    if seed is not None:
        overrides.append(f"training.seed={seed}")
    if push_to_hub is not None:
        overrides.append(f"training.hub_model_id={push_to_hub}")
    return load_config(config, overrides)


def run(
    config: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    output_dir: str | None = None,
    max_steps: int | None = None,
    seed: int | None = None,
    resume_from_checkpoint: str | None = None,
    push_to_hub: str | None = None,
    progress: bool = True,
    overwrite_output_dir: bool = False,
    verbose: bool = False,
    allow_config_change: bool = False,
) -> TrainResult:
    """Resolve the config and train (see :func:`snd.distill.train`). Logging is quiet (one line per checkpoint and
    warnings) unless ``verbose``."""
    from .launch import configure_logging

    configure_logging(verbose)
    resolved = resolve_config(config, overrides, output_dir, max_steps, seed, push_to_hub)
    return train(resolved, resume_from_checkpoint=resume_from_checkpoint, push_to_hub=resolved.training.hub_model_id,
                 progress=progress, overwrite_output_dir=overwrite_output_dir, allow_config_change=allow_config_change)
