"""Probes must learn what is linearly present in the features: oracle features encode the target."""

import math

import pytest
import torch
import torch.nn.functional as F

from snd.eval import FeatureBatch, ProbeTask, evaluate_probe, train_probe
from snd.metrics import normal_metrics
from snd.eval.probes import (
    DEPTH_PROBE,
    NORMALS_PROBE,
    SEGMENTATION_PROBE,
    ProbeConfig,
    angular_loss,
    gradient_loss,
    learning_rate_factor,
    sig_loss,
)


class _Dense(torch.utils.data.Dataset):
    name, min_depth, max_depth, nyu_crop, class_names = "toy", 1e-3, 10.0, False, None

    def __init__(self, items, num_classes=None):
        self.items, self.num_classes = items, num_classes

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


def _blocky(values, size=16):
    """[N, C, 4, 4] per-patch values -> [N, C, size, size] piecewise-constant maps."""
    return F.interpolate(values, size=(size, size), mode="nearest")


def test_sig_and_gradient_losses_closed_form():
    target = torch.rand(2, 8, 8) + 0.5
    valid = torch.ones_like(target, dtype=torch.bool)
    scaled = target * 2.0
    # g = log(2 t + eps) - log(t + eps) ~ log 2: variance ~0, loss ~ sqrt(0.15) log 2.
    assert sig_loss(scaled, target, valid, eps=0.0) == pytest.approx(math.sqrt(0.15) * math.log(2), rel=1e-4)
    assert gradient_loss(scaled, target, valid, eps=0.0) == pytest.approx(0.0, abs=1e-5)
    assert gradient_loss(target.flip(-1), target, valid) > 0.01


def test_angular_loss_known_angle():
    target = torch.zeros(1, 3, 2, 2)
    target[:, 2] = 1
    prediction = torch.zeros(1, 3, 2, 2)
    prediction[:, 0] = 1
    prediction[:, 2] = 1  # 45 degrees everywhere
    assert angular_loss(prediction, target, torch.ones(1, 2, 2, dtype=torch.bool)) == pytest.approx(math.pi / 4, rel=1e-4)


def test_learning_rate_schedules():
    config = ProbeConfig(epochs=1, batch_size=1, lr=1.0, weight_decay=0, warmup_fraction=0.1, schedule="cosine")
    assert learning_rate_factor(0, 100, config) == pytest.approx(0.1)
    assert learning_rate_factor(9, 100, config) == pytest.approx(1.0)
    assert learning_rate_factor(99, 100, config) < 0.01
    poly = ProbeConfig(epochs=1, batch_size=1, lr=1.0, weight_decay=0, warmup_fraction=0.0, schedule="poly")
    assert learning_rate_factor(50, 100, poly) == pytest.approx(0.5)


def test_depth_probe_learns_depth_from_oracle_features():
    torch.manual_seed(0)
    depth_patches = torch.rand(24, 1, 4, 4) * 4 + 1  # metres per patch
    # Features: depth, 1/depth and noise channels; the head must find the linear map.
    patches = torch.cat([depth_patches / 5, 1 / depth_patches, 0.01 * torch.randn(24, 6, 4, 4)], dim=1)
    depths = _blocky(depth_patches)[:, 0]
    items = [{"image": torch.zeros(3, 16, 16), "depth": d} for d in depths]
    dataset = _Dense(items)
    features = FeatureBatch(patches, torch.zeros(24, 8))
    # The bins parametrisation (relu + 0.1, normalised over 256 bins) needs large logits, so a short
    # run needs a large learning rate; FiT3D trains 38,400 steps at 1e-4 instead.
    task = ProbeTask("depth", DEPTH_PROBE.with_overrides(epochs=60, batch_size=8, lr=0.3, loss_warmup_steps=0))
    head = train_probe(task, features, dataset, progress=False)
    metrics, kept = evaluate_probe(head, features, dataset, "depth", keep=2, progress=False)
    constant = (depths - depths.mean()).pow(2).mean().sqrt().item()
    assert metrics["rmse"] < 0.6 * constant
    assert len(kept) == 2 and kept[0][1].shape == (16, 16)


