"""SnD backbone: shapes, outputs, Auto classes, save/load, remote code, DPT head, LoRA targets (tiny configs)."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoImageProcessor, AutoModel, DPTConfig, DPTForDepthEstimation

import snd
from snd import SnDBackbone, SnDConfig, SnDImageProcessor, SnDModel, normalize_images


class SnDModelTester:
    """transformers-style tester: a tiny config and inputs, and the checks every variant must pass."""

    def __init__(self, **overrides):
        self.config = SnDConfig.tiny(**overrides)
        self.batch_size = 2

    def inputs(self, height=42, width=70):
        return torch.randn(self.batch_size, 3, height, width)

    def check_model(self, height=42, width=70):
        model = SnDModel(self.config).eval()
        with torch.no_grad():
            output = model(self.inputs(height, width))
        grid = (height // 14, width // 14)
        prefix = 1 + self.config.num_register_tokens
        channels = self.config.hidden_size
        assert output.last_hidden_state.shape == (self.batch_size, prefix + grid[0] * grid[1], channels)
        assert output.pooler_output.shape == (self.batch_size, channels)
        assert output.patch_features.shape == (self.batch_size, channels, *grid)
        # patch_features is the row-major patch token sequence as a map; pooler is the normalised CLS
        tokens = output.last_hidden_state[:, prefix:]
        assert torch.equal(output.patch_features.flatten(2).transpose(1, 2), tokens)
        assert torch.equal(output.pooler_output, output.last_hidden_state[:, 0])
        # final LayerNorm applied: every token has ~zero mean over channels (LayerNorm weight 1, bias 0)
        assert output.last_hidden_state.mean(-1).abs().max() < 1e-5
        return model, output


@pytest.mark.parametrize(
    "overrides",
    [{}, {"num_register_tokens": 4}, {"use_swiglu_ffn": True}, {"position_interpolation": "transformers"}],
    ids=["plain", "registers", "swiglu", "transformers-interp"],
)
def test_model_outputs(overrides):
    SnDModelTester(**overrides).check_model()
    SnDModelTester(**overrides).check_model(56, 56)  # native grid: no interpolation


def test_swiglu_hidden_size_follows_dinov2():
    assert SnDConfig.from_preset("dinov2-g").mlp_hidden_size == 4096  # DINOv2 ViT-g/14: 6144 * 2/3 rounded to 8
    assert SnDConfig.from_preset("dinov2-s").mlp_hidden_size == 1536


def test_registers_change_only_through_attention():
    tester = SnDModelTester(num_register_tokens=4)
    model, output = tester.check_model()
    with torch.no_grad():
        model.embeddings.register_tokens.add_(1.0)
        changed = model(tester.inputs()).patch_features
    assert not torch.allclose(changed, output.patch_features)


def test_bad_inputs_have_clear_errors():
    model = SnDModel(SnDConfig.tiny())
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        model(torch.randn(3, 56, 56))
    with pytest.raises(ValueError, match="divisible"):
        SnDConfig(hidden_size=30, num_attention_heads=4)
    with pytest.raises(ValueError, match="Unknown SnD preset"):
        SnDConfig.from_preset("dinov3-s")
    with pytest.raises(ValueError, match="position_interpolation"):
        SnDConfig.tiny(position_interpolation="bilinear")


@pytest.mark.parametrize("registers", [0, 4])
def test_sides_not_multiples_of_the_patch_floor_the_grid(registers):
    """As transformers' Dinov2Model: 100 x 130 gives a 7 x 9 grid, the remainder rows and columns are dropped."""
    model = SnDModel(SnDConfig.tiny(num_register_tokens=registers)).eval()
    pixels = torch.randn(2, 3, 100, 130)
    with torch.no_grad():
        output = model(pixels)
        cropped = model(pixels[..., : 7 * 14, : 9 * 14])
    assert output.patch_features.shape == (2, 32, 7, 9)
    assert output.last_hidden_state.shape == (2, 1 + registers + 7 * 9, 32)
    torch.testing.assert_close(output.last_hidden_state, cropped.last_hidden_state)


def test_presets_cover_sizes_and_registers():
    for size, hidden in [("s", 384), ("b", 768), ("l", 1024), ("g", 1536)]:
        assert SnDConfig.from_preset(f"dinov2-{size}").hidden_size == hidden
        assert SnDConfig.from_preset(f"dinov2-{size}-reg").num_register_tokens == 4
    assert SnDConfig.from_preset("dinov2-g").use_swiglu_ffn


def test_save_and_auto_load_round_trip(tmp_path):
    model = SnDModel(SnDConfig.tiny(num_register_tokens=4)).eval()
    model.save_pretrained(tmp_path)
    SnDImageProcessor().save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "snd_dinov2"
    assert config["auto_map"]["AutoModel"].endswith("SnDModel")
    assert isinstance(AutoConfig.from_pretrained(tmp_path), SnDConfig)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, SnDModel)
    pixels = torch.randn(1, 3, 56, 84)
    with torch.no_grad():
        assert torch.equal(loaded(pixels).patch_features, model(pixels).patch_features)
    processor = AutoImageProcessor.from_pretrained(tmp_path)
    image = (np.random.default_rng(0).random((300, 400, 3)) * 255).astype(np.uint8)
    pixel_values = processor(image, return_tensors="pt")["pixel_values"]
    assert pixel_values.shape == (1, 3, 224, 224)
    # ImageNet normalisation: a mid-grey image maps to (0.5 - mean) / std
    grey = processor(np.full((256, 256, 3), 128, dtype=np.uint8), return_tensors="pt")["pixel_values"]
    expected = normalize_images(torch.full((1, 3, 1, 1), 128 / 255))
    assert torch.allclose(grey[:, :, 100, 100], expected[:, :, 0, 0], atol=1e-4)


