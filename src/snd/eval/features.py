"""Frozen dense features from any backbone: SnD/DINOv2 models or any transformers ViT.

The evaluation never fine-tunes the backbone, so features are computed once per image
(:func:`extract_features`) and every probe trains on the cached maps.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from ..progress import progress_bar as tqdm

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
    transformers' ``Dinov2Model``; DINOv3 folders to ``DINOv3ViTModel``. A ``.pth`` / ``.pt`` /
    ``.safetensors`` file in the original torch.hub layout (DINOv2, the SnD authors'
    ``dinov2_small_snd.pth``) is converted with :func:`snd.convert.convert_backbone`, one whose name
    contains ``dinov3`` with :func:`snd.convert.dinov3.convert_dinov3_hub`; both check the numbers
    against the source layout.
    """
    import snd  # noqa: F401  (registers the SnD Auto classes)
    from snd.assets import resolve
    from snd.errors import SourceNotFoundError, load_from_hub, require_hub_id
    from transformers import AutoModel

    name_or_path = resolve(name_or_path)  # a shipped model's bare name ("nano-2d") -> its package folder
    path = Path(name_or_path)
    if path.is_file() and path.suffix in CHECKPOINT_SUFFIXES:
        if "dinov3" in path.name.lower():  # original DINOv3 ViT weights -> transformers DINOv3ViTModel
            from snd.convert.dinov3 import convert_dinov3_hub

            model, _ = convert_dinov3_hub(str(path))
            return model.to(device).eval()
        from snd.convert import convert_backbone

        model, _ = convert_backbone(str(path), format="torchhub")
        return model.to(device).eval()
    if path.exists() and not (path / "config.json").is_file():
        raise SourceNotFoundError(f"{path} has no config.json: expected a folder saved with save_pretrained()")
    if path.exists():
        model = AutoModel.from_pretrained(str(name_or_path))
    else:  # a Hub id: a missing path, or a repository the Hub cannot provide, is one line
        require_hub_id(str(name_or_path), "model")
        model = load_from_hub(str(name_or_path), "model", lambda: AutoModel.from_pretrained(str(name_or_path)))
    return model.to(device).eval()


def model_display_name(name_or_path: str) -> str:
    """Short, file-system safe name for reports (folder name or repo name)."""
    text = str(name_or_path).rstrip("/")
    name = Path(text).name if Path(text).exists() else text.replace("/", "__")
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "model"


class FeatureExtractor:
    """Turns images in [0, 1] into dense patch features with a frozen backbone.

    Works with any backbone :mod:`snd.backbones` supports: ``SnDModel``, transformers ``Dinov2Model``,
    ``Dinov2WithRegistersModel``, ``DINOv3ViTModel`` (patch 16, 4 registers) and other ViTs whose config
    has ``patch_size`` and whose forward ends in one final LayerNorm: the prefix tokens (CLS plus
    registers) are dropped and the patch tokens reshaped row-major (:func:`snd.backbones.backbone_tokens`).

    Args:
        model: the backbone (kept in eval mode, never trained here).
        patch_size: defaults to the backbone's (``snd.backbones.backbone_spec``).
        image_mean, image_std: input normalisation; ImageNet statistics by default (DINOv2/SnD/DINOv3).
        resize: ``"round"`` resizes images (bilinear, antialiased) to the nearest multiple of the
            patch size on each side; ``"none"`` requires the input to be a multiple already.
            Ignored when ``pad`` is set.
        final_norm: ``True`` (default) returns tokens after the backbone's final norm;
            ``False`` returns the last block's output before it (patches and CLS), as Probe3D's
            ``DINO.forward`` and the SnD authors' depth/normals/correspondence probes read them.
            Read from the final norm's input (``snd.backbones``), for every supported architecture.
        pad: zero-pad the normalised image to patch multiples instead of resizing, split as
            Probe3D's ``center_padding``: ``pad = patch - (size % patch)`` per side, ``pad // 2`` on
            top / left and the rest on bottom / right (480 x 640 -> 490 x 644 at patch 14; unchanged at
            16). As in Probe3D, once either side needs padding, a side that is already a multiple is padded
            by a whole patch (448 x 640 -> 462 x 644); nothing is padded when both are multiples.
    """

    def __init__(self, model: torch.nn.Module, patch_size: int | None = None, image_mean=IMAGENET_MEAN,
                 image_std=IMAGENET_STD, resize: str = "round", final_norm: bool = True, pad: bool = False):
        from ..backbones import backbone_spec

        self.model = model.eval()
        self.spec = backbone_spec(model)
        self.patch_size = int(patch_size or self.spec.patch_size)
        if self.patch_size != self.spec.patch_size:
            raise ValueError(f"FeatureExtractor: patch_size={patch_size} but the {self.spec.model_type} backbone has {self.spec.patch_size}")
        self.num_prefix_tokens = self.spec.num_prefix_tokens
        self.final_norm = bool(final_norm)
        self.pad = bool(pad)
        self.mean = torch.tensor(image_mean).view(1, 3, 1, 1)
        self.std = torch.tensor(image_std).view(1, 3, 1, 1)
        if resize not in ("round", "none"):
            raise ValueError(f"FeatureExtractor: resize must be 'round' or 'none', got {resize!r}")
        self.resize = resize

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
        from ..backbones import backbone_tokens

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
        tokens = backbone_tokens(self.model, pixel_values, final_norm=self.final_norm, spec=self.spec)
        return FeatureBatch(tokens.patches.float().cpu(), tokens.cls.float().cpu())


def extract_features(extractor: FeatureExtractor, images, batch_size: int = 8, description: str = "features",
                     cache_path: str | Path | None = None, progress: bool = True) -> FeatureBatch:
    """Features of every image of ``images`` (a tensor ``[N, 3, H, W]`` or a sequence of ``[3, H, W]``).

    With ``cache_path`` (a ``.safetensors`` file) features are read from it when present, else
    computed and written there (atomically), so repeated evaluations skip the backbone.
    """
    if cache_path is not None and Path(cache_path).is_file():
        import warnings

        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            stored = load_file(str(cache_path))
            if stored["patches"].shape[0] == len(images):
                return FeatureBatch(stored["patches"].float(), stored["cls"].float())
        except (SafetensorError, OSError, KeyError) as error:  # a torn cache: recompute and rewrite it
            warnings.warn(f"{cache_path}: unreadable feature cache ({type(error).__name__}: {error}); recomputing", stacklevel=2)
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
