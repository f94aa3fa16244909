import pytest
import torch
from transformers import Dinov2Backbone, Dinov2Config, Dinov2Model

import snd
from snd.eval import FeatureExtractor, extract_features


def _tiny_dinov2_config(**overrides):
    return Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        image_size=28, patch_size=14, **overrides)


def test_snd_model_features_match_its_patch_features():
    model = snd.SnDModel(snd.SnDConfig.tiny()).eval()
    images = torch.rand(2, 3, 56, 42)
    features = FeatureExtractor(model)(images)
    expected = model(snd.normalize_images(images))
    torch.testing.assert_close(features.patches, expected.patch_features)
    torch.testing.assert_close(features.cls, expected.last_hidden_state[:, 0])


def test_transformers_dinov2_tokens_reshape_like_its_backbone():
    # Independent reference: Dinov2Backbone reshapes the normalised last layer into maps itself.
    config = _tiny_dinov2_config()
    model = Dinov2Model(config).eval()
    backbone = Dinov2Backbone(_tiny_dinov2_config(out_features=["stage2"])).eval()
    missing, _ = backbone.load_state_dict(model.state_dict(), strict=False)
    assert not missing
    images = torch.rand(2, 3, 42, 56)
    features = FeatureExtractor(model)(images)
    with torch.no_grad():
        reference = backbone(snd.normalize_images(images)).feature_maps[0]
    assert features.patches.shape == (2, 32, 3, 4)
    torch.testing.assert_close(features.patches, reference, rtol=1e-4, atol=1e-5)


def test_register_tokens_are_dropped():
    model = snd.SnDModel(snd.SnDConfig.tiny(num_register_tokens=4)).eval()
    images = torch.rand(1, 3, 28, 28)

    class TokensOnly(torch.nn.Module):  # hides patch_features to exercise the token path
        def __init__(self, inner):
            super().__init__()
            self.inner, self.config = inner, inner.config

        def forward(self, pixel_values):
            out = self.inner(pixel_values)
            return type("Out", (), {"last_hidden_state": out.last_hidden_state})()

    torch.testing.assert_close(FeatureExtractor(TokensOnly(model))(images).patches, FeatureExtractor(model)(images).patches)


def test_resize_rounds_to_patch_multiple_and_errors():
    model = snd.SnDModel(snd.SnDConfig.tiny()).eval()
    extractor = FeatureExtractor(model)
    assert extractor.input_size(64, 50) == (70, 56)
    assert extractor(torch.rand(1, 3, 64, 50)).patches.shape[-2:] == (5, 4)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        FeatureExtractor(model, resize="none")(torch.rand(1, 3, 30, 28))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        extractor(torch.rand(3, 28, 28))


def test_feature_cache_round_trip(tmp_path):
    model = snd.SnDModel(snd.SnDConfig.tiny()).eval()
    images = torch.rand(3, 3, 28, 28)
    path = tmp_path / "cache" / "features.safetensors"
    first = extract_features(FeatureExtractor(model), images, batch_size=2, cache_path=path, progress=False)
    assert path.is_file()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1.0)  # a changed model must not matter: the cache is read back
    second = extract_features(FeatureExtractor(model), images, batch_size=2, cache_path=path, progress=False)
    torch.testing.assert_close(first.patches, second.patches)


def test_load_backbone_from_folder_and_torchhub_checkpoint(tmp_path):
    from snd.convert import snd_to_torchhub
    from snd.eval import load_backbone

    model = snd.SnDModel(snd.SnDConfig.tiny()).eval()
    images = torch.rand(1, 3, 28, 42)
    expected = FeatureExtractor(model)(images).patches
    model.save_pretrained(tmp_path / "folder")
    torch.save(snd_to_torchhub(model.state_dict()), tmp_path / "weights.pth")
    for source in (tmp_path / "folder", tmp_path / "weights.pth"):
        loaded = load_backbone(str(source))
        torch.testing.assert_close(FeatureExtractor(loaded)(images).patches, expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_backbone(str(tmp_path))
