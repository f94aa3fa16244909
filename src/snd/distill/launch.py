"""What a distillation run settles before its first step, the way transformers' Trainer and Accelerate do: the
mixed precision (the training config, else the launcher / `accelerate config`), the trackers, the output folder
(never silently mixed with an earlier run), the Hub repository (token and repo checked before training), and how
much it logs. Plus the images sent to trackers that take them.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import socket
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from .config import ConfigError

logger = logging.getLogger("snd.distill")

#: trackers `training.report_to` can name ("all": every one installed; "auto": TensorBoard when installed).
TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio"}
#: files and folders a run writes into its output_dir (kept for callers; see `RUN_OUTPUTS`, `run_outputs_present`).
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
#: what a run writes at the top of its output_dir (besides `checkpoints/checkpoint-XXXXXXXX` folders): if any is
#: there, the folder holds (part of) a run, and a new run would replace or mix with it.
RUN_OUTPUTS = ("config.yaml", "loss_log.jsonl", "train_summary.json", "student", "teacher", "heads.safetensors",
               "pca_before_features.pt", "pca_before_after.png", "snd-distill")
#: what `--overwrite_output_dir` removes besides the run's checkpoint folders, in this order; then `config.yaml` is
#: renamed `config.overwritten.yaml` (last, so a removal cut short still leaves a folder that reads as a run of ours;
#: renamed, as it may be the user's own file), and the new run writes its own `config.yaml`.
_OVERWRITTEN = ("loss_log.jsonl", "train_summary.json", "pca_before_features.pt", "pca_before_after.png", "snd-distill",
                "heads.safetensors", "student", "teacher", ".loss_log.jsonl.tmp", ".train_summary.json.tmp",
                ".heads.safetensors.tmp", ".tmp-student", ".tmp-teacher", ".stale-student", ".stale-teacher", ".config.yaml.tmp")
_RUN_CHECKPOINT = re.compile(r"(?:\.(?:tmp|pruned|stale)-)?checkpoint-\d{8}")
LOCK_NAME = ".snd_run.lock"
NODES_FOLDER = ".snd_nodes"
_RANK_VARIABLES = ("RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK", "PMI_RANK")


class OutputDirLockedError(ConfigError):
    """Another run holds the output folder's lock file."""


def global_rank() -> int:
    """This process's global rank (0 for a single process): Accelerate's state when it is distributed, else the
    launcher's environment (`RANK`, or MPI's). Not `LOCAL_RANK`: on several machines each one has a local rank 0."""
    try:
        from accelerate.state import PartialState

        if PartialState._shared_state and PartialState().num_processes > 1:  # a distributed state: its own answer
            return int(PartialState().process_index)
    except Exception:  # noqa: BLE001 - no accelerate state: fall back to the environment
        pass
    for name in _RANK_VARIABLES:
        value = os.environ.get(name)
        if value not in (None, ""):
            return int(value)
    return 0


def _run_checkpoints(output_dir: Path) -> list[Path]:
    """The folders under `output_dir/checkpoints` that a run wrote (`checkpoint-XXXXXXXX` and the `.tmp-`, `.pruned-`,
    `.stale-` folders of interrupted saves): never anything else kept there (e.g. lifter weights)."""
    root = output_dir / "checkpoints"
    try:
        return sorted(path for path in root.iterdir() if _RUN_CHECKPOINT.fullmatch(path.name) and path.is_dir())
    except OSError:  # no folder (or it vanished while another process cleaned it)
        return []


def run_outputs_present(output_dir: str | Path) -> list[str]:
    """Which of a run's outputs `output_dir` holds (names relative to it): a user's own files, including a
    `checkpoints/` folder of lifter weights, are not listed."""
    output_dir = Path(output_dir)
    found = [name for name in RUN_OUTPUTS if (output_dir / name).exists()]
    found += [path.relative_to(output_dir).as_posix() for path in _run_checkpoints(output_dir)]
    return found


