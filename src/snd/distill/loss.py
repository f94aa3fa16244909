"""Distillation losses: small modules that return a dict of named scalar losses (``"loss"`` is the total)."""

from __future__ import annotations

import torch
from torch import nn
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
        teacher_probs = F.softmax(teacher_logits.float() / self.teacher_temperature, dim=-1).detach()
        student_log_probs = F.log_softmax(student_logits.float() / self.student_temperature, dim=-1)
        per_patch = -(teacher_probs * student_log_probs).sum(dim=-1)  # [P]
        # The teacher entropy is the floor of the cross-entropy; CE - H = KL(teacher || student) shows progress
        # even when near-uniform teacher distributions (temperature 1, as released) keep the CE close to log K.
        entropy = -(teacher_probs * torch.log(teacher_probs.clamp_min(1e-30))).sum(dim=-1)  # [P]
        if self.average == "valid" and valid is not None:
            weights = valid.to(per_patch.dtype)
            normaliser = weights.sum().clamp_min(1.0)
            loss = (per_patch * weights).sum() / normaliser
            mean_entropy = (entropy * weights).sum() / normaliser
        else:
            loss = per_patch.mean()
            mean_entropy = entropy.mean()
        return {"loss": loss, "prototype_ce": loss.detach(), "teacher_entropy": mean_entropy.detach(), "kl": loss.detach() - mean_entropy.detach()}


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
