"""FeatureExtractor on every backbone snd.backbones supports: patch-16 grids, register tokens skipped,
pre-norm tokens, resize to the backbone's own patch multiple."""

import pytest
import torch
from torch.nn import functional as F

from snd.backbones import random_backbone
from snd.eval import FeatureExtractor


@pytest.mark.parametrize("preset,patch,prefix", [("dinov3-tiny", 16, 5), ("dinov2reg-tiny", 14, 5), ("dinov2-tiny", 14, 1)])
def test_extractor_grid_prefix_and_norm(preset, patch, prefix):
    model = random_backbone(preset).eval()
    extractor = FeatureExtractor(model)
    assert extractor.patch_size == patch and extractor.num_prefix_tokens == prefix
    images = torch.rand(2, 3, 50, 70)
    height, width = extractor.input_size(50, 70)
    assert (height, width) == (round(50 / patch) * patch, round(70 / patch) * patch)
    features = extractor(images)
    assert features.patches.shape == (2, 32, height // patch, width // patch)
    # the same by hand: resize, ImageNet-normalise, run, drop CLS + registers, reshape row-major
    resized = F.interpolate(images, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    pixels = (resized - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        out = model(pixel_values=pixels, output_hidden_states=True)
    grid = (height // patch, width // patch)
    expected = out.last_hidden_state[:, prefix:].transpose(1, 2).reshape(2, 32, *grid)
    torch.testing.assert_close(features.patches, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(features.cls, out.last_hidden_state[:, 0], rtol=1e-5, atol=1e-5)
    raw = FeatureExtractor(model, final_norm=False)(images)
    torch.testing.assert_close(raw.patches, out.hidden_states[-1][:, prefix:].transpose(1, 2).reshape(2, 32, *grid), rtol=1e-5, atol=1e-5)


def test_wrong_patch_size_is_refused():
    with pytest.raises(ValueError, match="patch_size=14 but the dinov3_vit backbone has 16"):
        FeatureExtractor(random_backbone("dinov3-tiny"), patch_size=14)


def test_probe3d_padding_on_dinov3_feeds_zeros_and_skips_registers():
    model = random_backbone("dinov3-tiny").eval()
    seen = {}
    model.register_forward_pre_hook(lambda module, args, kwargs: seen.__setitem__("input", kwargs["pixel_values"]), with_kwargs=True)
    extractor = FeatureExtractor(model, pad=True, final_norm=False)
    assert extractor.input_size(480, 640) == (480, 640)  # multiples of 16: no padding
    assert extractor.padding(40, 44) == (2, 2, 4, 4)  # 8 rows, 4 columns of padding (Probe3D split)
    images = torch.rand(1, 3, 40, 44)
    features = extractor(images)
    padded = seen["input"]
    assert padded.shape[-2:] == (48, 48)
    assert padded[..., :4, :].abs().max() == 0 and padded[..., -4:, :].abs().max() == 0
    assert padded[..., :, :2].abs().max() == 0 and padded[..., :, -2:].abs().max() == 0
    with torch.no_grad():
        out = model(pixel_values=padded, output_hidden_states=True)
    torch.testing.assert_close(features.patches, out.hidden_states[-1][:, 5:].transpose(1, 2).reshape(1, 32, 3, 3))
