"""Geometry and parameter ranges of the per-iteration augmentations, against restatements here."""

import colorsys

import numpy as np
import pytest
import torch

from snd.eval.protocols import augment


def test_rotate_90_clockwise_moves_a_known_pixel():
    image = torch.zeros(1, 7, 7)
    image[0, 3, 5] = 1.0  # two pixels right of the centre (3, 3)
    out = augment.rotate(image, 90.0, mode="nearest")  # mmcv: positive = clockwise on screen
    assert out[0, 5, 3] == 1.0  # now two pixels below the centre
    assert out.sum() == 1.0
    bilinear = augment.rotate(image, 90.0, mode="bilinear")
    assert torch.allclose(bilinear, out, atol=1e-5)


def test_rotate_small_angle_keeps_centre_and_follows_opencv_inverse_map():
    rng = np.random.default_rng(0)
    depth = torch.from_numpy(rng.uniform(1, 5, (9, 11)).astype(np.float32))
    degrees = 2.5
    out = augment.rotate(depth, degrees, mode="nearest")
    assert out[4, 5] == depth[4, 5]  # the centre ((W-1)/2, (H-1)/2) = (5, 4) stays
    # OpenCV warpAffine with getRotationMatrix2D(c, -degrees, 1): src = M^-1 dst
    a = np.deg2rad(-degrees)
    forward = np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])
    for y, x in [(0, 0), (8, 10), (2, 7)]:
        sx, sy = np.linalg.solve(forward, np.array([x - 5.0, y - 4.0])) + np.array([5.0, 4.0])
        ix, iy = int(np.floor(sx + 0.5)), int(np.floor(sy + 0.5))
        expected = depth[iy, ix] if 0 <= ix < 11 and 0 <= iy < 9 else 0.0
        assert out[y, x] == pytest.approx(float(expected))


def test_nyu_crop_and_random_crop_boxes():
    image, depth = torch.rand(3, 480, 640), torch.rand(480, 640)
    cropped, cropped_depth = augment.nyu_crop(image, depth)
    assert cropped.shape == (3, 427, 565) and torch.equal(cropped[:, 0, 0], image[:, 45, 43])
    assert torch.equal(cropped_depth[-1, -1], depth[471, 607])
    with pytest.raises(ValueError, match="480 x 640"):
        augment.nyu_crop(torch.rand(3, 10, 10))
    rng = np.random.default_rng(0)
    for _ in range(20):
        y1, y2, x1, x2 = augment.crop_box(427, 565, (416, 544), rng)
        assert 0 <= y1 <= 11 and y2 - y1 == 416 and 0 <= x1 <= 21 and x2 - x1 == 544


def test_color_aug_restated():
    image = torch.rand(3, 5, 6)
    out = augment.color_aug(image, np.random.default_rng(3), prob=1.0)
    rng = np.random.default_rng(3)
    assert rng.random() < 1.0
    gamma, brightness = rng.uniform(0.9, 1.1), rng.uniform(0.75, 1.25)
    colors = rng.uniform(0.9, 1.1, size=3)
    pixels = (image.numpy() * 255.0) ** gamma * brightness * colors[:, None, None]  # power on 0..255 values
    assert np.allclose(out.numpy(), np.clip(pixels, 0, 255) / 255.0, atol=1e-5)
    assert torch.equal(augment.color_aug(image, np.random.default_rng(0), prob=0.0), image)


def test_depth_train_augment_shapes_and_values():
    rng = np.random.default_rng(0)
    image = torch.rand(3, 480, 640)
    depth = torch.full((480, 640), 2.0)
    out_image, out_depth = augment.depth_train_augment(image, depth, rng, nyu_train_crop=True)
    assert out_image.shape == (3, 416, 544) and out_depth.shape == (416, 544)
    assert set(out_depth.unique().tolist()) <= {0.0, 2.0}  # nearest rotation: measured depth or padding 0


def test_rescale_size_is_mmcv_imrescale():
    ratio = 0.75
    scale = (int(2048 * ratio), int(512 * ratio))
    factor = min(max(scale) / 640, min(scale) / 480)
    assert augment.rescale_size(480, 640, scale) == (int(480 * factor + 0.5), int(640 * factor + 0.5))
    assert augment.rescale_size(480, 640, (2048, 512)) == (512, 683)  # the test-time size of a NYU frame


