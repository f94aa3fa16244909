"""Checkpoint directories: atomic ``save_state`` (temp dir + rename) with a verified manifest, "latest" lookup
with fall-back, rename-then-delete pruning, start-up cleanup, pickle-free resume, final export.

A checkpoint directory ``checkpoints/checkpoint-XXXXXXXX`` holds Accelerate's files (``model.safetensors``,
``optimizer.bin``, ``scheduler.bin``, ``random_states_<rank>.pkl``), our own state (the EMA teacher in
``snd_state.safetensors``, the counters in ``snd_state.json``) and, written last, ``snd_checkpoint.json``:
the step, run facts and the size and SHA-256 of every other file. On resume nothing is unpickled with
code: Accelerate's ``.bin``/``.pkl`` files are first loaded with ``torch.load(weights_only=True)`` (plain
tensors, numbers and containers only) and a checkpoint that holds anything else is refused naming the file.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path

from .config import ConfigError

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
COMPLETE_MARKER = "snd_checkpoint.json"  # written last: a directory without it is not a checkpoint
STATE_TENSORS = "snd_state.safetensors"  # EMA teacher (and any other registered tensor state)
STATE_JSON = "snd_state.json"  # train counters
MANIFEST_FORMAT = 2  # markers written before the manifest existed have no "format"
_STALE_PREFIXES = (".tmp-", ".pruned-", ".stale-")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used (incomplete, corrupt, or holding pickled code); the message names the file."""


class MissingCheckpointError(CheckpointError, FileNotFoundError):
    """``--resume_from_checkpoint`` names no complete checkpoint (nothing there, a file, a folder without the marker)."""


class DiskFullError(OSError):
    """No space left on the device while writing; the message names the path."""


def checkpoint_dir(output_dir: str | os.PathLike, step: int) -> Path:
    return Path(output_dir) / "checkpoints" / f"{CHECKPOINT_PREFIX}{step:08d}"


