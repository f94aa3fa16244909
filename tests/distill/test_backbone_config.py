"""Config for other backbones: the DINOv3 presets are the DINOv2 paper recipe with only the backbone changed;
``lora_target_modules: auto`` and random presets validate with errors naming the field."""

import pytest

from snd.distill import ConfigError, load_config, preset_names
from snd.distill.build import apply_finetuning, load_backbone, resolve_lora_targets


@pytest.mark.parametrize("size", ["s", "b"])
def test_dinov3_presets_are_the_dinov2_recipe_on_dinov3(size):
    assert {f"scannetpp_dinov3{size}", "tiny_dinov3"} <= set(preset_names())
    dinov3, dinov2 = load_config(f"scannetpp_dinov3{size}").to_dict(), load_config(f"scannetpp_dinov2{size}").to_dict()
    assert dinov3["model"]["pretrained"] == f"facebook/dinov3-vit{size}16-pretrain-lvd1689m"
    assert dinov3["model"]["lora_target_modules"] == "auto"
    assert dinov3["data"]["image_height"] % 16 == 0 and dinov3["data"]["image_width"] % 16 == 0
    for section in dinov2:
        for key, value in dinov2[section].items():
            if (section, key) in {("model", "pretrained"), ("model", "lora_target_modules"), ("training", "output_dir")}:
                continue
            assert dinov3[section][key] == value, f"{section}.{key}"


def test_tiny_dinov3_builds_a_dinov3_student_with_lora_on_its_attention():
    config = load_config("tiny_dinov3", ["model.finetune=lora"])
    backbone = load_backbone(config.model)
    assert type(backbone).__name__ == "DINOv3ViTModel"
    assert resolve_lora_targets(backbone, "auto") == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert resolve_lora_targets(backbone, ["q_proj"]) == ["q_proj"]  # a list overrides
    wrapped = apply_finetuning(backbone, config.model)
    trainable = {name for name, p in wrapped.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    assert {name.split(".lora_")[0].rsplit(".", 1)[-1] for name in trainable} == {"q_proj", "k_proj", "v_proj", "o_proj"}


def test_bad_preset_and_lora_string_name_the_field():
    with pytest.raises(ConfigError, match="model.preset must be one of .*dinov3-tiny"):
        load_config("tiny_dinov3", ["model.preset=dinov9"])
    with pytest.raises(ConfigError, match="model.lora_target_modules must be a list of module names or 'auto'"):
        load_config("tiny_dinov3", ["model.lora_target_modules=qkv"])


def test_model_card_of_a_dinov3_run_names_base_model_and_architecture(tmp_path):
    from transformers import AutoConfig

    from snd.backbones import random_backbone
    from snd.distill.trainer import card_info
    from snd.hub.cards import render_model_card

    config = load_config("scannetpp_dinov3s")
    random_backbone("dinov3-tiny").save_pretrained(tmp_path)  # as exported: config.json names the class
    model_config = AutoConfig.from_pretrained(tmp_path)
    info = card_info(config, "me/snd-dinov3-s", model_config=model_config)
    card = render_model_card(info, model_config)
    assert card.data.base_model == "facebook/dinov3-vits16-pretrain-lvd1689m"
    assert "dinov3_vit" in card.data.tags and "DINOv3ViTModel (model_type dinov3_vit)" in str(card)


def test_tiny_dinov3_is_tiny_synthetic_with_a_dinov3_student():
    tiny, default = load_config("tiny_dinov3").to_dict(), load_config("tiny_synthetic").to_dict()
    changed = {(section, key) for section in default for key in default[section] if tiny[section][key] != default[section][key]}
    assert changed == {("model", "preset"), ("data", "image_height"), ("data", "image_width"), ("training", "output_dir")}
    assert tiny["model"]["preset"] == "dinov3-tiny" and tiny["data"]["image_height"] % 16 == tiny["data"]["image_width"] % 16 == 0
