"""Sliding-window inference (mmseg ``EncoderDecoder.slide_inference``) and FiT3D's centre padding."""

from __future__ import annotations

import math
from typing import Callable

import torch


def window_boxes(height: int, width: int, crop=(512, 512), stride=(341, 341)) -> list[tuple[int, int, int, int]]:
    """``(y1, y2, x1, x2)`` of mmseg's windows: a grid of ``stride`` steps, the last window pushed back inside.

    ``grids = max(size - crop + stride - 1, 0) // stride + 1`` per axis; a window larger than the
    image is cut to the image (``y1 = max(y2 - crop, 0)``).
    """
    h_crop, w_crop = crop
    h_stride, w_stride = stride
    h_grids = max(height - h_crop + h_stride - 1, 0) // h_stride + 1
    w_grids = max(width - w_crop + w_stride - 1, 0) // w_stride + 1
    boxes = []
    for h_index in range(h_grids):
        for w_index in range(w_grids):
            y1, x1 = h_index * h_stride, w_index * w_stride
            y2, x2 = min(y1 + h_crop, height), min(x1 + w_crop, width)
            boxes.append((max(y2 - h_crop, 0), y2, max(x2 - w_crop, 0), x2))
    return boxes


def slide_inference(predict: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, num_outputs: int,
                    crop=(512, 512), stride=(341, 341)) -> torch.Tensor:
    """Average of ``predict`` over mmseg's overlapping windows.

    ``predict`` maps a crop ``[B, 3, h, w]`` to ``[B, num_outputs, h, w]`` (logits at crop size);
    the sum of the window outputs is divided by how many windows cover each pixel.
    Returns ``[B, num_outputs, H, W]``.
    """
    batch, _, height, width = image.shape
    total = image.new_zeros((batch, num_outputs, height, width))
    count = image.new_zeros((batch, 1, height, width))
    for y1, y2, x1, x2 in window_boxes(height, width, crop, stride):
        output = predict(image[:, :, y1:y2, x1:x2])
        if tuple(output.shape[-2:]) != (y2 - y1, x2 - x1):
            raise ValueError(f"slide_inference: predict returned {tuple(output.shape)} for a {y2 - y1}x{x2 - x1} crop")
        total[:, :, y1:y2, x1:x2] += output
        count[:, :, y1:y2, x1:x2] += 1
    return total / count


def center_padding(height: int, width: int, multiple: int) -> tuple[int, int, int, int]:
    """FiT3D/SnD ``CenterPadding``: ``(left, right, top, bottom)`` up to ``ceil(size / multiple) * multiple``.

    Each side is padded independently (a side that is already a multiple gets nothing); the
    smaller half goes on the left / top.
    """
    def split(size):
        pad = math.ceil(size / multiple) * multiple - size
        return pad // 2, pad - pad // 2

    left, right = split(width)
    top, bottom = split(height)
    return left, right, top, bottom


def center_pad(images: torch.Tensor, multiple: int, fill=(0.0, 0.0, 0.0)) -> torch.Tensor:
    """Pad ``[B, 3, H, W]`` images with ``fill`` as :func:`center_padding` says.

    The authors pad the *normalised* image with zeros (a forward pre-hook on the backbone);
    padding the [0, 1] image with the normalisation mean gives exactly those zeros after normalising.
    """
    left, right, top, bottom = center_padding(images.shape[-2], images.shape[-1], multiple)
    if not (left or right or top or bottom):
        return images
    batch, channels, height, width = images.shape
    out = images.new_empty((batch, channels, height + top + bottom, width + left + right))
    out[:] = torch.as_tensor(fill, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    out[:, :, top:top + height, left:left + width] = images
    return out