def list_checkpoints(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Checkpoints with a completion marker under ``output_dir/checkpoints``, oldest first (not yet verified)."""
    root = Path(output_dir) / "checkpoints"
    found = []
    if root.is_dir():
        for path in root.iterdir():
            match = re.fullmatch(rf"{CHECKPOINT_PREFIX}(\d+)", path.name)
            if match and (path / COMPLETE_MARKER).exists():
                found.append((int(match.group(1)), path))
    return sorted(found)


# --------------------------------------------------------------------------------------------
# Manifest


def _sha256(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _manifest(directory: Path) -> dict:
    """``{relative path: {"size", "sha256"}}`` of every file under ``directory`` except the marker."""
    files = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file() and path.name != COMPLETE_MARKER:
            files[path.relative_to(directory).as_posix()] = {"size": path.stat().st_size, "sha256": _sha256(path)}
    return files


def write_checkpoint_marker(directory: str | os.PathLike, step: int, metadata: dict | None = None) -> Path:
    """Write ``snd_checkpoint.json`` (step, ``metadata`` and the manifest of every other file) atomically, last."""
    directory = Path(directory)
    record = {"format": MANIFEST_FORMAT, "step": step, **(metadata or {}), "files": _manifest(directory)}
    temporary = directory / f".{COMPLETE_MARKER}.tmp"
    with temporary.open("w") as handle:
        handle.write(json.dumps(record, indent=2))
        handle.flush()
        os.fsync(handle.fileno())
    temporary.replace(directory / COMPLETE_MARKER)
    return directory / COMPLETE_MARKER


def read_checkpoint_metadata(path: str | os.PathLike) -> dict:
    from ..safe_io import load_json

    marker = Path(path) / COMPLETE_MARKER
    try:  # a regular UTF-8 file of bounded size and depth: a FIFO or a 200,000-deep marker must not hang or crash resume
        record = load_json(marker, what="a checkpoint marker (JSON object)", error=ValueError, max_bytes=64 * 2**20)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: not a complete checkpoint directory (no {COMPLETE_MARKER})") from None
    except ValueError as error:
        raise CheckpointError(f"{marker}: corrupt checkpoint marker ({str(error).replace(f'{marker}: ', '', 1)})") from None
    if not isinstance(record, dict):
        raise CheckpointError(f"{marker}: corrupt checkpoint marker (expected a JSON object)")
    return record


def checkpoint_problems(path: str | os.PathLike, check_hashes: bool = True) -> list[str]:
    """What is wrong with checkpoint ``path`` (empty when it is complete and every file matches its manifest)."""
    path = Path(path)
    try:
        record = read_checkpoint_metadata(path)
    except CheckpointError as error:
        return [str(error)]
    files = record.get("files")
    if record.get("format") != MANIFEST_FORMAT or not isinstance(files, dict):
        return [
            f"{path / COMPLETE_MARKER}: no file manifest (written by an older snd, whose pickled state Accelerate would "
            "unpickle with code); convert it with snd.distill.checkpoints.upgrade_legacy_checkpoint(path)"
        ]
    problems = _marker_problems(path, record)
    if problems:
        return problems
    for name, expected in files.items():
        file = path / name
        if not file.is_file():
            problems.append(f"{file}: missing")
        elif file.stat().st_size != expected.get("size"):
            problems.append(f"{file}: {file.stat().st_size} bytes, the manifest says {expected.get('size')} (truncated or replaced)")
        elif check_hashes and _sha256(file) != expected.get("sha256"):
            problems.append(f"{file}: SHA-256 differs from the manifest (corrupt or modified)")
    for file in sorted(path.rglob("*")):
        name = file.relative_to(path).as_posix()
        if name != COMPLETE_MARKER and name not in files and (file.is_file() or file.is_symlink()):
            kind = "a pickle" if file.name.startswith("custom_checkpoint_") else "a file"
            problems.append(f"{file}: {kind} that is not in the manifest {path / COMPLETE_MARKER} (added after the checkpoint was written)")
    return problems


_SHA256 = re.compile(r"[0-9a-f]{64}")


def _marker_problems(path: Path, record: dict) -> list[str]:
    """What is malformed in a format-2 marker's fields: ``step`` (a non-negative int, the folder's own step), ``run``
    (an object), and each manifest entry (a relative path inside the folder with an int ``size`` and a SHA-256)."""
    marker = path / COMPLETE_MARKER
    problems = []
    step = record.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        problems.append(f"{marker}: field 'step' is {step!r}; expected a non-negative integer")
    else:
        match = re.fullmatch(rf"{CHECKPOINT_PREFIX}(\d+)", path.name)
        if match and int(match.group(1)) != step:
            problems.append(f"{marker}: field 'step' is {step}, but the folder {path.name} is the checkpoint of step {int(match.group(1))}")
    if "run" in record and not isinstance(record["run"], dict):
        problems.append(f"{marker}: field 'run' is {type(record['run']).__name__}; expected an object of run facts")
    for name, expected in record["files"].items():
        parts = name.split("/")
        if not name or name.startswith("/") or "\\" in name or "\x00" in name or any(part in ("", ".", "..") for part in parts):
            problems.append(f"{marker}: field 'files' lists {name!r}, a path outside the checkpoint folder; expected a relative path inside it")
        elif not isinstance(expected, dict) or isinstance(expected.get("size"), bool) or not isinstance(expected.get("size"), int) \
                or expected["size"] < 0 or not isinstance(expected.get("sha256"), str) or not _SHA256.fullmatch(expected["sha256"]):
            problems.append(f"{marker}: field 'files' entry {name!r} is {expected!r}; expected {{'size': bytes, 'sha256': 64 hex digits}}")
    return problems


def verify_checkpoint(path: str | os.PathLike) -> Path:
    """Raise :class:`CheckpointError` listing what is wrong with ``path``; return it when it is complete and intact."""
    problems = checkpoint_problems(path)
    if problems:
        raise CheckpointError(f"checkpoint {path} failed verification: " + "; ".join(problems))
    return Path(path)


def resolve_resume(output_dir: str | os.PathLike, resume: str | None) -> Path | None:
    """``"latest"`` -> the newest checkpoint that verifies (None when there is none yet); a path -> that checkpoint.

    A newest checkpoint that fails verification is skipped with a warning naming what is wrong, and the
    previous one is tried; when checkpoints exist but none verifies, :class:`CheckpointError` lists them all.
    """
    if resume is None:
        return None
    if resume == "latest":
        candidates = list_checkpoints(output_dir)
        rejected = []
        for _, path in reversed(candidates):
            problems = checkpoint_problems(path)
            if not problems:
                if rejected:
                    logger.warning("--resume_from_checkpoint latest: using %s", path)
                return path
            rejected.append(f"{path.name}: " + "; ".join(problems))
            logger.warning("--resume_from_checkpoint latest: skipping %s: %s", path, "; ".join(problems))
        if rejected:
            raise CheckpointError("--resume_from_checkpoint latest: no checkpoint in " f"{Path(output_dir) / 'checkpoints'} verifies: " + " | ".join(rejected))
        return None
    path = Path(resume)
    if not (path / COMPLETE_MARKER).exists():
        raise MissingCheckpointError(f"--resume_from_checkpoint {resume}: not a complete checkpoint directory (no {COMPLETE_MARKER})")
    return verify_checkpoint(path)


# --------------------------------------------------------------------------------------------
# Clean-up and pruning


def clean_stale(output_dir: str | os.PathLike) -> list[Path]:
    """Remove what killed saves and prunes left under ``output_dir/checkpoints`` (main process, at start):
    ``.tmp-*``/``.pruned-*``/``.stale-*`` folders and ``checkpoint-N`` folders without a marker
    (a prune by an older snd killed half way). Returns what was removed; logs each."""
    root = Path(output_dir) / "checkpoints"
    removed = []
    if not root.is_dir():
        return removed
    for path in sorted(root.iterdir()):
        stale = path.name.startswith(_STALE_PREFIXES) and CHECKPOINT_PREFIX in path.name
        half_pruned = re.fullmatch(rf"{CHECKPOINT_PREFIX}\d+", path.name) and path.is_dir() and not (path / COMPLETE_MARKER).exists()
        if stale or half_pruned:
            logger.warning("removing %s left by an interrupted checkpoint save or prune", path)
            _remove(path)
            removed.append(path)
    return removed


def _remove(path: Path) -> None:
    """Rename out of the way, then delete: a kill part-way leaves a ``.pruned-*`` folder, never a half checkpoint."""
    if path.name.startswith(_STALE_PREFIXES):
        doomed = path
    else:
        doomed = path.with_name(f".pruned-{path.name}")
        if doomed.exists():
            shutil.rmtree(doomed, ignore_errors=True)
        path.rename(doomed)
    if doomed.is_dir():
        shutil.rmtree(doomed, ignore_errors=True)
    else:
        doomed.unlink(missing_ok=True)


def prune_checkpoints(output_dir: str | os.PathLike, keep: int) -> list[Path]:
    """Keep the newest ``keep`` checkpoints; older ones are renamed to ``.pruned-*`` and then deleted."""
    doomed = [path for _, path in list_checkpoints(output_dir)[:-keep]] if keep > 0 else []
    for path in doomed:
        _remove(path)
    return doomed


# --------------------------------------------------------------------------------------------
# Save and load


def _is_disk_full(error: BaseException, path: Path) -> bool:
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(error)
    if "No space left" in text or "Disk quota" in text:
        return True
    # torch's zip writer reports a short write as "unexpected pos A vs B" / "file write failed"
    if "unexpected pos" in text or "write failed" in text:
        try:
            return shutil.disk_usage(path).free < (64 << 20)
        except OSError:
            return False
    return False


def raise_if_disk_full(error: BaseException, path: str | os.PathLike, what: str = "writing") -> None:
    """Re-raise ``error`` as :class:`DiskFullError` naming ``path`` when it is a full disk (or quota)."""
    path = Path(path)
    if _is_disk_full(error, path if path.exists() else path.parent):
        try:
            free = shutil.disk_usage(path if path.exists() else path.parent).free
        except OSError:
            free = -1
        raise DiskFullError(
            errno.ENOSPC,
            f"disk full (no space left on device) while {what} {path} ({free} bytes free): free some space, "
            "lower training.keep_checkpoints or choose another --output_dir; the previous checkpoints are intact",
        ) from error


def save_checkpoint(
    accelerator,
    output_dir: str | os.PathLike,
    step: int,
    metadata: dict,
    keep: int,
    tensors: dict | None = None,
    state: dict | None = None,
) -> Path:
    """``accelerator.save_state`` (no custom pickled objects) into a temporary directory, plus ``tensors``
    (``snd_state.safetensors``) and ``state`` (``snd_state.json``), then the manifest marker, then rename
    it into place and prune to ``keep`` (all processes call this).

    A kill at any moment leaves either the previous checkpoints or the complete new one. A full disk raises
    :class:`DiskFullError` naming the path (the partial save is removed).
    """
    from safetensors.torch import save_file

    final, temporary = begin_checkpoint(accelerator, output_dir, step)
    try:
        accelerator.save_state(str(temporary), safe_serialization=True)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            if tensors is not None:
                save_file({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}, str(temporary / STATE_TENSORS))
            if state is not None:
                (temporary / STATE_JSON).write_text(json.dumps(state, indent=2))
            write_checkpoint_marker(temporary, step, metadata)
            _fsync_dir(temporary)
    except (OSError, RuntimeError) as error:
        try:  # judge the free space before the partial save is removed
            raise_if_disk_full(error, temporary, "writing checkpoint")
        finally:
            if accelerator.is_main_process:
                shutil.rmtree(temporary, ignore_errors=True)
        raise
    return publish_checkpoint(accelerator, temporary, final, output_dir, keep)


def begin_checkpoint(accelerator, output_dir: Path, step: int) -> tuple[Path, Path]:
    """The first step of a checkpoint save (the DDP and the FSDP2 one): ``(final, temporary)`` folders of ``step``; the
    main process makes a fresh empty ``temporary`` and every process waits for it."""
    final = checkpoint_dir(output_dir, step)
    temporary = final.with_name(f".tmp-{final.name}")
    if accelerator.is_main_process:
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir(parents=True)
    accelerator.wait_for_everyone()
    return final, temporary


def publish_checkpoint(accelerator, temporary: Path, final: Path, output_dir: Path, keep: int) -> Path:
    """The last step of a checkpoint save (the DDP and the FSDP2 one): the main process renames the complete
    ``temporary`` folder to ``final`` (replacing a re-save of the same step, after a resume) and prunes old
    checkpoints; every process waits for it."""
    if accelerator.is_main_process:
        if final.exists():  # a re-save of the same step (after a resume): replace it
            stale = final.with_name(f".stale-{final.name}")
            shutil.rmtree(stale, ignore_errors=True)
            final.rename(stale)
            shutil.rmtree(stale, ignore_errors=True)
        temporary.rename(final)
        _fsync_dir(final.parent)
        prune_checkpoints(output_dir, keep)
    accelerator.wait_for_everyone()
    return final


def _check_weights_only(file: Path):
    """Load ``file`` the way Accelerate does but with ``weights_only=True`` forced: refuse anything that is
    not plain tensors/numbers/containers (that is where pickled code would hide) and name the file. Returns
    what it holds."""
    from accelerate.utils.other import load

    from ..convert.pickles import check_sizes

    try:
        check_sizes(file)  # size fields vs the file size (also after BUILD steps), no storage constructor calls, before torch allocates
        return load(str(file), map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - every failure becomes a refusal naming the file
        raise CheckpointError(
            f"{file}: refused; it does not load as plain tensors and numbers with torch.load(weights_only=True), "
            f"so it is corrupt or holds pickled objects (nothing from it was run): {type(error).__name__}: {str(error)[:300]}"
        ) from error


# --------------------------------------------------------------------------------------------
# What Accelerate would load, checked against what it loads it into


def _kind(value) -> str:
    import numpy as np
    import torch

    if isinstance(value, torch.Tensor):
        return f"tensor {tuple(value.shape)} {value.dtype}" + ("" if value.layout == torch.strided else f" {value.layout}")
    if isinstance(value, np.ndarray):
        return f"array {value.shape} {value.dtype}"
    if isinstance(value, (list, tuple)):
        return f"{type(value).__name__} of {len(value)}"
    return type(value).__name__


def _same_structure(saved, live, file: Path, field: str) -> None:
    """Raise :class:`CheckpointError` naming ``file`` and ``field`` unless ``saved`` has the structure of ``live``:
    the same container types and lengths, dict keys, tensor/array shapes and dtypes, and number kinds (an int where
    ``live`` has an int; an int or float where it has a float)."""
    import numpy as np
    import torch

    def refuse(expected):
        raise CheckpointError(f"{file}: field {field or '(top level)'} is {_kind(saved)}, but this run needs {expected}; "
                              "the checkpoint does not fit this model/optimizer (or is corrupt)")

    if isinstance(live, torch.Tensor):
        if not isinstance(saved, torch.Tensor) or saved.layout != torch.strided or saved.device.type == "meta" \
                or saved.shape != live.shape or saved.dtype != live.dtype:
            refuse(_kind(live))
    elif isinstance(live, np.ndarray):
        if not isinstance(saved, np.ndarray) or saved.shape != live.shape or saved.dtype != live.dtype:
            refuse(_kind(live))
    elif isinstance(live, bool) or live is None or isinstance(live, str):
        if type(saved) is not type(live):
            refuse(type(live).__name__)
    elif isinstance(live, int):
        if isinstance(saved, bool) or not isinstance(saved, int):
            refuse("an int")
    elif isinstance(live, float):
        if isinstance(saved, bool) or not isinstance(saved, (int, float)):
            refuse("a number")
    elif isinstance(live, (list, tuple)):
        if not isinstance(saved, (list, tuple)) or len(saved) != len(live):
            refuse(_kind(live))
        for index, (a, b) in enumerate(zip(saved, live)):
            _same_structure(a, b, file, f"{field}[{index}]")
    elif isinstance(live, dict):
        if not isinstance(saved, dict) or set(saved) != set(live):
            refuse(f"a dict with keys {sorted(map(str, live))}" + (f" (it has {sorted(map(str, saved))})" if isinstance(saved, dict) else ""))
        for key in live:
            _same_structure(saved[key], live[key], file, f"{field}.{key}" if field else str(key))
    elif type(saved) is not type(live):
        refuse(type(live).__name__)


def check_optimizer_state(saved, optimizer, file: Path) -> None:
    """Check an optimizer state dict loaded from ``file`` against ``optimizer`` before ``load_state_dict``: its
    parameter groups (count, parameters per group, hyper-parameter kinds) and, for every parameter's state, that
    each tensor has the parameter's shape and a floating dtype and ``step`` is one number. torch checks only the
    group sizes, and a fused Adam step on a moment of the wrong shape writes out of bounds (SIGSEGV)."""
    import torch

    optimizer = getattr(optimizer, "optimizer", optimizer)  # Accelerate's wrapper
    if not isinstance(saved, dict) or not {"state", "param_groups"} <= set(saved):
        raise CheckpointError(f"{file}: field (top level) is {_kind(saved)}, not an optimizer state dict with 'state' and 'param_groups'")
    groups, live_groups = saved["param_groups"], optimizer.state_dict()["param_groups"]
    if not isinstance(groups, list) or len(groups) != len(live_groups):
        raise CheckpointError(f"{file}: field param_groups is {_kind(groups)}, but this run's optimizer has {len(live_groups)} group(s)")
    by_id = {}
    for index, (group, live_group, params) in enumerate(zip(groups, live_groups, optimizer.param_groups)):
        where = f"param_groups[{index}]"
        if not isinstance(group, dict) or not isinstance(group.get("params"), list) or len(group["params"]) != len(params["params"]):
            raise CheckpointError(f"{file}: field {where}.params does not list this run's {len(params['params'])} parameters "
                                  f"(it is {_kind(group.get('params') if isinstance(group, dict) else group)})")
        for key, value in live_group.items():
            if key == "params":
                continue
            if key not in group:
                continue  # an option newer than the checkpoint: the optimizer's __setstate__ gives it its default
            if (value is None or isinstance(value, bool)) and (group[key] is None or isinstance(group[key], bool)):
                continue  # switches (fused, foreach, capturable ...): None and bools are interchangeable
            if isinstance(value, torch.Tensor) and not isinstance(group[key], torch.Tensor):
                if isinstance(group[key], bool) or not isinstance(group[key], (int, float)):
                    raise CheckpointError(f"{file}: field {where}.{key} is {_kind(group[key])}, not a number")
                continue
            if isinstance(value, (int, float)) and not isinstance(value, bool) and isinstance(group[key], torch.Tensor):
                if group[key].numel() != 1:
                    raise CheckpointError(f"{file}: field {where}.{key} is {_kind(group[key])}, not one number")
                continue
            _same_structure(group[key], value, file, f"{where}.{key}")
        for number, identifier in enumerate(group["params"]):
            if isinstance(identifier, bool) or not isinstance(identifier, int) or identifier in by_id:
                raise CheckpointError(f"{file}: field {where}.params[{number}] is {identifier!r}, not a new parameter id")
            by_id[identifier] = params["params"][number]
    states = saved["state"]
    if not isinstance(states, dict):
        raise CheckpointError(f"{file}: field state is {_kind(states)}, not a dict")
    for identifier, state in states.items():
        if identifier not in by_id:
            raise CheckpointError(f"{file}: field state[{identifier!r}] is the state of no parameter of this run")
        parameter = by_id[identifier]
        if not isinstance(state, dict):
            raise CheckpointError(f"{file}: field state[{identifier}] is {_kind(state)}, not a dict")
        for key, value in state.items():
            where = f"state[{identifier}].{key}"
            if isinstance(value, torch.Tensor):
                if value.layout != torch.strided or value.device.type == "meta":
                    raise CheckpointError(f"{file}: field {where} is {_kind(value)} on {value.device.type}, not a dense tensor")
                if key == "step":
                    if value.numel() != 1 or not (value.is_floating_point() or value.dtype in (torch.int32, torch.int64)):
                        raise CheckpointError(f"{file}: field {where} is {_kind(value)}, but the step must be one number")
                elif value.shape != parameter.shape or not (value.is_floating_point() and parameter.is_floating_point() or value.dtype == parameter.dtype):
                    raise CheckpointError(
                        f"{file}: field {where} is {_kind(value)}, but its parameter is {_kind(parameter.detach())}: the "
                        "checkpoint does not fit this model (a wrong shape would crash the optimiser step)"
                    )
            elif not (value is None or isinstance(value, (int, float, bool))):
                raise CheckpointError(f"{file}: field {where} is {_kind(value)}, not a tensor or number")
            _require_finite(value, file, where)
    for index, group in enumerate(groups):
        for key, value in group.items():
            if key != "params":
                _require_finite(value, file, f"param_groups[{index}].{key}")


def _require_finite(value, file: Path, field: str) -> None:
    """Refuse NaN/Inf in a loaded state (a float, a floating tensor, or a list/tuple/dict of them), naming the field."""
    import math

    import torch

    if isinstance(value, float) and not math.isfinite(value):
        raise CheckpointError(f"{file}: field {field} is {value}; expected a finite number")
    if isinstance(value, torch.Tensor) and value.is_floating_point() and value.numel() and not bool(torch.isfinite(value).all()):
        raise CheckpointError(f"{file}: field {field} holds {int((~torch.isfinite(value)).sum())} NaN/Inf values; expected finite numbers")
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _require_finite(item, file, f"{field}[{index}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            _require_finite(item, file, f"{field}.{key}")


def check_scheduler_state(saved, scheduler, file: Path) -> None:
    """Check a scheduler state dict loaded from ``file`` against ``scheduler`` (``load_state_dict`` copies it into the
    scheduler's attributes): every key both have must be of the same kind (lengths, number types); a key the
    scheduler's ``state_dict`` lacks is refused when it would replace one of its other attributes (e.g. its
    optimizer). Keys written by another torch version that the scheduler no longer has, or does not have yet, pass."""
    live = scheduler.state_dict()
    if not isinstance(saved, dict):
        raise CheckpointError(f"{file}: field (top level) is {_kind(saved)}, not a scheduler state dict")
    for key, value in saved.items():
        if key in live:
            _same_structure(value, live[key], file, str(key))
            _require_finite(value, file, str(key))
        elif not isinstance(key, str) or hasattr(scheduler, key):
            raise CheckpointError(f"{file}: field {key} is not part of this run's scheduler state (loading it would replace its {key!r})")
    epoch = saved.get("last_epoch")
    if isinstance(epoch, int) and not -1 <= epoch <= MAX_SCHEDULER_EPOCH:
        raise CheckpointError(f"{file}: field last_epoch is {epoch}; expected a step count from -1 to {MAX_SCHEDULER_EPOCH}")


#: Largest ``last_epoch`` a scheduler state may hold (steps x processes of any real run are far below).
MAX_SCHEDULER_EPOCH = 2**40


def check_rng_state(saved, file: Path) -> None:
    """Check a ``random_states_<rank>.pkl`` dict against this process's own generators before Accelerate sets them:
    Python's (version and 625-word state), NumPy's (MT19937 state) and torch's (a byte tensor of its size), and
    the CUDA generators' when present."""
    import random

    import numpy as np
    import torch

    if not isinstance(saved, dict):
        raise CheckpointError(f"{file}: field (top level) is {_kind(saved)}, not Accelerate's dict of random states")
    for key in ("random_state", "numpy_random_seed", "torch_manual_seed"):
        if key not in saved:
            raise CheckpointError(f"{file}: field {key} is missing")
    python = random.getstate()
    state = saved["random_state"]
    if not isinstance(state, tuple) or len(state) != 3 or state[2] is not None and not isinstance(state[2], float):
        raise CheckpointError(f"{file}: field random_state is {_kind(state)}, not Python's (version, state, gauss) tuple")
    _same_structure(state[:2], python[:2], file, "random_state")
    if state[0] != python[0]:
        raise CheckpointError(f"{file}: field random_state[0] is {state[0]!r}; expected Python's random state version {python[0]}")
    if not all(isinstance(word, int) and not isinstance(word, bool) for word in state[1]):
        raise CheckpointError(f"{file}: field random_state[1] holds values that are not ints")
    numpy_state = np.random.get_state()
    _same_structure(tuple(saved["numpy_random_seed"]) if isinstance(saved["numpy_random_seed"], (list, tuple)) else saved["numpy_random_seed"],
                    numpy_state, file, "numpy_random_seed")
    _same_structure(saved["torch_manual_seed"], torch.get_rng_state(), file, "torch_manual_seed")
    if "step" in saved:
        _same_structure(saved["step"], 0, file, "step")
    if "torch_cuda_manual_seed" in saved and torch.cuda.is_available():
        value = saved["torch_cuda_manual_seed"]
        reference = torch.cuda.get_rng_state()
        values = value if isinstance(value, (list, tuple)) else [value]
        for index, item in enumerate(values):
            _same_structure(item, reference, file, f"torch_cuda_manual_seed[{index}]" if isinstance(value, (list, tuple)) else "torch_cuda_manual_seed")


