"""Distillation losses: small modules that return a dict of named scalar losses (``"loss"`` is the total)."""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F


class PrototypeCrossEntropy(nn.Module):
    """Per-patch cross-entropy between teacher and student prototype distributions.

    ``-(softmax(teacher / t_teacher) * log_softmax(student / t_student)).sum(-1)``, averaged over
    patches. The SnD release uses temperatures 1 and averages over every patch, holes included
    (their features are zeroed before the heads); ``average="valid"`` averages over non-hole
    patches only.

    Args:
        student_temperature: divides the student logits. Default 1.0.
        teacher_temperature: divides the teacher logits. Default 1.0.
        average: ``"all"`` (default, as released) or ``"valid"``.
    """

    def __init__(self, student_temperature: float = 1.0, teacher_temperature: float = 1.0, average: str = "all") -> None:
        super().__init__()
        if student_temperature <= 0 or teacher_temperature <= 0:
            raise ValueError(f"temperatures must be > 0, got student={student_temperature}, teacher={teacher_temperature}")
        if average not in ("all", "valid"):
            raise ValueError(f"average must be 'all' or 'valid', got {average!r}")
        self.student_temperature = student_temperature
        self.teacher_temperature = teacher_temperature
        self.average = average

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, valid: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """
        Args:
            student_logits: ``[P, K]`` prototype logits of the student patches.
            teacher_logits: ``[P, K]`` prototype logits of the rendered teacher patches (no gradient).
            valid: optional ``[P]`` bool, False on holes (used by ``average="valid"``).
        """
        if student_logits.shape != teacher_logits.shape:
            raise ValueError(f"student and teacher logits differ in shape: {tuple(student_logits.shape)} vs {tuple(teacher_logits.shape)}")
        per_patch, entropy = _PrototypeCrossEntropyFunction.apply(
            student_logits, teacher_logits.detach(), float(self.student_temperature), float(self.teacher_temperature)
        )  # [P], [P]
        # The teacher entropy is the floor of the cross-entropy; CE - H = KL(teacher || student) shows progress
        # even when near-uniform teacher distributions (temperature 1, as released) keep the CE close to log K.
        if self.average == "valid" and valid is not None:
            weights = valid.to(per_patch.dtype)
            normaliser = weights.sum().clamp_min(1.0)
            loss = (per_patch * weights).sum() / normaliser
            mean_entropy = (entropy * weights).sum() / normaliser
        else:
            loss = per_patch.mean()
            mean_entropy = entropy.mean()
        return {"loss": loss, "prototype_ce": loss.detach(), "teacher_entropy": mean_entropy.detach(), "kl": loss.detach() - mean_entropy.detach()}


def _scaled_float(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``logits.float() / temperature`` without a copy when neither changes anything (float32 input, temperature 1)."""
    logits = logits.float()
    return logits if temperature == 1.0 else logits / temperature


def _row_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(a * b).sum(-1)`` for ``[P, K]`` inputs as one batched matrix product (no ``[P, K]`` product tensor)."""
    return torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).reshape(a.shape[0])  # [P]


class _PrototypeCrossEntropyFunction(torch.autograd.Function):
    """Per-patch ``-(softmax(t / t_t) * log_softmax(s / t_s)).sum(-1)`` and the teacher entropy, with a
    hand-written backward ``(softmax(s / t_s) - softmax(t / t_t)) / t_s`` (the gradient autograd derives from
    the same formula). Keeps three ``[P, K]`` float32 tensors (student log-probabilities, teacher
    probabilities and log-probabilities, the last freed after the forward) instead of ~8 temporaries."""

    @staticmethod
    def forward(ctx, student_logits: torch.Tensor, teacher_logits: torch.Tensor, student_temperature: float, teacher_temperature: float):
        teacher = _scaled_float(teacher_logits, teacher_temperature)  # [P, K]
        teacher_log_probs = F.log_softmax(teacher, dim=-1)  # [P, K]
        teacher_probs = teacher_log_probs.exp()  # [P, K]
        # -(p * log p).sum(): p = 0 (underflow) contributes 0 * finite = 0, as the clamped log of the original formula.
        entropy = -_row_dot(teacher_probs, teacher_log_probs)  # [P]
        del teacher_log_probs
        student_log_probs = F.log_softmax(_scaled_float(student_logits, student_temperature), dim=-1)  # [P, K]
        per_patch = -_row_dot(teacher_probs, student_log_probs)  # [P]
        ctx.save_for_backward(student_log_probs, teacher_probs)
        ctx.student_temperature = student_temperature
        ctx.student_dtype = student_logits.dtype
        ctx.mark_non_differentiable(entropy)
        return per_patch, entropy

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_per_patch: torch.Tensor, grad_entropy: torch.Tensor):
        student_log_probs, teacher_probs = ctx.saved_tensors
        grad = student_log_probs.exp()  # softmax(s / t_s), [P, K]
        grad.sub_(teacher_probs).mul_((grad_per_patch.float() / ctx.student_temperature)[:, None])
        return grad.to(ctx.student_dtype), None, None, None


class CosineDistillLoss(nn.Module):
    """``1 - cos(student, teacher)`` per patch on the raw features (no heads), averaged over non-hole patches.

    The "cosine instead of prototypes" ablation of the paper.
    """

    def forward(self, student_features: torch.Tensor, teacher_features: torch.Tensor, valid: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """
        Args:
            student_features: ``[P, C]``.
            teacher_features: ``[P, C]`` (no gradient).
            valid: optional ``[P]`` bool, False on holes.
        """
        if student_features.shape != teacher_features.shape:
            raise ValueError(f"student and teacher features differ in shape: {tuple(student_features.shape)} vs {tuple(teacher_features.shape)}")
        cosine = F.cosine_similarity(student_features.float(), teacher_features.detach().float(), dim=-1, eps=1e-8)
        per_patch = 1.0 - cosine
        if valid is not None:
            weights = valid.to(per_patch.dtype)
            loss = (per_patch * weights).sum() / weights.sum().clamp_min(1.0)
        else:
            loss = per_patch.mean()
        return {"loss": loss, "cosine": loss.detach()}
