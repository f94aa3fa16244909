"""Convert MVSplat's official Lightning checkpoints (`re10k.ckpt`, `acid.ckpt`) into an `MVSplatModel` folder.

The official checkpoint is a Lightning dict whose `state_dict` holds the encoder under `encoder.` (plus the
LPIPS loss network and other non-encoder entries, which are ignored and counted). Our module tree mirrors the
official encoder, so every encoder key maps to the same name without the `encoder.` prefix; the mapping is still
checked key by key and shape by shape, and anything missing or unexpected is listed in the error.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..models.mvsplat import MVSplatConfig, MVSplatModel
from .common import ConversionError, check_finite_state, check_output, publish_folder, read_torch_checkpoint, staging_folder

ENCODER_PREFIX = "encoder."


def official_to_ours(key: str) -> str | None:
    """Our parameter name for an official checkpoint key, or None when the key is not part of the encoder."""
    return key[len(ENCODER_PREFIX) :] if key.startswith(ENCODER_PREFIX) else None


def ours_to_official(key: str) -> str:
    """The official checkpoint key of one of our parameter names (inverse of :func:`official_to_ours`)."""
    return ENCODER_PREFIX + key


def load_official_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read the `state_dict` of an official MVSplat checkpoint without running code from it.

    Lightning checkpoints are pickles. `torch.load(weights_only=True)` reads tensors and plain containers; if a
    checkpoint also carries other pickled objects (a saved config object, for instance), those are read as inert
    placeholders instead (`snd.convert.pickles`), so nothing named in the file is imported or called.
    """
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: no such checkpoint file")
    state = read_torch_checkpoint(path)
    if not isinstance(state, dict):
        raise ConversionError(f"{path}: expected a Lightning checkpoint dict, got {type(state).__name__}")
    if "state_dict" in state:
        state = state["state_dict"]
        if not isinstance(state, dict):
            raise ConversionError(f"{path}: 'state_dict' is a {type(state).__name__}, expected a dict of tensors")
    tensors = {key: value for key, value in state.items() if isinstance(value, torch.Tensor)}
    if not any(key.startswith(ENCODER_PREFIX) for key in tensors):
        sample = sorted(tensors)[:5]
        raise ConversionError(
            f"{path}: no '{ENCODER_PREFIX}*' keys in the checkpoint's state_dict (found e.g. {sample}); "
            "expected an MVSplat Lightning checkpoint such as re10k.ckpt"
        )
    return tensors


def _unet_layout(state: dict[str, torch.Tensor], prefix: str) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
    """Width, channel multipliers and attention rates of a U-Net from its keys (input block 1 + 2l is level l)."""
    width = state[f"{prefix}.input_blocks.0.0.weight"].shape[0]
    multipliers, rates = [], []
    level = 0
    while f"{prefix}.input_blocks.{1 + 2 * level}.0.in_layers.0.weight" in state:
        block = f"{prefix}.input_blocks.{1 + 2 * level}"
        multipliers.append(state[f"{block}.0.in_layers.0.weight"].shape[0] // width)
        if f"{block}.1.qkv.weight" in state:
            rates.append(2**level)
        level += 1
    return width, tuple(multipliers), tuple(rates)


def infer_config(state: dict[str, torch.Tensor], **overrides) -> MVSplatConfig:
    """An `MVSplatConfig` matching the shapes of an official state dict (keys under `encoder.`)."""
    encoder = {official_to_ours(key): value for key, value in state.items() if key.startswith(ENCODER_PREFIX)}
    try:
        candidates = encoder["depth_predictor.depth_head_lowres.0.weight"].shape[1]
        feature_channels = encoder["backbone.backbone.conv2.weight"].shape[0]
        layers = 0
        while f"backbone.transformer.layers.{layers}.self_attn.q_proj.weight" in encoder:
            layers += 1
        ffn_hidden = encoder["backbone.transformer.layers.0.cross_attn_ffn.mlp.0.weight"].shape[0]
        volume_width, volume_mult, volume_rates = _unet_layout(encoder, "depth_predictor.corr_refine_net.3")
        depth_width, depth_mult, depth_rates = _unet_layout(encoder, "depth_predictor.refine_unet.3")
        raw_channels = encoder["depth_predictor.to_gaussians.2.weight"].shape[0]
    except KeyError as error:
        raise ConversionError(f"checkpoint lacks the encoder key 'encoder.{error.args[0]}' needed to infer the architecture") from error
    sh_coefficients = (raw_channels - 9) // 3
    sh_degree = round(sh_coefficients**0.5) - 1
    if 9 + 3 * (sh_degree + 1) ** 2 != raw_channels:
        raise ConversionError(f"Gaussian head has {raw_channels} channels, not 9 + 3 * (sh_degree + 1)**2 for any degree")
    arguments = dict(
        feature_channels=feature_channels,
        num_transformer_layers=layers,
        ffn_dim_expansion=ffn_hidden // (2 * feature_channels),
        num_depth_candidates=candidates,
        costvolume_unet_feat_dim=volume_width,
        costvolume_unet_channel_mult=volume_mult,
        costvolume_unet_attn_res=volume_rates,
        depth_unet_feat_dim=depth_width,
        depth_unet_channel_mult=depth_mult,
        depth_unet_attn_res=depth_rates,
        sh_degree=sh_degree,
    )
    arguments.update(overrides)
    return MVSplatConfig(**arguments)


@dataclass
class MVSplatConversionReport:
    config: MVSplatConfig
    converted: int
    ignored_non_encoder: int
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)


