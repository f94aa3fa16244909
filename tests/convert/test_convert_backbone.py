"""Backbone converters: each source layout built with random weights in the test, converted, and compared with
transformers' Dinov2 models holding the same numbers, and with the original DINOv2 interpolation formula."""

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import (
    AutoImageProcessor,
    AutoModel,
    Dinov2Config,
    Dinov2Model,
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
)

from snd import SnDModel, normalize_images
from snd.convert import ConversionError, convert_backbone, save_backbone
from tests.script_main import script_main

REPO = Path(__file__).resolve().parents[2]
HIDDEN, LAYERS, HEADS, IMAGE = 32, 2, 2, 56  # the `tiny` preset


def transformers_reference(registers=0, swiglu=False, seed=0):
    """A transformers Dinov2 model with large random weights (so interpolation differences are visible)."""
    arguments = dict(
        hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS, image_size=IMAGE, patch_size=14,
        use_swiglu_ffn=swiglu,
    )
    if registers:
        model = Dinov2WithRegistersModel(Dinov2WithRegistersConfig(num_register_tokens=registers, **arguments))
    else:
        model = Dinov2Model(Dinov2Config(**arguments))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            scale = 1.0 if "position" in name or "token" in name else 0.3
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)
    return model.eval()


def to_torchhub_layout(model) -> dict:
    """Write a transformers Dinov2 state dict in the original torch.hub layout (written independently here)."""
    state = model.state_dict()
    out = {
        "cls_token": state["embeddings.cls_token"],
        "mask_token": state["embeddings.mask_token"],
        "pos_embed": state["embeddings.position_embeddings"],
        "patch_embed.proj.weight": state["embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": state["embeddings.patch_embeddings.projection.bias"],
        "norm.weight": state["layernorm.weight"],
        "norm.bias": state["layernorm.bias"],
    }
    if "embeddings.register_tokens" in state:
        out["register_tokens"] = state["embeddings.register_tokens"]
    for i in range(LAYERS):
        src, dst = f"encoder.layer.{i}.", f"blocks.{i}."
        for kind in ("weight", "bias"):
            out[dst + f"norm1.{kind}"] = state[src + f"norm1.{kind}"]
            out[dst + f"norm2.{kind}"] = state[src + f"norm2.{kind}"]
            out[dst + f"attn.qkv.{kind}"] = torch.cat([state[src + f"attention.{p}_proj.{kind}"] for p in "qkv"])
            out[dst + f"attn.proj.{kind}"] = state[src + f"attention.o_proj.{kind}"]
            if src + "mlp.gate_proj.weight" in state:
                out[dst + f"mlp.w12.{kind}"] = torch.cat([state[src + f"mlp.gate_proj.{kind}"], state[src + f"mlp.up_proj.{kind}"]])
                out[dst + f"mlp.w3.{kind}"] = state[src + f"mlp.down_proj.{kind}"]
            else:
                out[dst + f"mlp.fc1.{kind}"] = state[src + f"mlp.fc1.{kind}"]
                out[dst + f"mlp.fc2.{kind}"] = state[src + f"mlp.fc2.{kind}"]
        out[dst + "ls1.gamma"] = state[src + "layer_scale1.lambda1"]
        out[dst + "ls2.gamma"] = state[src + "layer_scale2.lambda1"]
    return {k: v.clone() for k, v in out.items()}


def to_timm_layout(torchhub: dict) -> dict:
    """timm's documented DINOv2 conversion: drop mask_token; w12/w3 -> fc1/fc2; registers -> reg_token with the
    CLS position folded into cls_token and pos_embed without the CLS slot."""
    state = dict(torchhub)
    state.pop("mask_token")
    out = {}
    if "register_tokens" in state:
        out["reg_token"] = state.pop("register_tokens")
        out["cls_token"] = state.pop("cls_token") + state["pos_embed"][:, 0]
        out["pos_embed"] = state.pop("pos_embed")[:, 1:]
    for key, value in state.items():
        key = re.sub(r"mlp\.w12\.", "mlp.fc1.", key)
        key = re.sub(r"mlp\.w3\.", "mlp.fc2.", key)
        out[key] = value
    return out


def original_interpolation(position_embeddings, height, width, patch=14):
    """facebookresearch/dinov2 `interpolate_pos_encoding`, restated for the test."""
    n = position_embeddings.shape[1] - 1
    m = int(math.sqrt(n))
    h0, w0 = height // patch, width // patch
    if n == h0 * w0 and height == width:
        return position_embeddings
    patch_pos = position_embeddings[:, 1:].reshape(1, m, m, -1).permute(0, 3, 1, 2)
    patch_pos = F.interpolate(patch_pos, scale_factor=((h0 + 0.1) / m, (w0 + 0.1) / m), mode="bicubic", antialias=False)
    patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, h0 * w0, -1)
    return torch.cat([position_embeddings[:, :1], patch_pos], dim=1)


