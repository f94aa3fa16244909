"""Training augmentations of the authors' depth and segmentation probes, run on images every iteration.

Each function restates one mmseg/mmcv pipeline step of ``evaluation1/`` (the step's name is in
its docstring) on torch tensors: ``image`` ``[3, H, W]`` float RGB in [0, 1], ``depth`` ``[H, W]``
metres, ``labels`` ``[H, W]`` int64. Randomness comes from a ``numpy.random.Generator`` passed in
(seeded by the caller), drawn in the same order as the original step draws it.

Exactness: geometry (crop boxes, rotation centre and direction, flip, rescale sizes) and the
random parameter ranges are the original's. Pixel resampling uses torch (``grid_sample`` /
``interpolate``) instead of OpenCV, so interpolated values can differ from OpenCV's fixed-point
arithmetic in the last few bits; the HSV round trip of ``PhotoMetricDistortion`` is computed in
float with OpenCV's 8-bit ranges (hue 0..180, saturation 0..255) rather than by ``cv2.cvtColor``.
Images are quantised to 8 bits where the original holds ``uint8`` arrays.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

# NYU "Eigen" training crop of the authors' depth pipeline (``NYUCrop``): rows 45:472, cols 43:608.
NYU_TRAIN_CROP = (slice(45, 472), slice(43, 608))


def quantize_uint8(image: torch.Tensor) -> torch.Tensor:
    """Round to the nearest of 256 levels, as storing an OpenCV result in ``uint8`` does."""
    return (image * 255.0).round().clamp(0, 255) / 255.0


def nyu_crop(image: torch.Tensor, depth: torch.Tensor | None = None):
    """``NYUCrop(depth=True)``: the fixed crop rows 45:472, cols 43:608 of a 480 x 640 frame."""
    if tuple(image.shape[-2:]) != (480, 640):
        raise ValueError(f"NYUCrop expects a 480 x 640 NYUv2 frame, got {tuple(image.shape[-2:])}")
    image = image[(...,) + NYU_TRAIN_CROP]
    return image, (None if depth is None else depth[NYU_TRAIN_CROP])


def rotate(tensor: torch.Tensor, degrees: float, mode: str = "bilinear", fill: float = 0.0) -> torch.Tensor:
    """``mmcv.imrotate(img, angle=degrees)``: rotate about ``((W - 1) / 2, (H - 1) / 2)``.

    Positive ``degrees`` turn the picture clockwise on screen (mmcv's convention; OpenCV's
    ``getRotationMatrix2D(center, -degrees, 1)`` then ``warpAffine``). The output keeps the input
    size; pixels that come from outside the input are ``fill``. ``tensor`` is ``[C, H, W]`` or ``[H, W]``.
    """
    squeeze = tensor.ndim == 2
    x = tensor[None, None] if squeeze else tensor[None]
    height, width = x.shape[-2:]
    cx, cy = (width - 1) * 0.5, (height - 1) * 0.5
    a = math.radians(-degrees)  # OpenCV angle (counter-clockwise positive)
    cos, sin = math.cos(a), math.sin(a)
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64),
                            indexing="ij")
    # OpenCV forward map: dst = R (src - c) + c with R = [[cos, sin], [-sin, cos]]; sample src = R^T (dst - c) + c.
    dx, dy = xs - cx, ys - cy
    src_x = cos * dx - sin * dy + cx
    src_y = sin * dx + cos * dy + cy
    grid = torch.stack([2 * src_x / max(width - 1, 1) - 1, 2 * src_y / max(height - 1, 1) - 1], dim=-1)
    grid = grid[None].to(torch.float32)  # [1, H, W, 2]
    values = x.to(torch.float32) - fill
    out = F.grid_sample(values, grid, mode=mode, padding_mode="zeros", align_corners=True) + fill
    out = out.to(tensor.dtype)
    return out[0, 0] if squeeze else out[0]


def hflip(tensor: torch.Tensor) -> torch.Tensor:
    """Horizontal flip (``mmcv.imflip``) of ``[..., H, W]``."""
    return tensor.flip(-1)


def crop_box(height: int, width: int, crop: tuple[int, int], rng: np.random.Generator) -> tuple[int, int, int, int]:
    """``RandomCrop.get_crop_bbox``: ``(y1, y2, x1, x2)`` with offsets uniform in ``[0, margin]``."""
    margin_h, margin_w = max(height - crop[0], 0), max(width - crop[1], 0)
    offset_h = int(rng.integers(0, margin_h + 1))
    offset_w = int(rng.integers(0, margin_w + 1))
    return offset_h, offset_h + crop[0], offset_w, offset_w + crop[1]


def color_aug(image: torch.Tensor, rng: np.random.Generator, prob: float = 0.5, gamma_range=(0.9, 1.1),
              brightness_range=(0.75, 1.25), color_range=(0.9, 1.1)) -> torch.Tensor:
    """Depth ``ColorAug``: with probability ``prob``, ``clip((img ** gamma) * brightness * colour, 0, 255)``.

    As in the original the power is taken on the 0..255 pixel values (not on [0, 1]), so gamma
    1.1 brightens strongly and saturates; the result is not re-quantised.
    """
    if not rng.random() < prob:
        return image
    gamma = rng.uniform(min(gamma_range), max(gamma_range))
    brightness = rng.uniform(min(brightness_range), max(brightness_range))
    colors = rng.uniform(min(color_range), max(color_range), size=3)
    pixels = (image * 255.0) ** gamma * brightness
    pixels = pixels * torch.as_tensor(colors, dtype=image.dtype).view(3, 1, 1)
    return pixels.clamp(0, 255) / 255.0


def depth_train_augment(image: torch.Tensor, depth: torch.Tensor, rng: np.random.Generator, *,
                        nyu_train_crop: bool, crop_size=(416, 544), rotate_prob: float = 0.5,
                        rotate_degrees: float = 2.5, flip_prob: float = 0.5, color_prob: float = 0.5):
    """The authors' depth ``train_pipeline``: [NYUCrop] -> RandomRotate -> RandomFlip -> RandomCrop -> ColorAug.

    Returns ``image [3, h, w]`` in [0, 1] and ``depth [h, w]`` (metres; 0 where rotation padded).
    """
    if nyu_train_crop:
        image, depth = nyu_crop(image, depth)
    do_rotate = rng.random() < rotate_prob
    degrees = rng.uniform(-rotate_degrees, rotate_degrees)  # drawn whether or not it is used (as the original)
    if do_rotate:
        image = quantize_uint8(rotate(image, degrees, mode="bilinear", fill=0.0))  # OpenCV returns uint8
        depth = rotate(depth, degrees, mode="nearest", fill=0.0)
    if rng.random() < flip_prob:
        image, depth = hflip(image), hflip(depth)
    y1, y2, x1, x2 = crop_box(image.shape[-2], image.shape[-1], crop_size, rng)
    image, depth = image[:, y1:y2, x1:x2], depth[y1:y2, x1:x2]
    image = color_aug(image, rng, prob=color_prob)
    return image, depth


# ------------------------------------------------------------------------------ segmentation
def rescale_size(height: int, width: int, scale: tuple[int, int]) -> tuple[int, int]:
    """``mmcv.imrescale`` size: keep the aspect ratio, fit the long side in ``max(scale)`` and the short in ``min(scale)``."""
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def resize_image(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (OpenCV ``INTER_LINEAR``: half-pixel centres, no antialiasing), 8-bit result."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    out = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
    return quantize_uint8(out)


def nearest_indices(source: int, target: int) -> torch.Tensor:
    """Source index of each of ``target`` output pixels for OpenCV's ``INTER_NEAREST`` resize.

    ``floor(x * (1 / (target / source)))`` in double precision, clipped to ``source - 1``
    (OpenCV ``resizeNN``). torch's ``mode="nearest"`` computes the scale in float32 and picks
    another pixel at some sizes (e.g. 340 -> 480, 480 -> 873), hence this restatement.
    """
    inverse = 1.0 / (target / source)
    return torch.tensor([min(math.floor(x * inverse), source - 1) for x in range(target)], dtype=torch.long)


def resize_labels(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of a label map, ``mmcv.imrescale(..., interpolation="nearest")``.

    OpenCV ``INTER_NEAREST`` index rule (:func:`nearest_indices`), not torch's ``mode="nearest"``:
    over 300 seeded draws of the segmentation ``Resize`` of a 480 x 640 frame, torch picks other
    source rows or columns on 82 of the 600 rescaled axes.
    """
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    rows = nearest_indices(labels.shape[-2], size[0])
    cols = nearest_indices(labels.shape[-1], size[1])
    return labels[..., rows, :][..., cols]


