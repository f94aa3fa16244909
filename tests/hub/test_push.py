"""push_model end to end through the loopback Hub: push a tiny SnDModel in one process, load the repo id back
with AutoModel / AutoImageProcessor in another (with `trust_remote_code` and no snd, then with snd), outputs equal."""

from __future__ import annotations

import inspect
import json
import warnings

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file

import snd
from snd.hub import push_model, save_for_hub
from snd.hub.cards import ModelCardInfo


def test_push_then_load_with_auto_classes(hub_client, tmp_path):
    server = hub_client.server
    pushed = hub_client.call("push-tiny", "--repo", "snd-test/tiny", "--out", str(tmp_path))
    assert pushed["max_abs_diff"] == 0.0  # push_model(verify=True) re-downloaded the commit and compared
    assert "differs from the pushed one" in pushed["verify_other_model"]
    for name in ("model.safetensors", "config.json", "preprocessor_config.json", "README.md"):
        assert name in pushed["files"]

    # what landed on the server: safetensors weights of the tiny config, and a card with Hub metadata
    store = server.store
    weights_path = tmp_path / "pushed.safetensors"
    weights_path.write_bytes(store.read("model", "snd-test/tiny", "model.safetensors"))
    weights = load_file(str(weights_path))
    assert weights["embeddings.cls_token"].shape[-1] == 32
    config = json.loads(store.read("model", "snd-test/tiny", "config.json"))
    assert config["model_type"] == "snd_dinov2" and config["num_hidden_layers"] == 2
    card = ModelCard(store.read("model", "snd-test/tiny", "README.md").decode())
    assert card.data.library_name == "transformers" and "snd" in card.data.tags
    assert "**with** blending (alpha = 0.5)" in card.text
    assert "the hub round-trip test" in card.text
    # transformers' own push_to_hub went through the same server; a later push_model removed stale shards
    assert store.exists("model", "snd-test/tiny-plain")
    stale = ["model-00001-of-00002.safetensors", "model.safetensors.index.json", "pytorch_model.bin"]
    assert pushed["second_push_removed"] == stale
    assert not set(stale) & set(pushed["second_push_files"]) and "model.safetensors" in pushed["second_push_files"]

    loaded = hub_client.call("load", "--repo", "snd-test/tiny", "--reference", str(tmp_path / "reference.pt"))
    # without snd installed: the repository's own code, fetched from the Hub, gives the same numbers
    assert loaded["remote_code_module"].startswith("transformers_modules."), loaded["remote_code_module"]
    assert loaded["remote_code_max_abs_diff"] == 0.0
    assert loaded["model_module"].startswith("snd.")
    assert loaded["model_class"] == "SnDModel"
    assert loaded["processor_class"] == "SnDImageProcessor"
    assert loaded["pixel_values_equal"]
    assert loaded["last_hidden_state_max_abs_diff"] == 0.0
    assert loaded["patch_features_equal"] and loaded["patch_features_shape"] == [1, 32, 16, 16]
    assert server.unhandled == []
    # the load went over HTTP: the weights were fetched with GET .../resolve/<commit>/model.safetensors
    assert any(r.method == "GET" and r.path.endswith("/model.safetensors") for r in server.requests)


def test_save_for_hub_writes_card_after_weights(tmp_path):
    torch.manual_seed(0)
    model = snd.SnDModel(snd.SnDConfig.tiny())
    files = save_for_hub(model, snd.SnDImageProcessor(), tmp_path, ModelCardInfo(repo_id="me/tiny"))
    assert {"README.md", "config.json", "model.safetensors", "preprocessor_config.json"} <= set(files)
    readme = (tmp_path / "README.md").read_text()
    has_auto_map = "auto_map" in json.loads((tmp_path / "config.json").read_text())
    # the card tells users whether trust_remote_code works, from what was actually saved
    assert ("pushed without remote code" in readme) == (not has_auto_map)


def test_save_for_hub_takes_push_models_argument_order_and_the_old_one(tmp_path):
    """`save_for_hub(model, processor, directory, card)` as `push_model(model, processor, repo_id, card)`; keywords
    and the earlier positional order `(model, processor, card, directory)` keep working."""
    model = snd.SnDModel(snd.SnDConfig.tiny())
    names = list(inspect.signature(save_for_hub).parameters)
    assert names[:4] == ["model", "image_processor", "directory", "card"]
    assert list(inspect.signature(push_model).parameters)[:4] == ["model", "image_processor", "repo_id", "card"]
    card = ModelCardInfo(repo_id="me/tiny")
    expected = save_for_hub(model, None, tmp_path / "new", card)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert save_for_hub(model, None, card=card, directory=tmp_path / "keywords") == expected
    with pytest.warns(FutureWarning, match="old argument order"):
        assert save_for_hub(model, None, card, tmp_path / "old") == expected
    assert (tmp_path / "old" / "README.md").read_text() == (tmp_path / "new" / "README.md").read_text()


def test_push_refuses_unmerged_lora_before_touching_the_hub():
    peft = pytest.importorskip("peft")
    model = snd.SnDModel(snd.SnDConfig.tiny())
    lora = peft.get_peft_model(model, peft.LoraConfig(r=2, lora_alpha=2, target_modules=["qkv", "proj"]))

    class NoNetwork:
        def __getattr__(self, name):
            raise AssertionError(f"HfApi.{name} must not be called")

    with pytest.raises(ValueError, match="merge_and_unload"):
        push_model(lora, None, "me/lora", api=NoNetwork())


def test_push_refuses_card_for_another_repo():
    model = snd.SnDModel(snd.SnDConfig.tiny())

    class NoNetwork:
        def __getattr__(self, name):
            raise AssertionError(f"HfApi.{name} must not be called")

    with pytest.raises(ValueError, match="card is for"):
        push_model(model, None, "me/a", ModelCardInfo(repo_id="me/b"), api=NoNetwork())