def original_scheme(model):
    """Make a transformers Dinov2 model interpolate position embeddings as the original DINOv2 code."""
    embeddings = model.embeddings
    embeddings.interpolate_pos_encoding = lambda emb, h, w: original_interpolation(embeddings.position_embeddings, h, w)
    return model


def patch_tokens(model, pixels, prefix):
    with torch.no_grad():
        return model(pixel_values=pixels).last_hidden_state[:, prefix:]


def compare(converted, reference, registers):
    """Native grid against transformers as is; 224 and 182x294 against the original formula."""
    prefix = 1 + registers
    generator = torch.Generator().manual_seed(1)
    native = normalize_images(torch.rand(1, 3, IMAGE, IMAGE, generator=generator))
    ours = patch_tokens(converted, native, prefix)
    assert (ours - patch_tokens(reference, native, prefix)).abs().max() <= 1e-4
    differences = {}
    for height, width in [(224, 224), (182, 294)]:
        pixels = normalize_images(torch.rand(1, 3, height, width, generator=generator))
        ours = patch_tokens(converted, pixels, prefix)
        original = patch_tokens(original_scheme(transformers_copy(reference)), pixels, prefix)
        assert (ours - original).abs().max() <= 1e-4, (height, width)
        differences[(height, width)] = (ours - patch_tokens(reference, pixels, prefix)).abs().max().item()
    return differences


def transformers_copy(model):
    clone = type(model)(model.config)
    clone.load_state_dict(model.state_dict())
    return clone.eval()


@pytest.mark.parametrize("registers,swiglu", [(0, False), (4, False), (0, True)], ids=["plain", "registers", "swiglu"])
def test_torchhub_pth_file(tmp_path, registers, swiglu):
    reference = transformers_reference(registers, swiglu)
    path = tmp_path / "dinov2_tiny_snd.pth"
    torch.save(to_torchhub_layout(reference), path)
    preset = "tiny-reg" if registers else "tiny"
    model, report = convert_backbone(path, "torchhub", preset)
    save_backbone(model, tmp_path / "out")
    loaded = AutoModel.from_pretrained(tmp_path / "out").eval()
    assert isinstance(loaded, SnDModel) and loaded.config.use_swiglu_ffn == swiglu
    differences = compare(loaded, reference, registers)
    # the interpolation trap is real at these magnitudes: transformers' own scheme differs clearly
    assert max(differences.values()) > 1e-3
    assert set(report.max_abs_difference) == {"original@56x56", "original@224x224", "original@182x294"}


@pytest.mark.parametrize("registers", [0, 4], ids=["plain", "registers"])
def test_timm_safetensors(tmp_path, registers):
    reference = transformers_reference(registers, seed=3)
    path = tmp_path / "vit_tiny_patch14_dinov2.safetensors"
    save_file({k: v.contiguous() for k, v in to_timm_layout(to_torchhub_layout(reference)).items()}, str(path))
    model, _ = convert_backbone(path, "timm", "tiny-reg" if registers else "tiny")
    compare(model, reference, registers)


@pytest.mark.parametrize("registers", [0, 4], ids=["plain", "registers"])
def test_transformers_folder_v5_and_v4_names(tmp_path, registers):
    reference = transformers_reference(registers, seed=5)
    reference.save_pretrained(tmp_path / "v5")
    model, report = convert_backbone(tmp_path / "v5", "transformers")  # preset inferred from shapes
    assert report.preset == ("tiny-reg" if registers else "tiny")
    assert report.max_abs_difference["transformers@native"] <= 1e-4
    compare(model, reference, registers)

    # checkpoints on the Hub still use transformers 4 names (attention.attention.query, attention.output.dense)
    v4 = {}
    for key, value in reference.state_dict().items():
        key = re.sub(r"attention\.([qkv])_proj", lambda m: "attention.attention." + {"q": "query", "k": "key", "v": "value"}[m.group(1)], key)
        key = key.replace("attention.o_proj", "attention.output.dense")
        v4["dinov2." + key] = value.contiguous()
    (tmp_path / "v4").mkdir()
    save_file(v4, str(tmp_path / "v4" / "model.safetensors"))
    model_v4, _ = convert_backbone(tmp_path / "v4", "transformers")
    compare(model_v4, reference, registers)


def test_transformers_position_mode_matches_transformers_off_native():
    reference = transformers_reference(0, seed=7)
    model, _ = convert_backbone(to_torchhub_layout(reference), "torchhub", "tiny")
    model.config.position_interpolation = "transformers"
    pixels = normalize_images(torch.rand(1, 3, 182, 294))
    assert (patch_tokens(model, pixels, 1) - patch_tokens(reference, pixels, 1)).abs().max() <= 1e-4