def test_trust_remote_code_without_snd_installed(tmp_path):
    """A saved folder loads with trust_remote_code in a process where `import snd` fails."""
    model = SnDModel(SnDConfig.tiny(num_register_tokens=4)).eval()
    model.save_pretrained(tmp_path / "model")
    SnDImageProcessor().save_pretrained(tmp_path / "model")
    pixels = torch.randn(1, 3, 42, 70)
    torch.save(pixels, tmp_path / "pixels.pt")
    with torch.no_grad():
        torch.save(model(pixels).patch_features, tmp_path / "expected.pt")
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["snd"] = None  # any `import snd` now raises ImportError
        try:
            import snd  # noqa: F401
        except ImportError:
            pass
        else:
            raise SystemExit("snd should not be importable here")
        import torch
        from transformers import AutoImageProcessor, AutoModel
        model = AutoModel.from_pretrained({str(tmp_path / 'model')!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        processor = AutoImageProcessor.from_pretrained({str(tmp_path / 'model')!r}, trust_remote_code=True)
        assert type(processor).__name__ == "SnDImageProcessor", type(processor)
        with torch.no_grad():
            out = model(torch.load({str(tmp_path / 'pixels.pt')!r}, weights_only=True)).patch_features
        diff = (out - torch.load({str(tmp_path / 'expected.pt')!r}, weights_only=True)).abs().max().item()
        print("MAXDIFF", diff)
        """
    )
    env = dict(os.environ, HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    diff = float(result.stdout.split("MAXDIFF")[1])
    assert diff == 0.0


def test_backbone_feature_maps_and_dpt_head(tmp_path):
    config = SnDConfig.tiny(out_indices=[1, 2])
    model = SnDModel(config).eval()
    model.save_pretrained(tmp_path)
    backbone = SnDBackbone.from_pretrained(tmp_path, out_indices=[1, 2]).eval()
    pixels = torch.randn(1, 3, 42, 70)
    with torch.no_grad():
        maps = backbone(pixels).feature_maps
        hidden = model(pixels, output_hidden_states=True)
    assert [tuple(m.shape) for m in maps] == [(1, 32, 3, 5)] * 2
    assert backbone.channels == [32, 32]
    # the last stage through the final norm is exactly the model's patch features
    assert torch.allclose(maps[-1], hidden.patch_features, atol=1e-6)
    normed_stage1 = model.layernorm(hidden.hidden_states[1])[:, 1:].transpose(1, 2).reshape(1, 32, 3, 5)
    assert torch.allclose(maps[0], normed_stage1, atol=1e-6)

    # transformers' DPT depth head sitting on SnD features through AutoBackbone.from_config
    backbone_config = SnDConfig.tiny(out_indices=[1, 2], reshape_hidden_states=False, num_register_tokens=4)
    dpt_config = DPTConfig(
        backbone_config=backbone_config.to_dict(),
        is_hybrid=False,
        neck_hidden_sizes=[16, 32],
        reassemble_factors=[2, 1],
        fusion_hidden_size=16,
        head_in_index=-1,
    )
    dpt = DPTForDepthEstimation(dpt_config)
    assert isinstance(dpt.backbone, SnDBackbone)
    depth = dpt(pixel_values=torch.randn(2, 3, 56, 84)).predicted_depth
    assert depth.ndim == 3 and depth.shape[0] == 2 and torch.isfinite(depth).all()
    depth.mean().backward()
    assert dpt.backbone.embeddings.patch_embeddings.projection.weight.grad.abs().sum() > 0
    # the gradient reaching the backbone is the derivative of the depth head's output (central difference in float64)
    dpt = dpt.double().eval()
    pixels = torch.randn(2, 3, 56, 84, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    weight = dpt.backbone.embeddings.patch_embeddings.projection.weight
    weight.grad = None
    dpt(pixel_values=pixels).predicted_depth.mean().backward()
    direction = torch.randn(weight.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with torch.no_grad():
        original = weight.clone()
        totals = []
        for sign in (1, -1):
            weight.copy_(original + sign * 1e-6 * direction)
            totals.append(float(dpt(pixel_values=pixels).predicted_depth.mean()))
        weight.copy_(original)
    numeric, analytic = (totals[0] - totals[1]) / 2e-6, float((weight.grad * direction).sum())
    assert abs(numeric) > 1e-9 and abs(analytic - numeric) <= 1e-4 * abs(numeric), (analytic, numeric)


def test_lora_targets_are_exactly_attention_layers():
    from peft import LoraConfig, get_peft_model

    model = SnDModel(SnDConfig.tiny())
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=4, target_modules=["qkv", "proj"]))
    adapted = sorted({name.rsplit(".lora_A", 1)[0] for name, _ in peft_model.named_parameters() if ".lora_A" in name})
    assert adapted == sorted(
        f"base_model.model.encoder.layer.{i}.attention.{kind}" for i in range(2) for kind in ("qkv", "proj")
    )


def test_normalize_images_checks_channels():
    with pytest.raises(ValueError, match=r"\[..., 3, H, W\]"):
        normalize_images(torch.rand(1, 4, 8, 8))


def test_import_registers_auto_classes():
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    assert CONFIG_MAPPING["snd_dinov2"] is SnDConfig
    assert isinstance(AutoModel.from_config(SnDConfig.tiny()), SnDModel)
    assert snd.SnDConfig is SnDConfig
