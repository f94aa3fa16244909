"""What every backbone converter shares: reading checkpoints safely, key/shape checks with clear errors,
and the numerical check before anything is saved."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable

import torch

from .pickles import load_checkpoint_safely
from ..models.snd_dinov2 import PRESETS, SnDModel, normalize_images

_WRAPPER_KEYS = ("state_dict", "model", "teacher", "student", "model_state_dict")
_PREFIXES = ("module.", "backbone.", "encoder.backbone.", "dinov2.", "model.")


class ConversionError(ValueError):
    """A checkpoint does not fit the requested format or preset; the message says what and where."""


def _unwrap(state: dict, source: str) -> dict[str, torch.Tensor]:
    """Find the tensor dict inside common checkpoint wrappers (`{"model": ...}`, `{"teacher": ...}`)."""
    for _ in range(3):
        if all(isinstance(value, torch.Tensor) for value in state.values()):
            break
        for key in _WRAPPER_KEYS:
            if isinstance(state.get(key), dict):
                state = state[key]
                break
        else:
            non_tensors = [key for key, value in state.items() if not isinstance(value, torch.Tensor)][:5]
            raise ConversionError(f"{source}: expected a state dict of tensors; found non-tensor entries {non_tensors}")
    return {key: value for key, value in state.items() if isinstance(value, torch.Tensor)}


def strip_prefixes(state_dict: dict[str, torch.Tensor], prefixes=_PREFIXES) -> dict[str, torch.Tensor]:
    """Remove wrapper prefixes (`module.`, `backbone.`, ...) shared by every key."""
    changed = True
    while changed and state_dict:
        changed = False
        for prefix in prefixes:
            if all(key.startswith(prefix) for key in state_dict):
                state_dict = {key[len(prefix):]: value for key, value in state_dict.items()}
                changed = True
    return state_dict


def read_torch_checkpoint(path: Path):
    """Unpickle a torch checkpoint without running code from it (see `snd.convert.pickles`); errors name the file."""
    try:
        return load_checkpoint_safely(path)
    except Exception as error:  # noqa: BLE001 - re-raised with the file named
        raise ConversionError(f"{path}: could not be read as a torch checkpoint ({error})") from error


def _read_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as error:
            raise ConversionError(f"{path}: corrupt or truncated safetensors file ({error})") from error
    state = read_torch_checkpoint(path)
    if not isinstance(state, dict):
        raise ConversionError(f"{path}: expected a dict of tensors, got {type(state).__name__}")
    return _unwrap(state, str(path))


def _read_folder(folder: Path) -> tuple[dict[str, torch.Tensor], dict | None]:
    config = None
    if (folder / "config.json").is_file():
        from ..safe_io import load_json

        # regular file, UTF-8, nesting within the parser's depth; every failure names the file
        config = load_json(folder / "config.json", what="a transformers config.json (a JSON object)", error=ConversionError, max_bytes=16 * 2**20)
        if not isinstance(config, dict):
            raise ConversionError(f"{folder / 'config.json'}: holds a JSON {type(config).__name__}; expected a JSON object of config fields")
    single = [folder / name for name in ("model.safetensors", "pytorch_model.bin") if (folder / name).is_file()]
    if single:
        return _read_file(single[0]), config
    shards = sorted(folder.glob("model-*.safetensors")) or sorted(folder.glob("pytorch_model-*.bin"))
    if shards:
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(_read_file(shard))
        return state, config
    weights = sorted(p for p in folder.iterdir() if p.suffix in (".pth", ".pt", ".safetensors", ".bin"))
    if len(weights) == 1:
        return _read_file(weights[0]), config
    raise ConversionError(
        f"{folder}: no model.safetensors / pytorch_model.bin; found {[p.name for p in weights] or 'no weight files'} "
        "(pass the file itself)"
    )


def load_checkpoint(source: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict | None]:
    """Read a state dict (and a config.json when there is one) from a file, a folder or the Hub.

    `source` may be a local `.pth`/`.pt`/`.bin`/`.safetensors` file, a local folder in transformers layout,
    a Hub repo id (`facebook/dinov2-small`), or a file inside a Hub repo (`david-shavin/SnD/dinov2_small_snd.pth`).
    Pickled files are read with `torch.load(..., weights_only=True)`.
    """
    path = Path(source)
    if path.is_file():
        return strip_prefixes(_read_file(path)), None
    if path.is_dir():
        state, config = _read_folder(path)
        return strip_prefixes(state), config
    text = str(source)
    if re.fullmatch(r"[\w.-]+/[\w.-]+(/.+)?", text) and not text.startswith(("/", ".")):
        from huggingface_hub import hf_hub_download, snapshot_download

        parts = text.split("/")
        if len(parts) > 2 and Path(parts[-1]).suffix in (".pth", ".pt", ".bin", ".safetensors"):
            repo_id, filename = "/".join(parts[:2]), "/".join(parts[2:])
            return strip_prefixes(_read_file(Path(hf_hub_download(repo_id, filename)))), None
        folder = snapshot_download(text, allow_patterns=["*.json", "*.safetensors", "*.bin", "*.pth"])
        state, config = _read_folder(Path(folder))
        return strip_prefixes(state), config
    raise ConversionError(f"{source}: no such file or folder, and not a Hub repo id")


def guess_preset(hidden_size: int, num_layers: int, num_register_tokens: int) -> str | None:
    for name, arch in PRESETS.items():
        if (
            arch["hidden_size"] == hidden_size
            and arch["num_hidden_layers"] == num_layers
            and arch.get("num_register_tokens", 0) == num_register_tokens
        ):
            return name
    return None


def load_into_model(model: SnDModel, mapped: dict[str, torch.Tensor], source: str, hint: str = "") -> SnDModel:
    """Load mapped weights, refusing (with every offending key listed) on missing/unexpected keys or shapes."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(mapped))
    unexpected = sorted(set(mapped) - set(expected))
    wrong_shapes = [
        f"{key}: checkpoint {tuple(mapped[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in sorted(set(expected) & set(mapped))
        if mapped[key].shape != expected[key].shape
    ]
    problems = []
    if wrong_shapes:
        problems.append("wrong shapes:\n  " + "\n  ".join(wrong_shapes[:10]) + ("\n  ..." if len(wrong_shapes) > 10 else ""))
    if missing:
        problems.append(f"missing keys ({len(missing)}): {missing[:10]}{' ...' if len(missing) > 10 else ''}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}")
    if problems:
        raise ConversionError(f"{source}: does not fit the requested architecture{hint}\n" + "\n".join(problems))
    model.load_state_dict({key: value.to(expected[key].dtype) for key, value in mapped.items()}, strict=True)
    return model


