"""Checkpoint directories: atomic ``save_state`` (temp dir + rename), "latest" lookup, pruning, final export."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

CHECKPOINT_PREFIX = "checkpoint-"
COMPLETE_MARKER = "snd_checkpoint.json"  # written last: a directory without it is not a checkpoint


def checkpoint_dir(output_dir: str | os.PathLike, step: int) -> Path:
    return Path(output_dir) / "checkpoints" / f"{CHECKPOINT_PREFIX}{step:08d}"


def list_checkpoints(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``output_dir/checkpoints``, oldest first."""
    root = Path(output_dir) / "checkpoints"
    found = []
    if root.is_dir():
        for path in root.iterdir():
            match = re.fullmatch(rf"{CHECKPOINT_PREFIX}(\d+)", path.name)
            if match and (path / COMPLETE_MARKER).exists():
                found.append((int(match.group(1)), path))
    return sorted(found)


def resolve_resume(output_dir: str | os.PathLike, resume: str | None) -> Path | None:
    """``"latest"`` -> the newest complete checkpoint (None when there is none yet); a path -> that checkpoint."""
    if resume is None:
        return None
    if resume == "latest":
        checkpoints = list_checkpoints(output_dir)
        return checkpoints[-1][1] if checkpoints else None
    path = Path(resume)
    if not (path / COMPLETE_MARKER).exists():
        raise FileNotFoundError(f"--resume_from_checkpoint {resume}: not a complete checkpoint directory (no {COMPLETE_MARKER})")
    return path


def save_checkpoint(accelerator, output_dir: str | os.PathLike, step: int, metadata: dict, keep: int) -> Path:
    """``accelerator.save_state`` into a temporary directory, then rename it into place (all processes call this).

    A kill at any moment leaves either the previous checkpoints or the complete new one.
    """
    final = checkpoint_dir(output_dir, step)
    temporary = final.with_name(f".tmp-{final.name}")
    if accelerator.is_main_process:
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temporary), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        marker = temporary / COMPLETE_MARKER
        marker.write_text(json.dumps({"step": step, **metadata}, indent=2))
        _fsync_dir(temporary)
        if final.exists():  # a re-save of the same step (after a resume): replace it
            stale = final.with_name(f".stale-{final.name}")
            shutil.rmtree(stale, ignore_errors=True)
            final.rename(stale)
            shutil.rmtree(stale, ignore_errors=True)
        temporary.rename(final)
        _fsync_dir(final.parent)
        for _, old in list_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def read_checkpoint_metadata(path: str | os.PathLike) -> dict:
    return json.loads((Path(path) / COMPLETE_MARKER).read_text())


def _fsync_dir(path: Path) -> None:
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def atomic_save_pretrained(model, directory: str | os.PathLike, image_processor=None) -> Path:
    """``save_pretrained`` into a temporary sibling, then rename over ``directory``."""
    directory = Path(directory)
    temporary = directory.with_name(f".tmp-{directory.name}")
    shutil.rmtree(temporary, ignore_errors=True)
    model.save_pretrained(str(temporary), safe_serialization=True)
    if image_processor is not None:
        image_processor.save_pretrained(str(temporary))
    if directory.exists():
        shutil.rmtree(directory)
    temporary.rename(directory)
    return directory
