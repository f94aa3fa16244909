"""Scale-out helpers that need no second process: gradient checkpointing and the memory estimate."""

from __future__ import annotations

import pytest
import torch

from snd.distill import load_config


@pytest.mark.parametrize("finetune", ["full", "lora"])
def test_gradient_checkpointing_gives_the_same_gradients(finetune):
    from snd.distill.build import build_student, enable_gradient_checkpointing

    config = load_config(overrides=[f"model.finetune={finetune}", "model.lora_dropout=0.0"])
    torch.manual_seed(0)
    plain = build_student(config)
    torch.manual_seed(0)
    checkpointed = build_student(config)
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
