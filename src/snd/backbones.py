"""One small adapter between the SnD code and any ViT that yields patch tokens.

The distillation and the evaluation need four facts about a backbone, and nothing else:

* its **patch size** (14 for DINOv2/SnD, 16 for DINOv3),
* its **number of prefix tokens** before the patch tokens (CLS plus registers: 1 for DINOv2, 5 for
  DINOv2-with-registers and DINOv3),
* **where its final norm is** (``layernorm`` in SnD / transformers DINOv2 / ViT, ``norm`` in DINOv3),
  so patch features come with or without it (the evaluation protocols read pre-norm tokens),
* which modules **LoRA** wraps by default (:func:`default_lora_targets`).

:func:`backbone_spec` reads them from the model (a peft wrapper is looked through) and
:func:`backbone_tokens` runs the model once and returns the patch grid ``[B, C, h, w]`` and the CLS
token, before or after the final norm, by hooking that norm. Supported and tested: ``SnDModel``,
transformers ``Dinov2Model``, ``Dinov2WithRegistersModel`` and ``DINOv3ViTModel``; any other
transformers model whose config has ``patch_size`` and whose forward applies one final LayerNorm to
``[B, prefix + h * w, C]`` tokens (``ViTModel``...) goes through the same code.

Nothing here downloads or builds anything at import time.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Final-norm attribute names, in the order they are looked up on the (unwrapped) model.
FINAL_NORM_NAMES = ("layernorm", "norm", "post_layernorm")

#: Default LoRA targets per ``config.model_type`` (peft ``target_modules``: module names or name suffixes).
#: SnD (torch.hub names): ``qkv``/``proj`` are the release's targets; in the release's timm-style model they
#: also matched the patch-embedding conv ``patch_embed.proj``, which SnD names ``...patch_embeddings.projection``.
#: transformers DINOv2 (v5 names): the same set, attention q/k/v + output projection + patch conv.
#: DINOv3: its attention projections only (the issue's choice; add ``patch_embeddings`` to also wrap the conv).
LORA_TARGETS = {
    "snd_dinov2": ["qkv", "proj", "patch_embeddings.projection"],
    "dinov2": ["q_proj", "k_proj", "v_proj", "o_proj", "patch_embeddings.projection"],
    "dinov2_with_registers": ["q_proj", "k_proj", "v_proj", "o_proj", "patch_embeddings.projection"],
    "dinov3_vit": ["q_proj", "k_proj", "v_proj", "o_proj"],
}

#: Random-init architectures that are not SnD presets: ``preset`` names of ``model.preset``.
#: ``dinov3-s``/``dinov3-b`` are the DINOv3 ViT-S/16 and ViT-B/16 shapes (weights come from a checkpoint).
RANDOM_PRESETS: dict[str, tuple[str, dict]] = {
    "dinov3-tiny": ("dinov3_vit", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                       num_register_tokens=4, image_size=64, patch_size=16, layerscale_value=0.1)),
    "dinov3-s": ("dinov3_vit", dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
                                    num_register_tokens=4, layerscale_value=1e-5, layer_norm_eps=1e-5)),
    "dinov3-b": ("dinov3_vit", dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                                    num_register_tokens=4, layerscale_value=1e-5, layer_norm_eps=1e-5)),
    "dinov2-tiny": ("dinov2", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                   image_size=56, patch_size=14, layerscale_value=0.1)),
    "dinov2reg-tiny": ("dinov2_with_registers", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                     intermediate_size=64, image_size=56, patch_size=14,
                                                     num_register_tokens=4, layerscale_value=0.1)),
}


@dataclass(frozen=True)
class BackboneSpec:
    """What the SnD code needs to know about a backbone.

    Attributes:
        model_type: ``config.model_type`` (``snd_dinov2``, ``dinov2``, ``dinov2_with_registers``, ``dinov3_vit``...).
        patch_size: side of a square patch in pixels.
        num_prefix_tokens: tokens before the patch tokens (CLS + registers).
        final_norm: attribute name of the final norm on the unwrapped model; None when it has none
            under a known name (then only normed tokens, from the output's ``last_hidden_state``).
    """

    model_type: str
    patch_size: int
    num_prefix_tokens: int
    final_norm: str | None

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """Patch grid ``(h, w)`` of an input of ``height x width`` (both must be multiples of the patch)."""
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(f"input {height}x{width} is not a multiple of the {self.model_type} patch size {self.patch_size}")
        return height // self.patch_size, width // self.patch_size


@dataclass
class BackboneTokens:
    """``patches [B, C, h, w]`` (row-major patch tokens as a map) and ``cls [B, C]``."""

    patches: torch.Tensor
    cls: torch.Tensor


def unwrap_backbone(model: nn.Module) -> nn.Module:
    """The plain backbone under a peft and/or DDP wrapper (the module that owns ``config``)."""
    model = getattr(model, "module", model)  # DistributedDataParallel
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model


def _square_patch(patch_size, model_type: str) -> int:
    if isinstance(patch_size, (list, tuple)):
        if len(set(patch_size)) != 1:
            raise ValueError(f"{model_type}: non-square patches {tuple(patch_size)} are not supported")
        patch_size = patch_size[0]
    return int(patch_size)


def backbone_spec(model: nn.Module) -> BackboneSpec:
    """Patch size, prefix tokens and final norm of ``model`` (peft/DDP wrappers are looked through)."""
    base = unwrap_backbone(model)
    config = getattr(base, "config", None)
    model_type = getattr(config, "model_type", type(base).__name__)
    patch_size = getattr(config, "patch_size", None)
    if not patch_size:
        raise ValueError(f"{type(base).__name__}: config has no patch_size; not a ViT that yields patch tokens")
    if hasattr(base, "num_prefix_tokens") and isinstance(base.num_prefix_tokens, int):
        prefix = base.num_prefix_tokens
    else:
        prefix = 1 + int(getattr(config, "num_register_tokens", 0) or 0)
    final_norm = next((name for name in FINAL_NORM_NAMES if isinstance(getattr(base, name, None), (nn.LayerNorm, nn.RMSNorm))), None)
    return BackboneSpec(str(model_type), _square_patch(patch_size, model_type), prefix, final_norm)


def backbone_tokens(model: nn.Module, pixel_values: torch.Tensor, final_norm: bool = True,
                    spec: BackboneSpec | None = None) -> BackboneTokens:
    """Run ``model`` once on normalised ``pixel_values [B, 3, H, W]`` (H, W multiples of the patch).

    Args:
        model: the backbone (may be peft- or DDP-wrapped; called as ``model(pixel_values=...)``).
        final_norm: True: tokens after the final norm (``last_hidden_state``); False: the same tokens
            before it (the last block's output), read from the norm's input.
        spec: precomputed :func:`backbone_spec` (computed when omitted).
    Returns:
        :class:`BackboneTokens` with ``patches [B, C, H/p, W/p]`` and ``cls [B, C]``; the registers are skipped.
    """
    spec = spec or backbone_spec(model)
    grid = spec.grid(*pixel_values.shape[-2:])
    if spec.final_norm is None:  # a wrapper without a known norm: its output tokens
        name = type(unwrap_backbone(model)).__name__
        if final_norm:
            tokens = getattr(model(pixel_values=pixel_values), "last_hidden_state", None)
            if tokens is None:
                raise ValueError(f"{name} output has no last_hidden_state [B, T, C]")
        else:  # the last block's output, as transformers models report it
            hidden_states = getattr(model(pixel_values=pixel_values, output_hidden_states=True), "hidden_states", None)
            if not hidden_states:
                raise ValueError(f"{name} has no final norm under {FINAL_NORM_NAMES} and returned no hidden_states: "
                                 "pre-norm tokens need one or the other")
            tokens = hidden_states[-1]
    else:
        norm = getattr(unwrap_backbone(model), spec.final_norm)
        captured = []

        def hook(module, inputs, output):
            captured.append(output if final_norm else inputs[0])

        handle = norm.register_forward_hook(hook)
        try:
            model(pixel_values=pixel_values)
        finally:
            handle.remove()
        if len(captured) != 1:
            raise RuntimeError(f"{spec.model_type}: the final norm {spec.final_norm!r} ran {len(captured)} times in one forward (expected once)")
        tokens = captured[0]  # [B, prefix + h * w, C]
    if tokens.ndim != 3 or tokens.shape[1] != spec.num_prefix_tokens + grid[0] * grid[1]:
        raise ValueError(
            f"{spec.model_type}: final norm saw tokens {tuple(tokens.shape)}; expected [B, {spec.num_prefix_tokens} prefix + "
            f"{grid[0]}x{grid[1]} patches, C] for a {pixel_values.shape[-2]}x{pixel_values.shape[-1]} input"
        )
    patches = tokens[:, spec.num_prefix_tokens :].transpose(1, 2).reshape(tokens.shape[0], -1, *grid)
    return BackboneTokens(patches=patches, cls=tokens[:, 0])


def default_lora_targets(model: nn.Module) -> list[str]:
    """LoRA ``target_modules`` for ``model``'s architecture (see :data:`LORA_TARGETS`).

    Unknown architectures fall back to every attention-looking ``nn.Linear`` leaf name found in the model
    (``q_proj``/``k_proj``/``v_proj``/``o_proj``, ``query``/``key``/``value``, ``qkv``/``proj``); a
    model with none of them raises, asking for ``model.lora_target_modules``.
    """
    spec = backbone_spec(model)
    if spec.model_type in LORA_TARGETS:
        return list(LORA_TARGETS[spec.model_type])
    known = ("q_proj", "k_proj", "v_proj", "o_proj", "query", "key", "value", "qkv", "proj")
    leaves = {name.rsplit(".", 1)[-1] for name, module in unwrap_backbone(model).named_modules() if isinstance(module, nn.Linear)}
    found = [name for name in known if name in leaves]
    if not found:
        raise ValueError(f"{spec.model_type}: no default LoRA targets known; set model.lora_target_modules (Linear names: {sorted(leaves)[:12]})")
    return found


# --------------------------------------------------------------------------------------------
# Building and loading


def random_backbone(preset: str, overrides: dict | None = None) -> nn.Module:
    """A randomly initialised backbone: a :data:`RANDOM_PRESETS` name or an ``SnDConfig`` preset ("tiny", "dinov2-s"...)."""
    overrides = dict(overrides or {})
    if preset in RANDOM_PRESETS:
        from transformers import AutoConfig, AutoModel

        model_type, values = RANDOM_PRESETS[preset]
        config = AutoConfig.for_model(model_type, **{**values, **overrides})
        return AutoModel.from_config(config)
    from .models.snd_dinov2 import PRESETS, SnDConfig, SnDModel

    if preset not in PRESETS:
        raise ValueError(f"model.preset={preset!r}: unknown; choose one of {sorted(PRESETS) + sorted(RANDOM_PRESETS)}")
    return SnDModel(SnDConfig.from_preset(preset, **overrides))


def pretrained_backbone(source: str) -> nn.Module:
    """Any transformers ViT from a ``save_pretrained`` folder or Hub id, in its own class (``AutoModel``)."""
    import snd  # noqa: F401  (registers the SnD Auto classes)
    from transformers import AutoModel

    model = AutoModel.from_pretrained(source)
    backbone_spec(model)  # refuse early, naming the class, if it yields no patch tokens
    _warn_on_other_normalisation(source)
    return model


def _preprocessor_config(source: str | None) -> Path | None:
    """``preprocessor_config.json`` of a folder or Hub id (from the cache, or fetched like the weights were), or None."""
    if source is None:
        return None
    path = Path(source) / "preprocessor_config.json"
    if path.is_file():
        return path
    if Path(source).exists():
        return None
    from transformers.utils import cached_file

    try:
        found = cached_file(source, "preprocessor_config.json", _raise_exceptions_for_missing_entries=False)
    except OSError:
        return None
    return Path(found) if found else None


def read_preprocessor_config(path: Path) -> dict:
    """A ``preprocessor_config.json`` as a dict, its normalisation and size fields checked: ``image_mean`` a list of
    finite numbers, ``image_std`` a list of finite numbers > 0 (of the same length), ``size`` / ``crop_size`` positive
    integers or a mapping of them. Raises :class:`~snd.convert.ConversionError` naming the file and the field."""
    import math

    from .convert import ConversionError
    from .safe_io import load_json

    values = load_json(path, what="a preprocessor_config.json (a JSON object)", error=ConversionError, max_bytes=16 * 2**20)
    if not isinstance(values, dict):
        raise ConversionError(f"{path}: holds a JSON {type(values).__name__}; expected a JSON object of image processor fields")

    def numbers(name, positive):
        value = values.get(name)
        if value is None:
            return None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]
        if not (isinstance(value, list) and value and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                         and math.isfinite(v) and (v > 0 or not positive) for v in value)):
            raise ConversionError(f"{path}: field {name!r} is {value!r}; expected a list of finite numbers{' > 0' if positive else ''} (one per channel)")
        return value

    mean, std = numbers("image_mean", False), numbers("image_std", True)
    if mean is not None and std is not None and len(mean) != len(std) and 1 not in (len(mean), len(std)):  # one value: every channel
        raise ConversionError(f"{path}: fields 'image_mean' ({len(mean)} values) and 'image_std' ({len(std)} values) differ in length")
    for name in ("size", "crop_size"):
        value = values.get(name)
        if value is None:
            continue
        entries = value.values() if isinstance(value, dict) else [value]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in entries if v is not None):
            raise ConversionError(f"{path}: field {name!r} is {value!r}; expected positive integers (e.g. {{'height': 224, 'width': 224}})")
    factor = values.get("rescale_factor")
    if factor is not None and (isinstance(factor, bool) or not isinstance(factor, (int, float)) or not math.isfinite(factor) or factor <= 0):
        raise ConversionError(f"{path}: field 'rescale_factor' is {factor!r}; expected a finite number > 0 (e.g. 1/255 = 0.00392156862745098)")
    resample = values.get("resample")
    if resample is not None and (isinstance(resample, bool) or not isinstance(resample, int) or not 0 <= resample <= 5):
        raise ConversionError(f"{path}: field 'resample' is {resample!r}; expected a PIL resampling filter number 0-5 (3 = bicubic)")
    for name, value in values.items():
        if name.startswith("do_") and value is not None and not isinstance(value, bool):
            raise ConversionError(f"{path}: field {name!r} is {value!r}; expected true or false")
    for name in ("image_processor_type", "processor_class"):
        if values.get(name) is not None and not isinstance(values[name], str):
            raise ConversionError(f"{path}: field {name!r} is {values[name]!r}; expected a class name (a string)")
    return values


def _warn_on_other_normalisation(source: str) -> None:
    """Training and evaluation normalise with ImageNet statistics; say so if the checkpoint's processor differs."""
    path = _preprocessor_config(source)
    if path is None:
        return
    values = read_preprocessor_config(path)
    mean, std = values.get("image_mean"), values.get("image_std")
    if mean is not None and std is not None:
        if any(abs(a - b) > 1e-3 for a, b in zip(list(mean) + list(std), IMAGENET_MEAN + IMAGENET_STD)):
            logger.warning("%s: its image processor normalises with mean %s / std %s, but snd normalises with ImageNet "
                           "statistics (the DINOv2/DINOv3 LVD setting)", source, mean, std)


def without_rope_augmentation(model: nn.Module) -> nn.Module:
    """DINOv3: disable the RoPE coordinate augmentation (shift/jitter/rescale) that ``DINOv3ViTModel``
    applies in training mode, so a student sees the same positions in training as at evaluation.

    Only the RoPE module gets a private config copy; ``model.config`` (what ``save_pretrained`` writes)
    keeps the checkpoint's values. Other architectures are returned unchanged.
    """
    base = unwrap_backbone(model)
    rope = getattr(base, "rope_embeddings", None)
    if rope is not None and hasattr(rope, "config"):
        rope.config = copy.copy(rope.config)
        for name in ("pos_embed_shift", "pos_embed_jitter", "pos_embed_rescale"):
            setattr(rope.config, name, None)
    return model


def default_image_processor(model: nn.Module, source: str | None = None):
    """The image processor to save next to ``model``: ``SnDImageProcessor`` for SnD models (as before);
    otherwise the source checkpoint's (folder or Hub id) when it loads here, else the architecture's
    standard preprocessing as a PIL-backend processor (no torchvision needed), keeping the source's
    mean/std/size when it has a processor this machine cannot load. Standard: transformers DINOv2
    (with registers) DINOv2's transform (shorter side 256 bicubic, centre crop 224); DINOv3 DINOv3's
    (resize to 224 x 224 bilinear, no crop); ImageNet statistics.
    """
    from transformers import AutoImageProcessor, BitImageProcessorPil
    from transformers.image_utils import PILImageResampling

    spec = backbone_spec(model)
    if spec.model_type == "snd_dinov2":
        from .models.snd_dinov2 import SnDImageProcessor

        from .assets import resolve

        source = resolve(source)
        if source is not None and (Path(source) / "preprocessor_config.json").is_file():  # keep a local source's own sizes
            return SnDImageProcessor.from_pretrained(source)
        return SnDImageProcessor()
    stored = None
    path = _preprocessor_config(source)
    if path is not None:
        try:
            return AutoImageProcessor.from_pretrained(str(path.parent))
        except (ImportError, ValueError, OSError) as error:  # e.g. a torchvision-only processor class
            stored = read_preprocessor_config(path)
            logger.info("%s: image processor not loadable here (%s); saving an equivalent PIL processor", source, error)
    mean = list((stored or {}).get("image_mean", IMAGENET_MEAN))
    std = list((stored or {}).get("image_std", IMAGENET_STD))
    if spec.model_type == "dinov3_vit":
        size = (stored or {}).get("size") or {"height": 224, "width": 224}
        return BitImageProcessorPil(size=size, do_center_crop=False, resample=PILImageResampling.BILINEAR, image_mean=mean, image_std=std)
    return BitImageProcessorPil(size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224}, do_center_crop=True,
                                resample=PILImageResampling.BICUBIC, image_mean=mean, image_std=std)


__all__ = [
    "BackboneSpec",
    "BackboneTokens",
    "LORA_TARGETS",
    "RANDOM_PRESETS",
    "backbone_spec",
    "backbone_tokens",
    "default_image_processor",
    "default_lora_targets",
    "pretrained_backbone",
    "random_backbone",
    "unwrap_backbone",
    "without_rope_augmentation",
]
