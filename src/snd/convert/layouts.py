"""Key layouts of the DINOv2 checkpoints users have, mapped through one canonical layout (the torch.hub one).

Every source format is first rewritten into the original torch.hub names (`cls_token`, `pos_embed`,
`blocks.N.attn.qkv`, `blocks.N.ls1.gamma`, ...), which is also how the SnD authors released their weights;
then one mapping takes torch.hub names to `SnDModel` names.
"""

from __future__ import annotations

import re

import torch

from .common import ConversionError

FORMATS = ("torchhub", "timm", "transformers")


def _chunkless(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """DINOv2 training checkpoints group blocks in chunks (`blocks.<chunk>.<index>.`); indices stay global."""
    return {re.sub(r"^blocks\.\d+\.(\d+)\.", r"blocks.\1.", key): value for key, value in state.items()}


def torchhub_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original DINOv2 / SnD release layout: already canonical (chunked blocks flattened, heads dropped)."""
    if any(re.match(r"^blocks\.\d+\.\d+\.", key) for key in state):
        state = _chunkless(state)
    return {key: value for key, value in state.items() if not key.startswith(("head.", "dino_head.", "ibot_head."))}


def timm_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm `vit_*_patch14_dinov2*` -> torch.hub layout.

    timm renames SwiGLU `w12`/`w3` to `fc1`/`fc2`, drops `mask_token`, and for register models stores
    `reg_token`, a CLS token with its position embedding folded in, and `pos_embed` without the CLS slot.
    """
    out: dict[str, torch.Tensor] = {}
    swiglu = any(re.match(r"blocks\.\d+\.mlp\.fc1\.weight", k) and v.shape[0] == 2 * state[k.replace("fc1", "fc2")].shape[1] for k, v in state.items())
    for key, value in state.items():
        if key.startswith(("head.", "fc_norm.", "norm_pre.")):
            continue
        if swiglu:
            key = re.sub(r"^(blocks\.\d+\.mlp\.)fc1\.", r"\1w12.", key)
            key = re.sub(r"^(blocks\.\d+\.mlp\.)fc2\.", r"\1w3.", key)
        out[key] = value
    if "reg_token" in out:
        out["register_tokens"] = out.pop("reg_token")
        if "pos_embed" not in out or "cls_token" not in out:
            raise ConversionError("timm checkpoint with reg_token lacks pos_embed or cls_token")
        # no_embed_class: the CLS token carries its own position; give it a zero position slot instead.
        out["pos_embed"] = torch.cat([torch.zeros_like(out["pos_embed"][:, :1]), out["pos_embed"]], dim=1)
    return out


_TRANSFORMERS_RENAMES = [
    (r"^embeddings\.cls_token$", "cls_token"),
    (r"^embeddings\.mask_token$", "mask_token"),
    (r"^embeddings\.register_tokens$", "register_tokens"),
    (r"^embeddings\.position_embeddings$", "pos_embed"),
    (r"^embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"^encoder\.layer\.(\d+)\.norm1\.", r"blocks.\1.norm1."),
    (r"^encoder\.layer\.(\d+)\.norm2\.", r"blocks.\1.norm2."),
    (r"^encoder\.layer\.(\d+)\.layer_scale1\.lambda1$", r"blocks.\1.ls1.gamma"),
    (r"^encoder\.layer\.(\d+)\.layer_scale2\.lambda1$", r"blocks.\1.ls2.gamma"),
    (r"^encoder\.layer\.(\d+)\.attention\.(?:o_proj|output\.dense)\.", r"blocks.\1.attn.proj."),
    (r"^encoder\.layer\.(\d+)\.mlp\.fc1\.", r"blocks.\1.mlp.fc1."),
    (r"^encoder\.layer\.(\d+)\.mlp\.fc2\.", r"blocks.\1.mlp.fc2."),
    (r"^encoder\.layer\.(\d+)\.mlp\.weights_in\.", r"blocks.\1.mlp.w12."),
    (r"^encoder\.layer\.(\d+)\.mlp\.(?:weights_out|down_proj)\.", r"blocks.\1.mlp.w3."),
    (r"^layernorm\.", "norm."),
]
_QKV = re.compile(r"^encoder\.layer\.(\d+)\.attention\.(?:attention\.)?(query|key|value|q_proj|k_proj|v_proj)\.(weight|bias)$")
_GATE_UP = re.compile(r"^encoder\.layer\.(\d+)\.mlp\.(gate_proj|up_proj)\.(weight|bias)$")


def transformers_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers `Dinov2Model` / `Dinov2WithRegistersModel` (v4 or v5 names) -> torch.hub layout.

    Separate q/k/v projections are fused into `qkv` (order q, k, v); SwiGLU gate/up into `w12` (gate first).
    """
    out: dict[str, torch.Tensor] = {}
    pending_qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    pending_gate_up: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if key.startswith(("classifier.", "head.", "pooler.")):
            continue
        match = _QKV.match(key)
        if match:
            layer, which, kind = match.groups()
            pending_qkv.setdefault((layer, kind), {})[which[0]] = value
            continue
        match = _GATE_UP.match(key)
        if match:
            layer, which, kind = match.groups()
            pending_gate_up.setdefault((layer, kind), {})[which] = value
            continue
        for pattern, replacement in _TRANSFORMERS_RENAMES:
            if re.match(pattern, key):
                out[re.sub(pattern, replacement, key)] = value
                break
        else:
            out[key] = value  # reported as unexpected later, with its original name
    for (layer, kind), parts in pending_qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise ConversionError(f"transformers checkpoint: layer {layer} {kind} has only {sorted(parts)} of q, k, v")
        _check_same_shapes(f"layer {layer} attention.{{query,key,value}}.{kind}", parts)
        out[f"blocks.{layer}.attn.qkv.{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    for (layer, kind), parts in pending_gate_up.items():
        if set(parts) != {"gate_proj", "up_proj"}:
            raise ConversionError(f"transformers checkpoint: layer {layer} {kind} has only {sorted(parts)} of gate_proj, up_proj")
        _check_same_shapes(f"layer {layer} mlp.{{gate_proj,up_proj}}.{kind}", parts)
        out[f"blocks.{layer}.mlp.w12.{kind}"] = torch.cat([parts["gate_proj"], parts["up_proj"]], dim=0)
    return out


def _check_same_shapes(what: str, parts: dict[str, torch.Tensor]) -> None:
    """The projections fused into one tensor must agree in shape; name them all when they do not."""
    shapes = {name: tuple(value.shape) for name, value in parts.items()}
    if len(set(shapes.values())) != 1:
        raise ConversionError(f"transformers checkpoint: {what} have different shapes {shapes}; they cannot be fused (is the checkpoint corrupt?)")


TO_TORCHHUB = {"torchhub": torchhub_layout, "timm": timm_layout, "transformers": transformers_layout}


# (torch.hub name, SnDModel name); `{i}` is a block index, a trailing "." marks a prefix. Order matters: the
# first matching row wins, so specific block entries come before the generic `blocks.{i}.` prefix.
_TORCHHUB_SND_NAMES = [
    ("cls_token", "embeddings.cls_token"),
    ("mask_token", "embeddings.mask_token"),
    ("register_tokens", "embeddings.register_tokens"),
    ("pos_embed", "embeddings.position_embeddings"),
    ("patch_embed.proj.", "embeddings.patch_embeddings.projection."),
    ("blocks.{i}.attn.", "encoder.layer.{i}.attention."),
    ("blocks.{i}.ls1.gamma", "encoder.layer.{i}.layer_scale1.lambda1"),
    ("blocks.{i}.ls2.gamma", "encoder.layer.{i}.layer_scale2.lambda1"),
    ("blocks.{i}.", "encoder.layer.{i}."),
    ("norm.", "layernorm."),
]


def _rename(state: dict[str, torch.Tensor], pairs: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
    """Rename keys by the first matching `(source, target)` template; unknown keys pass through (reported later)."""
    compiled = []
    for source, target in pairs:
        pattern = re.escape(source).replace(re.escape("{i}"), r"(?P<i>\d+)")
        compiled.append((re.compile(pattern if source.endswith(".") else pattern + "$"), target))
    out = {}
    for key, value in state.items():
        for pattern, target in compiled:
            match = pattern.match(key)
            if match:
                key = target.replace("{i}", match.groupdict().get("i") or "") + key[match.end():]
                break
        out[key] = value
    return out


def torchhub_to_snd(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torch.hub layout -> `SnDModel` state-dict names (unknown keys pass through, to be reported)."""
    out = _rename(state, _TORCHHUB_SND_NAMES)
    if "embeddings.mask_token" in out and out["embeddings.mask_token"].ndim == 2:
        out["embeddings.mask_token"] = out["embeddings.mask_token"].reshape(1, -1)
    return out


def snd_to_torchhub(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`SnDModel` names -> torch.hub layout (to export, and to build test checkpoints in the original layout)."""
    return _rename(state, [(target, source) for source, target in _TORCHHUB_SND_NAMES])


def describe_architecture(canonical: dict[str, torch.Tensor]) -> dict:
    """Read the architecture off a torch.hub-layout state dict (for presets checks and error hints)."""
    if "cls_token" not in canonical or "pos_embed" not in canonical or "patch_embed.proj.weight" not in canonical:
        missing = [k for k in ("cls_token", "pos_embed", "patch_embed.proj.weight") if k not in canonical]
        raise ConversionError(f"not a DINOv2 checkpoint in the expected layout: missing {missing}; keys start {sorted(canonical)[:8]}")
    layers = {int(m.group(1)) for key in canonical if (m := re.match(r"^blocks\.(\d+)\.", key))}
    hidden = canonical["cls_token"].shape[-1]
    patch = canonical["patch_embed.proj.weight"].shape[-1]
    positions = canonical["pos_embed"].shape[1] - 1
    return dict(
        hidden_size=hidden,
        num_hidden_layers=(max(layers) + 1) if layers else 0,
        num_register_tokens=canonical["register_tokens"].shape[1] if "register_tokens" in canonical else 0,
        use_swiglu_ffn="blocks.0.mlp.w12.weight" in canonical,
        patch_size=patch,
        image_size=int(round(positions**0.5)) * patch,
    )
