"""Original DINOv3 ViT checkpoints (facebookresearch/dinov3 torch.hub key layout) -> transformers DINOv3ViTModel.

The fixtures are random tensors written under the original key names (fused ``qkv`` with a
``bias_mask`` that zeroes the key bias, ``storage_tokens``, ``ls1.gamma``, ``rope_embed.periods``,
``local_cls_norm``), saved as a real ``.pth``; the converted model is compared with the functional
restatement of the original forward, and a wrong mapping must be refused."""

import importlib.util
from pathlib import Path

import pytest
import torch

from snd.convert import ConversionError
from snd.convert.dinov3 import convert_dinov3_hub, dinov3_hub_to_transformers
from snd.convert.reference import dinov3_reference_tokens
from snd.models.snd_dinov2 import normalize_images

REPO = Path(__file__).resolve().parents[2]


def original_state(hidden=32, depth=2, heads=2, registers=4, patch=16, gated=False, base=100.0, mask_k_bias=True, seed=0):
    """A random DINOv3 ViT state dict in the original layout (``DinoVisionTransformer.state_dict()`` names)."""
    generator = torch.Generator().manual_seed(seed)

    def normal(*shape, std=0.2):
        return torch.randn(*shape, generator=generator) * std

    head_dim = hidden // heads
    state = {
        "cls_token": normal(1, 1, hidden), "mask_token": normal(1, hidden),
        "patch_embed.proj.weight": normal(hidden, 3, patch, patch, std=0.05), "patch_embed.proj.bias": normal(hidden),
        # RopePositionEmbedding._init_weights with `base`: base ** (2 i / (D_head / 2))
        "rope_embed.periods": base ** (2 * torch.arange(head_dim // 4, dtype=torch.float32) / (head_dim // 2)),
        "norm.weight": 1 + normal(hidden), "norm.bias": normal(hidden),
        "local_cls_norm.weight": normal(hidden), "local_cls_norm.bias": normal(hidden),  # training-only, dropped
    }
    if registers:
        state["storage_tokens"] = normal(1, registers, hidden)
    inner = 4 * hidden
    for index in range(depth):
        block = f"blocks.{index}"
        state.update({
            f"{block}.norm1.weight": 1 + normal(hidden), f"{block}.norm1.bias": normal(hidden),
            f"{block}.attn.qkv.weight": normal(3 * hidden, hidden), f"{block}.attn.qkv.bias": normal(3 * hidden),
            f"{block}.attn.proj.weight": normal(hidden, hidden), f"{block}.attn.proj.bias": normal(hidden),
            f"{block}.ls1.gamma": normal(hidden, std=0.5), f"{block}.ls2.gamma": normal(hidden, std=0.5),
            f"{block}.norm2.weight": 1 + normal(hidden), f"{block}.norm2.bias": normal(hidden),
        })
        if mask_k_bias:  # LinearKMaskedBias: ones, zeros over the key third
            mask = torch.ones(3 * hidden)
            mask[hidden : 2 * hidden] = 0
            state[f"{block}.attn.qkv.bias_mask"] = mask
        names = ("w1", "w2", "w3") if gated else ("fc1", "fc2")
        shapes = [(inner, hidden), (inner, hidden), (hidden, inner)] if gated else [(inner, hidden), (hidden, inner)]
        for name, shape in zip(names, shapes):
            state[f"{block}.mlp.{name}.weight"] = normal(*shape)
            state[f"{block}.mlp.{name}.bias"] = normal(shape[0])
    return state


def reference(state, pixels, heads=2, depth=2):
    return dinov3_reference_tokens(lambda k: state[k].float(), state.__contains__, pixels, heads, depth, 1e-5)


@pytest.mark.parametrize("options", [dict(), dict(gated=True, base=50.0), dict(mask_k_bias=False, registers=0)],
                         ids=["mlp-masked-k-bias", "swiglu-base50", "k-bias-no-registers"])
def test_converted_model_matches_the_original_forward(options):
    state = original_state(**options)
    model, report = convert_dinov3_hub(state, check_sizes=[(32, 48)])
    config = model.config
    assert type(model).__name__ == "DINOv3ViTModel"
    assert config.patch_size == 16 and config.num_attention_heads == 2 and config.num_hidden_layers == 2
    assert config.num_register_tokens == options.get("registers", 4)
    assert config.rope_theta == pytest.approx(options.get("base", 100.0))
    assert config.use_gated_mlp == options.get("gated", False)
    assert config.key_bias == (not options.get("mask_k_bias", True))
    assert max(report.max_abs_difference.values()) < 1e-4
    # independently of the report: another size, normed and pre-norm patch tokens
    pixels = normalize_images(torch.rand(2, 3, 64, 32))
    prefix = 1 + config.num_register_tokens
    with torch.no_grad():
        output = model(pixel_values=pixels, output_hidden_states=True)
    normed, raw = reference(state, pixels)
    torch.testing.assert_close(output.last_hidden_state[:, prefix:], normed, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(output.hidden_states[-1][:, prefix:], raw, rtol=1e-4, atol=1e-4)


def test_reference_rope_is_a_rotation_of_channel_pairs_by_the_closed_form_angle():
    """The reference's rotate-half RoPE against a hand-written 2-D rotation of each (d, d + D/2) channel
    pair by 2 pi * coordinate / period, y angles first then x (the original's layout)."""
    from snd.convert.reference import _rotate_half

    head_dim, grid = 16, (2, 3)
    periods = 100.0 ** (2 * torch.arange(head_dim // 4, dtype=torch.float32) / (head_dim // 2))
    coords_y = (torch.arange(grid[0]) + 0.5) / grid[0] * 2 - 1
    coords_x = (torch.arange(grid[1]) + 0.5) / grid[1] * 2 - 1
    vector = torch.randn(head_dim)
    half = head_dim // 2
    for row in range(grid[0]):
        for col in range(grid[1]):
            angles = torch.cat([2 * torch.pi * coords_y[row] / periods, 2 * torch.pi * coords_x[col] / periods])  # [D/2]
            expected = torch.empty(head_dim)
            for pair in range(half):
                c, s = torch.cos(angles[pair]), torch.sin(angles[pair])
                expected[pair] = c * vector[pair] - s * vector[pair + half]
                expected[pair + half] = s * vector[pair] + c * vector[pair + half]
            tiled = angles.tile(2)
            ours = vector * tiled.cos() + _rotate_half(vector) * tiled.sin()
            torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)


def test_a_wrong_mapping_is_refused_before_anything_is_returned(monkeypatch):
    from snd.convert import dinov3 as module

    original = module.dinov3_hub_to_transformers

    def swapped(state, **kwargs):  # key and value projections exchanged: shapes fit, numbers do not
        config, mapped = original(state, **kwargs)
        for index in range(config.num_hidden_layers):
            k, v = f"model.layer.{index}.attention.k_proj.weight", f"model.layer.{index}.attention.v_proj.weight"
            mapped[k], mapped[v] = mapped[v], mapped[k]
        return config, mapped

    monkeypatch.setattr(module, "dinov3_hub_to_transformers", swapped)
    with pytest.raises(ConversionError, match="differs from the original forward.*nothing was saved"):
        module.convert_dinov3_hub(original_state(), check_sizes=[(32, 32)])


def test_unrepresentable_or_foreign_checkpoints_are_refused_with_the_reason():
    state = original_state()
    with pytest.raises(ConversionError, match="not an original DINOv3 ViT checkpoint"):
        dinov3_hub_to_transformers({"pos_embed": torch.zeros(1, 5, 32)}, source="x.pth")
    untied = dict(state, **{"cls_norm.weight": torch.ones(32), "cls_norm.bias": torch.zeros(32)})
    with pytest.raises(ConversionError, match="cls_norm"):
        dinov3_hub_to_transformers(untied)
    with pytest.raises(ConversionError, match=r"does not have \(1\): \['blocks.0.mlp.w3.weight'\]"):
        dinov3_hub_to_transformers(dict(state, **{"blocks.0.mlp.w3.weight": torch.zeros(32, 128)}))
    odd = dict(state, **{"rope_embed.periods": torch.tensor([1.0, 2.0, 7.0, 9.0])})
    with pytest.raises(ConversionError, match="min/max-period"):
        dinov3_hub_to_transformers(odd)


def test_script_converts_a_pth_to_a_folder_automodel_loads(tmp_path):
    from transformers import AutoImageProcessor, AutoModel

    state = original_state(seed=3)
    path = tmp_path / "dinov3_vits16_pretrain_test.pth"
    torch.save({"teacher": {f"backbone.{k}": v for k, v in state.items()}}, path)  # a wrapped training checkpoint
    spec = importlib.util.spec_from_file_location("convert_checkpoint_script", REPO / "scripts" / "convert_checkpoint.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["--input", str(path), "--format", "dinov3-hub", "--output", str(tmp_path / "out")]) == 0
    # an existing output is refused (and left as it was) unless --overwrite
    before = (tmp_path / "out" / "model.safetensors").read_bytes()
    assert script.main(["--input", str(path), "--format", "dinov3-hub", "--output", str(tmp_path / "out")]) == 2
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == before
    assert script.main(["--input", str(path), "--format", "dinov3-hub", "--output", str(tmp_path / "out"), "--overwrite"]) == 0
    model = AutoModel.from_pretrained(tmp_path / "out").eval()
    assert type(model).__name__ == "DINOv3ViTModel"
    assert AutoImageProcessor.from_pretrained(tmp_path / "out").size == {"height": 224, "width": 224}
    pixels = normalize_images(torch.rand(1, 3, 48, 32))
    with torch.no_grad():
        ours = model(pixel_values=pixels).last_hidden_state[:, 5:]
    torch.testing.assert_close(ours, reference(state, pixels)[0], rtol=1e-4, atol=1e-4)
    # and the evaluation loader converts the same file on the fly
    from snd.eval import load_backbone

    loaded = load_backbone(str(path))
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values=pixels).last_hidden_state[:, 5:], ours, rtol=1e-5, atol=1e-5)


def test_converted_swiglu_mlp_is_the_originals_silu_gate_times_up():
    """Restated without snd.convert.reference (and without the converter's own forward check, which compares against
    that reference): the original DINOv3 ``SwiGLUFFN`` is ``w3(silu(w1 x) * w2 x)``; each converted layer's MLP must
    compute it. SiLU is not symmetric, so exchanging gate (w1) and up (w2) changes the answer."""
    from transformers import DINOv3ViTModel

    state = original_state(gated=True, seed=3)
    config, mapped = dinov3_hub_to_transformers(state)
    model = DINOv3ViTModel(config).eval()
    model.load_state_dict(mapped, strict=True)
    hidden = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(1))
    for index in range(config.num_hidden_layers):
        def linear(name, x):
            return x @ state[f"blocks.{index}.mlp.{name}.weight"].T + state[f"blocks.{index}.mlp.{name}.bias"]

        x1, x2 = linear("w1", hidden), linear("w2", hidden)
        expected = linear("w3", x1 * torch.sigmoid(x1) * x2)
        swapped = linear("w3", x2 * torch.sigmoid(x2) * x1)
        assert (expected - swapped).abs().max() > 1e-2  # the case tells gate from up
        with torch.no_grad():
            torch.testing.assert_close(model.model.layer[index].mlp(hidden), expected, rtol=1e-5, atol=1e-5)
