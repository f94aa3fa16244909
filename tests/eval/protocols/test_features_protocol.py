"""FeatureExtractor switches of the snd protocol: pre-norm tokens, Probe3D zero padding, normalisation."""

import pytest
import torch

from snd import SnDConfig, SnDModel
from snd.eval.features import FeatureExtractor


def _tiny(patch_size=14, registers=0):
    torch.manual_seed(0)
    config = SnDConfig.from_preset("tiny", patch_size=patch_size, image_size=4 * patch_size,
                                   num_register_tokens=registers)
    return SnDModel(config).eval()


def _capture(model):
    """Hooks recording the backbone's input and the last block's output."""
    seen = {}
    model.register_forward_pre_hook(lambda module, args, kwargs: seen.__setitem__("input", kwargs["pixel_values"]),
                                    with_kwargs=True)
    model.encoder.layer[-1].register_forward_hook(  # a block may return (hidden_states, attentions)
        lambda module, args, output: seen.__setitem__("last_block", output[0] if isinstance(output, tuple) else output))
    return seen


@pytest.mark.parametrize("registers", [0, 4])
def test_prenorm_features_equal_last_block_output(registers):
    model = _tiny(registers=registers)
    seen = _capture(model)
    images = torch.rand(2, 3, 28, 42)
    features = FeatureExtractor(model, final_norm=False)(images)
    tokens = seen["last_block"]  # [B, 1 + R + h * w, C] before the final LayerNorm
    expected = tokens[:, 1 + registers:].transpose(1, 2).reshape(2, 32, 2, 3)
    torch.testing.assert_close(features.patches, expected)
    torch.testing.assert_close(features.cls, tokens[:, 0])
    # The default (after the final norm) is unchanged and differs from the pre-norm tokens.
    normed = FeatureExtractor(model)(images)
    torch.testing.assert_close(normed.patches, model(pixel_values=seen["input"]).patch_features)
    assert not torch.allclose(normed.patches, features.patches, atol=1e-3)


def _probe3d_pad(x, patch):
    """Probe3D center_padding, restated: pad = patch - size % patch per side, once either side needs it."""
    h, w = x.shape[-2:]
    if h % patch == 0 and w % patch == 0:
        return x
    ph, pw = patch - h % patch, patch - w % patch
    out = torch.zeros(*x.shape[:-2], h + ph, w + pw)
    out[..., ph // 2 : ph // 2 + h, pw // 2 : pw // 2 + w] = x
    return out


@pytest.mark.parametrize("size,padded", [((30, 40), (42, 42)), ((28, 30), (42, 42)), ((28, 42), (28, 42)),
                                         ((31, 33), (42, 42))])
def test_zero_padding_matches_probe3d(size, padded):
    model = _tiny()
    seen = _capture(model)
    images = torch.rand(1, 3, *size)
    extractor = FeatureExtractor(model, pad=True, final_norm=False)
    assert extractor.input_size(*size) == padded
    features = extractor(images)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    expected = _probe3d_pad((images - mean) / std, 14)
    assert tuple(seen["input"].shape[-2:]) == padded
    torch.testing.assert_close(seen["input"], expected)
    assert features.patches.shape[-2:] == (padded[0] // 14, padded[1] // 14)


def test_padding_of_nyu_and_scannet_frames():
    extractor = FeatureExtractor(_tiny(), pad=True)
    assert extractor.input_size(480, 640) == (490, 644)  # 35 x 46 patches
    assert extractor.padding(480, 640) == (2, 2, 5, 5)
    assert extractor.input_size(480, 480) == (490, 490)
    # resizing (the default) gives the other grid
    assert FeatureExtractor(_tiny()).input_size(480, 640) == (476, 644)


def test_patch_size_comes_from_the_model():
    model = _tiny(patch_size=16)
    seen = _capture(model)
    extractor = FeatureExtractor(model, pad=True)
    assert extractor.input_size(40, 44) == (48, 48)
    assert extractor.input_size(40, 48) == (48, 64)  # Probe3D's whole-patch quirk, at patch 16
    features = extractor(torch.rand(1, 3, 40, 44))
    assert features.patches.shape[-2:] == (3, 3)
    assert seen["input"][..., :4, :].abs().max() == 0  # 8 rows of padding: 4 on top


def test_half_normalisation():
    model = _tiny()
    seen = _capture(model)
    images = torch.rand(1, 3, 28, 28)
    FeatureExtractor(model, image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5), pad=True)(images)
    torch.testing.assert_close(seen["input"], images * 2 - 1)


def test_prenorm_needs_hidden_states():
    class NoHidden(torch.nn.Module):
        config = SnDConfig.from_preset("tiny")

        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def forward(self, pixel_values, output_hidden_states=False):
            return type("Out", (), {"hidden_states": None, "last_hidden_state": torch.zeros(1, 5, 32)})()

    with pytest.raises(ValueError, match="hidden_states"):
        FeatureExtractor(NoHidden(), final_norm=False)(torch.rand(1, 3, 28, 28))


def test_prenorm_features_of_transformers_dinov2():
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    model = Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                     image_size=56, patch_size=14)).eval()
    captured = {}
    model.encoder.layer[-1].register_forward_hook(lambda m, a, out: captured.__setitem__("x", out[0] if isinstance(out, tuple) else out))
    features = FeatureExtractor(model, final_norm=False, pad=True)(torch.rand(1, 3, 30, 40))
    tokens = captured["x"]  # [1, 1 + 3 * 3, 32]
    torch.testing.assert_close(features.patches, tokens[:, 1:].transpose(1, 2).reshape(1, 32, 3, 3))
    torch.testing.assert_close(features.cls, tokens[:, 0])
