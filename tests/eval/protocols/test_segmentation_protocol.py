"""Segmentation protocol pieces: sliding windows, mmseg cross-entropy, mmseg mIoU, SnD's head."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from snd.eval.protocols import segmentation
from snd.eval.protocols.sliding import slide_inference, window_boxes
from snd.metrics import segmentation_metrics


def test_window_boxes_of_a_nyu_frame_at_test_size():
    # 480 x 640 resized to 512 x 683: one row, two windows, the last pushed back inside
    assert window_boxes(512, 683, (512, 512), (341, 341)) == [(0, 512, 0, 512), (0, 512, 171, 683)]
    boxes = window_boxes(700, 1100, (512, 512), (341, 341))
    covered = np.zeros((700, 1100), dtype=int)
    for y1, y2, x1, x2 in boxes:
        assert y2 - y1 == 512 and x2 - x1 == 512
        covered[y1:y2, x1:x2] += 1
    assert covered.min() >= 1


def test_sliding_equals_one_pass_when_the_window_covers_the_image():
    image = torch.rand(1, 3, 40, 50)

    def predict(crop):  # depends on the whole crop (its mean): only equal to one pass for a single window
        return (crop - crop.mean())[:, :2] * 3

    assert torch.allclose(slide_inference(predict, image, 2, crop=(64, 64), stride=(32, 32)), predict(image))
    # windows smaller than the image: a pointwise predictor is still reproduced exactly (the average of copies)
    pointwise = lambda crop: crop[:, :2] * 3  # noqa: E731
    assert torch.allclose(slide_inference(pointwise, image, 2, crop=(16, 16), stride=(10, 10)), pointwise(image))
    # and the whole-crop predictor now differs, so the windows are really used
    assert not torch.allclose(slide_inference(predict, image, 2, crop=(16, 16), stride=(10, 10)), predict(image))


def test_mmseg_cross_entropy_averages_over_all_pixels():
    logits = torch.randn(2, 4, 3, 3)
    labels = torch.randint(0, 4, (2, 3, 3))
    labels[0, 0, :] = 255
    per_pixel = -F.log_softmax(logits, dim=1).gather(1, labels.clamp(max=3)[:, None])[:, 0]
    expected = per_pixel[labels != 255].sum() / labels.numel()
    assert segmentation.mmseg_cross_entropy(logits, labels).item() == pytest.approx(expected.item(), rel=1e-6)
    torch_mean = F.cross_entropy(logits, labels, ignore_index=255).item()  # mean over labelled pixels only
    assert segmentation.mmseg_cross_entropy(logits, labels).item() < torch_mean


def test_miou_from_confusion_matches_the_metric():
    rng = np.random.default_rng(0)
    predictions = rng.integers(0, 5, (3, 10, 12))
    references = rng.integers(0, 5, (3, 10, 12))
    references[0, :2] = 255
    matrix = sum(segmentation.confusion(p, r, 5) for p, r in zip(predictions, references))
    ours = segmentation.miou_from_confusion(matrix)
    reference = segmentation_metrics(predictions, references, num_classes=5, aggregation="pixel")
    assert ours["mean_iou"] == pytest.approx(reference["mean_iou"], abs=1e-9)
    assert ours["pixel_accuracy"] == pytest.approx(reference["pixel_accuracy"], abs=1e-9)


def test_head_has_no_batchnorm():
    torch.manual_seed(0)
    head = segmentation.LinearSegmentationHead(384, 13)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in head.modules())
    with_bn = segmentation.LinearSegmentationHead(8, 3, batch_norm=True)  # FiT3D's own head, as a switch
    assert isinstance(with_bn.norm, torch.nn.BatchNorm2d)


def test_test_pipeline_restated():
    from snd.eval.protocols.common import FrozenFeatures

    from .fixtures import tiny_backbone

    features = FrozenFeatures(tiny_backbone(), final_norm=True, device=torch.device("cpu"))
    torch.manual_seed(0)
    head = segmentation.LinearSegmentationHead(32, 5, init_std=1.0)
    image = torch.rand(1, 3, 48, 64)
    probabilities = segmentation.predict_logits(head, features, image, segmentation.SegmentationProtocol(), 5)
    # restated: keep-ratio resize to fit (2048, 512) -> 512 x 683 (8-bit), two 512 windows at x 0 and 171,
    # each window's logits bilinearly resized to the window, averaged, resized to 48 x 64, softmax
    resized = F.interpolate((image * 255).round() / 255, size=(512, 683), mode="bilinear", align_corners=False)
    resized = (resized * 255).round().clamp(0, 255) / 255
    total, count = torch.zeros(1, 5, 512, 683), torch.zeros(1, 1, 512, 683)
    with torch.no_grad():
        for x1 in (0, 171):
            crop = resized[:, :, :, x1:x1 + 512]
            logits = F.interpolate(head(features(crop)[0]), size=(512, 512), mode="bilinear", align_corners=False)
            total[:, :, :, x1:x1 + 512] += logits
            count[:, :, :, x1:x1 + 512] += 1
    expected = F.interpolate(total / count, size=(48, 64), mode="bilinear", align_corners=False).softmax(dim=1)
    assert probabilities.shape == (1, 5, 48, 64)
    assert torch.allclose(probabilities, expected, atol=1e-5)


def test_head_keeps_torch_default_init_as_evaluation1():
    # evaluation1 builds the segmentor (create_segmentor -> build_segmentor -> train_segmentor) and never
    # calls init_weights(), so conv_seg keeps nn.Conv2d's default init, not the declared Normal(std=0.01).
    assert segmentation.SegmentationProtocol().init_std is None
    torch.manual_seed(3)
    reference = torch.nn.Conv2d(384, 13, kernel_size=1)  # what mmseg's BNHead builds, never re-initialised
    torch.manual_seed(3)
    head = segmentation.LinearSegmentationHead(384, 13)
    assert torch.equal(head.conv_seg.weight, reference.weight) and torch.equal(head.conv_seg.bias, reference.bias)
    bound = 1 / 384 ** 0.5
    assert head.conv_seg.weight.abs().max() <= bound and head.conv_seg.bias.abs().max() <= bound
    assert abs(head.conv_seg.weight.std().item() - bound / 3 ** 0.5) < 2e-3  # ~0.0295, not 0.01
    # the declared init_cfg, on request
    declared = segmentation.LinearSegmentationHead(384, 13, init_std=0.01)
    assert torch.all(declared.conv_seg.bias == 0) and abs(declared.conv_seg.weight.std().item() - 0.01) < 1e-3