def is_snd_run(output_dir: str | Path) -> bool:
    """Whether `output_dir` holds a run of ours: a complete snd checkpoint, or a `config.yaml` that is an snd
    training config (a YAML mapping with a `training` section; every run writes it before anything else)."""
    from .checkpoints import COMPLETE_MARKER

    output_dir = Path(output_dir)
    if any((path / COMPLETE_MARKER).is_file() for path in _run_checkpoints(output_dir)):
        return True
    from ..safe_io import load_yaml, read_text

    try:  # a regular UTF-8 file, aliases bounded: a FIFO or a "billion laughs" config.yaml must not hang the check
        record = load_yaml(read_text(output_dir / "config.yaml", max_bytes=16 * 2**20), source=str(output_dir / "config.yaml"))
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and isinstance(record.get("training", {}), dict) and "training" in record


def _refuse_non_folder(output_dir: Path) -> None:
    """`output_dir`, or the first of its parents that exists, must be a folder (not a file the user keeps there)."""
    for path in (output_dir, *output_dir.parents):
        if path.exists():
            if not path.is_dir():
                raise ConfigError(
                    f"training.output_dir {output_dir}: {path} is a file, not a folder; choose another --output_dir"
                )
            return


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def check_output_dir(output_dir: str | Path, resume_from_checkpoint: str | None, overwrite_output_dir: bool) -> None:
    """Settle the output folder before a run starts (every process calls this; only the global main process removes
    anything).

    - A folder holding none of a run's outputs (`run_outputs_present`) is fine, whatever else it holds.
    - A folder holding some of them but that is not a run of ours (`is_snd_run`: a user's own `teacher/`,
      `heads.safetensors`, `pca_before_after.png` ...) is refused, even with `overwrite_output_dir`: the run would
      replace those files.
    - A run of ours is refused unless resuming it (`latest` or one of its own checkpoints) or `overwrite_output_dir`;
      resuming a checkpoint of *another* folder into it is refused too (it would truncate this folder's loss log at
      that checkpoint's step and mix two runs' checkpoints) unless `overwrite_output_dir`.
    - `overwrite_output_dir` removes only what a run wrote: its `checkpoint-XXXXXXXX` folders (never other files
      under `checkpoints/`), its loss log, summary, pictures, tracker folder and exports; its `config.yaml` is renamed
      `config.overwritten.yaml` (`remove_run_outputs`).
    - A folder locked by another live run (`output_dir_lock`) is refused.
    """
    output_dir = Path(output_dir)
    _refuse_non_folder(output_dir)
    main = global_rank() == 0
    if main:
        _refuse_if_locked_by_another(output_dir)
    if overwrite_output_dir and not main:
        return  # the global main process decides and removes; reading while it removes would see half a run
    found = run_outputs_present(output_dir)
    if not found:
        return
    if not is_snd_run(output_dir):
        raise ConfigError(
            f"training.output_dir {output_dir} holds {', '.join(found)}, which this run would write over, but it is not "
            "an snd run (no snd config.yaml or checkpoint there); refused, even with --overwrite_output_dir. "
            "Choose another --output_dir, or move those files away"
        )
    other_folder = None
    if resume_from_checkpoint not in (None, "latest"):
        checkpoint = Path(resume_from_checkpoint)
        if not _inside(checkpoint, output_dir / "checkpoints"):
            other_folder = checkpoint
    if resume_from_checkpoint is not None and other_folder is None:
        return  # continuing this folder's own run
    if not overwrite_output_dir:
        if other_folder is not None:
            raise ConfigError(
                f"--resume_from_checkpoint {other_folder} is a checkpoint of another folder, but training.output_dir "
                f"{output_dir} holds a run of its own ({', '.join(found)}): continuing there would cut its loss_log.jsonl "
                "at the checkpoint's step and mix the two runs' checkpoints. Pass the checkpoint's own run folder as "
                "--output_dir to continue that run, a new --output_dir to branch from it, or --overwrite_output_dir to "
                f"replace the run in {output_dir}"
            )
        raise ConfigError(
            f"training.output_dir {output_dir} already holds a run ({', '.join(found)}); pass "
            "--resume_from_checkpoint latest to continue it, --overwrite_output_dir to replace it, or choose another --output_dir"
        )
    if main:
        _refuse_foreign_checkpoint_folders(output_dir)
        removed = remove_run_outputs(output_dir)
        logger.warning("--overwrite_output_dir: removed the earlier run's %s from %s", ", ".join(removed) or "nothing", output_dir)