def check_accelerate_states(accelerator, path: Path, loaded: dict) -> None:
    """Check the optimizer, scheduler and this process's RNG files of checkpoint ``path`` (``loaded``: file name ->
    what ``_check_weights_only`` read) against what this run loads them into; a misfit is refused naming the file
    and the field, before Accelerate touches anything."""
    from accelerate.utils.constants import OPTIMIZER_NAME, RNG_STATE_NAME, SCHEDULER_NAME

    def take(name):
        if name not in loaded:
            raise CheckpointError(f"{path / name}: missing (this run has the object it restores)")
        return loaded[name]

    for index, optimizer in enumerate(getattr(accelerator, "_optimizers", [])):
        name = f"{OPTIMIZER_NAME}.bin" if index == 0 else f"{OPTIMIZER_NAME}_{index}.bin"
        check_optimizer_state(take(name), optimizer, path / name)
    for index, scheduler in enumerate(getattr(accelerator, "_schedulers", [])):
        name = f"{SCHEDULER_NAME}.bin" if index == 0 else f"{SCHEDULER_NAME}_{index}.bin"
        check_scheduler_state(take(name), getattr(scheduler, "scheduler", scheduler), path / name)
    name = f"{RNG_STATE_NAME}_{accelerator.process_index}.pkl"
    if name in loaded:  # Accelerate skips a missing one with a warning
        check_rng_state(loaded[name], path / name)


