"""Depth protocol pieces against restatements: SigLoss (unbiased), GradientLoss as called (zero),
flip averaging, the open valid interval and eval crop, FiT3D centre padding of the features."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from snd.eval.features import IMAGENET_MEAN, IMAGENET_STD
from snd.eval.probes import DepthBinsHead
from snd.eval.protocols import depth as depth_protocol
from snd.eval.protocols.common import FrozenFeatures
from snd.eval.protocols.data import DEPTH_DATA
from snd.eval.protocols.sliding import center_padding

from .fixtures import tiny_backbone


def test_sig_loss_uses_unbiased_variance_and_warm_up():
    prediction = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    target = torch.tensor([[1.5, 0.0], [2.0, 5.0]])  # one invalid pixel
    g = np.log(np.array([1.0, 3.0, 4.0]) + 1e-3) - np.log(np.array([1.5, 2.0, 5.0]) + 1e-3)
    unbiased = ((g - g.mean()) ** 2).sum() / (len(g) - 1)
    expected = np.sqrt(unbiased + 0.15 * g.mean() ** 2)
    assert depth_protocol.official_sig_loss(prediction, target, warm_up=False).item() == pytest.approx(expected, rel=1e-5)
    biased = np.sqrt(((g - g.mean()) ** 2).mean() + 0.15 * g.mean() ** 2)
    assert depth_protocol.official_sig_loss(prediction, target, warm_up=False, unbiased=False).item() == pytest.approx(
        biased, rel=1e-5)
    assert depth_protocol.official_sig_loss(prediction, target, warm_up=True).item() == pytest.approx(
        np.sqrt(0.15 * g.mean() ** 2), rel=1e-5)


def _gradient_loss_hw(pred, gt, eps=1e-3):
    """The multi-scale log-gradient loss on one [H, W] map, written with loops."""
    total = 0.0
    for step in (1, 2, 4, 6):
        p, t = pred[::step, ::step], gt[::step, ::step]
        mask = t > 0
        d = np.where(mask, np.log(p + eps) - np.log(t + eps), 0.0)
        s = 0.0
        for y in range(p.shape[0]):
            for x in range(p.shape[1]):
                if y + 2 < p.shape[0] and mask[y, x] and mask[y + 2, x]:
                    s += abs(d[y, x] - d[y + 2, x])
                if x + 2 < p.shape[1] and mask[y, x] and mask[y, x + 2]:
                    s += abs(d[y, x] - d[y, x + 2])
        total += s / mask.sum()
    return total


def test_gradient_loss_is_zero_as_the_official_depther_calls_it():
    rng = np.random.default_rng(0)
    pred = torch.from_numpy(rng.uniform(0.5, 5, (2, 1, 12, 14)))
    gt = torch.from_numpy(rng.uniform(0.5, 5, (2, 1, 12, 14)))
    assert depth_protocol.official_gradient_loss(pred, gt).item() == 0.0  # [B=2, 1, H, W]: empty slices
    # on one [H, W] map it is the real loss
    single = depth_protocol.official_gradient_loss(pred[0, 0], gt[0, 0]).item()
    assert single == pytest.approx(_gradient_loss_hw(pred[0, 0].numpy(), gt[0, 0].numpy()), rel=1e-9)
    assert single > 0
    # with a batch of 4 the "vertical" term compares images 0/2 and 1/3: no longer zero
    four = torch.from_numpy(rng.uniform(0.5, 5, (4, 1, 12, 14)))
    assert depth_protocol.official_gradient_loss(four, gt.repeat(2, 1, 1, 1)).item() > 0


def test_flip_averaging_restated():
    features = FrozenFeatures(tiny_backbone(), final_norm=False, device=torch.device("cpu"))
    torch.manual_seed(1)
    head = DepthBinsHead(32, max_depth=10.0)
    image = torch.rand(1, 3, 30, 44)
    averaged = depth_protocol.predict_depth(head, features, image, flip=True, min_depth=1e-3, max_depth=10.0)
    patches, cls = features(image)
    plain = head(patches, cls, (30, 44))
    patches_f, cls_f = features(image.flip(-1))
    flipped = head(patches_f, cls_f, (30, 44)).flip(-1)
    assert torch.allclose(averaged, (plain + flipped) / 2, atol=1e-6)
    assert not torch.allclose(plain, flipped, atol=1e-4)  # the flip pass changes something


def test_evaluation_target_open_interval_and_crop():
    spec = DEPTH_DATA["nyuv2"]
    gt = torch.full((480, 640), 5.0)
    gt[100, 100], gt[101, 100], gt[102, 100] = 1e-3, 10.0, 9.999
    target = depth_protocol.evaluation_target(gt, spec)
    assert target[100, 100] == 0 and target[101, 100] == 0 and target[102, 100] == pytest.approx(9.999)
    assert target[44, 300] == 0 and target[45, 300] == 5.0 and target[470, 600] == 5.0 and target[471, 600] == 0
    assert target[300, 40] == 0 and target[300, 601] == 0
    spec_pp = DEPTH_DATA["scannetpp"]
    assert depth_protocol.evaluation_target(torch.full((100, 150), 3.0), spec_pp).shape == (584, 876)


def test_center_padding_values():
    assert center_padding(480, 640, 14) == (2, 2, 5, 5)  # 490 x 644, 35 x 46 patches
    assert center_padding(416, 544, 14) == (1, 1, 2, 2)
    assert center_padding(512, 512, 14) == (3, 3, 3, 3)
    assert center_padding(448, 640, 14) == (2, 2, 0, 0)  # a multiple gets nothing (FiT3D, unlike Probe3D)
    assert center_padding(480, 640, 16) == (0, 0, 0, 0)  # patch 16 (DINOv3)


def test_frozen_features_are_prenorm_tokens_of_the_zero_padded_image():
    model = tiny_backbone()
    features = FrozenFeatures(model, final_norm=False, device=torch.device("cpu"))
    image = torch.rand(2, 3, 20, 30)
    patches, cls = features(image)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    padded = F.pad((image - mean) / std, (6, 6, 4, 4))  # 28 x 42: zeros after normalising, centred
    with torch.no_grad():
        hidden = model(pixel_values=padded, output_hidden_states=True).hidden_states[-1]  # before the final norm
    assert patches.shape == (2, 32, 2, 3)
    assert torch.allclose(patches, hidden[:, 1:].transpose(1, 2).reshape(2, 32, 2, 3), atol=1e-5)
    assert torch.allclose(cls, hidden[:, 0], atol=1e-5)
    normed, _ = FrozenFeatures(model, final_norm=True, device=torch.device("cpu"))(image)
    assert not torch.allclose(normed, patches, atol=1e-3)