def convert_state_dict(
    state: dict[str, torch.Tensor], config: MVSplatConfig | None = None
) -> tuple[MVSplatModel, MVSplatConversionReport]:
    """Build an `MVSplatModel` from an official state dict; raise `ConversionError` listing any key problem."""
    config = config or infer_config(state)
    model = MVSplatModel(config)
    expected = model.state_dict()
    converted: dict[str, torch.Tensor] = {}
    mismatched: set[str] = set()
    report = MVSplatConversionReport(config=config, converted=0, ignored_non_encoder=0)
    for key, value in state.items():
        ours = official_to_ours(key)
        if ours is None:
            report.ignored_non_encoder += 1
        elif ours not in expected:
            report.unexpected.append(key)
        elif tuple(expected[ours].shape) != tuple(value.shape):
            report.mismatched.append(f"{key}: checkpoint {list(value.shape)} vs model {list(expected[ours].shape)}")
            mismatched.add(ours)
        else:
            converted[ours] = value.to(expected[ours].dtype)
    report.missing = [ours_to_official(key) for key in expected if key not in converted and key not in mismatched]
    report.converted = len(converted)
    if report.missing or report.unexpected or report.mismatched:
        lines = [f"MVSplat checkpoint does not match the model ({report.converted}/{len(expected)} keys mapped):"]
        for title, items in (("missing", report.missing), ("unexpected", report.unexpected), ("shape mismatch", report.mismatched)):
            if items:
                lines.append(f"  {title} ({len(items)}): " + ", ".join(items[:20]) + (" ..." if len(items) > 20 else ""))
        raise ConversionError("\n".join(lines))
    model.load_state_dict(converted, strict=True)
    return model.eval(), report


def check_forward_finite(model: MVSplatModel, source: str, height: int = 32, width: int = 32, seed: int = 0) -> None:
    """Run ``model`` on two random views (``height`` x ``width``); refuse non-finite Gaussians naming the output."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(1, 2, 3, height, width, generator=generator)  # [B, V, 3, H, W]
    extrinsics = torch.eye(4).repeat(1, 2, 1, 1)  # [B, V, 4, 4] camera-to-world, 0.3 apart along x
    extrinsics[0, 1, 0, 3] = 0.3
    intrinsics = torch.tensor([[0.8, 0.0, 0.5], [0.0, 0.8, 0.5], [0.0, 0.0, 1.0]]).repeat(1, 2, 1, 1)
    with torch.no_grad():
        output = model.eval()(images, extrinsics, intrinsics, torch.ones(1, 2), torch.full((1, 2), 100.0))
    bad = [name for name in ("means", "covariances", "opacities", "harmonics") if not bool(torch.isfinite(getattr(output, name)).all())]
    if bad:
        raise ConversionError(f"{source}: the converted model gives non-finite {bad} on a {height}x{width} two-view input; nothing was saved")


def convert_checkpoint(
    source: str | os.PathLike, output: str | os.PathLike, push_to_hub: str | None = None, overwrite: bool = False
) -> MVSplatConversionReport:
    """Read an official checkpoint, convert it and `save_pretrained` it to `output` (safetensors), atomically.

    Every tensor must be finite and a forward on a small two-view input must give finite Gaussians, or
    nothing is saved. An existing file or non-empty folder at `output` is refused unless `overwrite`
    (which replaces it by renames, as `snd.convert.save_backbone` does).
    """
    output = check_output(output, overwrite, inputs=(source,))
    try:
        model, report = convert_state_dict(load_official_checkpoint(source))
    except ConversionError as error:
        if str(source) in str(error):
            raise
        raise ConversionError(f"{source}: {error}") from error
    check_finite_state({ours_to_official(k): v for k, v in model.state_dict().items()}, str(source))
    check_forward_finite(model, str(source))
    staging = staging_folder(output)
    try:
        model.save_pretrained(staging, safe_serialization=True)
        publish_folder(staging, output, overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if push_to_hub:
        model.push_to_hub(push_to_hub)
    return report


__all__ = [
    "check_forward_finite",
    "convert_checkpoint",
    "convert_state_dict",
    "infer_config",
    "load_official_checkpoint",
    "official_to_ours",
    "ours_to_official",
    "MVSplatConversionReport",
]