def load_checkpoint(accelerator, path: str | os.PathLike, tensor_module=None, state=None, verify: bool = True) -> dict:
    """Resume from checkpoint ``path`` without unpickling code; returns its metadata.

    Args:
        accelerator: the run's ``Accelerator`` (model/optimizer/scheduler prepared, nothing registered for checkpointing).
        path: a checkpoint directory written by :func:`save_checkpoint`.
        tensor_module: module whose ``load_state_dict`` receives ``snd_state.safetensors`` (the EMA teacher).
        state: object whose ``load_state_dict`` receives ``snd_state.json`` (the train counters).
        verify: check the manifest (sizes and SHA-256) first. Default True.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if verify:
        verify_checkpoint(path)
    metadata = read_checkpoint_metadata(path)
    pickles = sorted(path.glob("custom_checkpoint_*.pkl"))
    if pickles:
        raise CheckpointError(
            f"{pickles[0]}: refused; Accelerate would unpickle it with weights_only=False, which can run code "
            "(a checkpoint written by an older snd, or tampered)"
        )
    loaded = {file.name: _check_weights_only(file) for file in sorted([*path.glob("*.bin"), *path.glob("*.pkl")])}
    check_accelerate_states(accelerator, path, loaded)
    del loaded
    for name in ("model.safetensors", STATE_TENSORS):
        if (path / name).exists():
            try:
                from safetensors import safe_open

                with safe_open(str(path / name), framework="pt") as handle:
                    _check_finite_tensors(handle, path / name)
            except (SafetensorError, OSError) as error:
                raise CheckpointError(f"{path / name}: corrupt or truncated safetensors file ({error})") from error
    counters = _read_counters(path / STATE_JSON, metadata.get("step")) if state is not None else None
    try:
        accelerator.load_state(str(path))
    except Exception as error:  # noqa: BLE001 - name the checkpoint whatever Accelerate raised
        if "Error(s) in loading state_dict" in str(error):  # the model's tensors (keys, shapes) do not fit this run's model
            raise CheckpointError(f"{path / 'model.safetensors'}: does not fit this run's model (a checkpoint of another "
                                  f"model, or tampered): {str(error)[:600]}") from error
        raise CheckpointError(f"loading checkpoint {path} failed: {type(error).__name__}: {error}") from error
    if tensor_module is not None:
        file = path / STATE_TENSORS
        if not file.exists():
            raise CheckpointError(f"{file}: missing (the EMA teacher state)")
        try:
            values = load_file(str(file))
        except (SafetensorError, OSError) as error:
            raise CheckpointError(f"{file}: corrupt or truncated safetensors file ({error})") from error
        try:
            tensor_module.load_state_dict(values)
        except RuntimeError as error:
            raise CheckpointError(f"{file}: does not fit this run's teacher: {error}") from error
    if state is not None:
        state.load_state_dict(counters)
    return metadata


def _check_finite_tensors(handle, file: Path) -> None:
    """Every floating tensor of an open safetensors file is finite (a NaN weight would be trained on or exported)."""
    import torch

    for key in handle.keys():
        value = handle.get_tensor(key)
        if value.is_floating_point() and value.numel() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"{file}: tensor {key!r} holds {int((~torch.isfinite(value)).sum())} NaN/Inf values; expected finite weights")


def _read_counters(file: Path, step) -> dict:
    """``snd_state.json``: a JSON object whose ``step``, ``skipped`` (and ``empty_streak``) are non-negative ints, ``step``
    the checkpoint's own step; refused naming the file and field otherwise."""
    from ..safe_io import load_json

    try:
        values = load_json(file, what="the train counters (a JSON object)", error=CheckpointError, max_bytes=1 << 20)
    except FileNotFoundError:
        raise CheckpointError(f"{file}: missing (the train counters)") from None
    if not isinstance(values, dict):
        raise CheckpointError(f"{file}: holds a JSON {type(values).__name__}; expected an object of train counters (step, skipped)")
    for key in ("step", "skipped", "empty_streak"):
        if key not in values and key == "empty_streak":
            continue
        value = values.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise CheckpointError(f"{file}: field {key!r} is {value!r}; expected a non-negative integer (corrupt train counters)")
    if step is not None and values["step"] != step:
        raise CheckpointError(f"{file}: field 'step' is {values['step']}, but the checkpoint is of step {step} (corrupt train counters)")
    return values


