"""Scale-out helpers that need no second process: gradient checkpointing and the memory estimate."""

from __future__ import annotations

import warnings

import pytest
import torch

from snd.distill import load_config


@pytest.mark.parametrize("finetune", ["full", "lora"])
def test_gradient_checkpointing_gives_the_same_gradients(finetune):
    from snd.distill.build import build_student, enable_gradient_checkpointing

    config = load_config(overrides=[f"model.finetune={finetune}", "model.lora_dropout=0.0", "loss.kind=prototype"])  # with its head
    torch.manual_seed(0)
    plain = build_student(config)
    torch.manual_seed(0)
    checkpointed = build_student(config)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # transformers 5.25: gradient_checkpointing_enable is deprecated
        enable_gradient_checkpointing(checkpointed.backbone)
    images = torch.rand(2, 3, 28, 42, generator=torch.Generator().manual_seed(1))
    gradients = []
    for student in (plain, checkpointed):
        student.train()
        output = student(images)
        (output["logits"].logsumexp(-1).mean() + output["features"].square().mean()).backward()
        gradients.append({name: p.grad.clone() for name, p in student.named_parameters() if p.requires_grad})
    assert gradients[0].keys() == gradients[1].keys() and gradients[0]
    for name in gradients[0]:
        torch.testing.assert_close(gradients[1][name], gradients[0][name], rtol=0, atol=1e-6, msg=name)
    layer = next(m for m in checkpointed.backbone.modules() if hasattr(m, "gradient_checkpointing"))
    assert layer.gradient_checkpointing


TINY_MEMORY = ["model.pretrained=null", "model.preset=tiny", "model.finetune=full", "head.num_prototypes=64", "head.hidden_dim=16",
               "head.bottleneck_dim=8", "head.num_layers=3", "data.image_height=30", "data.image_width=45",
               "training.batch_size=3", "data.num_target_views=2", "training.mixed_precision=no", "loss.kind=prototype"]


def test_memory_estimate_matches_a_hand_computation_for_a_tiny_config():
    """The tiny SnD student (hidden 32, 2 blocks, MLP 128, patch 14, CLS only) and a 64-prototype head, by hand."""
    from snd.benchmarks.memory import GIB, architecture, estimate
    from snd.distill.build import build_student

    config = load_config(overrides=TINY_MEMORY)
    student = build_student(config)  # the real model: its parameter count is the hand count's input
    parameters = sum(p.numel() for p in student.parameters())
    trainable = sum(p.numel() for p in student.parameters() if p.requires_grad)
    head = sum(p.numel() for p in student.head.parameters())
    block = sum(p.numel() for p in student.backbone.encoder.layer[0].parameters())
    arch = architecture(config)
    assert (arch.parameters, arch.trainable, arch.blocks, arch.hidden, arch.widest_linear, arch.patch_size, arch.prefix_tokens) == \
        (parameters, trainable, 2, 32, 128, 14, 1)
    assert arch.largest_unit == max(block, head, parameters - head - 2 * block)

    # 30 x 45 is cut to 28 x 42: 2 x 3 = 6 patches; the student sees 3 samples x 2 target views = 6 images of 1 + 6 tokens
    tokens = 6 * 7
    per_token_block = 10 * 32 + 2 * 128
    ddp = estimate(config, 1, "ddp", arch)
    assert ddp.parameters == 4 * parameters and ddp.ema_teacher == 4 * parameters
    assert ddp.gradients == 4 * trainable and ddp.optimizer == 8 * trainable and ddp.gathered_units == 0
    assert ddp.activations == 2 * tokens * per_token_block * 4
    assert ddp.activations_checkpointed == (2 * tokens * 32 + tokens * per_token_block) * 4
    assert ddp.head == 6 * 6 * (2 * 16 + 8 + 4 * 64) * 4
    assert ddp.teacher_forward == 3 * 2 * 7 * per_token_block * 4  # 3 samples x 2 context views, one block, no grad
    context_pixels, target_pixels = 3 * 2 * 30 * 45, 6 * 30 * 45
    assert ddp.channel_chunk == 32 and ddp.teacher_maps == 32 * 4 * (2 * context_pixels + 3 * target_pixels)
    assert ddp.total(False) == 8 * parameters + 12 * trainable + max(ddp.teacher_forward + ddp.teacher_maps, ddp.activations + ddp.head)

    sharded = estimate(config, 4, "fsdp2", arch)
    assert sharded.parameters == parameters and sharded.optimizer == 2 * trainable  # a quarter each
    assert sharded.gathered_units == 2 * 4 * arch.largest_unit
    assert sharded.activations == ddp.activations and sharded.head == ddp.head
    assert GIB == 2**30


def test_memory_command_prints_the_table(capsys):
    from snd.benchmarks.memory import main

    argv = ["--gpus", "4"]
    for override in TINY_MEMORY:
        argv += ["--set", override]
    rows = main(argv)
    assert [row["distributed"] for row in rows] == ["ddp", "fsdp2"] and all(row["gpus"] == 4 for row in rows)
    output = capsys.readouterr().out
    assert "| GiB per GPU | DDP x 4 | FSDP2 x 4 |" in output and "activations, gradient checkpointing" in output


@pytest.mark.parametrize("preset,base", [("scannetpp_dinov2g", "scannetpp_dinov2b"), ("scannetpp_dinov3l", "scannetpp_dinov3b")])
def test_large_presets_keep_the_paper_recipe_of_their_base(preset, base):
    from snd.distill import preset_names

    assert preset in preset_names()
    config, reference = load_config(preset).validate(), load_config(base)
    for section in ("head", "loss", "teacher", "lifter", "data"):
        assert getattr(config, section) == getattr(reference, section), section
    assert config.training.batch_size == 2 and config.training.lr == reference.training.lr
    assert config.model.finetune == "lora" and config.model.pretrained != reference.model.pretrained
    if preset == "scannetpp_dinov2g":
        assert config.training.distributed == "fsdp2" and config.training.gradient_checkpointing


def test_memory_estimate_of_the_embedded_default_resolves_the_shipped_backbone():
    """`scripts/benchmark.py memory` with no config: nano-2d is a shipped asset name, not a Hub id or a folder; the
    cosine loss builds no head. The estimate counts exactly the student the run builds."""
    from snd.benchmarks.memory import architecture
    from snd.distill.build import build_student

    config = load_config()
    assert config.model.pretrained == "nano-2d" and config.loss.kind == "cosine"
    student = build_student(config)
    assert student.head is None
    assert architecture(config).parameters == sum(p.numel() for p in student.parameters())
