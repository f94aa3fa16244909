"""Per-GPU memory estimate of a distillation run, computed from its config (no GPU, no weights downloaded).

``python scripts/benchmark.py memory --config scannetpp_dinov2g --gpus 8`` prints, for DDP and FSDP2 on ``--gpus``
processes (DDP alone for one), the bytes each GPU holds for: parameters, gradients and Adam moments of the student, the EMA teacher,
FSDP2's gathered units, the student's activations without and with gradient checkpointing, the projection head (its
parameters are in the rows above; this row is its activations and the prototype logits), the teacher's forward and
the teacher's full-resolution feature maps (one channel chunk). The architecture is built on the meta device (known
Hub ids map to their architecture, see :data:`KNOWN_BACKBONES`), so every parameter count is exact; activations follow
the formulas in :func:`estimate` (an estimate: allocator slack, the CUDA context and the lifter are not counted).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass

from torch import nn

GIB = 2**30
CONTEXT_VIEWS = 2  # SnD's two context views per sample (snd.data.sampler)

# Hub ids -> the architecture to build on the meta device: an SnDConfig preset, or (transformers model type, config).
_DINOV3 = dict(num_register_tokens=4, patch_size=16, layerscale_value=1e-5, layer_norm_eps=1e-5)
KNOWN_BACKBONES: dict[str, tuple[str, dict | None]] = {
    "facebook/dinov2-small": ("dinov2-s", None),
    "facebook/dinov2-base": ("dinov2-b", None),
    "facebook/dinov2-large": ("dinov2-l", None),
    "facebook/dinov2-giant": ("dinov2-g", None),
    "facebook/dinov3-vits16-pretrain-lvd1689m": ("dinov3_vit", dict(_DINOV3, hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536)),
    "facebook/dinov3-vitb16-pretrain-lvd1689m": ("dinov3_vit", dict(_DINOV3, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)),
    "facebook/dinov3-vitl16-pretrain-lvd1689m": ("dinov3_vit", dict(_DINOV3, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)),
    "facebook/dinov3-vith16plus-pretrain-lvd1689m": ("dinov3_vit", dict(_DINOV3, hidden_size=1280, num_hidden_layers=32, num_attention_heads=20, intermediate_size=5120, use_gated_mlp=True)),
    "facebook/dinov3-vit7b16-pretrain-lvd1689m": ("dinov3_vit", dict(_DINOV3, hidden_size=4096, num_hidden_layers=40, num_attention_heads=32, intermediate_size=8192, use_gated_mlp=True)),
}


@dataclass
class Architecture:
    """What the estimate needs from the student, counted on a meta-device build."""

    parameters: int  # student backbone + head
    trainable: int
    largest_unit: int  # the largest FSDP2 unit (a block, the backbone's own parameters, or the head)
    blocks: int
    hidden: int
    widest_linear: int  # the widest Linear output in a block (the MLP's first layer; SwiGLU's fused w12)
    channels: int  # teacher feature channels
    patch_size: int
    prefix_tokens: int


@dataclass
class Estimate:
    """Bytes per GPU (see :func:`estimate`)."""

    gpus: int
    distributed: str
    parameters: float
    gradients: float
    optimizer: float
    ema_teacher: float
    gathered_units: float
    activations: float
    activations_checkpointed: float
    head: float
    teacher_forward: float
    teacher_maps: float
    channel_chunk: int

    def total(self, checkpointing: bool) -> float:
        fixed = self.parameters + self.gradients + self.optimizer + self.ema_teacher + self.gathered_units
        active = self.activations_checkpointed if checkpointing else self.activations
        # the teacher's forward and maps come before the student's forward; the head's after: their peak is the larger
        return fixed + max(self.teacher_forward + self.teacher_maps, active + self.head)


def _meta_backbone(model_config) -> nn.Module:
    from ..assets import resolve
    from ..backbones import random_backbone

    source = resolve(model_config.pretrained)  # a shipped model's bare name (nano-2d) -> its folder
    if source is None:
        return random_backbone(model_config.preset, model_config.config_overrides)
    if source not in KNOWN_BACKBONES:
        from pathlib import Path

        if (Path(source) / "config.json").is_file():
            from transformers import AutoConfig, AutoModel

            return AutoModel.from_config(AutoConfig.from_pretrained(source))
        raise ValueError(f"memory estimate: unknown backbone {source!r}; known Hub ids are {sorted(KNOWN_BACKBONES)} "
                         "(or a local folder with config.json, or model.pretrained=null with model.preset)")
    name, values = KNOWN_BACKBONES[source]
    if values is None:
        return random_backbone(name, model_config.config_overrides)
    from transformers import AutoConfig, AutoModel

    return AutoModel.from_config(AutoConfig.for_model(name, **{**values, **model_config.config_overrides}))


def architecture(config) -> Architecture:
    """Build the run's student (backbone with LoRA or not, head) on the meta device and count it."""
    from ..backbones import backbone_spec, unwrap_backbone
    from ..distill.build import DistillStudent, apply_finetuning
    from ..distill.fsdp import _block_list
    from ..distill.heads import DINOHead

    from accelerate import init_empty_weights

    with init_empty_weights():  # parameters on the meta device; other tensors (e.g. drop-path rates) as usual
        backbone = apply_finetuning(_meta_backbone(config.model), config.model)
        base = unwrap_backbone(backbone)
        hidden = base.config.hidden_size
        head = None
        if config.loss.kind == "prototype":
            head = DINOHead(hidden, num_prototypes=config.head.num_prototypes, hidden_dim=config.head.hidden_dim,
                            bottleneck_dim=config.head.bottleneck_dim, num_layers=config.head.num_layers,
                            freeze_last_layer_norm=config.head.freeze_last_layer_norm)
        spec = backbone_spec(backbone)
        student = DistillStudent(backbone, head, spec.patch_size)
    blocks = _block_list(backbone)

    def count(module, trainable_only=False):
        return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)

    block_sizes = [count(block) for block in blocks]
    own = count(backbone) - sum(block_sizes)
    widest = max(m.out_features for m in blocks[0].modules() if isinstance(m, nn.Linear))
    return Architecture(
        parameters=count(student), trainable=count(student, True),
        largest_unit=max(block_sizes + [own] + ([count(head)] if head is not None else [])),
        blocks=len(blocks), hidden=hidden, widest_linear=widest, channels=hidden, patch_size=spec.patch_size,
        prefix_tokens=spec.num_prefix_tokens,
    )