def upgrade_legacy_checkpoint(path: str | os.PathLike) -> Path:
    """Convert a checkpoint written by an older snd (EMA teacher and counters in Accelerate's
    ``custom_checkpoint_0.pkl`` / ``custom_checkpoint_1.pkl``) to this format, without running code from it.

    The two pickles are read with the size dry-run and ``torch.load(weights_only=True)`` (a pickle holding
    anything but tensors and numbers is refused), written as ``snd_state.safetensors`` / ``snd_state.json``,
    and renamed to ``*.pkl.legacy`` (kept, not deleted); then the manifest marker is written.
    """
    import torch
    from safetensors.torch import save_file

    path = Path(path)
    metadata = read_checkpoint_metadata(path)
    teacher_file, counters_file = path / "custom_checkpoint_0.pkl", path / "custom_checkpoint_1.pkl"
    for file in (teacher_file, counters_file):
        if not file.is_file():
            raise CheckpointError(f"{file}: missing; {path} is not a checkpoint of an older snd")
        _check_weights_only(file)
    teacher = torch.load(teacher_file, map_location="cpu", weights_only=True)
    counters = torch.load(counters_file, map_location="cpu", weights_only=True)
    if not (isinstance(teacher, dict) and all(isinstance(v, torch.Tensor) for v in teacher.values())):
        raise CheckpointError(f"{teacher_file}: expected the EMA teacher's state dict of tensors")
    if not (isinstance(counters, dict) and {"step", "skipped"} <= set(counters)):
        raise CheckpointError(f"{counters_file}: expected the train counters (step, skipped)")
    save_file({k: v.contiguous().clone() for k, v in teacher.items()}, str(path / STATE_TENSORS))
    (path / STATE_JSON).write_text(json.dumps({key: int(value) for key, value in counters.items()}, indent=2))
    for file in (teacher_file, counters_file):
        file.rename(file.with_name(file.name + ".legacy"))
    extra = {k: v for k, v in metadata.items() if k not in ("format", "step", "files")}
    write_checkpoint_marker(path, int(metadata.get("step", counters["step"])), {**extra, "upgraded_from_legacy": True})
    return path


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