def random_rescale(image: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator, img_scale=(2048, 512),
                   ratio_range=(0.5, 2.0)):
    """mmseg ``Resize(img_scale, ratio_range)`` with ``keep_ratio=True``: scale = ``img_scale * ratio``, ratio uniform."""
    ratio = rng.random() * (ratio_range[1] - ratio_range[0]) + ratio_range[0]
    scale = (int(img_scale[0] * ratio), int(img_scale[1] * ratio))
    size = rescale_size(image.shape[-2], image.shape[-1], scale)
    return resize_image(image, size), resize_labels(labels, size)


def segmentation_crop(image: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator, crop_size=(512, 512),
                      cat_max_ratio: float = 0.75, ignore_index: int = 255):
    """mmseg ``RandomCrop(crop_size, cat_max_ratio=0.75)``: up to 10 redraws while one class covers >= 75 %."""
    height, width = labels.shape
    box = crop_box(height, width, crop_size, rng)
    if cat_max_ratio < 1.0:
        for _ in range(10):
            y1, y2, x1, x2 = box
            values, counts = torch.unique(labels[y1:y2, x1:x2], return_counts=True)
            counts = counts[values != ignore_index]
            if len(counts) > 1 and counts.max().item() / counts.sum().item() < cat_max_ratio:
                break
            box = crop_box(height, width, crop_size, rng)
    y1, y2, x1, x2 = box
    return image[:, y1:y2, x1:x2], labels[y1:y2, x1:x2]


