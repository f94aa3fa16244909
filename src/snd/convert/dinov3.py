"""Convert an original DINOv3 ViT checkpoint (facebookresearch/dinov3 torch.hub layout,
``dinov3_vits16_pretrain_lvd1689m-*.pth``) into a transformers ``DINOv3ViTModel``, checked against a
functional restatement of the original forward (:func:`snd.convert.reference.dinov3_reference_tokens`)
before it is returned.

transformers 5.25 (as 5.24) ships no DINOv3 converter in its wheel (``models/dinov3_vit`` has none), so the key
mapping is written here from the two model definitions:

=====================================  ==============================================================
original                               transformers ``DINOv3ViTModel``
=====================================  ==============================================================
``cls_token`` / ``storage_tokens``     ``embeddings.cls_token`` / ``embeddings.register_tokens``
``mask_token [1, C]``                  ``embeddings.mask_token [1, 1, C]``
``patch_embed.proj``                   ``embeddings.patch_embeddings``
``blocks.i.attn.qkv [3C, C]``          ``model.layer.i.attention.{q,k,v}_proj`` (bias x ``bias_mask``)
``blocks.i.attn.proj``                 ``model.layer.i.attention.o_proj``
``blocks.i.ls{1,2}.gamma``             ``model.layer.i.layer_scale{1,2}.lambda1``
``blocks.i.mlp.fc1`` / ``fc2``         ``model.layer.i.mlp.up_proj`` / ``down_proj``
``blocks.i.mlp.w1`` / ``w2`` / ``w3``  ``model.layer.i.mlp.gate_proj`` / ``up_proj`` / ``down_proj``
``norm``                               ``norm``
``rope_embed.periods``                 ``config.rope_theta`` (periods = theta ** (4 i / D_head))
``local_cls_norm``                     dropped (the original uses it only in training)
=====================================  ==============================================================

The number of heads is read from ``rope_embed.periods`` (``D_head / 4`` entries); the norm epsilon is
not stored in the checkpoint: 1e-5 (``layernormbf16``, every released DINOv3 ViT) unless given.
"""

from __future__ import annotations

import logging
import os
import re

import torch

from .backbone import ConversionReport
from .common import ConversionError, load_checkpoint
from .reference import dinov3_reference_tokens

logger = logging.getLogger(__name__)


