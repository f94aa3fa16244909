"""Broken model folders (issue 21 part 2): corrupt weights, a config.json that is not an object / has a non-string
model_type / is not UTF-8, and bad preprocessor_config.json fields are reported naming the file (and field) and what
was expected, instead of a raw library message."""

from __future__ import annotations

import json

import pytest

import snd
from snd.backbones import read_preprocessor_config
from snd.convert import ConversionError
from snd.distill.build import load_backbone
from snd.distill.config import ModelConfig


@pytest.fixture()
def folder(tmp_path):
    model = snd.SnDModel(snd.SnDConfig.tiny())
    model.save_pretrained(tmp_path / "student")
    return tmp_path / "student"


def test_a_sound_folder_loads(folder):
    assert isinstance(load_backbone(ModelConfig(pretrained=str(folder))), snd.SnDModel)


def test_truncated_weights_name_the_folder(folder):
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:300])
    with pytest.raises(ConversionError, match=r"student/model\.safetensors: corrupt or truncated safetensors file"):
        load_backbone(ModelConfig(pretrained=str(folder)))


@pytest.mark.parametrize(
    "content, message",
    [
        (b"[1, 2]", r"config\.json: holds a JSON list; expected a JSON object"),
        (b'{"model_type": 7}', r"config\.json: field 'model_type' is int 7; expected a string"),
        (b'{"model_type": "snd_dinov2", ', r"config\.json: not valid JSON"),
        (b'{"model_type": "snd\xe9"}', r"config\.json: not UTF-8 text"),
        (b"[" * 200_000, r"config\.json: JSON nested too deeply"),
    ],
)
def test_bad_config_json_names_the_file(folder, content, message):
    (folder / "config.json").write_bytes(content)
    with pytest.raises(ConversionError, match=message):
        load_backbone(ModelConfig(pretrained=str(folder)))


def test_config_field_of_the_wrong_type_names_the_folder(folder):
    config = json.loads((folder / "config.json").read_text())
    config["hidden_size"] = "wide"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConversionError, match=r"cannot load the model in .*student.*valid config\.json"):
        load_backbone(ModelConfig(pretrained=str(folder)))


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"image_mean": "imagenet", "image_std": [0.2, 0.2, 0.2]}, r"field 'image_mean' is 'imagenet'; expected a list of finite numbers"),
        ({"image_mean": [0.5, 0.5, 0.5], "image_std": [0.2, 0.0, 0.2]}, r"field 'image_std' .*expected a list of finite numbers > 0"),
        ({"image_mean": [0.5, 0.5], "image_std": [0.2, 0.2, 0.2]}, r"fields 'image_mean' \(2 values\) and 'image_std' \(3 values\) differ"),
        ({"size": {"shortest_edge": -256}}, r"field 'size' is .*expected positive integers"),
        ({"crop_size": "224"}, r"field 'crop_size' is '224'; expected positive integers"),
    ],
)
def test_bad_preprocessor_config_fields_name_the_field(tmp_path, fields, message):
    path = tmp_path / "preprocessor_config.json"
    path.write_text(json.dumps(fields))
    with pytest.raises(ConversionError, match=rf"preprocessor_config\.json: {message}"):
        read_preprocessor_config(path)


def test_nan_in_preprocessor_config_is_refused(tmp_path):
    path = tmp_path / "preprocessor_config.json"
    path.write_text('{"image_mean": [NaN, 0.4, 0.4], "image_std": [0.2, 0.2, 0.2]}')
    with pytest.raises(ConversionError, match=r"field 'image_mean' is \[nan"):
        read_preprocessor_config(path)


def test_converter_config_json_nested_too_deep_or_not_an_object_names_the_file(tmp_path):
    from safetensors.torch import save_file
    import torch

    from snd.convert import convert_backbone

    save_file({"w": torch.zeros(2)}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text("[" * 200_000)
    with pytest.raises(ConversionError, match=r"config\.json: JSON nested too deeply"):
        convert_backbone(str(tmp_path), "transformers")
    (tmp_path / "config.json").write_text('"dinov2"')
    with pytest.raises(ConversionError, match=r"config\.json: holds a JSON str; expected a JSON object"):
        convert_backbone(str(tmp_path), "transformers")