def _rgb_to_hsv(image: torch.Tensor) -> torch.Tensor:
    """RGB [0, 1] -> (H in degrees [0, 360), S in [0, 1], V in [0, 1])."""
    r, g, b = image
    value, _ = image.max(dim=0)
    minimum, _ = image.min(dim=0)
    delta = value - minimum
    saturation = torch.where(value > 0, delta / value.clamp_min(1e-12), torch.zeros_like(value))
    safe = delta.clamp_min(1e-12)
    hue = torch.where(value == r, (g - b) / safe, torch.where(value == g, 2 + (b - r) / safe, 4 + (r - g) / safe))
    hue = torch.where(delta > 0, (hue * 60) % 360, torch.zeros_like(hue))
    return torch.stack([hue, saturation, value])


def _hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    hue, saturation, value = hsv
    h = (hue % 360) / 60
    c = value * saturation
    x = c * (1 - (h % 2 - 1).abs())
    zero = torch.zeros_like(c)
    sector = h.floor().long().clamp(0, 5)
    table = [(c, x, zero), (x, c, zero), (zero, c, x), (zero, x, c), (x, zero, c), (c, zero, x)]
    rgb = torch.zeros(3, *hue.shape, dtype=hsv.dtype)
    for index, (rr, gg, bb) in enumerate(table):
        mask = sector == index
        rgb[0][mask], rgb[1][mask], rgb[2][mask] = rr[mask], gg[mask], bb[mask]
    return rgb + (value - c)[None]


