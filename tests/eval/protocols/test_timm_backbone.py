"""``--protocol snd`` depth and segmentation compute what evaluation1's timm backbone computes.

``evaluation1/utils/model_utils.py`` builds ``timm.create_model("vit_small_patch14_dinov2.lvd142m",
dynamic_img_size=True)`` (timm==0.9.10), loads the SnD ``.pth`` with ``strict=False`` and patches in its own
``get_intermediate_layers``. The reference below restates that source (timm 0.9.10 ``resample_abs_pos_embed``,
``VisionTransformer._pos_embed`` / ``_intermediate_layers``, ``Block``, ``Attention``, ``LayerScale``, ``Mlp``,
and the patched ``get_intermediate_layers``) on the torch.hub-layout weights of a tiny random SnD model.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from snd.convert.layouts import snd_to_torchhub
from snd.eval.features import IMAGENET_MEAN, IMAGENET_STD
from snd.eval.protocols.common import FrozenFeatures
from snd.eval.protocols.depth import DepthProtocol
from snd.eval.protocols.segmentation import SegmentationProtocol
from snd.models.snd_dinov2 import SnDConfig, SnDModel
from snd.models.snd_dinov2.modeling_snd_dinov2 import interpolate_position_embeddings


def timm_resample_abs_pos_embed(posemb, new_size, num_prefix_tokens=1, interpolation="bicubic", antialias=True):
    """timm 0.9.10 ``layers/pos_embed.py`` (old_size=None: square)."""
    num_pos_tokens = posemb.shape[1]
    num_new_tokens = new_size[0] * new_size[1] + num_prefix_tokens
    if num_new_tokens == num_pos_tokens and new_size[0] == new_size[1]:
        return posemb
    hw = int(math.sqrt(num_pos_tokens - num_prefix_tokens))
    old_size = hw, hw
    posemb_prefix, posemb = posemb[:, :num_prefix_tokens], posemb[:, num_prefix_tokens:]
    embed_dim = posemb.shape[-1]
    orig_dtype = posemb.dtype
    posemb = posemb.float()
    posemb = posemb.reshape(1, old_size[0], old_size[1], -1).permute(0, 3, 1, 2)
    posemb = F.interpolate(posemb, size=new_size, mode=interpolation, antialias=antialias)
    posemb = posemb.permute(0, 2, 3, 1).reshape(1, -1, embed_dim)
    posemb = posemb.to(orig_dtype)
    return torch.cat([posemb_prefix, posemb], dim=1)


def timm_get_intermediate_layers(sd, x, n, num_heads, norm=True, eps=1e-6):
    """The patched ``get_intermediate_layers(reshape=True, return_class_token=True)`` over timm's forward."""
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    # PatchEmbed (dynamic_img_size: NHWC), _pos_embed (dynamic: resample to (H, W)), cls concatenated first
    tokens = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=14).permute(0, 2, 3, 1)
    batch, height, width, channels = tokens.shape
    pos_embed = timm_resample_abs_pos_embed(sd["pos_embed"], (height, width))
    tokens = torch.cat([sd["cls_token"].expand(batch, -1, -1), tokens.reshape(batch, -1, channels)], dim=1) + pos_embed
    outputs = []
    for i in range(depth):
        p = lambda name: sd[f"blocks.{i}.{name}"]  # noqa: E731
        h = F.layer_norm(tokens, (channels,), p("norm1.weight"), p("norm1.bias"), eps)
        qkv = F.linear(h, p("attn.qkv.weight"), p("attn.qkv.bias")).reshape(batch, -1, 3, num_heads, channels // num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attn = (q * (channels // num_heads) ** -0.5) @ k.transpose(-2, -1)
        h = (attn.softmax(-1) @ v).transpose(1, 2).reshape(batch, -1, channels)
        tokens = tokens + F.linear(h, p("attn.proj.weight"), p("attn.proj.bias")) * p("ls1.gamma")
        h = F.layer_norm(tokens, (channels,), p("norm2.weight"), p("norm2.bias"), eps)
        h = F.linear(F.gelu(F.linear(h, p("mlp.fc1.weight"), p("mlp.fc1.bias"))), p("mlp.fc2.weight"), p("mlp.fc2.bias"))
        tokens = tokens + h * p("ls2.gamma")
        if i in n:
            outputs.append(tokens)
    if norm:
        outputs = [F.layer_norm(out, (channels,), sd["norm.weight"], sd["norm.bias"], eps) for out in outputs]
    cls = [out[:, 0] for out in outputs]
    patches = [out[:, 1:].reshape(batch, height, width, -1).permute(0, 3, 1, 2) for out in outputs]
    return tuple(zip(patches, cls))


def _tiny_snd(seed=0):
    torch.manual_seed(seed)
    model = SnDModel(SnDConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2)).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lambda1" in name:
                parameter.uniform_(0.05, 0.5)
            if name.endswith(("position_embeddings", "cls_token")):
                parameter.normal_(0.0, 0.5)
    return model


@pytest.mark.parametrize("grid", [(30, 39), (35, 46), (37, 37)])
def test_timm_position_interpolation_is_resample_abs_pos_embed(grid):
    posemb = torch.randn(1, 1 + 37 * 37, 8)
    expected = timm_resample_abs_pos_embed(posemb, grid)[:, 1:]
    assert torch.equal(interpolate_position_embeddings(posemb[:, 1:], *grid, mode="timm"), expected)
    if grid != (37, 37):  # DINOv2's scale_factor (n + 0.1) / N without antialiasing is another resampling
        assert not torch.allclose(interpolate_position_embeddings(posemb[:, 1:], *grid, mode="dinov2"), expected, atol=1e-3)


@pytest.mark.parametrize("final_norm", [False, True])  # depth: no final norm; segmentation: with it
def test_protocol_features_equal_the_timm_backbone(final_norm):
    model = _tiny_snd()
    sd = snd_to_torchhub(model.state_dict())
    images = torch.rand(1, 3, 30 * 14, 39 * 14, generator=torch.Generator().manual_seed(1))
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    (ref_patches, ref_cls), = timm_get_intermediate_layers(sd, (images - mean) / std, n=[1], num_heads=2,
                                                           norm=final_norm)
    features = FrozenFeatures(model, final_norm=final_norm, device=torch.device("cpu"), position_interpolation="timm")
    patches, cls = features(images)
    torch.testing.assert_close(patches, ref_patches, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(cls, ref_cls, atol=2e-5, rtol=1e-4)
    assert model.config.position_interpolation == "dinov2"  # restored after the call
    assert features.settings()["position_interpolation"] == "timm"
    dinov2_patches, _ = FrozenFeatures(model, final_norm=final_norm, device=torch.device("cpu"))(images)
    assert (dinov2_patches - ref_patches).norm() / ref_patches.norm() > 1e-2


def test_snd_protocol_depth_and_segmentation_select_timm():
    assert DepthProtocol().position_interpolation == "timm"
    assert SegmentationProtocol().position_interpolation == "timm"
    with pytest.raises(ValueError, match="position_interpolation"):
        SnDConfig(position_interpolation="bilinear")
    assert SnDConfig(position_interpolation="timm").position_interpolation == "timm"
