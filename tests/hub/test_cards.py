"""Model cards: rendered from hub_cards/, parsed back by huggingface_hub, model-index = published numbers."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard

import snd
from snd.hub import ModelCardInfo, ProbeResult, find_template, render_model_card
from snd.hub.official import OFFICIAL_CHECKPOINTS, PUBLISHED_RESULTS, official_card

REPO_ROOT = Path(__file__).resolve().parents[2]


def _metadata(card: ModelCard) -> dict:
    text = str(card)
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_template_comes_from_hub_cards():
    assert find_template().resolve() == (REPO_ROOT / "hub_cards" / "snd_backbone.md").resolve()


def test_published_numbers_become_model_index():
    # The numbers of METHOD.md's table (ViT-S, SnD column), written here independently of snd.hub.official.
    expected_vit_s = {
        ("depth-estimation", "scannetpp", "rmse"): 0.3299,
        ("depth-estimation", "scannet", "rmse"): 0.2555,
        ("depth-estimation", "nyu_depth_v2", "rmse"): 0.4912,
        ("surface-normal-estimation", "nyu_depth_v2", "angular_rmse"): 28.93,
        ("image-segmentation", "scannetpp", "mean_iou"): 31.78,
        ("image-segmentation", "scannet", "mean_iou"): 56.01,
        ("image-segmentation", "nyu_depth_v2", "mean_iou"): 67.50,
    }
    checkpoint = next(c for c in OFFICIAL_CHECKPOINTS if c.repo_name == "dinov2-s")
    info = official_card(checkpoint, "snd/dinov2-s", "david-shavin/SnD", "a" * 40, "b" * 64, {"original@518x518": 1e-6},
                         "snd")
    card = render_model_card(info, snd.SnDConfig.from_preset("dinov2-s"))

    # huggingface_hub's own parser (what the Hub and `ModelCard.load` use) reads the same results back
    parsed = ModelCard(str(card)).data
    got = {(r.task_type, r.dataset_type, r.metric_type): r.metric_value for r in parsed.eval_results}
    assert got == expected_vit_s
    assert parsed.model_name == "dinov2-s"
    assert parsed.base_model == "facebook/dinov2-small"
    assert parsed.library_name == "transformers" and parsed.pipeline_tag == "image-feature-extraction"
    meta = _metadata(card)
    assert meta["model-index"][0]["results"][0]["source"]["url"] == "https://arxiv.org/abs/2602.06032"
    text = str(card)
    assert "depth, surface normals and semantic segmentation" in text
    assert 'AutoModel.from_pretrained("snd/dinov2-s")' in text
    assert "| hidden size | 384 |" in text and "| layers | 12 |" in text
    assert "`dinov2_small_snd.pth`" in text and "a" * 40 in text and "b" * 64 in text


@pytest.mark.parametrize("checkpoint", OFFICIAL_CHECKPOINTS, ids=lambda c: c.repo_name)
def test_every_official_card_renders_with_its_variant(checkpoint):
    repo_id = f"my-org/{checkpoint.repo_name}"
    info = official_card(checkpoint, repo_id, "david-shavin/SnD", "c" * 40, "d" * 64, {}, "my-org")
    card = render_model_card(info, snd.SnDConfig.from_preset(checkpoint.preset))
    text = str(card)
    results = PUBLISHED_RESULTS[checkpoint.repo_name]
    meta = _metadata(card)
    if results:
        assert len(ModelCard(text).data.eval_results) == len(results)
    else:
        assert "model-index" not in meta and "## Results" not in text
    if checkpoint.variant == "no-blending":
        assert "**without** blending" in text and "multiview correspondence." in text
    else:
        assert "**with** blending" in text
    # the variant table points at the configured organisation
    assert "`my-org/dinov2-b-no-blending`" in text
    assert meta["license"] == "mit"


def test_no_blending_vit_s_carries_the_ablation_numbers():
    values = {(r.task, r.dataset, r.metric): r.value for r in PUBLISHED_RESULTS["dinov2-s-no-blending"]}
    assert values == {("segmentation", "scannetpp", "mean_iou"): 30.99, ("depth", "scannetpp", "rmse"): 0.3435}


def test_custom_run_card_without_results():
    info = ModelCardInfo(repo_id="me/my-snd", blend_alpha=1.0, provenance={"steps": "2"}, base_model=None)
    assert info.variant == "no-blending"
    card = render_model_card(info, snd.SnDConfig.tiny())
    meta = _metadata(card)
    assert "model-index" not in meta and "base_model" not in meta
    assert "- **steps:** 2" in str(card)
    assert "(alpha = 1)" in str(card)
    blended = render_model_card(ModelCardInfo(repo_id="me/x", blend_alpha=0.3))
    assert "(alpha = 0.3)" in str(blended)
    unknown = render_model_card(ModelCardInfo(repo_id="me/x"))
    assert "a custom SnD run" in str(unknown)


def test_bad_card_inputs_are_refused():
    with pytest.raises(ValueError, match="repo_id"):
        ModelCardInfo(repo_id="no-namespace")
    with pytest.raises(ValueError, match="contradicts"):
        ModelCardInfo(repo_id="a/b", variant="blending", blend_alpha=1.0)
    with pytest.raises(ValueError, match="variant"):
        ModelCardInfo(repo_id="a/b", variant="sometimes")
    with pytest.raises(ValueError, match="dataset"):
        ProbeResult("depth", "kitti-ish", "rmse", 0.1)
    with pytest.raises(ValueError, match="finite"):
        ProbeResult("depth", "nyuv2", "rmse", float("nan"))


def test_template_with_unknown_variable_fails_loudly(tmp_path):
    template = tmp_path / "broken.md"
    template.write_text("---\n{{ card_data }}\n---\n# {{ title }} {{ not_a_field }}\n")
    with pytest.raises(Exception, match="not_a_field"):
        render_model_card(ModelCardInfo(repo_id="a/b"), template=template)


@pytest.mark.parametrize("model_type", ["dinov3_vit", "dinov2_with_registers"])
def test_card_of_a_student_in_its_own_transformers_class(model_type):
    """A distilled DINOv3 / DINOv2-with-registers keeps its class: the card's snippet must not use SnD's API."""
    from transformers import DINOv3ViTConfig, Dinov2WithRegistersConfig

    config = (DINOv3ViTConfig if model_type == "dinov3_vit" else Dinov2WithRegistersConfig)(num_register_tokens=4)
    config.architectures = ["DINOv3ViTModel" if model_type == "dinov3_vit" else "Dinov2WithRegistersModel"]
    text = str(render_model_card(ModelCardInfo(repo_id="me/student", blend_alpha=0.5), config))
    assert "patch_features" not in text and "import snd" not in text
    assert "tokens[:, 5:]" in text and "4 register tokens" in text  # CLS + 4 registers skipped
    assert f"(H/{config.patch_size})" in text and config.architectures[0] in text
    family = "dinov3" if model_type == "dinov3_vit" else "dinov2"
    assert family in _metadata(ModelCard(text))["tags"]
    assert "dinov3" not in _metadata(render_model_card(ModelCardInfo(repo_id="me/x"), snd.SnDConfig.tiny()))["tags"]


def test_distilled_weights_carry_their_base_models_licence():
    from snd.hub.cards import weights_license

    assert weights_license(None) == "apache-2.0"  # a random init: this package's own weights
    assert weights_license("nano-2d") == "apache-2.0"
    assert weights_license("/data/dinov2_small_snd.pth") == "mit"  # the SnD authors' release
    assert weights_license("facebook/dinov2-small") == "apache-2.0"
    assert weights_license("/ckpt/dinov3_vits16_pretrain.pth") == "other"  # Meta's DINOv3 License
    assert weights_license("someone/other-vit") == "other"


def test_a_distillation_card_names_its_bases_licence_and_claims_nothing_unmeasured(tmp_path):
    from snd.distill.config import load_config
    from snd.distill.trainer import card_info

    info = card_info(load_config("tiny_synthetic"), "me/tiny-run", tmp_path)
    assert info.license == "apache-2.0" and info.results == []
    card = str(render_model_card(info))
    assert "license: apache-2.0" in card
    assert "with better depth" not in card and "The paper reports better depth" in card