def test_normals_probe_learns_normals_from_oracle_features():
    torch.manual_seed(0)
    normal_patches = F.normalize(torch.randn(24, 3, 4, 4) + torch.tensor([0, 0, 2.0])[None, :, None, None], dim=1)
    normals = _blocky(normal_patches)
    items = [{"image": torch.zeros(3, 16, 16), "normals": n, "normal_valid": torch.ones(16, 16, dtype=torch.bool)}
             for n in normals]
    features = FeatureBatch(torch.cat([normal_patches, torch.zeros(24, 2, 4, 4)], 1), torch.zeros(24, 5))
    task = ProbeTask("normals", NORMALS_PROBE.with_overrides(epochs=100, lr=5e-2))
    head = train_probe(task, features, _Dense(items), progress=False)
    metrics, _ = evaluate_probe(head, features, _Dense(items), "normals", progress=False)
    # The best a 1x1 probe can do is the bicubically upsampled true patch normals (patch borders blur).
    ideal = F.normalize(F.interpolate(normal_patches, size=(16, 16), mode="bicubic", align_corners=False), dim=1)
    best = normal_metrics(ideal.numpy(), normals.numpy())
    assert metrics["median"] < best["median"] + 2.0
    assert metrics["within_30"] > best["within_30"] - 5.0
    assert metrics["median"] < 20.0


def test_segmentation_probe_learns_classes_from_oracle_features():
    torch.manual_seed(0)
    labels = torch.randint(0, 3, (24, 4, 4))
    one_hot = F.one_hot(labels, 3).permute(0, 3, 1, 2).float()
    semantics = _blocky(labels[:, None].float())[:, 0].long()
    semantics[:, 0, 0] = 255  # ignored pixel
    items = [{"image": torch.zeros(3, 16, 16), "semantics": s} for s in semantics]
    features = FeatureBatch(one_hot + 0.05 * torch.randn_like(one_hot), torch.zeros(24, 3))
    task = ProbeTask("segmentation", SEGMENTATION_PROBE.with_overrides(epochs=30, batch_size=8, lr=5e-2))
    head = train_probe(task, features, _Dense(items, num_classes=3), progress=False)
    metrics, _ = evaluate_probe(head, features, _Dense(items, num_classes=3), "segmentation", progress=False)
    assert metrics["mean_iou"] > 80.0
    assert metrics["pixel_accuracy"] > 90.0


def test_random_features_do_not_fake_success():
    # Negative control for the segmentation probe: labels unrelated to the features.
    torch.manual_seed(1)
    labels = torch.randint(0, 3, (16, 16, 16))
    items = [{"image": torch.zeros(3, 16, 16), "semantics": s} for s in labels]
    features = FeatureBatch(torch.randn(16, 4, 4, 4), torch.zeros(16, 4))
    train, test = _Dense(items[:8], 3), _Dense(items[8:], 3)
    head = train_probe(ProbeTask("segmentation", SEGMENTATION_PROBE.with_overrides(epochs=5, batch_size=4)),
                       features.select(slice(0, 8)), train, progress=False)
    metrics, _ = evaluate_probe(head, features.select(slice(8, 16)), test, "segmentation", progress=False)
    assert metrics["mean_iou"] < 40.0


def test_constant_baseline_matches_hand_computation():
    from snd.eval.runner import constant_baseline

    train = _Dense([{"image": torch.zeros(3, 1, 2), "depth": torch.tensor([[1.0, 3.0]]),
                     "semantics": torch.tensor([[1, 1]])}], num_classes=2)
    test = _Dense([{"image": torch.zeros(3, 1, 2), "depth": torch.tensor([[2.0, 4.0]]),
                    "semantics": torch.tensor([[0, 1]])}], num_classes=2)
    # mean training depth 2 -> errors 0, 2 -> rmse sqrt(2)
    assert constant_baseline("depth", train, test)["rmse"] == pytest.approx(math.sqrt(2))
    # majority class 1 -> pixel accuracy 50 %, IoU class0 0, class1 1/2 -> mIoU 25 %
    segmentation = constant_baseline("segmentation", train, test)
    assert segmentation["pixel_accuracy"] == pytest.approx(50.0)
    assert segmentation["mean_iou"] == pytest.approx(25.0)
