"""Reading images, label maps and depth maps with clear errors, and resizing them consistently."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..safe_io import require_regular_file, to_rgb
from .errors import SceneDataError


def open_image(source: str | Path | bytes, *, scene: str | None, field: str, file: str | None = None) -> Image.Image:
    """Open and fully decode an image from a path or encoded bytes, raising :class:`SceneDataError`."""
    name = file if file is not None else (None if isinstance(source, (bytes, bytearray)) else str(source))
    if not isinstance(source, (bytes, bytearray)):
        if not Path(source).exists():
            raise SceneDataError("file does not exist", scene=scene, file=name, field=field)
        try:  # a FIFO would block Image.open forever, a device read without end
            require_regular_file(source, what="an image file", error=ValueError)
        except ValueError as error:
            raise SceneDataError(str(error).split(": ", 1)[-1], scene=scene, file=name, field=field) from None
    in_memory = isinstance(source, (bytes, bytearray))
    image_source = io.BytesIO(source) if in_memory else source
    try:
        image = Image.open(image_source)
        image.load()
    except Image.DecompressionBombError as error:
        raise SceneDataError(f"refused as a possible decompression bomb ({error})", scene=scene, file=name, field=field) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as error:
        detail = str(error).replace(f"{image_source!r}", "the encoded bytes") if in_memory else str(error)
        raise SceneDataError(f"cannot decode image ({detail})", scene=scene, file=name, field=field) from error
    return image


def image_to_tensor(image: Image.Image, size: tuple[int, int] | None, *, resample=Image.BICUBIC) -> torch.Tensor:
    """RGB ``[3, H, W]`` float32 in [0, 1], resized to ``size = (height, width)`` when given (PIL bicubic by default)."""
    image = to_rgb(image, name=f"image {getattr(image, 'filename', '') or ''}".strip(), error=ValueError)  # 16-bit scaled, not clipped
    if size is not None and image.size != (size[1], size[0]):
        image = image.resize((size[1], size[0]), resample=resample)
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


def labels_to_tensor(image: Image.Image, size: tuple[int, int] | None, *, scene: str | None, field: str, file: str | None) -> torch.Tensor:
    """Single-channel integer label map (8/16/32-bit PNG) -> ``[H, W]`` int64, resized with nearest."""
    if image.mode not in ("L", "I;16", "I;16B", "I;16L", "I", "P"):
        raise SceneDataError(
            f"expected a single-channel integer label image (8/16-bit PNG), got mode {image.mode!r}",
            scene=scene, file=file, field=field,
        )
    if size is not None and image.size != (size[1], size[0]):
        image = image.resize((size[1], size[0]), resample=Image.NEAREST)
    array = np.asarray(image)
    return torch.from_numpy(array.astype(np.int64))


def resize_crop_intrinsics(intrinsics: torch.Tensor, in_size: tuple[int, int], scaled_size: tuple[int, int], out_size: tuple[int, int]) -> torch.Tensor:
    """Normalised intrinsics after scaling an image ``in_size -> scaled_size`` and centre-cropping to ``out_size``.

    Sizes are ``(height, width)``. Scaling alone leaves normalised intrinsics unchanged; the crop
    rescales them by ``scaled / out`` and shifts the principal point by the cropped margin.
    """
    (scaled_h, scaled_w), (out_h, out_w) = scaled_size, out_size
    left, top = (scaled_w - out_w) // 2, (scaled_h - out_h) // 2
    result = intrinsics.clone()
    result[..., 0, 0] = intrinsics[..., 0, 0] * scaled_w / out_w
    result[..., 1, 1] = intrinsics[..., 1, 1] * scaled_h / out_h
    result[..., 0, 2] = (intrinsics[..., 0, 2] * scaled_w - left) / out_w
    result[..., 1, 2] = (intrinsics[..., 1, 2] * scaled_h - top) / out_h
    return result


def resize_and_center_crop(image: Image.Image, out_size: tuple[int, int], resample=Image.BICUBIC):
    """Scale so the image covers ``out_size = (height, width)``, then centre-crop (pixelSplat's crop shim).

    Returns ``(image, scaled_size)``; pass ``scaled_size`` to :func:`resize_crop_intrinsics`.
    """
    out_h, out_w = out_size
    in_w, in_h = image.size
    scale = max(out_h / in_h, out_w / in_w)
    scaled_w, scaled_h = max(out_w, round(in_w * scale)), max(out_h, round(in_h * scale))
    if (scaled_w, scaled_h) != (in_w, in_h):
        image = image.resize((scaled_w, scaled_h), resample=resample)
    left, top = (scaled_w - out_w) // 2, (scaled_h - out_h) // 2
    return image.crop((left, top, left + out_w, top + out_h)), (scaled_h, scaled_w)
