"""Convert DINOv2 / SnD checkpoints (torch.hub, timm, transformers) into verified `SnDModel`s."""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..models.snd_dinov2 import PRESETS, SnDConfig, SnDImageProcessor, SnDModel
from .common import (
    ConversionError,
    check_output,
    guess_preset,
    load_checkpoint,
    load_into_model,
    publish_folder,
    staging_folder,
    verify_patch_tokens,
)
from .layouts import FORMATS, TO_TORCHHUB, describe_architecture, torchhub_to_snd
from .reference import dinov2_reference_patch_tokens

logger = logging.getLogger(__name__)


@dataclass
class ConversionReport:
    """What a conversion checked: the architecture it found and the max patch-token differences."""

    source: str
    format: str
    preset: str
    max_abs_difference: dict[str, float] = field(default_factory=dict)


def _check_preset(preset: str | None, found: dict, source: str) -> str:
    guessed = guess_preset(found["hidden_size"], found["num_hidden_layers"], found["num_register_tokens"])
    if preset is None:
        if guessed is None:
            raise ConversionError(f"{source}: no preset matches {found}; pass --preset (one of {sorted(PRESETS)})")
        return guessed
    if preset not in PRESETS:
        raise ConversionError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    expected = PRESETS[preset]
    mismatches = [
        f"{name}: preset {expected.get(name, 0)} vs checkpoint {found[name]}"
        for name in ("hidden_size", "num_hidden_layers", "num_register_tokens")
        if expected.get(name, 0) != found[name]
    ]
    if mismatches:
        hint = f" It looks like {guessed!r}." if guessed else ""
        raise ConversionError(f"{source}: checkpoint does not match preset {preset!r} ({'; '.join(mismatches)}).{hint}")
    return preset