def verify_patch_tokens(
    model: SnDModel,
    reference: Callable[[torch.Tensor], torch.Tensor],
    image_sizes: list[tuple[int, int]],
    tolerance: float = 1e-4,
    source: str = "checkpoint",
    seed: int = 0,
) -> float:
    """Compare the converted model's normalised patch tokens with a reference on random images.

    `reference(pixel_values [1, 3, H, W]) -> [1, h * w, C]` must compute the source implementation's
    `x_norm_patchtokens`. Returns the max abs difference; raises `ConversionError` above `tolerance`.
    """
    generator = torch.Generator().manual_seed(seed)
    worst = 0.0
    model.eval()
    for height, width in image_sizes:
        pixels = normalize_images(torch.rand(1, 3, height, width, generator=generator))
        with torch.no_grad():
            ours = model(pixels).last_hidden_state[:, model.num_prefix_tokens :]
            theirs = reference(pixels)
        difference = (ours - theirs).abs().max().item()
        worst = max(worst, difference)
        if not difference <= tolerance:
            raise ConversionError(
                f"{source}: converted model differs from the source implementation at {height}x{width} "
                f"(max |patch token difference| = {difference:.3g} > {tolerance:g}); nothing was saved"
            )
    return worst


# --------------------------------------------------------------------------------------------
# Output folders: never delete or replace what the user had unless asked


def check_output(output: str | os.PathLike, overwrite: bool = False, inputs=()) -> Path:
    """Refuse an existing file or non-empty folder at ``output`` unless ``overwrite`` (call before converting), and an
    ``output`` that is or holds one of ``inputs`` (local paths): replacing it would delete the checkpoint being read."""
    output = Path(output)
    for source in inputs:
        source = Path(source)
        if source.exists() and output.exists():
            resolved, target = source.resolve(), output.resolve()
            if resolved == target or target in resolved.parents:
                raise ConversionError(f"{output}: is or holds the input {source}; replacing it would delete the checkpoint being "
                                      "converted; choose another --output")
    if output.is_symlink() or (output.exists() and not output.is_dir()):
        if not overwrite:
            raise ConversionError(f"{output}: exists and is not a folder; choose another --output or pass --overwrite to replace it")
    elif output.is_dir() and any(output.iterdir()) and not overwrite:
        raise ConversionError(
            f"{output}: exists and is not empty ({len(list(output.iterdir()))} entries); choose a new --output folder "
            "or pass --overwrite to replace it"
        )
    return output


def staging_folder(output: str | os.PathLike) -> Path:
    """A fresh hidden sibling of ``output`` to write into, with the permissions a new folder would get."""
    import tempfile

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.staging-", dir=output.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp makes 0700
    return staging


def publish_folder(staging: str | os.PathLike, output: str | os.PathLike, overwrite: bool = False) -> Path:
    """Move the finished ``staging`` folder to ``output``.

    ``output`` absent or an empty folder: a rename. Otherwise only with ``overwrite``: the old ``output`` is
    renamed aside, ``staging`` renamed into place, then the old one deleted, so a failure part-way leaves
    the old or the new folder under ``output``, never neither (the aside copy keeps its hidden name).
    """
    import shutil

    staging, output = Path(staging), Path(output)
    check_output(output, overwrite)  # again: something may have appeared while converting
    if output.is_dir() and not output.is_symlink() and not any(output.iterdir()):
        output.rmdir()
    if output.exists() or output.is_symlink():
        aside = output.with_name(f".{output.name}.replaced-{os.getpid()}")
        output.rename(aside)
        staging.rename(output)
        if aside.is_dir() and not aside.is_symlink():
            shutil.rmtree(aside)
        else:
            aside.unlink()
    else:
        staging.rename(output)
    return output


def check_finite_state(state: dict[str, torch.Tensor], source: str) -> None:
    """Refuse weights with NaN/Inf, naming the first keys (a broken checkpoint must not convert silently)."""
    bad = [key for key, value in state.items() if value.is_floating_point() and not bool(torch.isfinite(value).all())]
    if bad:
        raise ConversionError(f"{source}: {len(bad)} tensors hold NaN/Inf values, e.g. {bad[:5]}; nothing was saved")