def _convert(image: torch.Tensor, alpha: float = 1.0, beta: float = 0.0) -> torch.Tensor:
    """``PhotoMetricDistortion.convert`` on 0..255 values: ``uint8(clip(img * alpha + beta, 0, 255))`` (truncation)."""
    return (image * alpha + beta).clamp(0, 255).floor()


def photometric_distortion(image: torch.Tensor, rng: np.random.Generator, brightness_delta: int = 32,
                           contrast_range=(0.5, 1.5), saturation_range=(0.5, 1.5), hue_delta: int = 18) -> torch.Tensor:
    """mmseg ``PhotoMetricDistortion``: brightness, contrast (first or last), saturation, hue; each with p 0.5."""
    pixels = (image * 255.0).round()

    def contrast(pixels):
        if rng.integers(2):
            return _convert(pixels, alpha=rng.uniform(*contrast_range))
        return pixels

    if rng.integers(2):
        pixels = _convert(pixels, beta=rng.uniform(-brightness_delta, brightness_delta))
    mode = rng.integers(2)
    if mode == 1:
        pixels = contrast(pixels)
    if rng.integers(2):  # saturation, on OpenCV's 8-bit HSV (S in 0..255)
        hsv = _rgb_to_hsv(pixels / 255.0)
        saturation = (hsv[1] * 255.0).round()
        hsv[1] = _convert(saturation, alpha=rng.uniform(*saturation_range)) / 255.0
        pixels = (_hsv_to_rgb(hsv) * 255.0).round().clamp(0, 255)
    if rng.integers(2):  # hue, on OpenCV's 8-bit HSV (H in 0..180)
        hsv = _rgb_to_hsv(pixels / 255.0)
        hue = (hsv[0] / 2).round()
        hsv[0] = ((hue + int(rng.integers(-hue_delta, hue_delta))) % 180) * 2
        pixels = (_hsv_to_rgb(hsv) * 255.0).round().clamp(0, 255)
    if mode == 0:
        pixels = contrast(pixels)
    return pixels / 255.0


def pad_to(image: torch.Tensor, labels: torch.Tensor, size=(512, 512), image_fill=(0.0, 0.0, 0.0),
           label_fill: int = 255):
    """mmseg ``Pad(size)``: pad bottom and right up to ``size``.

    The original pads the *normalised* image with 0; pass ``image_fill`` = the normalisation mean
    (in [0, 1]) to get exactly 0 after the feature extractor normalises.
    """
    height, width = labels.shape
    pad_h, pad_w = max(size[0] - height, 0), max(size[1] - width, 0)
    if pad_h == 0 and pad_w == 0:
        return image, labels
    out = torch.empty(3, height + pad_h, width + pad_w, dtype=image.dtype)
    out[:] = torch.as_tensor(image_fill, dtype=image.dtype).view(3, 1, 1)
    out[:, :height, :width] = image
    out_labels = torch.full((height + pad_h, width + pad_w), label_fill, dtype=labels.dtype)
    out_labels[:height, :width] = labels
    return out, out_labels


def segmentation_train_augment(image: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator, *,
                               img_scale=(2048, 512), ratio_range=(0.5, 2.0), crop_size=(512, 512),
                               cat_max_ratio: float = 0.75, flip_prob: float = 0.5, pad_fill=(0.0, 0.0, 0.0),
                               ignore_index: int = 255):
    """The authors' segmentation ``train_pipeline``: Resize -> RandomCrop -> RandomFlip -> PhotoMetricDistortion -> Pad."""
    image, labels = random_rescale(quantize_uint8(image), labels, rng, img_scale, ratio_range)
    image, labels = segmentation_crop(image, labels, rng, crop_size, cat_max_ratio, ignore_index)
    if rng.random() < flip_prob:
        image, labels = hflip(image), hflip(labels)
    image = photometric_distortion(image, rng)
    return pad_to(image, labels, crop_size, image_fill=pad_fill, label_fill=ignore_index)
