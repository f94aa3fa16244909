"""What a distillation run settles before its first step, the way transformers' Trainer and Accelerate do: the
mixed precision (the training config, else the launcher / `accelerate config`), the trackers, the output folder
(never silently mixed with an earlier run), the Hub repository (token and repo checked before training), and how
much it logs. Plus the images sent to trackers that take them.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from .config import ConfigError

logger = logging.getLogger("snd.distill")

#: trackers `training.report_to` can name ("all": every one installed; "auto": TensorBoard when installed).
TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio"}
#: files and folders a run writes into its output_dir; their presence means the folder already holds a run.
RUN_MARKERS = ("config.yaml", "loss_log.jsonl", "checkpoints", "train_summary.json", "student")


# ------------------------------------------------------------------------------------------ precision
def resolve_mixed_precision(accelerator, configured: str | None) -> str:
    """The run's mixed precision: `training.mixed_precision` when set, else what the launcher chose
    (`accelerate launch --mixed_precision`, an `accelerate config` file, `ACCELERATE_MIXED_PRECISION`; `"no"` when
    none did), which `Accelerator(mixed_precision=None)` has already read. Refuses a precision the device cannot run."""
    resolved = str(accelerator.mixed_precision)
    source = "training.mixed_precision" if configured is not None else "the launcher (--mixed_precision / accelerate config)"
    device = accelerator.device
    if resolved == "fp16" and device.type == "cpu":
        raise ConfigError(
            f"mixed precision 'fp16' (from {source}) needs a GPU; this run is on the CPU, where it would have no effect. "
            "Use 'bf16' (CPU autocast) or 'no'"
        )
    if resolved == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"mixed precision 'bf16' (from {source}) is not supported by {torch.cuda.get_device_name(device)}; use 'fp16' or 'no'")
    return resolved


def check_lifter_image_size(lifter, image_height: int, image_width: int) -> None:
    """MVSplat needs image sides that are multiples of its `config.size_multiple` (16 for the released re10k/acid
    checkpoints): refuse other `data.image_height` / `data.image_width` before training, naming both fields."""
    model_config = getattr(getattr(lifter, "model", None), "config", None)
    multiple = getattr(model_config, "size_multiple", None)
    if not multiple or (image_height % multiple == 0 and image_width % multiple == 0):
        return
    def up(value):
        return -(-value // multiple) * multiple
    raise ConfigError(
        f"data.image_height x data.image_width = {image_height} x {image_width}, but this MVSplat lifter needs sides that "
        f"are multiples of {multiple}; e.g. --data.image_height {up(image_height)} --data.image_width {up(image_width)} "
        f"(the student also needs multiples of 14: {int(np.lcm(multiple, 14))} works for both)"
    )


# ------------------------------------------------------------------------------------------ trackers
def _installed(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(TRACKERS[name]) is not None


def tracker_names(report_to: str) -> list[str]:
    """`training.report_to` as Accelerate tracker names: "none", "auto" (TensorBoard when installed), "all" (every
    installed one of tensorboard, wandb, trackio), or one or more names joined by commas (each must be installed)."""
    text = (report_to or "none").strip().lower()
    if text == "none":
        return []
    if text == "auto":
        return ["tensorboard"] if _installed("tensorboard") else []
    if text == "all":
        return [name for name in TRACKERS if _installed(name)]
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in TRACKERS]
    if unknown:
        raise ConfigError(f"training.report_to: unknown tracker(s) {unknown}; use none, auto, all or any of {list(TRACKERS)}")
    missing = [n for n in names if not _installed(n)]
    if missing:
        raise ConfigError(f"training.report_to names {missing} but they are not installed (pip install {' '.join(missing)})")
    return list(dict.fromkeys(names))


def log_images(accelerator, images: dict[str, np.ndarray], step: int) -> list[str]:
    """Send `[H, W, 3]` uint8 images to every tracker that takes images (TensorBoard, W&B, Trackio); returns the
    names of the trackers that got them."""
    if not accelerator.is_main_process:
        return []
    sent = []
    for tracker in accelerator.trackers:
        name = getattr(tracker, "name", "")
        if name == "tensorboard":
            for tag, image in images.items():
                tracker.writer.add_image(tag, image, global_step=step, dataformats="HWC")
            tracker.writer.flush()
        elif name == "wandb":
            import wandb

            tracker.run.log({tag: wandb.Image(image) for tag, image in images.items()}, step=step)
        elif name == "trackio":
            import trackio

            if not hasattr(trackio, "Image"):
                continue
            trackio.log({tag: trackio.Image(image) for tag, image in images.items()}, step=step)
        else:
            continue
        sent.append(name)
    return sent


def step_images(held_out_image: torch.Tensor, student_features: torch.Tensor, target_features: torch.Tensor,
                target_valid: torch.Tensor, target_image: torch.Tensor, min_side: int = 224) -> dict[str, np.ndarray]:
    """Pictures of one step for trackers: the held-out view beside the PCA of the student's features on it, and
    a target view beside the PCA of the teacher's rendered target features (holes black).

    Args:
        held_out_image: `[3, H, W]` in [0, 1]; student_features: `[C, h, w]` on it.
        target_features: `[C, h, w]` rendered teacher features of `target_image` `[3, H, W]`; target_valid `[h, w]`.
        min_side: pictures are upsampled (nearest) so their shorter side is at least this many pixels.
    """
    from ..viz import pca_image, to_uint8_image

    def side_by_side(image, features, valid=None):
        height, width = image.shape[-2:]
        scale = max(1, int(np.ceil(min_side / min(height, width))))
        size = (height * scale, width * scale)
        picture = to_uint8_image(torch.nn.functional.interpolate(image[None].float().cpu(), size=size, mode="nearest")[0])
        pca = pca_image(features.float().cpu(), size=size)
        if valid is not None:
            mask = torch.nn.functional.interpolate(valid[None, None].float().cpu(), size=size, mode="nearest")[0, 0]
            pca = pca * mask.numpy()[..., None].astype(pca.dtype)
        return np.concatenate([picture, pca], axis=1)

    return {
        "student/pca_held_out": side_by_side(held_out_image, student_features),
        "teacher/rendered_target_pca": side_by_side(target_image, target_features, target_valid),
    }


# ------------------------------------------------------------------------------------------ output folder
def check_output_dir(output_dir: str | Path, resume_from_checkpoint: str | None, overwrite_output_dir: bool) -> None:
    """Refuse to start a new run in a folder that holds one (its loss log and checkpoints would mix with this
    run's, and `latest` would resume the old run), unless resuming or told to overwrite. With
    `overwrite_output_dir`, the old run's checkpoints and logs are removed (only files a run writes)."""
    output_dir = Path(output_dir)
    found = [name for name in RUN_MARKERS if (output_dir / name).exists()]
    if not found or resume_from_checkpoint is not None:
        return
    if not overwrite_output_dir:
        raise ConfigError(
            f"training.output_dir {output_dir} already holds a run ({', '.join(found)}); pass "
            "--resume_from_checkpoint latest to continue it, --overwrite_output_dir to replace it, or choose another --output_dir"
        )
    import shutil

    if int(os.environ.get("RANK", "0")) != 0 and int(os.environ.get("LOCAL_RANK", "0")) != 0:
        return
    # snd-distill/: the trackers' folder (TensorBoard events), so two runs never mix in one TensorBoard view
    for name in ("checkpoints", "loss_log.jsonl", "train_summary.json", "pca_before_features.pt", "pca_before_after.png",
                 "snd-distill"):
        path = output_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    logger.warning("--overwrite_output_dir: removed the earlier run's checkpoints and logs from %s", output_dir)


# ------------------------------------------------------------------------------------------ Hub
def preflight_push(repo_id: str, token: str | None = None, private: bool | None = None) -> str:
    """Before training: check that a Hub token is available and valid, and create `repo_id` (or find it), so
    `--push_to_hub` fails in seconds instead of after training. Returns the repository URL."""
    from huggingface_hub import HfApi
    from huggingface_hub.utils import get_token

    token = token or get_token()
    if not token:
        raise ConfigError(
            f"--push_to_hub {repo_id}: no Hugging Face token found; run `hf auth login` or set HF_TOKEN before training"
        )
    api = HfApi(token=token)
    try:
        user = api.whoami()
    except Exception as error:  # noqa: BLE001 - any failure here means the push would fail later
        raise ConfigError(f"--push_to_hub {repo_id}: the Hub rejected the token or cannot be reached ({error})") from None
    try:
        url = api.create_repo(repo_id, exist_ok=True, private=private)
    except Exception as error:  # noqa: BLE001
        raise ConfigError(f"--push_to_hub {repo_id}: cannot create or access the repository as {user.get('name')!r} ({error})") from None
    logger.info("--push_to_hub: %s is ready (as %s)", url, user.get("name"))
    return str(url)


# ------------------------------------------------------------------------------------------ logging
def configure_logging(verbose: bool = False) -> None:
    """Quiet by default: snd's own lines (one per checkpoint, warnings) at INFO; Accelerate, transformers and
    huggingface_hub at WARNING. `verbose`: everything at INFO."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("snd").setLevel(logging.INFO)
    for name in ("accelerate", "transformers", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
    from transformers.utils import logging as transformers_logging

    (transformers_logging.set_verbosity_info if verbose else transformers_logging.set_verbosity_warning)()
    if not verbose:  # per-file "Writing model shards" / "Loading weights" bars
        transformers_logging.disable_progress_bar()


__all__ = [
    "RUN_MARKERS",
    "TRACKERS",
    "check_lifter_image_size",
    "check_output_dir",
    "configure_logging",
    "log_images",
    "preflight_push",
    "resolve_mixed_precision",
    "step_images",
    "tracker_names",
]