def test_sides_not_multiples_of_the_patch_match_transformers():
    """Dinov2Model accepts 100 x 100 (its strided patch conv drops the remainder); SnDModel does the same."""
    reference = transformers_reference(0, seed=11)
    model, _ = convert_backbone(to_torchhub_layout(reference), "torchhub", "tiny")
    model.config.position_interpolation = "transformers"
    for height, width in [(100, 100), (61, 90)]:
        pixels = normalize_images(torch.rand(1, 3, height, width))
        ours = patch_tokens(model, pixels, 1)
        assert ours.shape[1] == (height // 14) * (width // 14)
        assert (ours - patch_tokens(reference, pixels, 1)).abs().max() <= 1e-4, (height, width)


def test_wrong_preset_is_refused_with_a_hint(tmp_path):
    state = to_torchhub_layout(transformers_reference())
    with pytest.raises(ConversionError, match=r"does not match preset 'dinov2-s'.*hidden_size: preset 384 vs checkpoint 32.*looks like 'tiny'"):
        convert_backbone(state, "torchhub", "dinov2-s")


def test_missing_unexpected_and_misshapen_keys_are_listed():
    state = to_torchhub_layout(transformers_reference())
    broken = dict(state)
    del broken["blocks.1.attn.proj.weight"]
    broken["blocks.0.attn.extra.weight"] = torch.zeros(3)
    broken["blocks.0.ls1.gamma"] = torch.zeros(31)
    with pytest.raises(ConversionError) as error:
        convert_backbone(broken, "torchhub", "tiny")
    message = str(error.value)
    assert "missing keys (1)" in message and "encoder.layer.1.attention.proj.weight" in message
    assert "unexpected keys (1)" in message and "encoder.layer.0.attention.extra.weight" in message
    assert "encoder.layer.0.layer_scale1.lambda1: checkpoint (31,) vs model (32,)" in message


def test_unknown_format_and_not_a_dinov2_checkpoint():
    with pytest.raises(ConversionError, match="unknown format"):
        convert_backbone({}, "jax")
    with pytest.raises(ConversionError, match="not a DINOv2 checkpoint"):
        convert_backbone({"weight": torch.zeros(2)}, "torchhub")


class RunsCode:
    """Pickles as a call to `Path.touch(marker)`: what a malicious checkpoint would do on a full unpickle."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_pickled_objects_are_read_inert_never_run(tmp_path):
    reference = transformers_reference(seed=13)
    marker = tmp_path / "code-ran"
    path = tmp_path / "training_checkpoint.pth"
    torch.save({"model": to_torchhub_layout(reference), "args": RunsCode(marker)}, path)
    with pytest.raises(Exception):
        torch.load(path, weights_only=True)  # weights-only refuses the extra object by itself
    model, _ = convert_backbone(path, "torchhub", "tiny")
    assert not marker.exists()
    compare(model, reference, 0)
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ConversionError, match="garbage.pth: could not be read as a torch checkpoint"):
        convert_backbone(tmp_path / "garbage.pth", "torchhub")


def test_script_end_to_end_and_no_output_when_check_fails(tmp_path, capsys):
    reference = transformers_reference(4, seed=11)
    path = tmp_path / "dinov2_tiny_reg.pth"
    torch.save(to_torchhub_layout(reference), path)
    script = REPO / "scripts" / "convert_checkpoint.py"
    common = ["--input", str(path), "--format", "torchhub", "--preset", "tiny-reg"]
    # the command line users type, launched for real once
    result = subprocess.run([sys.executable, str(script), *common, "--output", str(tmp_path / "out")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert '"preset": "tiny-reg"' in result.stdout
    loaded = AutoModel.from_pretrained(tmp_path / "out")
    assert AutoImageProcessor.from_pretrained(tmp_path / "out").crop_size == {"height": 224, "width": 224}
    compare(loaded.eval(), reference, 4)
    from huggingface_hub import ModelCard

    card = ModelCard.load(tmp_path / "out" / "README.md")  # the model card is written at save time, not only on push
    assert card.data.library_name == "transformers" and str(path) in card.text

    # the refusals through the script's main(argv) in this process (same parsing and code, no interpreter start)
    capsys.readouterr()
    assert script_main("convert_checkpoint", [*common, "--output", tmp_path / "never", "--tolerance", "-1"]) == 2
    assert "nothing was saved" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".never")]

    assert script_main("convert_checkpoint", [*common[:-1], "dinov2-b", "--output", tmp_path / "b"]) == 2
    assert "does not match preset 'dinov2-b'" in capsys.readouterr().err
