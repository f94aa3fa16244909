"""snd.backbones: one adapter for SnD, transformers DINOv2 (with registers) and DINOv3.

Prefix tokens, patch grids (14 and 16), pre-/post-norm tokens against the models' own hidden states
re-normalised by hand, peft wrappers, LoRA target resolution per architecture."""

import pytest
import torch
from torch.nn import functional as F

from snd.backbones import (
    LORA_TARGETS,
    backbone_spec,
    backbone_tokens,
    default_image_processor,
    default_lora_targets,
    random_backbone,
    without_rope_augmentation,
)

# (preset, class name, patch, prefix tokens = CLS + registers, final norm attribute)
CASES = [
    ("tiny", "SnDModel", 14, 1, "layernorm"),
    ("tiny-reg", "SnDModel", 14, 5, "layernorm"),
    ("dinov2-tiny", "Dinov2Model", 14, 1, "layernorm"),
    ("dinov2reg-tiny", "Dinov2WithRegistersModel", 14, 5, "layernorm"),
    ("dinov3-tiny", "DINOv3ViTModel", 16, 5, "norm"),
]


@pytest.mark.parametrize("preset,name,patch,prefix,norm", CASES)
def test_spec_and_tokens_match_the_models_own_outputs(preset, name, patch, prefix, norm):
    model = random_backbone(preset).eval()
    assert type(model).__name__ == name
    spec = backbone_spec(model)
    assert (spec.patch_size, spec.num_prefix_tokens, spec.final_norm) == (patch, prefix, norm)
    height, width = 2 * patch, 3 * patch
    pixels = torch.randn(2, 3, height, width)
    with torch.no_grad():
        out = model(pixel_values=pixels, output_hidden_states=True)
        normed = backbone_tokens(model, pixels)
        raw = backbone_tokens(model, pixels, final_norm=False)
    # the model's own sequence: prefix tokens, then a row-major 2 x 3 grid
    assert out.last_hidden_state.shape[1] == prefix + 6
    expected = out.last_hidden_state[:, prefix:].reshape(2, 2, 3, -1).permute(0, 3, 1, 2)
    torch.testing.assert_close(normed.patches, expected, rtol=0, atol=0)
    torch.testing.assert_close(normed.cls, out.last_hidden_state[:, 0], rtol=0, atol=0)
    # pre-norm = the last block's output (hidden_states[-1]); re-normalised by hand it gives the normed tokens
    last_block = out.hidden_states[-1]
    torch.testing.assert_close(raw.patches, last_block[:, prefix:].reshape(2, 2, 3, -1).permute(0, 3, 1, 2), rtol=0, atol=0)
    layer_norm = getattr(model, norm)
    renormed = F.layer_norm(raw.patches.permute(0, 2, 3, 1), layer_norm.normalized_shape, layer_norm.weight, layer_norm.bias, layer_norm.eps)
    torch.testing.assert_close(renormed.permute(0, 3, 1, 2), normed.patches, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(raw.patches, normed.patches)


def test_grid_rejects_inputs_off_the_patch():
    spec = backbone_spec(random_backbone("dinov3-tiny"))
    assert spec.grid(48, 64) == (3, 4)
    with pytest.raises(ValueError, match="multiple of the dinov3_vit patch size 16"):
        spec.grid(42, 64)


def test_peft_wrapped_backbone_reads_through_and_lora_targets_resolve_per_architecture():
    from peft import LoraConfig, get_peft_model

    expected_leaves = {
        "tiny": {"qkv", "proj", "projection"},
        "dinov2-tiny": {"q_proj", "k_proj", "v_proj", "o_proj", "projection"},
        "dinov2reg-tiny": {"q_proj", "k_proj", "v_proj", "o_proj", "projection"},
        "dinov3-tiny": {"q_proj", "k_proj", "v_proj", "o_proj"},
    }
    for preset, leaves in expected_leaves.items():
        model = random_backbone(preset).eval()  # eval: DINOv3's training-mode RoPE augmentation is random
        targets = default_lora_targets(model)
        assert targets == LORA_TARGETS[backbone_spec(model).model_type]
        wrapped = get_peft_model(model, LoraConfig(r=2, lora_alpha=2, target_modules=targets))
        wrapped_leaves = {name.rsplit(".", 1)[-1] for name, module in wrapped.named_modules() if hasattr(module, "lora_A")}
        assert wrapped_leaves == leaves, preset
        # the patch-embedding conv is wrapped exactly where the release's qkv/proj match wrapped it
        assert any("patch_embeddings" in name and hasattr(m, "lora_A") for name, m in wrapped.named_modules()) == (preset != "dinov3-tiny")
        assert backbone_spec(wrapped) == backbone_spec(model)
        pixels = torch.randn(1, 3, 2 * backbone_spec(model).patch_size, 2 * backbone_spec(model).patch_size)
        with torch.no_grad():
            torch.testing.assert_close(backbone_tokens(wrapped, pixels).patches, backbone_tokens(model, pixels).patches)


def test_unknown_architecture_falls_back_to_attention_linears_or_asks():
    from transformers import ViTConfig, ViTModel

    vit = ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=16))
    assert backbone_spec(vit).patch_size == 16 and backbone_spec(vit).num_prefix_tokens == 1
    assert default_lora_targets(vit) == ["q_proj", "k_proj", "v_proj", "o_proj"]  # found by name, not listed
    pixels = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected = vit.eval()(pixel_values=pixels).last_hidden_state[:, 1:].reshape(1, 2, 2, -1).permute(0, 3, 1, 2)
        torch.testing.assert_close(backbone_tokens(vit, pixels).patches, expected, rtol=0, atol=0)

    class NoAttention(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config = type("C", (), {"patch_size": 8, "model_type": "mystery"})()
            self.fc = torch.nn.Linear(4, 4)

    with pytest.raises(ValueError, match="set model.lora_target_modules"):
        default_lora_targets(NoAttention())


def test_rope_augmentation_off_only_for_the_student_copy_of_the_config():
    model = random_backbone("dinov3-tiny")
    assert model.config.pos_embed_rescale == 2.0  # transformers' default: augmentation on in training mode
    pixels = torch.randn(1, 3, 32, 32)
    model.train()
    torch.manual_seed(0)
    first = model.rope_embeddings(pixels)[0]
    torch.manual_seed(1)
    assert not torch.allclose(first, model.rope_embeddings(pixels)[0])  # random rescale while training
    without_rope_augmentation(model)
    model.train()
    eval_cos = model.eval().rope_embeddings(pixels)[0]
    model.train()
    torch.testing.assert_close(model.rope_embeddings(pixels)[0], eval_cos, rtol=0, atol=0)
    assert model.config.pos_embed_rescale == 2.0  # what save_pretrained writes is untouched


def test_default_image_processors_per_architecture(tmp_path):
    from transformers import AutoImageProcessor

    dinov3 = default_image_processor(random_backbone("dinov3-tiny"))
    assert dinov3.size == {"height": 224, "width": 224} and not dinov3.do_center_crop
    dinov2 = default_image_processor(random_backbone("dinov2reg-tiny"))
    assert dinov2.size == {"shortest_edge": 256} and dinov2.crop_size == {"height": 224, "width": 224}
    dinov3.save_pretrained(tmp_path)
    reloaded = AutoImageProcessor.from_pretrained(tmp_path)  # loads without torchvision
    assert list(reloaded.image_mean) == pytest.approx([0.485, 0.456, 0.406])
    # a source checkpoint's processor is kept
    from transformers import BitImageProcessorPil

    BitImageProcessorPil(size={"height": 320, "width": 320}, do_center_crop=False, image_mean=[0.43, 0.41, 0.3], image_std=[0.2, 0.15, 0.14]).save_pretrained(tmp_path / "src")
    kept = default_image_processor(random_backbone("dinov3-tiny"), str(tmp_path / "src"))
    assert kept.size == {"height": 320, "width": 320} and list(kept.image_mean) == pytest.approx([0.43, 0.41, 0.3])


def test_pretrained_folder_loads_in_its_class_and_other_normalisation_warns(tmp_path, caplog):
    import logging

    from transformers import BitImageProcessorPil

    from snd.backbones import pretrained_backbone

    random_backbone("dinov3-tiny").save_pretrained(tmp_path / "lvd")
    BitImageProcessorPil(image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(tmp_path / "lvd")
    random_backbone("dinov3-tiny").save_pretrained(tmp_path / "sat")
    BitImageProcessorPil(image_mean=[0.430, 0.411, 0.296], image_std=[0.213, 0.156, 0.143]).save_pretrained(tmp_path / "sat")
    with caplog.at_level(logging.WARNING, logger="snd.backbones"):
        assert type(pretrained_backbone(str(tmp_path / "lvd"))).__name__ == "DINOv3ViTModel"
        assert not caplog.records
        pretrained_backbone(str(tmp_path / "sat"))
    assert "ImageNet" in caplog.text and "0.43" in caplog.text


def test_a_torchvision_only_source_processor_is_replaced_by_a_pil_equivalent(tmp_path):
    import json

    # what the Hub's DINOv3 folders carry: a torchvision ("fast") processor class
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "DINOv3ViTImageProcessorFast", "size": {"height": 256, "width": 256},
        "image_mean": [0.430, 0.411, 0.296], "image_std": [0.213, 0.156, 0.143], "do_resize": True,
    }))
    try:
        import torchvision  # noqa: F401
    except ImportError:
        processor = default_image_processor(random_backbone("dinov3-tiny"), str(tmp_path))
        assert type(processor).__name__ == "BitImageProcessorPil"
        assert processor.size == {"height": 256, "width": 256} and list(processor.image_std) == pytest.approx([0.213, 0.156, 0.143])
    else:  # pragma: no cover - with torchvision the source's own class loads
        assert "DINOv3" in type(default_image_processor(random_backbone("dinov3-tiny"), str(tmp_path))).__name__
    assert type(default_image_processor(random_backbone("tiny"), str(tmp_path))).__name__ == "SnDImageProcessor"