def resume_checkpoint_path(accelerator, output_dir: str | os.PathLike, resume: str | None) -> Path | None:
    """At the start of a run (all processes call this): the main process removes stale ``.tmp-*``/half-pruned
    folders and resolves ``resume`` (see :func:`resolve_resume`, with verification); every process gets its answer
    (or its error)."""
    answer: list = [None, None]  # [path, error message]
    if accelerator.is_main_process:
        clean_stale(output_dir)
        try:
            found = resolve_resume(output_dir, resume)
            answer[0] = None if found is None else str(found)
        except (CheckpointError, FileNotFoundError) as error:
            answer[1] = f"{type(error).__name__}: {error}"
            if accelerator.num_processes == 1:
                raise
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        broadcast_object_list(answer)
    if answer[1] is not None:
        raise CheckpointError(answer[1])
    return None if answer[0] is None else Path(answer[0])


def atomic_save_pretrained(model, directory: str | os.PathLike, image_processor=None) -> Path:
    """``save_pretrained`` into a temporary sibling, then rename over ``directory``."""
    directory = Path(directory)
    temporary = directory.with_name(f".tmp-{directory.name}")
    shutil.rmtree(temporary, ignore_errors=True)
    try:
        model.save_pretrained(str(temporary), safe_serialization=True)
        if image_processor is not None:
            image_processor.save_pretrained(str(temporary))
    except (OSError, RuntimeError) as error:
        try:
            raise_if_disk_full(error, temporary, "exporting")
        finally:
            shutil.rmtree(temporary, ignore_errors=True)
        raise
    if directory.exists():  # swap by renames, so a kill leaves the old or the new export, never neither
        stale = directory.with_name(f".stale-{directory.name}")
        shutil.rmtree(stale, ignore_errors=True)
        directory.rename(stale)
        temporary.rename(directory)
        shutil.rmtree(stale, ignore_errors=True)
    else:
        temporary.rename(directory)
    return directory