def test_segmentation_augment_pads_with_mean_and_ignore():
    image, labels = torch.rand(3, 48, 64), torch.ones(48, 64, dtype=torch.long)
    mean = (0.485, 0.456, 0.406)
    out, out_labels = augment.pad_to(image, labels, (50, 70), image_fill=mean)
    assert out.shape == (3, 50, 70) and torch.equal(out[:, :48, :64], image)
    assert torch.allclose(out[:, 49, 69], torch.tensor(mean)) and out_labels[49, 69] == 255
    rng = np.random.default_rng(0)
    aug_image, aug_labels = augment.segmentation_train_augment(image, labels, rng, pad_fill=mean)
    assert aug_image.shape == (3, 512, 512) and aug_labels.shape == (512, 512)
    assert set(aug_labels.unique().tolist()) <= {1, 255}


def test_hsv_round_trip_matches_colorsys():
    rgb = torch.rand(3, 4, 5)
    hsv = augment._rgb_to_hsv(rgb)
    for y in range(4):
        for x in range(5):
            h, s, v = colorsys.rgb_to_hsv(*rgb[:, y, x].tolist())
            assert hsv[0, y, x] == pytest.approx(h * 360, abs=1e-3)
            assert hsv[1, y, x] == pytest.approx(s, abs=1e-5) and hsv[2, y, x] == pytest.approx(v, abs=1e-6)
    assert torch.allclose(augment._hsv_to_rgb(hsv), rgb, atol=1e-5)


def test_photometric_distortion_stays_8bit():
    out = augment.photometric_distortion(torch.rand(3, 8, 8), np.random.default_rng(1))
    assert out.min() >= 0 and out.max() <= 1
    assert torch.allclose(out * 255, (out * 255).round(), atol=1e-4)


def test_segmentation_crop_redraws_while_one_class_dominates():
    labels = torch.zeros(60, 60, dtype=torch.long)
    labels[:12, :12] = 1  # only crops near the top-left corner hold a second class
    labels[40:, 40:] = 255  # ignored pixels do not count
    image = torch.rand(3, 60, 60)

    def acceptable(box):
        y1, y2, x1, x2 = box
        values, counts = np.unique(labels[y1:y2, x1:x2].numpy(), return_counts=True)
        counts = counts[values != 255]
        return len(counts) > 1 and counts.max() / counts.sum() < 0.75

    for seed in range(6):
        rng = np.random.default_rng(seed)
        boxes = [augment.crop_box(60, 60, (20, 20), rng) for _ in range(11)]  # the first draw + up to 10 redraws
        expected = next((box for box in boxes[:10] if acceptable(box)), boxes[10])
        out_image, out_labels = augment.segmentation_crop(image, labels, np.random.default_rng(seed), (20, 20))
        y1, y2, x1, x2 = expected
        assert torch.equal(out_labels, labels[y1:y2, x1:x2]) and torch.equal(out_image, image[:, y1:y2, x1:x2])


def _opencv_resize_nn(source: int, target: int) -> list[int]:
    # OpenCV resizeNN (imgproc/src/resize.cpp): ifx = 1. / ((double)dsize / ssize); sx = cvFloor(x * ifx), clipped.
    ifx = 1.0 / (target / source)
    return [min(int(np.floor(x * ifx)), source - 1) for x in range(target)]


def test_label_resize_uses_opencv_nearest_rule_not_torch():
    # 480 -> 873 rows: torch's float32 ``nearest`` picks another source row at 2 of them.
    labels = torch.arange(480)[:, None].repeat(1, 5) * 10 + torch.arange(5)  # every pixel unique
    out = augment.resize_labels(labels, (873, 7))
    rows, cols = _opencv_resize_nn(480, 873), _opencv_resize_nn(5, 7)
    assert torch.equal(out, labels[rows][:, cols])
    torch_nearest = torch.nn.functional.interpolate(labels[None, None].float(), size=(873, 7), mode="nearest")[0, 0]
    assert (torch_nearest.long() != out).any()
    # the segmentation Resize of a 480 x 640 frame: many of the drawn sizes differ from torch
    rng = np.random.default_rng(0)
    differ = 0
    for _ in range(50):
        ratio = rng.random() * 1.5 + 0.5
        h, w = augment.rescale_size(480, 640, (int(2048 * ratio), int(512 * ratio)))
        for source, target in ((480, h), (640, w)):
            assert augment.nearest_indices(source, target).tolist() == _opencv_resize_nn(source, target)
            t = torch.nn.functional.interpolate(torch.arange(source, dtype=torch.float32)[None, None, :, None],
                                                size=(target, 1), mode="nearest")[0, 0, :, 0].long()
            differ += int(t.tolist() != _opencv_resize_nn(source, target))
    assert differ > 0
