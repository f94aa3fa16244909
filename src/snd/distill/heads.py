"""DINO-style projection head: the prototype space in which student and teacher are compared."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


class DINOHead(nn.Module):
    """MLP -> L2-normalised bottleneck -> weight-normalised linear layer onto prototypes.

    As DINO/DINOv2's head: ``num_layers`` linear layers with GELU between them (hidden width
    ``hidden_dim``, output ``bottleneck_dim``), L2 normalisation, then a bias-free weight-normed
    linear layer to ``num_prototypes`` logits whose gain starts at 1.

    Args:
        in_dim: backbone feature width (384 for ViT-S, 768 for ViT-B).
        num_prototypes: number of prototypes (logits). Default 65536.
        hidden_dim: MLP width. Default 2048.
        bottleneck_dim: width before the prototype layer. Default 256.
        num_layers: MLP depth (>= 1). Default 3.
        freeze_last_layer_norm: keep the weight-norm gain fixed at 1 (DINO's ``norm_last_layer``).
            Default False (the SnD release trains it).
    """

    def __init__(
        self,
        in_dim: int,
        num_prototypes: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        num_layers: int = 3,
        freeze_last_layer_norm: bool = False,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"DINOHead.num_layers must be >= 1, got {num_layers}")
        for name, value in [("in_dim", in_dim), ("num_prototypes", num_prototypes), ("hidden_dim", hidden_dim), ("bottleneck_dim", bottleneck_dim)]:
            if value < 1:
                raise ValueError(f"DINOHead.{name} must be >= 1, got {value}")
        if num_layers == 1:
            layers: list[nn.Module] = [nn.Linear(in_dim, bottleneck_dim)]
        else:
            layers = [nn.Linear(in_dim, hidden_dim), nn.GELU()]
            for _ in range(num_layers - 2):
                layers += [nn.Linear(hidden_dim, hidden_dim), nn.GELU()]
            layers.append(nn.Linear(hidden_dim, bottleneck_dim))
        self.mlp = nn.Sequential(*layers)
        self.apply(self._init_weights)
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, num_prototypes, bias=False))
        with torch.no_grad():
            self.last_layer.parametrizations.weight.original0.fill_(1.0)
        if freeze_last_layer_norm:
            self.last_layer.parametrizations.weight.original0.requires_grad_(False)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``features [..., in_dim]`` -> prototype logits ``[..., num_prototypes]``."""
        hidden = self.mlp(features)
        eps = 1e-6 if hidden.dtype == torch.float16 else 1e-12
        hidden = nn.functional.normalize(hidden, dim=-1, p=2, eps=eps)
        # The weight-normalised prototype matrix is rebuilt on every forward, grad or not. A cache keyed on the
        # parameters' version counters served stale logits: fused optimisers (torch's fused Adam, our CPU default)
        # update parameters without bumping those counters. Rebuilding costs two passes over the prototypes, small
        # beside the [N, bottleneck] x [bottleneck, prototypes] product.
        return self.last_layer(hidden)

    def prototype_weight(self) -> torch.Tensor:
        """The weight-normalised ``[num_prototypes, bottleneck_dim]`` prototype matrix ``g * v / ||v||``, rebuilt
        from the current parameters on every call (with its graph when autograd records)."""
        return self.last_layer.weight
