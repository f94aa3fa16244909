"""Typed training configuration: dataclasses with documented defaults, loaded from YAML and overridden
from the command line (``--set training.lr=1e-4`` or ``--training.lr 1e-4``), validated with errors
that name the field.

Dataclass defaults are the paper's scale (ScanNet++, DINOv2-S, MVSplat re10k lifter, batch 14) with our
own choices wherever the authors' released code differs; the shipped paper presets in ``snd/configs/*.yaml``
set the release-exact switches (README "Fidelity to the authors' release"), and ``default.yaml`` is the
embedded CPU default.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..errors import SourceNotFoundError  # noqa: F401  (re-exported: snd.distill.SourceNotFoundError)


class ConfigError(ValueError):
    """A training configuration is malformed; the message names the source and the field."""




@dataclass
class ModelConfig:
    """The student backbone (the teacher starts as a copy of it).

    Args:
        pretrained: local directory, Hub id or torch.hub-layout ``.pth`` of SnD/DINOv2 weights, or any
            transformers ViT folder/Hub id (``facebook/dinov3-vits16-pretrain-lvd1689m``,
            ``facebook/dinov2-with-registers-small``...; trained and saved in its own class, see
            ``snd.backbones``). None: random init from ``preset``. Default "facebook/dinov2-small".
        preset: random-init architecture: an ``SnDConfig`` preset ("tiny", "dinov2-s", ...) or one of
            ``snd.backbones.RANDOM_PRESETS`` ("dinov3-tiny", "dinov2reg-tiny", ...). Default "tiny".
        config_overrides: extra config kwargs for random init. Default {}.
        finetune: "lora" (peft adapters on ``lora_target_modules``, merged on save) or "full". Default "lora".
        lora_rank, lora_alpha, lora_dropout: LoRA hyper-parameters. Defaults 8, 8, 0.1.
        lora_target_modules: module names the adapters wrap (peft suffix match), or "auto": per
            architecture from ``snd.backbones.default_lora_targets``: for SnD the release's set, ``qkv``,
            ``proj`` and the patch-embedding conv (the release passes ["qkv", "proj"] to peft on torch.hub's
            DINOv2, where "proj" also matches ``patch_embed.proj``; ours is ``patch_embeddings.projection``:
            ViT-S rank 8 has 228,960 LoRA parameters, as released; ["qkv", "proj"] gives 221,184); the same
            set under transformers DINOv2's names; DINOv3's attention projections. Default "auto".
        dinov2_as_snd: plain transformers DINOv2 checkpoints (``Dinov2Model``) are converted to ``SnDModel``
            (the release's architecture; the paper presets). False: kept and saved in their own class. DINOv2 with
            registers (``Dinov2WithRegistersModel``) and DINOv3 always keep their own class. Default True.
        rope_augmentation: DINOv3 students keep DINOv3's training-mode RoPE coordinate augmentation
            (shift/jitter/rescale). Default False (same positions in training and evaluation).
    """

    pretrained: str | None = "facebook/dinov2-small"
    preset: str = "tiny"
    config_overrides: dict = field(default_factory=dict)
    finetune: str = "lora"
    lora_rank: int = 8
    lora_alpha: float = 8.0
    lora_dropout: float = 0.1
    lora_target_modules: list | str = "auto"
    dinov2_as_snd: bool = True
    rope_augmentation: bool = False


@dataclass
class HeadConfig:
    """DINO projection heads (student trained, teacher EMA). Defaults as DINOv2 / the SnD release."""

    num_prototypes: int = 65536
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    num_layers: int = 3
    freeze_last_layer_norm: bool = False


@dataclass
class LossConfig:
    """Args:
        kind: "prototype" (cross-entropy over prototypes, the paper) or "cosine" (ablation, no heads).
        student_temperature, teacher_temperature: softmax temperatures. Default 1.0 (as released).
        average: "all" patches (as released; holes are zeroed on both sides) or only "valid" ones.
    """

    kind: str = "prototype"
    student_temperature: float = 1.0
    teacher_temperature: float = 1.0
    average: str = "all"


@dataclass
class TeacherConfig:
    """The EMA teacher and its splatting augmentation.

    Args:
        momentum: EMA momentum. Default 0.999.
        update_every: optimiser steps between EMA updates. Default 10.
        upsample: "mask_aware" (default) or "bilinear" (ablation).
        upsample_fallback: where no low-res neighbour shares the pixel's segment: "bilinear" keeps
            the plain weights (default), "zero" outputs zeros (what the released code computes).
        upsample_align_corners: bilinear grid convention. Default False (pixel centres); the release
            uses True.
        blend_alpha: segment blending; 0.5 "with blending" (default), 1.0 "without".
        near_plane, far_plane: renderer clipping planes: Gaussians with camera z < near_plane or
            > far_plane are culled. Defaults 0.01 / 1e10 (gsplat's); the release's rasterizer culls
            z <= 0.2 and has no far plane.
        render_backend: "auto", "torch" or "gsplat". Default "auto".
        splat_covariance: the covariance each feature Gaussian is splatted with. "lifter" (default):
            the lifter's covariance. "release": what the release's LUDVIG renderer does:
            ``eigh(covariance)`` eigenvalues (variances) used as the rasterizer's scales (standard
            deviations), i.e. std sigma^2 instead of sigma, rotated by the eigenvectors, or unrotated
            (world axes, ascending eigenvalues) where the eigenvector matrix has det < 0.
        opacity_clamp: per-pair alpha clamp ``min(opacity_clamp, o exp(-d))``. Default 0.999 (gsplat);
            the release's graphdeco rasterizer uses 0.99. Values other than 0.999 render with the
            torch backend (gsplat's kernels hard-code 0.999).
        principal_point: "intrinsics" (default: render with the full intrinsics) or "centered" (the
            release: a symmetric frustum whose field of view is the angle between the rays through
            the left/right (top/bottom) image-edge midpoints, principal point at the image centre).
        update_timing: when the EMA update of step ``s`` happens. "after_step" (default): after optimiser
            step ``s`` (s = 10, 20, ...), so the next forward sees it. "before_step" (the release's
            ``on_after_backward`` hook): when ``s`` steps are done (s = 0, 10, 20, ...), after the
            backward of the next step and before its optimiser step, so it takes effect one forward later.
        dropout_in_teacher: keep the teacher in train mode so its LoRA dropout is active in teacher
            forwards (the release never calls ``eval()`` on it). Default False (teacher in eval mode).
        holes: which target pixels are holes (features zeroed on both sides of the loss).
            "alpha" (default): where no feature Gaussian reaches the pixel (rendered alpha 0).
            "rgb": where the RGB render of the lifter's Gaussians (their own covariances; MVSplat's
            view-dependent colour as the release's rasterizer evaluates it, or the context images'
            colours for the depth lifter) is exactly 0 in every channel, as the release (``output.color == 0``).
        target: what the student is taught to predict on a target view. "splat" (default, SnD): the teacher's
            features of the context views, lifted to 3D and splatted into the target view. "same_view" (the
            matched 2D control): the teacher's own features of the target view, upsampled the same way; every other
            part of the step is unchanged (lifter and render still run, so the holes, blending, downsampling,
            loss, optimiser, schedule and data order are identical). The difference between the two runs is then
            the 3D part alone (``scripts/experiment_3d_awareness.py``).
        channel_chunk: feature channels carried through upsampling, splatting, blending and downsampling at once
            (all linear per channel: the result equals the unchunked path up to float rounding). None (default):
            every channel when the full-resolution maps fit ``feature_budget_gib``, else the largest chunk that does
            (``snd.distill.teacher.auto_channel_chunk``). A ViT-g (1536 channels) at 518 x 518 with 2 context and 1
            target view per sample, batch 2, would need ~21.5 GiB for all channels at once (chunks of 142).
        feature_budget_gib: the memory budget of one chunk's full-resolution maps when ``channel_chunk`` is None.
            Default 2.0.
    """

    momentum: float = 0.999
    update_every: int = 10
    upsample: str = "mask_aware"
    upsample_fallback: str = "bilinear"
    upsample_align_corners: bool = False
    blend_alpha: float = 0.5
    near_plane: float = 0.01
    far_plane: float = 1e10
    render_backend: str = "auto"
    splat_covariance: str = "lifter"
    opacity_clamp: float = 0.999
    principal_point: str = "intrinsics"
    update_timing: str = "after_step"
    dropout_in_teacher: bool = False
    holes: str = "alpha"
    target: str = "splat"
    channel_chunk: int | None = None
    feature_budget_gib: float = 2.0


@dataclass
class LifterConfig:
    """Args:
        kind: "mvsplat" (frozen feed-forward reconstructor, needs ``checkpoint``) or "depth" (given depth maps).
        checkpoint: MVSplat checkpoint (Lightning ``.ckpt`` or a converted directory). Default None.
        opacity, footprint_scale: DepthLifter settings. Defaults 1.0 / 0.5.
    """

    kind: str = "mvsplat"
    checkpoint: str | None = None
    opacity: float = 1.0
    footprint_scale: float = 0.5


@dataclass
class DataConfig:
    """Args:
        dataset: "synthetic", "scannetpp", "re10k" or "nerfstudio" (your own captures: a folder with
            ``transforms.json``, or a folder of such scene folders). Default "scannetpp".
        root: dataset root (unused for synthetic). Default None.
        near, far: depth bounds handed to the lifter with every view (ScanNet++ and nerfstudio), in the
            poses' units. Defaults 1.0 / 100.0 (the release's ScanNet++ setting); COLMAP poses have an
            arbitrary scale, so set them to bracket your scene.
        split: split name. Default "train".
        image_height, image_width: training resolution. Default 576 x 880 (ScanNet++ release).
        num_scenes, num_frames: synthetic scenes and frames per scene. Defaults 8 / 24.
        samples_per_scene: dataset indices per scene per epoch. Default 1.
        min_gap, max_gap: context frames apart. Defaults 8 / 12.
        context_gap: how the context gap is drawn. "uniform" (default): uniformly in
            [min_gap, max_gap]. "release_min": always min_gap, as the release's bounded sampler
            computes (it sets ``max_gap = min(num_views - 1, min_gap)``, "we keep the bug", so its
            configured maximum 12 is never used).
        scene_selection: ScanNet++ training scenes (this and the next two fields apply to ScanNet++ only). "split_file" (default): ``metadata/nvs_sem_<split>.txt``.
            "instance_masks": every scene folder that has ``instance_segmentation/`` (the release).
        keep_bad_frames: keep ScanNet++ frames marked ``is_bad`` (the release keeps them). Default False.
        reject_frame_gaps: redraw a context pair when frame numbers between its two frames are missing
            (the release's ScanNet++ loader). Default False.
        num_target_views: target views per sample. Default 1.
        num_workers: DataLoader workers per process. Default 0.
        skip_bad_samples: replace unreadable samples instead of failing. Default False.
        preload: read every frame of every scene into memory once (small datasets). Default False.
    """

    dataset: str = "scannetpp"
    root: str | None = None
    near: float = 1.0
    far: float = 100.0
    split: str = "train"
    image_height: int = 576
    image_width: int = 880
    num_scenes: int = 8
    num_frames: int = 24
    samples_per_scene: int = 1
    min_gap: int = 8
    max_gap: int = 12
    context_gap: str = "uniform"
    scene_selection: str = "split_file"
    keep_bad_frames: bool = False
    reject_frame_gaps: bool = False
    num_target_views: int = 1
    num_workers: int = 0
    skip_bad_samples: bool = False
    preload: bool = False


@dataclass
class TrainingConfig:
    """The loop.

    Args:
        max_steps: optimiser steps. Default 300000.
        batch_size: samples per process per step. Default 14.
        lr: Adam peak learning rate. Default 2e-5.
        adam_betas, adam_eps, weight_decay: Adam settings. Defaults (0.9, 0.999), 1e-8, 0.
        schedule: "one_cycle_cosine" (1% warm-up by default) or "constant". Default one-cycle.
        warmup_fraction: share of steps warming up. Default 0.01.
        one_cycle_extra_steps: the one-cycle schedule spans ``max_steps + one_cycle_extra_steps`` steps.
            Default 1; the release uses 10 (``OneCycleLR(total_steps=trainer.max_steps + 10)``).
        max_grad_norm: gradient clipping (0 disables). Default 0.5 (our choice; the release's config
            has ``gradient_clip_val: 0.5`` but passing it to the Trainer is commented out, so the
            release does not clip: the paper presets use 0).
        float32_matmul_precision: ``torch.set_float32_matmul_precision`` for the run: "highest" (default,
            full float32) or "high" (TF32 matmuls on Ampere+ GPUs; the release sets "high" in src/main.py).
        seed: seed of everything (init, data order, view sampling). Default 0.
        output_dir: where everything goes. Default "outputs/snd-distill".
        checkpoint_every: steps between ``save_state`` checkpoints (0: only at the end). Default 10000.
        keep_checkpoints: how many recent checkpoints to keep. Default 3.
        log_every: steps between loss-log lines. Default 10.
        mixed_precision: "no", "fp16" or "bf16", or None (default): whatever the launcher chose
            (``accelerate launch --mixed_precision``, an ``accelerate config`` file), else "no". The resolved value
            is written to ``config.yaml``; fp16 on a CPU is refused.
        nonfinite_loss: "raise" (stop naming the step) or "skip" (skip the step and count). Default "raise".
        max_skipped_steps: stop after this many skipped non-finite steps. Default 100.
        max_empty_steps: stop after this many consecutive steps whose teacher target is empty (valid_fraction 0;
            the student would learn nothing); 0 disables. Default 20.
        report_to: "auto" (TensorBoard when installed; default), "none", "all" (every installed tracker) or tracker
            names joined by commas: "tensorboard", "wandb", "trackio" (each must be installed).
        log_images_every: steps between pictures sent to trackers that take images (PCA of the student's features
            on the held-out view, PCA of the teacher's rendered target); 0 disables. Default 0.
        cpu: force CPU (gloo) even when GPUs exist. Default False.
        distributed: how a multi-process launch distributes the student. "auto" (default): as the launcher says, DDP
            (``accelerate launch --multi_gpu``) or FSDP2 (``--config_file configs/accelerate/fsdp2.yaml``). "fsdp2":
            shard the student and the EMA teacher with torch's ``fully_shard`` under any multi-process launch,
            including CPU processes over gloo, where Accelerate turns its FSDP plugin into plain DDP (the CPU tests
            use this). See ``snd.distill.fsdp``; bf16 or no mixed precision (fp16 is refused under FSDP2).
        gradient_checkpointing: recompute the student's transformer blocks in the backward pass instead of storing
            their activations (``snd.distill.build.enable_gradient_checkpointing``): same gradients, activation memory
            of about one block instead of all, ~30% more compute per step. Default False.
        hub_model_id: push the final student here (``--push_to_hub``). Default None.
    """

    max_steps: int = 300000
    batch_size: int = 14
    lr: float = 2e-5
    adam_betas: list = field(default_factory=lambda: [0.9, 0.999])
    adam_eps: float = 1e-8
    weight_decay: float = 0.0
    schedule: str = "one_cycle_cosine"
    warmup_fraction: float = 0.01
    one_cycle_extra_steps: int = 1
    max_grad_norm: float = 0.5
    float32_matmul_precision: str = "highest"
    seed: int = 0
    output_dir: str = "outputs/snd-distill"
    checkpoint_every: int = 10000
    keep_checkpoints: int = 3
    log_every: int = 10
    mixed_precision: str | None = None
    nonfinite_loss: str = "raise"
    max_skipped_steps: int = 100
    max_empty_steps: int = 20
    report_to: str = "auto"
    log_images_every: int = 0
    cpu: bool = False
    distributed: str = "auto"
    gradient_checkpointing: bool = False
    hub_model_id: str | None = None


@dataclass
class DistillConfig:
    """Everything one distillation run needs."""

    model: ModelConfig = field(default_factory=ModelConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    lifter: LifterConfig = field(default_factory=LifterConfig)
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def validate(self) -> "DistillConfig":
        validate(self)
        return self


# --------------------------------------------------------------------------------------------
# Building from dicts, files and overrides

_CHOICES = {
    "model.finetune": ("lora", "full"),
    "loss.kind": ("prototype", "cosine"),
    "loss.average": ("all", "valid"),
    "teacher.upsample": ("mask_aware", "bilinear"),
    "teacher.upsample_fallback": ("bilinear", "zero"),
    "teacher.render_backend": ("auto", "torch", "gsplat"),
    "teacher.splat_covariance": ("lifter", "release"),
    "teacher.principal_point": ("intrinsics", "centered"),
    "teacher.holes": ("alpha", "rgb"),
    "teacher.target": ("splat", "same_view"),
    "teacher.update_timing": ("after_step", "before_step"),
    "training.float32_matmul_precision": ("highest", "high", "medium"),
    "data.context_gap": ("uniform", "release_min"),
    "data.scene_selection": ("split_file", "instance_masks"),
    "lifter.kind": ("depth", "mvsplat"),
    "data.dataset": ("synthetic", "scannetpp", "re10k", "nerfstudio"),
    "training.schedule": ("one_cycle_cosine", "constant"),
    "training.mixed_precision": ("no", "fp16", "bf16", None),
    "training.nonfinite_loss": ("raise", "skip"),
    "training.distributed": ("auto", "fsdp2"),
}
_REPORT_TO = ("auto", "none", "all", "tensorboard", "wandb", "trackio")
_POSITIVE = [
    "head.num_prototypes", "head.hidden_dim", "head.bottleneck_dim", "head.num_layers", "model.lora_rank",
    "teacher.update_every", "data.image_height", "data.image_width", "data.num_scenes", "data.num_frames",
    "data.samples_per_scene", "data.min_gap", "data.num_target_views", "training.max_steps", "training.batch_size",
    "training.keep_checkpoints", "training.log_every", "loss.student_temperature", "loss.teacher_temperature",
    "training.lr", "teacher.near_plane", "teacher.feature_budget_gib", "model.lora_alpha", "lifter.opacity",
    "lifter.footprint_scale", "training.adam_eps",
]
_NON_NEGATIVE = ["training.log_images_every", "training.checkpoint_every", "training.max_grad_norm", "training.weight_decay", "data.num_workers", "training.max_skipped_steps", "model.lora_dropout",
                 "training.one_cycle_extra_steps", "training.max_empty_steps"]


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check ``value`` against a field annotation (int/float/str/bool/list/dict, optionally None)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if errors else f"{where}: unexpected value {value!r}")
    expected = origin or annotation
    if expected is bool:
        if isinstance(value, bool):
            return value
    elif expected is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif expected is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads "1e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif expected is str:
        if isinstance(value, str):
            return value
        if value is False and where.endswith("mixed_precision"):  # YAML 1.1 reads a bare `no` as false
            return "no"
    elif expected is list:
        if isinstance(value, (list, tuple)):
            return list(value)
    elif expected is dict:
        if isinstance(value, dict):
            return dict(value)
    else:  # pragma: no cover - a field type this module does not know
        return value
    name = getattr(expected, "__name__", str(expected))
    raise ConfigError(f"{where}: expected {name}, got {type(value).__name__} {value!r}")


def _build(cls, values: dict, where: str):
    if not isinstance(values, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{where or 'config'}: unknown key(s) {unknown}; valid keys are {sorted(fields)}")
    kwargs = {}
    for name, value in values.items():
        path = f"{where}.{name}" if where else name
        annotation = hints[name]
        if dataclasses.is_dataclass(annotation):
            kwargs[name] = _build(annotation, value or {}, path)
        else:
            kwargs[name] = _coerce(value, annotation, path)
    return cls(**kwargs)


def config_from_dict(values: dict, source: str = "config") -> DistillConfig:
    """Build and validate a :class:`DistillConfig` from a nested mapping (missing keys keep defaults)."""
    try:
        config = _build(DistillConfig, values or {}, "")
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None
    try:
        return validate(config)
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None


def _read_yaml(path: Path) -> dict:
    from ..safe_io import load_yaml, read_text

    # a regular file only (a FIFO would block forever), UTF-8, aliases bounded (no "billion laughs")
    text = read_text(path, what="a YAML config file (UTF-8 text)", error=ConfigError, max_bytes=16 * 2**20)
    values = load_yaml(text, source=str(path), error=ConfigError) or {}
    _refuse_duplicate_keys(text, path)
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (model, data, training, ...), got {type(values).__name__}")
    return values


def _refuse_duplicate_keys(text: str, path: Path) -> None:
    """YAML keeps the last of two equal keys in one mapping without a word (``lr:`` twice, or a ``training:`` section
    given twice, whose first copy's fields would vanish): refused, naming the key and its lines."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:  # pragma: no cover - load_yaml parsed it already
        return
    seen_nodes, stack = set(), [(root, "")]
    while stack:
        node, where = stack.pop()
        if node is None or id(node) in seen_nodes:  # aliases: each node once
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict = {}
            for key, value in node.value:
                name = key.value if isinstance(key, yaml.ScalarNode) else None
                if name is not None and name in first:
                    dotted = f"{where}.{name}" if where else name
                    raise ConfigError(
                        f"{path}: key {dotted!r} is given twice (lines {first[name] + 1} and {key.start_mark.line + 1}); "
                        "YAML would keep only the last one"
                    )
                if name is not None:
                    first[name] = key.start_mark.line
                stack.append((value, f"{where}.{name}" if where else str(name)))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, where) for item in node.value)


def preset_names() -> list[str]:
    """Names of the YAML presets shipped in ``snd/configs`` (``default``, ``scannetpp_dinov2s``, ...)."""
    return sorted(p.name[: -len(".yaml")] for p in resources.files("snd.configs").iterdir() if p.name.endswith(".yaml"))


#: top-level key of a user's YAML naming what its fields are layered over (a shipped preset or another file).
BASE_KEY = "base"


def _layer(base: dict, fields: dict) -> dict:
    """``fields`` over ``base``, section by section (a section's unnamed keys keep the base's values)."""
    result = _deep_copy(base)
    for key, value in fields.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = _layer(result[key], value)
        else:
            result[key] = value
    return result


def _user_yaml(path: Path, seen: tuple = ()) -> dict:
    """A user's YAML file layered over its ``base:`` (a preset name or a file; default: the embedded default)."""
    if path.resolve() in seen:
        raise ConfigError(f"{path}: `base:` chain loops back to {path}")
    values = _read_yaml(path)
    shipped = Path(str(resources.files("snd.configs"))).resolve()
    default_base = None if path.resolve().parent == shipped else "default"  # a shipped preset given by its path
    base = values.pop(BASE_KEY, default_base)
    if base is None or base == "dataclass":
        return values  # fields over the dataclass defaults (the paper setting), as the shipped presets
    if not isinstance(base, str):
        raise ConfigError(f"{path}: `base:` must name a shipped preset or a YAML file, got {base!r}")
    base_path = Path(base) if Path(base).is_absolute() else path.parent / base
    if base_path.suffix in (".yaml", ".yml") and base_path.is_file():
        return _layer(_user_yaml(base_path, seen + (path.resolve(),)), values)
    if base not in preset_names():
        raise ConfigError(f"{path}: `base: {base}` is neither a shipped preset ({preset_names()}) nor a YAML file")
    preset = yaml.safe_load(resources.files("snd.configs").joinpath(f"{base}.yaml").read_text()) or {}
    return _layer(preset, values)


def load_config(path_or_preset: str | Path | None = None, overrides: list[str] | None = None) -> DistillConfig:
    """Load a shipped preset by name (None: the embedded default) or a user's YAML file, then apply ``key=value``
    overrides.

    A user's file is layered over the embedded default (``default.yaml``), or over what its top-level ``base:``
    names (a shipped preset such as ``scannetpp_dinov2s``, another YAML file, or ``dataclass`` for the bare paper
    defaults), so it only needs the fields it changes::

        base: scannetpp_dinov2s          # the paper's ScanNet++ / DINOv2-S setting
        data:
          root: /data/scannetpp          # your ScanNet++ download
        lifter:
          checkpoint: checkpoints/re10k.ckpt
    """
    if path_or_preset is None:
        path_or_preset = "default"
    path = Path(path_or_preset)
    if path.suffix not in (".yaml", ".yml") and not path.exists():
        if str(path_or_preset) not in preset_names():
            raise ConfigError(f"no config file {path_or_preset!r} and no shipped preset of that name; presets: {preset_names()}")
        source = f"preset {path_or_preset!r}"
        text = resources.files("snd.configs").joinpath(f"{path_or_preset}.yaml").read_text()
        values = yaml.safe_load(text) or {}
    else:
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        source = str(path)
        values = _user_yaml(path)
    values = apply_overrides(values, overrides or [])
    return config_from_dict(values, source if not overrides else f"{source} with overrides {overrides}")


def apply_overrides(values: dict, overrides: list[str]) -> dict:
    """Set dotted keys in a nested dict: ``["training.lr=1e-4", "data.dataset=synthetic"]``; values parse as YAML."""
    result = _deep_copy(values)
    for override in overrides:
        if "=" not in override:
            raise ConfigError(f"override {override!r} must look like section.key=value")
        key, raw = override.split("=", 1)
        parts = key.strip().lstrip("-").split(".")
        if len(parts) < 2 or not all(parts):
            raise ConfigError(f"override {override!r}: the key must be section.key (e.g. training.lr)")
        if _is_string_field(parts):
            # a string field keeps the text as given: YAML would read "runs/a #2" as "runs/a" (a comment),
            # "yes" as True, "1e-4" or "2024" as numbers
            # ... unless it is quoted as a whole ('"lora"', as json.dumps writes it): then the quotes are removed
            text = raw.strip()
            if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
                from ..safe_io import load_yaml

                try:
                    quoted = load_yaml(text, source=f"override {override!r}: value", error=ConfigError)
                except ConfigError:  # e.g. 'a' 'b': not one quoted string, so the text as given
                    quoted = None
                value = quoted if isinstance(quoted, str) else raw
            else:
                value = None if text in _YAML_NULLS and _allows_none(parts) else raw
        else:
            from ..safe_io import load_yaml

            value = load_yaml(raw, source=f"override {override!r}: value", error=ConfigError) if raw.strip() else None
        node = result
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {override!r}: {part} is not a section")
            node = child
        node[parts[-1]] = value
    return result


_YAML_NULLS = ("", "~", "null", "Null", "NULL")


def _field_annotation(parts: list[str]):
    """The annotation of the config field at ``parts`` (``["training", "output_dir"]``), or None when unknown."""
    cls = DistillConfig
    annotation = None
    for part in parts:
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            return None
        hints = typing.get_type_hints(cls)
        if part not in hints:
            return None
        annotation = cls = hints[part]
    return annotation


def _is_string_field(parts: list[str]) -> bool:
    """The field is a string, optionally None (``str`` or ``str | None``), and nothing else."""
    annotation = _field_annotation(parts)
    if annotation is str:
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return set(typing.get_args(annotation)) == {str, type(None)}
    return False


def _allows_none(parts: list[str]) -> bool:
    return type(None) in typing.get_args(_field_annotation(parts))


def dotted_flags_to_overrides(arguments: list[str]) -> list[str]:
    """``["--training.lr", "1e-4", "--data.dataset=synthetic"]`` -> ``["training.lr=1e-4", "data.dataset=synthetic"]``."""
    overrides, index = [], 0
    while index < len(arguments):
        argument = arguments[index]
        if not argument.startswith("--") or "." not in argument.split("=", 1)[0]:
            raise ConfigError(f"unrecognised argument {argument!r} (config fields are given as --section.key VALUE or --set section.key=VALUE)")
        if "=" in argument:
            overrides.append(argument[2:])
            index += 1
        else:
            if index + 1 >= len(arguments):
                raise ConfigError(f"{argument} needs a value")
            following = arguments[index + 1]
            if following.startswith("--") and "." in following.split("=", 1)[0] and not following[2:3].isdigit():
                raise ConfigError(f"{argument} needs a value, got the next flag {following!r}")
            overrides.append(f"{argument[2:]}={arguments[index + 1]}")
            index += 2
    return overrides


def _deep_copy(values: dict) -> dict:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in (values or {}).items()}