# --------------------------------------------------------------------------------------------
# Resuming with the same run definition


SCHEDULE_KEYS = ("max_steps", "lr", "batch_size", "global_batch_size", "schedule", "warmup_fraction", "one_cycle_extra_steps", "seed")


class ConfigChangeError(ConfigError):
    """A resume would silently change what the checkpoint's run was (its schedule or data order)."""


def schedule_facts(config, num_processes: int = 1) -> dict:
    """The values that define the learning-rate schedule and the data order of a run (stored in each checkpoint)."""
    training = config.training
    return {
        "max_steps": training.max_steps,
        "lr": training.lr,
        "batch_size": training.batch_size,
        "global_batch_size": training.batch_size * num_processes,
        "schedule": training.schedule,
        "warmup_fraction": training.warmup_fraction,
        "one_cycle_extra_steps": getattr(training, "one_cycle_extra_steps", None),
        "seed": training.seed,
    }


def check_config_change(saved: dict | None, current: dict, allow: bool = False, where: str | os.PathLike | None = None) -> dict:
    """Compare the checkpoint's :func:`schedule_facts` with this run's; raise :class:`ConfigChangeError` listing
    the differences unless ``allow`` (then warn). Returns ``{key: (saved, current)}`` of what differs."""
    if not saved:
        return {}
    changed = {key: (saved.get(key), current.get(key)) for key in SCHEDULE_KEYS if key in saved and saved.get(key) != current.get(key)}
    if changed:
        listing = ", ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in changed.items())
        if not allow:
            raise ConfigChangeError(
                f"resuming from {where} with a different run definition ({listing}) would rebuild the schedule or "
                "data order silently; use the checkpoint's values or pass --allow_config_change"
            )
        logger.warning("resuming from %s with changed values (--allow_config_change): %s", where, listing)
    return changed


