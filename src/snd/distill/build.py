"""Build the parts of a run from its config: student backbone (+ LoRA), heads, lifter, datasets."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from ..errors import SourceNotFoundError, load_from_hub, require_hub_id
from .config import DataConfig, DistillConfig, LifterConfig, ModelConfig
from .heads import DINOHead


# --------------------------------------------------------------------------------------------
# Student


def load_backbone(config: ModelConfig):
    """The student backbone: random from ``preset`` or loaded from ``pretrained``.

    ``pretrained`` may be a ``save_pretrained`` directory or Hub id of an SnD model, a plain transformers
    DINOv2 directory/Hub id (``facebook/dinov2-small``: converted on the fly to ``SnDModel``, the release's
    architecture the paper presets train, unless ``dinov2_as_snd`` is False), a torch.hub-layout file
    (``dinov2_vits14_pretrain.pth``, the SnD ``*_snd.pth`` releases: ``SnDModel``; an original DINOv3
    ``dinov3_vit*16*.pth``: ``DINOv3ViTModel``), or any other transformers ViT directory/Hub id (DINOv3,
    ``Dinov2WithRegistersModel`` such as ``facebook/dinov2-with-registers-small``, ...), which is kept and saved in
    its own class.
    """
    from ..backbones import random_backbone, without_rope_augmentation

    if config.pretrained is None:
        model = random_backbone(config.preset, config.config_overrides)
    else:
        model = _load_pretrained(config)
    return model if config.rope_augmentation else without_rope_augmentation(model)


def read_model_type(config_file: Path) -> str | None:
    """``model_type`` of a model folder's ``config.json``: a regular UTF-8 JSON object whose ``model_type`` is a string;
    anything else raises :class:`~snd.convert.ConversionError` naming the file and field."""
    from ..convert import ConversionError
    from ..safe_io import load_json

    values = load_json(config_file, what="a transformers config.json (a JSON object)", error=ConversionError, max_bytes=16 * 2**20)
    if not isinstance(values, dict):
        raise ConversionError(f"{config_file}: holds a JSON {type(values).__name__}; expected a JSON object of config fields")
    model_type = values.get("model_type")
    if model_type is not None and not isinstance(model_type, str):
        raise ConversionError(f"{config_file}: field 'model_type' is {type(model_type).__name__} {model_type!r}; expected a string such as 'dinov2'")
    return model_type


_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
_FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")
_INTEGER_BUFFERS = ("num_batches_tracked", "position_ids", "_index", "_indices")


def _check_model_type(config_file: Path, model_type: str | None) -> None:
    """An unknown ``model_type`` is named (transformers would ask for remote code or fail with its own message)."""
    from transformers import CONFIG_MAPPING

    from ..convert import ConversionError

    if model_type is not None and model_type not in CONFIG_MAPPING:
        raise ConversionError(f"{config_file}: field 'model_type' is {model_type!r}, not a model type snd or transformers knows "
                              "(expected e.g. 'snd_dinov2', 'dinov2', 'dinov3_vit')")


def _check_weights_file(folder: Path) -> Path | None:
    """The folder's ``model.safetensors``: a regular file whose header reads and whose tensors are floating point; a
    folder with no weight file at all is refused naming ``model.safetensors``. Returns it (None for other layouts)."""
    from ..convert import ConversionError
    from ..safe_io import require_regular_file

    weights = folder / "model.safetensors"
    if not weights.exists() and not weights.is_symlink():
        if any((folder / name).exists() for name in _WEIGHT_FILES[1:]):
            return None
        raise ConversionError(f"{weights}: missing; expected the weights next to config.json (a save_pretrained folder)")
    what = "the model's weights (a safetensors file)"
    try:
        require_regular_file(weights, what=what, error=ConversionError)
    except FileNotFoundError as error:
        raise ConversionError(str(error)) from None
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights), framework="pt") as handle:
            dtypes = {key: handle.get_slice(key).get_dtype() for key in handle.keys()}
    except (SafetensorError, OSError) as error:
        raise ConversionError(f"{weights}: corrupt or truncated safetensors file ({error}); expected {what}") from None
    # integer buffers are legitimate (a BatchNorm's num_batches_tracked, position ids); integer weights are not
    odd = {key: dtype for key, dtype in dtypes.items() if dtype not in _FLOAT_DTYPES and not key.endswith(_INTEGER_BUFFERS)}
    if odd:
        raise ConversionError(f"{weights}: {len(odd)} tensor(s) are not floating point, e.g. {dict(list(odd.items())[:3])}; "
                              "expected float weights")
    return weights


def _raise_shape_mismatches(weights: Path, config_file: Path, error: Exception) -> None:
    """transformers' "ignore_mismatched_sizes" error with its report (logged, not in the message) rebuilt: the tensors
    whose shape in ``weights`` differs from the model ``config_file`` describes."""
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModel

    import snd  # noqa: F401 - the SnD Auto classes

    from ..convert import ConversionError

    mismatches = []
    try:
        with torch.device("meta"):
            expected = AutoModel.from_config(AutoConfig.from_pretrained(str(config_file.parent))).state_dict()
        with safe_open(str(weights), framework="pt") as handle:
            for key in handle.keys():
                shape = tuple(handle.get_slice(key).get_shape())
                if key in expected and tuple(expected[key].shape) != shape:
                    mismatches.append(f"{key}: file {shape} vs config {tuple(expected[key].shape)}")
    except Exception:  # noqa: BLE001 - the report is a courtesy; the refusal below stands either way
        pass
    raise ConversionError(
        f"{weights}: its tensors do not fit the model {config_file} describes ({len(mismatches)} shape mismatch(es)"
        + (f", e.g. {mismatches[:3]}" if mismatches else "") + "); config.json and the weights are from different models"
    ) from error


def _check_finite_parameters(model, where: Path) -> None:
    from ..convert import ConversionError

    bad = [name for name, value in model.named_parameters() if value.is_floating_point() and not bool(torch.isfinite(value).all())]
    if bad:
        raise ConversionError(f"{where}: {len(bad)} weight tensor(s) hold NaN/Inf values, e.g. {bad[:5]}; expected finite weights")


class _naming_the_folder:
    """Context manager: a library error while loading a model folder (corrupt weights, a config field of the wrong
    type) becomes a :class:`~snd.convert.ConversionError` naming ``model.pretrained`` and the folder."""

    def __init__(self, source, path: Path):
        self.source, self.path = source, path

    def __enter__(self):
        return self

    def __exit__(self, kind, error, traceback):
        from ..convert import ConversionError

        if error is None or isinstance(error, (ConversionError, FileNotFoundError, KeyboardInterrupt, MemoryError)):
            return False
        if not isinstance(error, (OSError, ValueError, RuntimeError, TypeError, KeyError, AttributeError, EOFError)) and \
                type(error).__name__ != "SafetensorError":
            return False
        files = sorted(p.name for p in self.path.iterdir()) if self.path.is_dir() else []
        raise ConversionError(
            f"model.pretrained={str(self.source)!r}: cannot load the model in {self.path} ({type(error).__name__}: "
            f"{str(error)[:400]}); expected a save_pretrained folder with a valid config.json and intact weights "
            f"(files: {files[:12]})"
        ) from error


def _load_pretrained(config: ModelConfig):
    from ..backbones import pretrained_backbone
    from ..convert import ConversionError
    from ..models.snd_dinov2 import SnDModel

    from ..assets import resolve

    source = resolve(config.pretrained)  # a shipped model's bare name ("nano-2d") -> its package folder
    path = Path(source)
    if path.is_file():
        from ..convert import convert_backbone

        if "dinov3" in path.name:
            from ..convert.dinov3 import convert_dinov3_hub

            return convert_dinov3_hub(str(path))[0]
        model, _ = convert_backbone(str(path), format="timm" if "timm" in path.name else "torchhub")
        return model
    if path.is_dir():
        config_file = path / "config.json"
        if not config_file.exists():
            raise SourceNotFoundError(f"model.pretrained={source!r}: directory has no config.json (expected a save_pretrained directory)")
        model_type = read_model_type(config_file)
        _check_model_type(config_file, model_type)
        weights = _check_weights_file(path)
        with _naming_the_folder(source, path):
            try:
                if model_type == "snd_dinov2":
                    model, info = SnDModel.from_pretrained(str(path), output_loading_info=True)
                    missing = sorted(info.get("missing_keys") or [])
                    if missing:
                        raise ConversionError(f"{weights}: lacks {len(missing)} tensor(s) of the model in {config_file}, e.g. "
                                              f"{missing[:5]}; they would be random (an incomplete or foreign checkpoint)")
                elif _dinov2_as_snd(config, model_type=model_type):
                    from ..convert import convert_backbone

                    model = convert_backbone(str(path), format="transformers")[0]
                else:
                    model = pretrained_backbone(str(path))
            except RuntimeError as error:
                if "ignore_mismatched_sizes" in str(error) and weights is not None:
                    _raise_shape_mismatches(weights, config_file, error)
                raise
        _check_finite_parameters(model, weights or path)
        return model
    require_hub_id(source, "model.pretrained")
    if _dinov2_as_snd(config, hub_id=source):
        from ..convert import convert_backbone

        return load_from_hub(source, "model.pretrained", lambda: convert_backbone(source, format="transformers")[0])
    return load_from_hub(source, "model.pretrained", lambda: pretrained_backbone(source))


def _dinov2_as_snd(config: ModelConfig, model_type: str | None = None, hub_id: str | None = None) -> bool:
    """Whether a transformers checkpoint becomes an ``SnDModel``: plain DINOv2 only (``model_type`` ``dinov2``, or a
    ``facebook/dinov2-*`` Hub id other than ``facebook/dinov2-with-registers-*``), and only with ``dinov2_as_snd``.
    DINOv2 with registers keeps its own class (``Dinov2WithRegistersModel``), as DINOv3 does."""
    if not config.dinov2_as_snd:
        return False
    if hub_id is not None:
        return hub_id.startswith("facebook/dinov2") and "registers" not in hub_id.lower()
    return model_type == "dinov2"


def apply_finetuning(backbone: nn.Module, config: ModelConfig) -> nn.Module:
    """Wrap ``backbone`` with peft LoRA adapters (base weights frozen), or leave it fully trainable."""
    if config.finetune == "full":
        backbone.requires_grad_(True)
        # The mask token only serves masked-image modelling; a trainable parameter that never gets a
        # gradient would stall DDP's gradient buckets (silently unsynchronised grads).
        for name, parameter in backbone.named_parameters():
            if name.endswith("mask_token"):
                parameter.requires_grad_(False)
        return backbone
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=resolve_lora_targets(backbone, config.lora_target_modules),
        bias="none",
    )
    return _check_lora_targets(get_peft_model(backbone, lora), lora.target_modules)


def _check_lora_targets(model: nn.Module, targets) -> nn.Module:
    """Every ``lora_target_modules`` entry must wrap something (peft ignores an entry that matches nothing when
    another one does, so a typo or another codebase's module name would silently train fewer adapters)."""
    from ..backbones import default_lora_targets

    wrapped = [name for name, module in model.named_modules() if hasattr(module, "lora_A") and hasattr(module, "base_layer")]
    for target in targets if isinstance(targets, (list, set, tuple)) else []:
        if not any(name == target or name.endswith(f".{target}") for name in wrapped):
            raise ValueError(
                f"model.lora_target_modules entry {target!r} matches no module of the backbone (its default set, \"auto\": "
                f"{default_lora_targets(model)}; the release's torch.hub patch_embed.proj is patch_embeddings.projection in SnD)"
            )
    return model


def resolve_lora_targets(backbone: nn.Module, targets) -> list[str]:
    """``targets`` as a list; "auto" (or None) -> :func:`snd.backbones.default_lora_targets` of the architecture."""
    if targets is None or targets == "auto":
        from ..backbones import default_lora_targets

        return default_lora_targets(backbone)
    return list(targets)


def enable_gradient_checkpointing(backbone: nn.Module) -> nn.Module:
    """Recompute each transformer block in the backward pass instead of keeping its activations
    (``training.gradient_checkpointing``): transformers' ``activation_checkpointing_enable`` (5.25; formerly
    ``gradient_checkpointing_enable``, now a deprecated alias) with non-reentrant
    ``torch.utils.checkpoint`` (works with LoRA's frozen inputs and with FSDP2). Same gradients, less activation
    memory, about one more forward of the blocks per step. The teacher, a copy, runs without gradients (a no-op there)."""
    from ..backbones import unwrap_backbone

    model = unwrap_backbone(backbone)
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise ValueError(f"training.gradient_checkpointing: {type(model).__name__} does not support gradient checkpointing")
    if hasattr(model, "activation_checkpointing_enable"):  # transformers 5.25's name (the old one warns FutureWarning)
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return backbone


def merged_backbone(backbone: nn.Module) -> nn.Module:
    """A plain copy in the backbone's own class (``SnDModel``, ``DINOv3ViTModel``...) with any LoRA adapters merged into the weights (the original is untouched)."""
    backbone = copy.deepcopy(backbone)
    if hasattr(backbone, "merge_and_unload"):
        backbone = backbone.merge_and_unload()
    return backbone.requires_grad_(False).eval()


def backbone_config(backbone: nn.Module):
    from ..backbones import unwrap_backbone

    return unwrap_backbone(backbone).config


class DistillStudent(nn.Module):
    """The trained side: backbone (+ LoRA) and projection head, in one module so DDP wraps both.

    ``forward(images [N, 3, H, W] in [0, 1], valid [N, h, w] bool | None)`` returns
    ``{"features": [N, C, h, w] (zero on holes), "logits": [N * h * w, K] or None}``.
    """

    def __init__(self, backbone: nn.Module, head: DINOHead | None, patch_size: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.patch_size = patch_size

    def forward(self, images: torch.Tensor, valid: torch.Tensor | None = None) -> dict:
        from .teacher import backbone_patch_features

        features = backbone_patch_features(self.backbone, images, self.patch_size)  # [N, C, h, w]
        if valid is not None:
            features = features.masked_fill(~valid[:, None], 0.0)
        logits = None
        if self.head is not None:
            logits = self.head(features.permute(0, 2, 3, 1).reshape(-1, features.shape[1]))
        return {"features": features, "logits": logits}


def build_student(config: DistillConfig) -> DistillStudent:
    from ..backbones import backbone_spec

    backbone = apply_finetuning(load_backbone(config.model), config.model)
    model_config = backbone_config(backbone)
    head = None
    if config.loss.kind == "prototype":
        head = DINOHead(
            in_dim=model_config.hidden_size,
            num_prototypes=config.head.num_prototypes,
            hidden_dim=config.head.hidden_dim,
            bottleneck_dim=config.head.bottleneck_dim,
            num_layers=config.head.num_layers,
            freeze_last_layer_norm=config.head.freeze_last_layer_norm,
        )
    return DistillStudent(backbone, head, patch_size=backbone_spec(backbone).patch_size)


# --------------------------------------------------------------------------------------------
# Lifter and data


def _require_data_root(root: str | None, dataset: str) -> None:
    if not root or not Path(root).is_dir():
        raise SourceNotFoundError(f"data.root={root!r}: no such directory (the {dataset} dataset root)")


def build_lifter(config: LifterConfig):
    """The frozen lifter: ``DepthLifter`` or ``MVSplatLifter`` (from ``lifter.checkpoint``)."""
    if config.kind == "depth":
        from ..lifting import DepthLifter

        return DepthLifter(opacity=config.opacity, footprint_scale=config.footprint_scale, attach_colors=False)
    from ..models.mvsplat import MVSplatLifter

    checkpoint = Path(config.checkpoint)
    if checkpoint.is_file():
        # An official Lightning checkpoint (re10k.ckpt): convert in memory (weights-only unpickling).
        from ..convert.common import check_finite_state
        from ..convert.mvsplat import convert_state_dict, load_official_checkpoint

        model, _ = convert_state_dict(load_official_checkpoint(checkpoint))
        check_finite_state(model.state_dict(), str(checkpoint))  # NaN weights would give only culled Gaussians
        lifter = MVSplatLifter(model.eval())
    else:  # a converted save_pretrained directory or Hub id
        if checkpoint.is_dir():
            lifter = MVSplatLifter.from_pretrained(config.checkpoint)
        else:
            require_hub_id(config.checkpoint, "lifter.checkpoint")
            lifter = load_from_hub(config.checkpoint, "lifter.checkpoint", lambda: MVSplatLifter.from_pretrained(config.checkpoint))
    lifter.model.requires_grad_(False)
    return lifter


def move_lifter(lifter, device) -> None:
    """Put a lifter's weights (if any) on ``device``."""
    model = lifter if isinstance(lifter, nn.Module) else getattr(lifter, "model", None)
    if isinstance(model, nn.Module):
        model.to(device)


def _view_sampler(config: DataConfig, seed: int):
    from ..data.sampler import ViewSampler

    return ViewSampler(
        min_gap=config.min_gap, max_gap=config.max_gap, num_target=config.num_target_views, seed=seed, context_gap=config.context_gap
    )


def build_dataset(config: DataConfig, seed: int, held_out: bool = False, load_depth: bool = False):
    """The training dataset (or, with ``held_out``, a dataset the run never trains on, for pictures).

    Synthetic: held-out scenes come from another generator seed. Real data: the "val" split when
    ``held_out`` (falling back to the training split when the dataset has no such split).
    ``load_depth`` reads ScanNet++ depth maps (needed by the depth lifter).
    """
    if config.dataset == "synthetic":
        from ..data.synthetic import SyntheticSceneConfig

        try:
            from ..data import SyntheticMultiViewDataset
        except ImportError:
            from ..data.synthetic_dataset import SyntheticMultiViewDataset

        scenes = SyntheticSceneConfig(
            num_scenes=1 if held_out else config.num_scenes,
            num_frames=config.num_frames,
            height=config.image_height,
            width=config.image_width,
            seed=seed + 1_000_003 if held_out else seed,
        )
        return SyntheticMultiViewDataset(scenes, sampler=_view_sampler(config, seed), samples_per_scene=config.samples_per_scene)
    _require_data_root(config.root, config.dataset)
    if config.dataset == "nerfstudio":
        from ..data.nerfstudio import NerfstudioDataset

        # One capture has no held-out split: the pictures use the same scenes.
        return NerfstudioDataset(
            config.root,
            image_shape=(config.image_height, config.image_width),
            sampler=_view_sampler(config, seed),
            samples_per_scene=config.samples_per_scene,
            near=config.near,
            far=config.far,
            load_depth=load_depth,
            skip_bad_samples=config.skip_bad_samples,
        )
    split = "val" if held_out else config.split
    kwargs = dict(
        sampler=_view_sampler(config, seed),
        image_shape=(config.image_height, config.image_width),
        samples_per_scene=config.samples_per_scene,
        skip_bad_samples=config.skip_bad_samples,
    )
    if config.dataset == "scannetpp":
        from ..data import ScanNetPPDataset as dataset_class

        kwargs.update(
            load_depth=load_depth, keep_bad_frames=config.keep_bad_frames, reject_frame_gaps=config.reject_frame_gaps,
            near=config.near, far=config.far,
        )
        if config.scene_selection == "instance_masks" and not held_out:
            split = None  # every scene folder with instance_segmentation/ (the release has no split list)
    else:
        from ..data import RE10KDataset as dataset_class
    try:
        return dataset_class(config.root, split=split, **kwargs)
    except (FileNotFoundError, ValueError):
        if not held_out:
            raise
        return dataset_class(config.root, split=config.split, **kwargs)


class PreloadedScenes:
    """A multi-view dataset whose scenes were read (or rendered) once and kept in memory.

    Wraps any :class:`snd.data.base.MultiViewDataset`: ``load_views`` of every frame of every scene
    happens once, sampling (``ViewSampler``, ``set_epoch``) stays the wrapped dataset's, so samples
    are identical to the wrapped dataset's. For small scenes (the synthetic default) only.
    """

    def __init__(self, dataset, progress: bool = False) -> None:
        from ..progress import progress_bar as tqdm

        self.dataset = dataset
        self.views = [
            dataset.load_views(scene, list(range(dataset.num_frames(scene))))
            for scene in tqdm(range(dataset.num_scenes()), desc="preloading scenes", disable=not progress)
        ]

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def __getitem__(self, index: int):
        from ..data import MultiViewSample

        scene, context, target = self.dataset.sample_frames(index % len(self))
        views = self.views[scene]
        return MultiViewSample(context=views.select(context), target=views.select(target), scene=self.dataset.scene_name(scene))
