"""Projection head, losses and the EMA teacher against closed forms written out by hand."""

import pytest
import torch
from torch import nn

from snd.distill.heads import DINOHead
from snd.distill.loss import CosineDistillLoss, PrototypeCrossEntropy
from snd.distill.teacher import EMATeacher


def test_dino_head_shapes_and_structure():
    head = DINOHead(in_dim=32, num_prototypes=64, hidden_dim=48, bottleneck_dim=16, num_layers=3)
    linears = [m for m in head.mlp if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(32, 48), (48, 48), (48, 16)]
    assert head(torch.randn(5, 7, 32)).shape == (5, 7, 64)
    # weight norm: gain starts at 1, so every prototype row has unit norm
    weight = head.last_layer.weight
    torch.testing.assert_close(weight.norm(dim=1), torch.ones(64))
    # closed form of the forward pass
    x = torch.randn(4, 32)
    hidden = head.mlp(x)
    expected = (hidden / hidden.norm(dim=-1, keepdim=True)) @ weight.T
    torch.testing.assert_close(head(x), expected)
    with pytest.raises(ValueError, match="num_layers"):
        DINOHead(in_dim=8, num_layers=0)


def test_dino_head_single_layer_and_frozen_norm():
    head = DINOHead(in_dim=8, num_prototypes=10, bottleneck_dim=4, num_layers=1, freeze_last_layer_norm=True)
    assert isinstance(head.mlp[0], nn.Linear) and len(head.mlp) == 1
    assert not head.last_layer.parametrizations.weight.original0.requires_grad


def test_prototype_cross_entropy_closed_form():
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(6, 5, generator=generator, requires_grad=True)
    teacher = torch.randn(6, 5, generator=generator)
    loss = PrototypeCrossEntropy(student_temperature=0.5, teacher_temperature=0.25)(student, teacher)
    total = 0.0
    for row in range(6):
        p = torch.exp(teacher[row] / 0.25) / torch.exp(teacher[row] / 0.25).sum()
        log_q = student[row] / 0.5 - torch.logsumexp(student[row] / 0.5, dim=0)
        total = total - (p * log_q).sum()
    torch.testing.assert_close(loss["loss"], total / 6)
    loss["loss"].backward()
    # closed form of d loss / d student: (softmax(student / t_s) - softmax(teacher / t_t)) / (t_s * rows)
    expected = (torch.softmax(student.detach() / 0.5, dim=-1) - torch.softmax(teacher / 0.25, dim=-1)) / (0.5 * 6)
    torch.testing.assert_close(student.grad, expected, rtol=1e-5, atol=1e-7)


def test_prototype_cross_entropy_valid_average():
    student, teacher = torch.randn(4, 3), torch.randn(4, 3)
    valid = torch.tensor([True, False, True, False])
    all_patches = PrototypeCrossEntropy(average="all")(student, teacher, valid)["loss"]
    only_valid = PrototypeCrossEntropy(average="valid")(student, teacher, valid)["loss"]
    torch.testing.assert_close(only_valid, PrototypeCrossEntropy()(student[valid], teacher[valid])["loss"])
    assert not torch.allclose(all_patches, only_valid)
    with pytest.raises(ValueError, match="average"):
        PrototypeCrossEntropy(average="sum")


def test_cosine_loss_closed_form():
    student = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    teacher = torch.tensor([[2.0, 0.0], [1.0, 0.0], [-1.0, -1.0]])
    valid = torch.tensor([True, True, False])
    loss = CosineDistillLoss()(student, teacher, valid)
    torch.testing.assert_close(loss["loss"], torch.tensor(0.5))  # (0 + 1) / 2; the hole (cos = -1) ignored
    torch.testing.assert_close(CosineDistillLoss()(student, teacher)["loss"], torch.tensor(3.0 / 3))


def test_ema_teacher_update_rule_and_interval():
    student = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    student[1].weight.requires_grad_(False)  # a frozen parameter (as under LoRA) must stay untouched
    head = nn.Linear(2, 2)
    teacher = EMATeacher(student, head, momentum=0.9, update_every=3)
    assert all(not p.requires_grad for p in teacher.parameters())
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    with torch.no_grad():
        for p in list(student.parameters()) + list(head.parameters()):
            p.add_(1.0)
    assert not teacher.maybe_update(2, student, head)
    assert torch.equal(teacher.backbone[0].weight, before["backbone.0.weight"])
    assert teacher.maybe_update(3, student, head)
    torch.testing.assert_close(teacher.backbone[0].weight, 0.9 * before["backbone.0.weight"] + 0.1 * student[0].weight)
    torch.testing.assert_close(teacher.head.bias, 0.9 * before["head.bias"] + 0.1 * head.bias)
    assert torch.equal(teacher.backbone[1].weight, before["backbone.1.weight"])
    teacher.train()
    assert not teacher.training
    with pytest.raises(ValueError, match="momentum"):
        EMATeacher(student, momentum=1.5)


def test_prototype_cross_entropy_reports_kl_to_the_teacher():
    student, teacher = torch.randn(5, 7), torch.randn(5, 7)
    losses = PrototypeCrossEntropy()(student, teacher)
    p = torch.softmax(teacher, -1)
    expected_kl = (p * (torch.log(p) - torch.log_softmax(student, -1))).sum(-1).mean()
    torch.testing.assert_close(losses["kl"], expected_kl)
    torch.testing.assert_close(PrototypeCrossEntropy()(teacher, teacher)["kl"], torch.tensor(0.0), atol=1e-6, rtol=0)