def write_run_config(output_dir: str | os.PathLike, text: str, step: int = 0) -> Path:
    """Write the run's resolved config as ``config.yaml``; never overwrite a different existing one: then write
    ``config.resume-XXXXXXXX.yaml`` (the step the run starts from) beside it. Returns the path written (or kept)."""
    output_dir = Path(output_dir)
    target = output_dir / "config.yaml"
    if target.exists():
        if target.read_text() == text:
            return target
        target = output_dir / f"config.resume-{step:08d}.yaml"
        logger.warning("the config differs from %s; writing this run's config to %s", output_dir / "config.yaml", target)
    temporary = target.with_name(f".{target.name}.tmp")
    try:
        temporary.write_text(text)
    except OSError as error:
        raise_if_disk_full(error, temporary)
        raise
    temporary.replace(target)
    return target


def truncate_log(path: str | os.PathLike, step: int) -> int:
    """Drop loss-log lines written after ``step`` (by a run killed before its next checkpoint), and a torn final
    line (a kill mid-write) with a warning; a corrupt line elsewhere raises naming the file and line.
    Returns the number of lines dropped."""
    from ..safe_io import read_text

    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return 0
    text = read_text(path, what="the run's loss log (JSON lines)", error=ValueError)
    lines = [line for line in text.splitlines() if line.strip()]
    kept = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            if number == len(lines):
                logger.warning("%s: dropping a torn final line %d (%s): %r", path, number, error, line[:80])
                break
            raise ValueError(f"{path}: line {number} is not JSON ({error}): {line[:80]!r}") from error
        if not isinstance(record, dict):
            raise ValueError(f"{path}: line {number} is not a JSON object: {line[:80]!r}")
        value = record.get("step", 0)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{path}: line {number}: field 'step' is {value!r}; expected a number: {line[:80]!r}")
        if value <= step:
            kept.append(line)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text("".join(line + "\n" for line in kept))
    temporary.replace(path)
    return len(lines) - len(kept)


# --------------------------------------------------------------------------------------------
# Feature tensors saved next to a run (pca_before_features.pt)

#: Largest feature tensor :func:`load_feature_tensor` accepts (a held-out view's patch features are ~1 MB).
MAX_FEATURE_BYTES = 1 << 30


def load_feature_tensor(path: str | os.PathLike, expected_shape: tuple[int, ...] | None = None, *, max_bytes: int = MAX_FEATURE_BYTES):
    """Load one saved feature tensor (``pca_before_features.pt``) and check it before it is used.

    Refused, with a :class:`CheckpointError` naming the file and what was expected: a path that is not a regular file
    (a FIFO would block); size fields larger than the file, storage constructor calls or pickled objects (checked
    before torch allocates); anything but one dense floating-point tensor; a view that repeats elements, e.g. a stride-0
    ``expand`` whose few stored bytes stand for a huge tensor; more than ``max_bytes``; NaN/Inf values; a shape
    other than ``expected_shape`` (``None`` entries match any size).
    """
    import torch

    from ..convert.pickles import check_sizes
    from ..safe_io import require_regular_file

    path = Path(path)
    what = "a saved feature tensor (torch.save of one float tensor)"
    require_regular_file(path, what=what, error=CheckpointError)
    try:
        check_sizes(path)
        value = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - every failure becomes a refusal naming the file
        raise CheckpointError(f"{path}: refused; expected {what}: {type(error).__name__}: {str(error)[:300]}") from error
    if not isinstance(value, torch.Tensor):
        raise CheckpointError(f"{path}: holds {type(value).__name__}; expected {what}")
    if value.layout != torch.strided or not value.is_floating_point():
        raise CheckpointError(f"{path}: holds a {value.layout} {value.dtype} tensor; expected a dense floating-point tensor")
    # a permuted view of a dense tensor is fine (the trainer saves [C, h, w] maps permuted from channels-last); a view
    # that repeats elements (stride 0, or a storage smaller than the tensor) stands for more data than the file holds
    overlapping = value.untyped_storage().nbytes() < value.numel() * value.element_size()
    if any(stride == 0 and size > 1 for size, stride in zip(value.shape, value.stride())) or overlapping:
        raise CheckpointError(
            f"{path}: holds a non-contiguous view (shape {tuple(value.shape)}, strides {tuple(value.stride())}); expected a "
            "dense tensor (a stride-0 view stands for more data than the file holds)"
        )
    size = value.numel() * value.element_size()
    if size > max_bytes:
        raise CheckpointError(f"{path}: a tensor of {size} bytes (shape {tuple(value.shape)}); expected at most {max_bytes}")
    if expected_shape is not None and (
        len(expected_shape) != value.dim() or any(e is not None and e != s for e, s in zip(expected_shape, value.shape))
    ):
        raise CheckpointError(f"{path}: shape {tuple(value.shape)}; expected {tuple(expected_shape)}")
    if value.numel() and not bool(torch.isfinite(value).all()):
        bad = int((~torch.isfinite(value)).sum())
        raise CheckpointError(f"{path}: {bad} NaN/Inf values; expected finite features")
    return value