def _get(config: DistillConfig, dotted: str):
    section, name = dotted.split(".")
    return getattr(getattr(config, section), name)


def _check_finite(config: DistillConfig) -> None:
    """Every number in the config (lists and ``config_overrides`` included) must be finite: a NaN passes no range
    check (every comparison with it is False), an inf passes ``> 0``."""

    def walk(value, where):
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{where} must be a finite number, got {value!r}")
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{where}.{key}")
        elif isinstance(value, (list, tuple)):
            for index, item in enumerate(value):
                walk(item, f"{where}[{index}]")

    for section in dataclasses.fields(config):
        for item in dataclasses.fields(getattr(config, section.name)):
            walk(getattr(getattr(config, section.name), item.name), f"{section.name}.{item.name}")


_POSITIVE_ARCHITECTURE = ("hidden_size", "num_hidden_layers", "num_attention_heads", "patch_size", "image_size", "num_channels",
                          "intermediate_size", "mlp_ratio", "layer_norm_eps", "num_key_value_heads")


def _check_model_config_overrides(model: ModelConfig) -> None:
    """``model.config_overrides`` may only name fields of the architecture's config class: a transformers config
    silently keeps unknown keyword arguments as attributes, so a misspelt ``num_hiden_layers`` would be ignored."""
    overrides = model.config_overrides
    if not overrides or model.pretrained is not None:
        return
    from ..backbones import RANDOM_PRESETS

    if model.preset in RANDOM_PRESETS:
        from transformers import AutoConfig

        model_type, values = RANDOM_PRESETS[model.preset]
        defaults = AutoConfig.for_model(model_type, **values)
    else:
        from ..models.snd_dinov2 import PRESETS, SnDConfig

        if model.preset not in PRESETS:
            return  # refused below, naming model.preset
        defaults = SnDConfig.from_preset(model.preset)
    known = set(defaults.to_dict()) | {"out_features", "out_indices"}
    unknown = sorted(str(key) for key in overrides if key not in known)
    if unknown:
        raise ConfigError(
            f"model.config_overrides: unknown field(s) {unknown} for preset {model.preset!r} "
            f"({type(defaults).__name__}); valid fields are {sorted(k for k in known if not k.startswith('_'))}"
        )
    for key, value in overrides.items():
        default = getattr(defaults, key, None)
        if key in _POSITIVE_ARCHITECTURE:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"model.config_overrides.{key} must be a positive number (default {default!r}), got {value!r}")