def _refuse_foreign_checkpoint_folders(output_dir: Path) -> None:
    """A `checkpoints/checkpoint-XXXXXXXX` folder that holds files a save never writes (and no `snd_checkpoint.json`)
    is not one of the run's checkpoints: `--overwrite_output_dir` would delete it with them, so it is refused, naming
    it. (A run's torn saves are `.tmp-` folders, or final folders holding only what a save writes.)"""
    from .checkpoints import COMPLETE_MARKER

    foreign = []
    for path in _run_checkpoints(output_dir):
        if path.name.startswith(".") or (path / COMPLETE_MARKER).is_file():
            continue
        if any(not _written_by_a_save(item.name) for item in path.iterdir()):
            foreign.append(path.relative_to(output_dir).as_posix())
    if foreign:
        raise ConfigError(
            f"training.output_dir {output_dir}: {', '.join(foreign)} is named like one of the run's checkpoints but has "
            "no snd_checkpoint.json and holds other files; --overwrite_output_dir would delete it. Move it away first"
        )


_SAVE_FILES = re.compile(r"(model|optimizer|scheduler|random_states|sampler|snd_state|custom_checkpoint|pytorch_model|"
                         r"heads|student|teacher|scaler|fsdp|optimizer)[\w.-]*|snd_checkpoint\.json|\..*")


def _written_by_a_save(name: str) -> bool:
    return _SAVE_FILES.fullmatch(name) is not None


def remove_run_outputs(output_dir: str | Path) -> list[str]:
    """Remove an earlier run's checkpoint folders, logs, pictures and exports from `output_dir` and rename its
    `config.yaml` `config.overwritten.yaml` (see `check_output_dir`); other files stay;
    returns what was removed (relative names). `checkpoints/` itself goes only when nothing else is left in it."""
    import shutil

    output_dir = Path(output_dir)
    removed = []
    for path in _run_checkpoints(output_dir) + [output_dir / name for name in _OVERWRITTEN]:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        else:
            continue
        removed.append(path.relative_to(output_dir).as_posix())
    for path in sorted(output_dir.glob("config.resume-*.yaml")):
        path.unlink()
        removed.append(path.name)
    try:
        (output_dir / "checkpoints").rmdir()  # only when empty: a user's files there stay, and so does the folder
    except OSError:
        pass
    config = output_dir / "config.yaml"
    if config.is_file():  # last (see _OVERWRITTEN); renamed, not deleted: it may be a config the user wrote there
        kept = output_dir / "config.overwritten.yaml"
        number = 1
        while kept.exists():
            number += 1
            kept = output_dir / f"config.overwritten-{number}.yaml"
        config.rename(kept)
        removed.append(f"config.yaml (kept as {kept.name})")
    return removed


