"""Frozen dense features from any backbone: SnD/DINOv2 models or any transformers ViT.

The evaluation never fine-tunes the backbone, so features are computed once per image
(:func:`extract_features`) and every probe trains on the cached maps.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class FeatureBatch:
    """Frozen features of a set of images.

    patches: ``[N, C, h, w]`` patch features covering the image (after the backbone's final norm
        unless the extractor was built with ``final_norm=False``).
    cls: ``[N, C]`` class token (zeros for models without one).
    """

    patches: torch.Tensor
    cls: torch.Tensor

    def __len__(self) -> int:
        return self.patches.shape[0]

    def select(self, indices) -> "FeatureBatch":
        return FeatureBatch(self.patches[indices], self.cls[indices])


CHECKPOINT_SUFFIXES = (".pth", ".pt", ".safetensors")


def load_backbone(name_or_path: str, device: str | torch.device = "cpu") -> torch.nn.Module:
    """A backbone from a local folder, a hub repository or an original checkpoint file.

    Folders and hub ids go through transformers' AutoModel: SnD checkpoints (``model_type:
    snd_dinov2``) resolve because ``import snd`` registers them; ``facebook/dinov2-*`` resolve to
    transformers' ``Dinov2Model``. A ``.pth`` / ``.pt`` / ``.safetensors`` file in the original
    torch.hub layout (DINOv2, the SnD authors' ``dinov2_small_snd.pth``) is converted with
    :func:`snd.convert.convert_backbone`, which checks the numbers against the source layout.
    """
    import snd  # noqa: F401  (registers the SnD Auto classes)
    from transformers import AutoModel

    path = Path(name_or_path)
    if path.is_file() and path.suffix in CHECKPOINT_SUFFIXES:
        from snd.convert import convert_backbone

        model, _ = convert_backbone(str(path), format="torchhub")
        return model.to(device).eval()
    if path.exists() and not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} has no config.json: expected a folder saved with save_pretrained()")
    model = AutoModel.from_pretrained(str(name_or_path))
    return model.to(device).eval()


def model_display_name(name_or_path: str) -> str:
    """Short, file-system safe name for reports (folder name or repo name)."""
    text = str(name_or_path).rstrip("/")
    name = Path(text).name if Path(text).exists() else text.replace("/", "__")
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "model"


class FeatureExtractor:
    """Turns images in [0, 1] into dense patch features with a frozen backbone.

    Works with any module whose output has ``patch_features`` ``[B, C, h, w]`` (SnD) or a
    ``last_hidden_state`` ``[B, prefix + h * w, C]`` (transformers ``Dinov2Model``,
    ``Dinov2WithRegistersModel``, ``ViTModel``...): the prefix (CLS plus
    ``config.num_register_tokens``) is dropped and the patch tokens reshaped row-major.

    Args:
        model: the backbone (kept in eval mode, never trained here).
        patch_size: defaults to ``model.config.patch_size``.
        image_mean, image_std: input normalisation; ImageNet statistics by default (DINOv2/SnD).
        resize: ``"round"`` resizes images (bilinear, antialiased) to the nearest multiple of the
            patch size on each side; ``"none"`` requires the input to be a multiple already.
            Ignored when ``pad`` is set.
        final_norm: ``True`` (default) returns tokens after the backbone's final LayerNorm;
            ``False`` returns the last block's output before it (patches and CLS), as Probe3D's
            ``DINO.forward`` and the SnD authors' depth/normals/correspondence probes read them.
            Needs a model that returns ``hidden_states`` when called with ``output_hidden_states=True``.
        pad: zero-pad the normalised image to patch multiples instead of resizing, split as
            Probe3D's ``center_padding``: ``pad = patch - (size % patch)`` per side, ``pad // 2`` on
            top / left and the rest on bottom / right (480 x 640 -> 490 x 644 at patch 14). As in
            Probe3D, once either side needs padding, a side that is already a multiple is padded
            by a whole patch (448 x 640 -> 462 x 644); nothing is padded when both are multiples.
    """

    def __init__(self, model: torch.nn.Module, patch_size: int | None = None, image_mean=IMAGENET_MEAN,
                 image_std=IMAGENET_STD, resize: str = "round", final_norm: bool = True, pad: bool = False):
        config = getattr(model, "config", None)
        self.model = model.eval()
        self.patch_size = int(patch_size or getattr(config, "patch_size", 0) or 0)
        if self.patch_size <= 0:
            raise ValueError("FeatureExtractor: patch_size not given and the model config has none")
        self.num_prefix_tokens = 1 + int(getattr(config, "num_register_tokens", 0) or 0)
        self.mean = torch.tensor(image_mean).view(1, 3, 1, 1)
        self.std = torch.tensor(image_std).view(1, 3, 1, 1)
        if resize not in ("round", "none"):
            raise ValueError(f"FeatureExtractor: resize must be 'round' or 'none', got {resize!r}")
        self.resize = resize
        self.final_norm = bool(final_norm)
        self.pad = bool(pad)

    def padding(self, height: int, width: int) -> tuple[int, int, int, int]:
        """Zero padding ``(left, right, top, bottom)`` that ``pad=True`` adds to a ``height x width`` image."""
        p = self.patch_size
        if height % p == 0 and width % p == 0:
            return 0, 0, 0, 0
        pad_h, pad_w = p - height % p, p - width % p  # a whole patch where the side is a multiple (Probe3D)
        return pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """Backbone input size for an image of ``height x width``."""
        if self.pad:
            left, right, top, bottom = self.padding(height, width)
            return height + top + bottom, width + left + right
        if self.resize == "none":
            if height % self.patch_size or width % self.patch_size:
                raise ValueError(f"image {height}x{width} is not a multiple of the patch size {self.patch_size}")
            return height, width
        p = self.patch_size
        return max(p, round(height / p) * p), max(p, round(width / p) * p)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> FeatureBatch:  # images [B, 3, H, W] in [0, 1]
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"FeatureExtractor expects images [B, 3, H, W], got {tuple(images.shape)}")
        device = next(self.model.parameters()).device
        images = images.to(device=device, dtype=torch.float32)
        height, width = self.input_size(*images.shape[-2:])
        if not self.pad and (height, width) != tuple(images.shape[-2:]):
            images = F.interpolate(images, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
        pixel_values = (images - self.mean.to(device)) / self.std.to(device)
        if self.pad:  # zeros in normalised space, after normalisation (Probe3D pads the normalised tensor)
            pixel_values = F.pad(pixel_values, self.padding(*images.shape[-2:]))  # [B, 3, height, width]
        grid = (height // self.patch_size, width // self.patch_size)
        if self.final_norm:
            output = self.model(pixel_values=pixel_values)
            patches = getattr(output, "patch_features", None)
            tokens = getattr(output, "last_hidden_state", None)
        else:
            output = self.model(pixel_values=pixel_values, output_hidden_states=True)
            hidden_states = getattr(output, "hidden_states", None)
            if not hidden_states:
                raise ValueError(
                    f"{type(self.model).__name__} returned no hidden_states: final_norm=False needs the last "
                    "block's output (before the final LayerNorm)"
                )
            patches, tokens = None, hidden_states[-1]  # [B, prefix + h * w, C], the last block's output
        if patches is None:
            if tokens is None or tokens.ndim != 3:
                raise ValueError(
                    f"{type(self.model).__name__} output has neither patch_features nor a [B, T, C] last_hidden_state"
                )
            patch_tokens = tokens[:, self.num_prefix_tokens :]
            if patch_tokens.shape[1] != grid[0] * grid[1]:
                raise ValueError(
                    f"{type(self.model).__name__}: {patch_tokens.shape[1]} patch tokens after dropping "
                    f"{self.num_prefix_tokens} prefix tokens, expected {grid[0]}x{grid[1]} for a {height}x{width} input"
                )
            patches = patch_tokens.transpose(1, 2).reshape(images.shape[0], -1, *grid)
        cls = tokens[:, 0] if tokens is not None and tokens.ndim == 3 else torch.zeros(patches.shape[:2], device=device)
        return FeatureBatch(patches.float().cpu(), cls.float().cpu())


def extract_features(extractor: FeatureExtractor, images, batch_size: int = 8, description: str = "features",
                     cache_path: str | Path | None = None, progress: bool = True) -> FeatureBatch:
    """Features of every image of ``images`` (a tensor ``[N, 3, H, W]`` or a sequence of ``[3, H, W]``).

    With ``cache_path`` (a ``.safetensors`` file) features are read from it when present, else
    computed and written there (atomically), so repeated evaluations skip the backbone.
    """
    if cache_path is not None and Path(cache_path).is_file():
        from safetensors.torch import load_file

        stored = load_file(str(cache_path))
        if stored["patches"].shape[0] == len(images):
            return FeatureBatch(stored["patches"].float(), stored["cls"].float())
    patches, cls = [], []
    for start in tqdm(range(0, len(images), batch_size), desc=description, leave=False,
                      disable=not progress):
        batch = torch.stack([images[i] for i in range(start, min(start + batch_size, len(images)))])
        features = extractor(batch)
        patches.append(features.patches)
        cls.append(features.cls)
    result = FeatureBatch(torch.cat(patches), torch.cat(cls))
    if cache_path is not None:
        from safetensors.torch import save_file

        cache_path = Path(cache_path)
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        temporary = cache_path.with_suffix(".tmp")
        save_file({"patches": result.patches.contiguous(), "cls": result.cls.contiguous()}, str(temporary))
        temporary.replace(cache_path)
    return result