def dinov3_hub_to_transformers(state: dict[str, torch.Tensor], layer_norm_eps: float = 1e-5, source: str = "checkpoint"):
    """``(DINOv3ViTConfig, transformers state dict)`` for an original DINOv3 ViT state dict.

    Raises:
        ConversionError: not a DINOv3 ViT layout, or a variant ``DINOv3ViTModel`` cannot represent
            (untied CLS/patch norms, min/max-period RoPE).
    """
    from transformers import DINOv3ViTConfig

    required = ["cls_token", "patch_embed.proj.weight", "rope_embed.periods", "norm.weight", "blocks.0.attn.qkv.weight"]
    missing = [key for key in required if key not in state]
    if missing:
        raise ConversionError(f"{source}: not an original DINOv3 ViT checkpoint (missing {missing}; keys start {sorted(state)[:5]})")
    if "cls_norm.weight" in state:
        raise ConversionError(f"{source}: untied CLS/patch norms (cls_norm, the 7B model) are not representable in transformers DINOv3ViTModel")
    hidden = state["cls_token"].shape[-1]
    periods = state["rope_embed.periods"].double()
    head_dim = 4 * periods.numel()
    if hidden % head_dim:
        raise ConversionError(f"{source}: rope_embed.periods has {periods.numel()} entries (head dim {head_dim}), not a divisor of width {hidden}")
    num_heads = hidden // head_dim
    exponents = 4 * torch.arange(periods.numel(), dtype=torch.float64) / head_dim
    theta = float(f"{float(periods[1] ** (1 / exponents[1])):.6g}") if periods.numel() > 1 else 100.0
    if not torch.allclose(periods, theta**exponents, rtol=1e-4):
        raise ConversionError(f"{source}: rope_embed.periods is not base ** (4 i / D_head) for any base (min/max-period RoPE); "
                              "transformers DINOv3ViTModel cannot represent it")
    depth = 1 + max(int(m.group(1)) for key in state if (m := re.match(r"blocks\.(\d+)\.", key)))
    gated = "blocks.0.mlp.w1.weight" in state
    intermediate = state["blocks.0.mlp.w1.weight" if gated else "blocks.0.mlp.fc1.weight"].shape[0]
    registers = state["storage_tokens"].shape[1] if "storage_tokens" in state else 0

    def qkv_bias(index: int) -> torch.Tensor | None:
        prefix = f"blocks.{index}.attn.qkv"
        if f"{prefix}.bias" not in state:
            return None
        bias = state[f"{prefix}.bias"]
        if f"{prefix}.bias_mask" in state:
            bias = bias * state[f"{prefix}.bias_mask"].to(bias.dtype)
        return bias

    key_bias = any(b is not None and b[hidden : 2 * hidden].abs().max() > 0 for b in (qkv_bias(i) for i in range(depth)))
    has_qkv_bias = "blocks.0.attn.qkv.bias" in state
    patch = state["patch_embed.proj.weight"].shape[-1]
    config = DINOv3ViTConfig(
        patch_size=patch,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=depth,
        num_attention_heads=num_heads,
        hidden_act="silu" if gated else "gelu",
        layer_norm_eps=layer_norm_eps,
        rope_theta=theta,
        query_bias=has_qkv_bias,
        key_bias=bool(key_bias),
        value_bias=has_qkv_bias,
        proj_bias="blocks.0.attn.proj.bias" in state,
        mlp_bias=f"blocks.0.mlp.{'w1' if gated else 'fc1'}.bias" in state,
        use_gated_mlp=gated,
        num_register_tokens=registers,
        layerscale_value=1.0,
    )
    out = {
        "embeddings.cls_token": state["cls_token"].reshape(1, 1, hidden),
        "embeddings.mask_token": state.get("mask_token", torch.zeros(1, hidden)).reshape(1, 1, hidden),
        "embeddings.register_tokens": state["storage_tokens"] if registers else torch.zeros(1, 0, hidden),
        "embeddings.patch_embeddings.weight": state["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.bias": state["patch_embed.proj.bias"],
        "norm.weight": state["norm.weight"],
        "norm.bias": state["norm.bias"],
    }
    mlp_names = {"w1": "gate_proj", "w2": "up_proj", "w3": "down_proj"} if gated else {"fc1": "up_proj", "fc2": "down_proj"}
    for index in range(depth):
        old, new = f"blocks.{index}", f"model.layer.{index}"
        weight = state[f"{old}.attn.qkv.weight"]
        for part, name in enumerate(("q_proj", "k_proj", "v_proj")):
            out[f"{new}.attention.{name}.weight"] = weight[part * hidden : (part + 1) * hidden]
        bias = qkv_bias(index)
        if bias is not None:
            out[f"{new}.attention.q_proj.bias"] = bias[:hidden]
            out[f"{new}.attention.v_proj.bias"] = bias[2 * hidden :]
            if key_bias:
                out[f"{new}.attention.k_proj.bias"] = bias[hidden : 2 * hidden]
        for suffix in ("weight", "bias"):
            for norm in ("norm1", "norm2"):
                out[f"{new}.{norm}.{suffix}"] = state[f"{old}.{norm}.{suffix}"]
            if f"{old}.attn.proj.{suffix}" in state:
                out[f"{new}.attention.o_proj.{suffix}"] = state[f"{old}.attn.proj.{suffix}"]
            for original, renamed in mlp_names.items():
                if f"{old}.mlp.{original}.{suffix}" in state:
                    out[f"{new}.mlp.{renamed}.{suffix}"] = state[f"{old}.mlp.{original}.{suffix}"]
        for scale in ("1", "2"):  # no LayerScale in the checkpoint -> identity (ones)
            out[f"{new}.layer_scale{scale}.lambda1"] = state.get(f"{old}.ls{scale}.gamma", torch.ones(hidden))
    used = {"cls_token", "mask_token", "storage_tokens", "patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight",
            "norm.bias", "rope_embed.periods", "local_cls_norm.weight", "local_cls_norm.bias"}
    for index in range(depth):
        block = f"blocks.{index}"
        used |= {f"{block}.attn.qkv.{s}" for s in ("weight", "bias", "bias_mask")} | {f"{block}.ls1.gamma", f"{block}.ls2.gamma"}
        used |= {f"{block}.{part}.{s}" for part in ("norm1", "norm2", "attn.proj", *(f"mlp.{m}" for m in mlp_names)) for s in ("weight", "bias")}
    leftover = sorted(set(state) - used)
    if leftover:
        raise ConversionError(f"{source}: keys the DINOv3 ViT layout does not have ({len(leftover)}): {leftover[:10]}")
    return config, out


def convert_dinov3_hub(
    source: str | os.PathLike | dict,
    tolerance: float = 1e-4,
    check_sizes: list[tuple[int, int]] | None = None,
    layer_norm_eps: float = 1e-5,
):
    """Convert an original DINOv3 ViT checkpoint to a transformers ``DINOv3ViTModel``, numbers checked.

    Args:
        source: a ``.pth`` / ``.safetensors`` file, a folder or Hub file (see ``load_checkpoint``), or a state dict.
        tolerance: max abs difference of patch tokens (after and before the final norm) against
            :func:`snd.convert.reference.dinov3_reference_tokens`.
        check_sizes: image sizes compared; default 224 x 224 and 192 x 288 (a non-square grid).
        layer_norm_eps: the norm epsilon (not stored in checkpoints). Default 1e-5 (released DINOv3 ViTs).
    Returns:
        ``(model, ConversionReport)``; ``ConversionReport.preset`` names the architecture found.
    Raises:
        ConversionError: layout not recognised, keys/shapes do not fit, or numbers off (nothing returned).
    """
    from transformers import DINOv3ViTModel

    from ..models.snd_dinov2 import normalize_images

    if isinstance(source, dict):
        state, name = source, "state dict"
    else:
        state, _ = load_checkpoint(source)
        name = str(source)
    config, mapped = dinov3_hub_to_transformers(state, layer_norm_eps=layer_norm_eps, source=name)
    model = DINOv3ViTModel(config).eval()
    expected = model.state_dict()
    missing = sorted(set(expected) - set(mapped))
    unexpected = sorted(set(mapped) - set(expected))
    shapes = [f"{k}: {tuple(mapped[k].shape)} vs {tuple(expected[k].shape)}" for k in set(expected) & set(mapped) if mapped[k].shape != expected[k].shape]
    if missing or unexpected or shapes:
        raise ConversionError(f"{name}: does not fit DINOv3ViTModel: missing {missing[:8]}, unexpected {unexpected[:8]}, shapes {shapes[:8]}")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in mapped.items()}, strict=True)

    def weight(key: str) -> torch.Tensor:
        return state[key].float()

    report = ConversionReport(source=name, format="dinov3-hub",
                              preset=f"dinov3 ViT patch {config.patch_size}, width {config.hidden_size}, depth {config.num_hidden_layers}, "
                                     f"{config.num_attention_heads} heads, {config.num_register_tokens} registers"
                                     + (", SwiGLU" if config.use_gated_mlp else ""))
    generator = torch.Generator().manual_seed(0)
    prefix = 1 + config.num_register_tokens
    for height, width in dict.fromkeys(check_sizes or [(224, 224), (192, 288)]):
        pixels = normalize_images(torch.rand(1, 3, height, width, generator=generator))
        with torch.no_grad():
            output = model(pixel_values=pixels, output_hidden_states=True)
            ours_normed = output.last_hidden_state[:, prefix:]
            ours_raw = output.hidden_states[-1][:, prefix:]
            theirs_normed, theirs_raw = dinov3_reference_tokens(weight, state.__contains__, pixels, config.num_attention_heads,
                                                                config.num_hidden_layers, layer_norm_eps)
        for label, ours, theirs in (("normed", ours_normed, theirs_normed), ("prenorm", ours_raw, theirs_raw)):
            difference = (ours - theirs).abs().max().item()
            report.max_abs_difference[f"original-{label}@{height}x{width}"] = difference
            if not difference <= tolerance:
                raise ConversionError(f"{name}: converted DINOv3ViTModel differs from the original forward at {height}x{width} "
                                      f"({label} patch tokens, max |difference| = {difference:.3g} > {tolerance:g}); nothing was saved")
    logger.info("converted %s (dinov3-hub): %s", name, report.max_abs_difference)
    return model, report


def save_transformers_backbone(model, output_dir: str | os.PathLike, image_processor=None, overwrite: bool = False):
    """Write any transformers backbone (weights, config, image processor) into ``output_dir`` by renames, as
    :func:`snd.convert.save_backbone` does (an existing non-empty folder is refused unless ``overwrite``)."""
    from ..backbones import default_image_processor
    from .backbone import save_backbone

    return save_backbone(model, output_dir, image_processor=image_processor or default_image_processor(model), overwrite=overwrite)