def validate(config: DistillConfig) -> DistillConfig:
    """Check ranges and combinations; raise :class:`ConfigError` naming the field."""
    for key, choices in _CHOICES.items():
        value = _get(config, key)
        if value not in choices:
            raise ConfigError(f"{key} must be one of {list(choices)}, got {value!r}")
    _check_finite(config)
    for key in _POSITIVE:
        if not _get(config, key) > 0:
            raise ConfigError(f"{key} must be > 0, got {_get(config, key)!r}")
    for key in _NON_NEGATIVE:
        if not _get(config, key) >= 0:  # also refuses NaN (NaN < 0 is False)
            raise ConfigError(f"{key} must be >= 0, got {_get(config, key)!r}")
    _check_model_config_overrides(config.model)
    report_to = [part.strip() for part in str(config.training.report_to).lower().split(",")]
    if not all(part in _REPORT_TO for part in report_to) or (len(report_to) > 1 and set(report_to) & {"auto", "none", "all"}):
        raise ConfigError(
            f"training.report_to must be one of auto, none, all or tracker names joined by commas "
            f"(tensorboard, wandb, trackio), got {config.training.report_to!r}"
        )
    if not 0.0 <= config.teacher.momentum <= 1.0:
        raise ConfigError(f"teacher.momentum must be in [0, 1], got {config.teacher.momentum}")
    if not 0.0 <= config.teacher.blend_alpha <= 1.0:
        raise ConfigError(f"teacher.blend_alpha must be in [0, 1] (0.5 with blending, 1.0 without), got {config.teacher.blend_alpha}")
    if not 0.0 <= config.training.warmup_fraction < 1.0:
        raise ConfigError(f"training.warmup_fraction must be in [0, 1), got {config.training.warmup_fraction}")
    if not 0.0 < config.data.near < config.data.far:
        raise ConfigError(f"data.near and data.far must satisfy 0 < near < far, got {config.data.near}, {config.data.far}")
    if not config.teacher.far_plane > config.teacher.near_plane:
        raise ConfigError(f"teacher.far_plane must be > teacher.near_plane, got far_plane={config.teacher.far_plane}, "
                          f"near_plane={config.teacher.near_plane}")
    if not 0 <= config.training.seed < 2**32:
        raise ConfigError(f"training.seed must be in [0, 2**32 - 1] (numpy's seed range), got {config.training.seed}")
    if config.model.config_overrides and config.model.pretrained is not None:
        raise ConfigError(
            f"model.config_overrides {config.model.config_overrides} only applies to a random init (model.pretrained: null); "
            f"model.pretrained={config.model.pretrained!r} loads its own architecture, so they would be ignored"
        )
    if not 0.0 < config.teacher.opacity_clamp < 1.0:
        raise ConfigError(f"teacher.opacity_clamp must be in (0, 1) (0.999 gsplat, 0.99 the release), got {config.teacher.opacity_clamp}")
    if config.teacher.opacity_clamp != 0.999 and config.teacher.render_backend == "gsplat":
        raise ConfigError(f"teacher.opacity_clamp={config.teacher.opacity_clamp} needs teacher.render_backend 'torch' or 'auto' (gsplat clamps at 0.999)")
    if config.teacher.channel_chunk is not None and config.teacher.channel_chunk < 1:
        raise ConfigError(f"teacher.channel_chunk must be >= 1 or null (auto), got {config.teacher.channel_chunk}")
    if not config.model.lora_dropout < 1.0:
        raise ConfigError(f"model.lora_dropout must be < 1, got {config.model.lora_dropout}")
    if len(config.training.adam_betas) != 2 or not all(0.0 <= b < 1.0 for b in config.training.adam_betas):
        raise ConfigError(f"training.adam_betas must be two numbers in [0, 1), got {config.training.adam_betas}")
    if config.data.max_gap < config.data.min_gap:
        raise ConfigError(f"data.max_gap ({config.data.max_gap}) must be >= data.min_gap ({config.data.min_gap})")
    if config.data.dataset == "synthetic" and config.data.num_frames <= config.data.min_gap:
        raise ConfigError(f"data.num_frames ({config.data.num_frames}) must exceed data.min_gap ({config.data.min_gap}) for synthetic scenes")
    if config.data.dataset != "synthetic" and not config.data.root:
        raise ConfigError(f"data.root is required for data.dataset={config.data.dataset!r}")
    if config.lifter.kind == "depth" and config.data.dataset == "re10k":
        raise ConfigError("lifter.kind='depth' needs depth maps, which RealEstate10K does not have; use lifter.kind='mvsplat'")
    if config.lifter.kind == "mvsplat" and not config.lifter.checkpoint:
        raise ConfigError("lifter.checkpoint is required for lifter.kind='mvsplat' (e.g. the MVSplat re10k.ckpt)")
    if config.model.pretrained is None:
        from ..backbones import RANDOM_PRESETS
        from ..models.snd_dinov2 import PRESETS

        if config.model.preset not in {**PRESETS, **RANDOM_PRESETS}:
            raise ConfigError(f"model.preset must be one of {sorted(PRESETS) + sorted(RANDOM_PRESETS)}, got {config.model.preset!r}")
    if isinstance(config.model.lora_target_modules, str) and config.model.lora_target_modules != "auto":
        raise ConfigError(f"model.lora_target_modules must be a list of module names or 'auto', got {config.model.lora_target_modules!r}")
    if config.model.finetune == "lora" and not config.model.lora_target_modules:
        raise ConfigError("model.lora_target_modules must name at least one module for finetune='lora'")
    return config