def _transformers_reference(source_state: dict, config: SnDConfig):
    """transformers' own Dinov2 model holding the source numbers (native resolution only: its interpolation differs)."""
    from transformers import Dinov2Config, Dinov2Model, Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    arguments = dict(
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        image_size=config.image_size,
        patch_size=config.patch_size,
        use_swiglu_ffn=config.use_swiglu_ffn,
        layer_norm_eps=config.layer_norm_eps,
    )
    if config.num_register_tokens:
        model = Dinov2WithRegistersModel(Dinov2WithRegistersConfig(num_register_tokens=config.num_register_tokens, **arguments))
    else:
        model = Dinov2Model(Dinov2Config(**arguments))
    missing, unexpected = model.load_state_dict(source_state, strict=False)
    if missing or unexpected:
        raise ConversionError(f"transformers reference could not take the checkpoint: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.eval()
    prefix = 1 + config.num_register_tokens
    return lambda pixels: model(pixel_values=pixels).last_hidden_state[:, prefix:]


def convert_backbone(
    source: str | os.PathLike | dict,
    format: str = "torchhub",
    preset: str | None = None,
    tolerance: float = 1e-4,
    check_sizes: list[tuple[int, int]] | None = None,
) -> tuple[SnDModel, ConversionReport]:
    """Convert a DINOv2/SnD checkpoint into an `SnDModel`, checking numbers before returning it.

    Args:
        source: a file, folder or Hub id (see `load_checkpoint`), or an already-loaded state dict.
        format: `"torchhub"` (original DINOv2 and the SnD authors' `.pth` releases), `"timm"`
            (`vit_*_patch14_dinov2*`) or `"transformers"` (`facebook/dinov2-*`, v4 or v5 key names).
        preset: architecture name (`dinov2-s`, `dinov2-b-reg`, ...); inferred from the shapes when omitted,
            and refused with a clear message when the checkpoint does not match it.
        tolerance: max abs difference of patch tokens against the source implementation.
        check_sizes: image sizes to compare at; default the native grid, 224 x 224 and 182 x 294.
    Raises:
        ConversionError: unknown format, missing/unexpected keys, wrong shapes, or numbers off.
    """
    if format not in FORMATS:
        raise ConversionError(f"unknown format {format!r}; choose one of {FORMATS}")
    if isinstance(source, dict):
        state, name = source, "state dict"
    else:
        state, _ = load_checkpoint(source)
        name = str(source)
    try:
        canonical = TO_TORCHHUB[format](state)
        found = describe_architecture(canonical)
    except KeyError as error:  # a checkpoint of another layout (or another model): name it, not the missing key alone
        raise ConversionError(
            f"{name}: not a {format!r}-layout DINOv2 checkpoint (no {error.args[0]!r} among its keys once mapped); "
            f"check --format (one of {FORMATS})"
        ) from None
    preset = _check_preset(preset, found, name)
    config = SnDConfig.from_preset(
        preset,
        image_size=found["image_size"],
        patch_size=found["patch_size"],
        use_swiglu_ffn=found["use_swiglu_ffn"] or PRESETS[preset].get("use_swiglu_ffn", False),
    )
    mapped = torchhub_to_snd(canonical)
    if "embeddings.mask_token" not in mapped:
        # timm drops the mask token; it only matters for masked-image training, so start it at zero.
        mapped["embeddings.mask_token"] = torch.zeros(1, config.hidden_size)
    model = load_into_model(SnDModel(config), mapped, name, hint=f" (preset {preset!r})")

    def weight(key: str) -> torch.Tensor:
        if key not in canonical:  # the reference needs every DINOv2 tensor: another layout or model lacks some
            raise ConversionError(
                f"{name}: not a {format!r}-layout DINOv2 checkpoint (no {key!r} among its keys once mapped); "
                f"check --format (one of {FORMATS})"
            )
        return canonical[key].float()

    def reference(pixels):
        return dinov2_reference_patch_tokens(
            weight,
            pixels,
            num_heads=config.num_attention_heads,
            num_layers=config.num_hidden_layers,
            num_register_tokens=config.num_register_tokens,
            swiglu=config.use_swiglu_ffn,
            layer_norm_eps=config.layer_norm_eps,
        )

    report = ConversionReport(source=name, format=format, preset=preset)
    sizes = check_sizes or [(config.image_size, config.image_size), (224, 224), (182, 294)]
    model = model.float()
    for size in dict.fromkeys(sizes):
        report.max_abs_difference[f"original@{size[0]}x{size[1]}"] = verify_patch_tokens(
            model, reference, [size], tolerance, name
        )
    if format == "transformers":
        report.max_abs_difference["transformers@native"] = verify_patch_tokens(
            model, _transformers_reference(_as_transformers_v5(state), config), [sizes[0]], tolerance, name
        )
    logger.info("converted %s (%s, preset %s): %s", name, format, preset, report.max_abs_difference)
    return model, report


def _as_transformers_v5(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename v4 transformers Dinov2 keys to the v5 names the installed transformers uses."""
    import re

    renames = [
        (r"\.attention\.attention\.query\.", ".attention.q_proj."),
        (r"\.attention\.attention\.key\.", ".attention.k_proj."),
        (r"\.attention\.attention\.value\.", ".attention.v_proj."),
        (r"\.attention\.output\.dense\.", ".attention.o_proj."),
    ]
    out = {}
    for key, value in state.items():
        for pattern, replacement in renames:
            key = re.sub(pattern, replacement, key)
        out[key] = value
    for key in [k for k in out if ".mlp.weights_in." in k]:
        gate, up = out.pop(key).chunk(2, dim=0)
        out[key.replace("weights_in", "gate_proj")] = gate
        out[key.replace("weights_in", "up_proj")] = up
    for key in [k for k in out if ".mlp.weights_out." in k]:
        out[key.replace("weights_out", "down_proj")] = out.pop(key)
    return out


def save_backbone(
    model: SnDModel, output_dir: str | os.PathLike, image_processor: SnDImageProcessor | None = None, overwrite: bool = False,
    card=None,
) -> Path:
    """Write model (safetensors), config and image processor into `output_dir`, atomically; with `card` (a
    `huggingface_hub.ModelCard`, e.g. from `snd.hub.render_model_card`) also its `README.md`.

    Everything goes into a temporary sibling folder first and is renamed into place at the end, so an
    interrupted conversion never leaves a half-written model folder. An existing file or non-empty folder
    at `output_dir` is refused (`ConversionError`) unless `overwrite`, which replaces it by renames.
    """
    check_output(output_dir, overwrite)
    staging = staging_folder(output_dir)
    try:
        model.save_pretrained(staging)
        (image_processor or SnDImageProcessor()).save_pretrained(staging)
        if card is not None:
            card.save(staging / "README.md")
        return publish_folder(staging, output_dir, overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