# ------------------------------------------------------------------------------------------ lock
def _process_start(pid: int) -> str | None:
    """The start time of process `pid` (Linux /proc, in clock ticks since boot), to tell a reused PID apart."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
        return text.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: alive
    except OSError:
        return True
    now = _process_start(pid)
    return start is None or now is None or now == start


def _read_lock(path: Path) -> dict | None:
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    return record if isinstance(record, dict) else {}


def _holder(record: dict) -> str:
    return (f"process {record.get('pid', '?')} on host {record.get('host', '?')} (started {record.get('started', '?')}: "
            f"{record.get('command', '?')})")


def _lock_state(path: Path, record: dict | None) -> str:
    """'free', 'stale' (its process on this host is gone), 'ours' (this process) or 'held'."""
    if record is None:
        return "free"
    if not record:  # being written this instant, or garbage: judged by its age
        try:
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return "free"
        return "stale" if age > 30 else "held"
    if record.get("host") != socket.gethostname():
        return "held"  # another machine's process: it cannot be checked from here
    pid = record.get("pid")
    if not isinstance(pid, int):
        return "stale"
    if pid == os.getpid():
        return "ours"
    return "held" if _alive(pid, record.get("pid_start")) else "stale"


def _refuse_odd_lock(output_dir: Path, path: Path) -> None:
    """The lock must be a regular file (or absent): reading a FIFO there would block forever, and a folder there cannot
    be judged stale and removed (it may hold someone's files)."""
    import stat

    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISREG(mode):
        from ..safe_io import _kind

        kind = "a symbolic link" if stat.S_ISLNK(mode) else _kind(mode)
        raise OutputDirLockedError(
            f"training.output_dir {output_dir}: {path} is {kind}, not snd's lock file (a small JSON record); "
            f"if no run is using {output_dir}, remove it, or choose another --output_dir"
        )


def _refuse_if_locked_by_another(output_dir: Path) -> None:
    path = output_dir / LOCK_NAME
    _refuse_odd_lock(output_dir, path)
    record = _read_lock(path)
    if _lock_state(path, record) == "held":
        raise OutputDirLockedError(_locked_message(output_dir, path, record))


def _locked_message(output_dir: Path, path: Path, record: dict) -> str:
    other_host = record.get("host") not in (None, socket.gethostname())
    return (
        f"training.output_dir {output_dir} is in use by another run: {_holder(record) if record else 'unknown (lock being written)'} "
        f"holds {path}. Two runs in one folder would mix their checkpoints and logs: wait for it, or choose another "
        "--output_dir" + (f"; if that run is no longer running on {record.get('host')}, delete {path}" if other_host else "")
    )


@contextmanager
def output_dir_lock(output_dir: str | Path, main_process: bool | None = None):
    """Hold `output_dir/.snd_run.lock` for the duration of a run: a second run into the same folder is refused with
    an error naming the folder and the holder (host, PID, start time, command). Only the global main process takes
    it (`main_process`, default: `global_rank() == 0`); the others yield None. A lock left by a run that died on this
    host (its PID is gone, or reused by another process) is taken over with a warning; one held by another host is
    refused with the command to remove it. Released on exit (only if still ours)."""
    if main_process is None:
        main_process = global_rank() == 0
    if not main_process:
        yield None
        return
    output_dir = Path(output_dir)
    _refuse_non_folder(output_dir)
    created = not output_dir.exists()  # a folder made only to hold the lock is removed again if the run wrote nothing
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / LOCK_NAME
    token = uuid.uuid4().hex
    mine = {
        "pid": os.getpid(), "pid_start": _process_start(os.getpid()), "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": " ".join(sys.argv)[:300], "token": token,
    }
    for _ in range(5):
        try:
            descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            _refuse_odd_lock(output_dir, path)
            record = _read_lock(path)
            state = _lock_state(path, record)
            if state == "free":
                continue
            if state == "stale":
                _break_stale_lock(path, record)
                continue
            if state == "ours":
                raise OutputDirLockedError(
                    f"training.output_dir {output_dir} is already locked by this process (another run in this process, "
                    f"{_holder(record)}); two runs cannot share one folder"
                )
            raise OutputDirLockedError(_locked_message(output_dir, path, record))
        with os.fdopen(descriptor, "w") as handle:
            handle.write(json.dumps(mine))
            handle.flush()
            os.fsync(handle.fileno())
        break
    else:
        raise OutputDirLockedError(f"training.output_dir {output_dir}: could not take {path} (it kept changing hands)")
    try:
        yield path
    finally:
        record = _read_lock(path)
        if record and record.get("token") == token:
            path.unlink(missing_ok=True)
            if created:
                try:
                    output_dir.rmdir()  # only when empty: a run that failed before writing anything leaves nothing
                except OSError:
                    pass
        else:
            logger.warning("%s no longer holds this run's lock (%s); left as it is", path, record)


def _break_stale_lock(path: Path, record: dict | None) -> None:
    """Remove a dead run's lock: renamed aside first, and put back if what was renamed is not the lock judged stale
    (another process replaced it in between)."""
    aside = path.with_name(f"{path.name}.stale-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    moved = _read_lock(aside)
    if record and moved and moved.get("token") != record.get("token"):
        try:
            os.link(aside, path)  # fails if a third process has taken the lock meanwhile: then that one holds it
        except OSError:
            pass
        os.unlink(aside)
        return
    logger.warning("removing the stale lock %s of a run that is no longer running: %s", path, _holder(record or {}))
    os.unlink(aside)


def locks_output_dir(train):
    """Decorator for `train(config, ...)`: runs it holding `output_dir_lock(config.training.output_dir)`."""

    @functools.wraps(train)
    def wrapper(config, *args, **kwargs):
        with output_dir_lock(config.training.output_dir):
            return train(config, *args, **kwargs)

    return wrapper


# ------------------------------------------------------------------------------------------ shared filesystem
def _node_rank(accelerator) -> int:
    for name in ("GROUP_RANK", "NODE_RANK"):
        value = os.environ.get(name)
        if value not in (None, ""):
            return int(value)
    return int(accelerator.process_index) - int(accelerator.local_process_index)


def check_shared_output_dir(accelerator, output_dir: str | Path, wait_s: float = 5.0) -> None:
    """On several machines: verify that `output_dir` is one filesystem shared by all of them (all processes call
    this after the Accelerator exists). Each machine's local main process writes `output_dir/.snd_nodes/node-<node
    rank>-...`; the global main process checks that it sees every one (waiting up to `wait_s` for a slow network
    filesystem); every process raises `ConfigError` naming the machines whose marker it cannot see. Without this, each
    machine would write its own checkpoints into its own disk and a resume would find different states."""
    import torch.distributed as dist

    if accelerator.num_processes <= 1 or not (dist.is_available() and dist.is_initialized()):
        return
    output_dir = Path(output_dir)
    folder = output_dir / NODES_FOLDER
    box = [uuid.uuid4().hex[:12] if accelerator.is_main_process else None]
    dist.broadcast_object_list(box, src=0)
    token = box[0]
    mine = None
    problem = None
    if accelerator.is_local_main_process:
        node = _node_rank(accelerator)
        mine = f"node-{node}-rank{accelerator.process_index}-{token}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / mine).write_text(json.dumps({"host": socket.gethostname(), "node_rank": node, "rank": accelerator.process_index}))
        except OSError as error:
            problem = f"cannot write {folder / mine}: {error}"
    everyone = [None] * accelerator.num_processes
    dist.all_gather_object(everyone, (mine, socket.gethostname(), problem))
    verdict = [None]
    if accelerator.is_main_process:
        expected = [(name, host) for name, host, _ in everyone if name]
        problems = [text for _, _, text in everyone if text]
        deadline = time.monotonic() + wait_s
        while True:
            missing = [(name, host) for name, host in expected if not (folder / name).exists()]
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if missing or problems:
            listing = ", ".join(f"{name.split('-rank')[0]} ({host})" for name, host in missing)
            verdict[0] = (
                f"training.output_dir {output_dir} is not one filesystem shared by all {len(expected)} machines: the main "
                f"process (on {socket.gethostname()}) cannot see the marker files written there by "
                f"{listing or 'some machines'}" + (f" ({'; '.join(problems)})" if problems else "") + ". Every machine must "
                "write checkpoints to the same shared folder (e.g. NFS or Lustre); mount one and pass it as --output_dir"
            )
    dist.broadcast_object_list(verdict, src=0)
    if mine is not None:
        (folder / mine).unlink(missing_ok=True)
    dist.barrier()
    if accelerator.is_main_process:
        try:
            folder.rmdir()
        except OSError:
            pass
    if verdict[0]:
        raise ConfigError(verdict[0])


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
    silence_ddp_grad_strides_warning()


def silence_ddp_grad_strides_warning() -> None:
    """DDP's reducer warns once per rank "Grad strides do not match bucket view strides" for the `[1, 1, C]` CLS
    token (and `[1, R, C]` register tokens): their gradient is a slice of the token sequence's gradient (strides
    `[T * C, C, 1]`), which differs from the bucket view's `[C, C, 1]` only in the stride of the size-1 batch
    dimension; the reducer then copies that one small gradient into its bucket instead of aliasing it, which is
    correct and costs nothing measurable. Only that message, raised from `torch.autograd.graph`, is ignored."""
    import warnings

    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides", category=UserWarning,
                            module=r"torch\.autograd\.graph")


__all__ = [
    "LOCK_NAME",
    "OutputDirLockedError",
    "RUN_MARKERS",
    "RUN_OUTPUTS",
    "check_shared_output_dir",
    "global_rank",
    "is_snd_run",
    "locks_output_dir",
    "output_dir_lock",
    "remove_run_outputs",
    "run_outputs_present",
    "TRACKERS",
    "check_lifter_image_size",
    "check_output_dir",
    "configure_logging",
    "silence_ddp_grad_strides_warning",
    "log_images",
    "preflight_push",
    "resolve_mixed_precision",
    "step_images",
    "tracker_names",
]