def estimate(config, gpus: int, distributed: str, arch: Architecture | None = None) -> Estimate:
    """Bytes each of ``gpus`` processes holds, for ``distributed`` "ddp" or "fsdp2", with ``config.training.batch_size``
    samples per process.

    State (fp32): parameters ``4 P``, gradients ``4 P_train``, Adam moments ``8 P_train``, EMA teacher ``4 P`` (a full
    copy, frozen LoRA base weights included); FSDP2 divides each by ``gpus`` and adds two gathered units (the one
    running and the one prefetched, ``2 x 4 x largest unit``). Activations, ``a`` bytes a value (4, or 2 under
    bf16/fp16 autocast), ``T`` student tokens (``batch x target views x (prefix + patches)``), per block ``T (10 h +
    2 f)`` values (``h`` hidden, ``f`` the widest linear output; memory-efficient attention stores no score matrix):
    all ``L`` blocks without checkpointing; with it, each block's input (``L T h``) plus one block's working set. Head:
    ``N (2 hidden_dim + bottleneck + 4 K)`` values for ``N`` student patches (two MLP layers, the bottleneck, student
    logits and log-softmax, teacher logits and softmax). Teacher forward (no gradients): one block's working set on
    ``batch x 2`` context views. Teacher maps: one channel chunk of :func:`snd.distill.teacher.feature_map_bytes_per_channel`.
    """
    from ..distill.teacher import auto_channel_chunk, feature_map_bytes_per_channel

    if distributed not in ("ddp", "fsdp2"):
        raise ValueError(f"distributed must be 'ddp' or 'fsdp2', got {distributed!r}")
    if distributed == "fsdp2" and gpus < 2:
        raise ValueError("FSDP2 needs 2 or more GPUs (one process trains unsharded, as DDP x 1)")
    arch = arch or architecture(config)
    data, training = config.data, config.training
    shards = gpus if distributed == "fsdp2" else 1
    value = 2 if training.mixed_precision in ("bf16", "fp16") else 4
    height, width = data.image_height - data.image_height % arch.patch_size, data.image_width - data.image_width % arch.patch_size
    patches = (height // arch.patch_size) * (width // arch.patch_size)
    student_images = training.batch_size * data.num_target_views
    tokens = student_images * (arch.prefix_tokens + patches)
    per_token_block = 10 * arch.hidden + 2 * arch.widest_linear
    context_tokens = training.batch_size * CONTEXT_VIEWS * (arch.prefix_tokens + patches)
    head = 0
    if config.loss.kind == "prototype":
        head = student_images * patches * (2 * config.head.hidden_dim + config.head.bottleneck_dim + 4 * config.head.num_prototypes) * value
    context_pixels = training.batch_size * CONTEXT_VIEWS * data.image_height * data.image_width
    target_pixels = student_images * data.image_height * data.image_width
    chunk = config.teacher.channel_chunk or auto_channel_chunk(arch.channels, context_pixels, target_pixels,
                                                                int(config.teacher.feature_budget_gib * GIB))
    chunk = min(chunk, arch.channels)
    return Estimate(
        gpus=gpus,
        distributed=distributed,
        parameters=4 * arch.parameters / shards,
        gradients=4 * arch.trainable / shards,
        optimizer=8 * arch.trainable / shards,
        ema_teacher=4 * arch.parameters / shards,
        gathered_units=2 * 4 * arch.largest_unit if distributed == "fsdp2" else 0,
        activations=arch.blocks * tokens * per_token_block * value,
        activations_checkpointed=(arch.blocks * tokens * arch.hidden + tokens * per_token_block) * value,
        head=head,
        teacher_forward=context_tokens * per_token_block * value,
        teacher_maps=chunk * feature_map_bytes_per_channel(context_pixels, target_pixels),
        channel_chunk=chunk,
    )


ROWS = [
    ("parameters", "student parameters (fp32)"),
    ("gradients", "gradients"),
    ("optimizer", "Adam moments"),
    ("ema_teacher", "EMA teacher"),
    ("gathered_units", "FSDP2 gathered units"),
    ("activations", "activations, no checkpointing"),
    ("activations_checkpointed", "activations, gradient checkpointing"),
    ("head", "head activations + logits"),
    ("teacher_forward", "teacher forward (no grad)"),
    ("teacher_maps", "teacher maps (one channel chunk)"),
]


def table(estimates: list[Estimate]) -> str:
    header = "| GiB per GPU | " + " | ".join(f"{e.distributed.upper()} x {e.gpus}" for e in estimates) + " |"
    lines = [header, "|---|" + "---:|" * len(estimates)]
    for key, label in ROWS:
        lines.append(f"| {label} | " + " | ".join(f"{getattr(e, key) / GIB:.2f}" for e in estimates) + " |")
    for checkpointing in (False, True):
        label = "**total, gradient checkpointing**" if checkpointing else "**total**"
        lines.append(f"| {label} | " + " | ".join(f"**{e.total(checkpointing) / GIB:.1f}**" for e in estimates) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    from ..distill import load_config

    parser = argparse.ArgumentParser(prog="benchmark.py memory", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None, help="a preset name or YAML file (default: the embedded default)")
    parser.add_argument("--gpus", type=int, default=1, help="processes (GPUs) the run is spread over")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if args.gpus < 1:
        parser.error("--gpus must be >= 1")
    config = load_config(args.config, overrides=args.set)
    arch = architecture(config)
    estimates = [estimate(config, args.gpus, kind, arch) for kind in (("ddp", "fsdp2") if args.gpus > 1 else ("ddp",))]
    rows = [{**asdict(e), "total": e.total(False), "total_checkpointed": e.total(True)} for e in estimates]
    if args.json:
        print(json.dumps({"architecture": asdict(arch), "estimates": rows}, indent=2))
    else:
        print(f"{args.config or 'default'}: {arch.parameters:,} parameters ({arch.trainable:,} trainable), {arch.blocks} blocks, "
              f"batch {config.training.batch_size} per GPU at {config.data.image_height}x{config.data.image_width}, "
              f"teacher channel chunk {estimates[0].channel_chunk} of {arch.channels}")
        print(table(estimates))
    return rows
