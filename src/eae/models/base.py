"""What every model here is: normalisation -> backbone -> linear head.

Images enter in [0, 1]; normalisation is the model's first layer, so attacks,
ε-balls and clipping all live in pixel space and nobody normalises twice (or
forgets to). ``features(x)`` returns the penultimate features z and ``head(z)``
the logits, with ``forward = head ∘ features``: EAE perturbs z in closed form
using the head's weights.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class Normalize(nn.Module):
    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


class Classifier(nn.Module):
    """``normalize`` (a module), ``backbone`` (images -> (B, D) features), ``head`` (nn.Linear)."""

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int,
                 mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.backbone = backbone
        self.head = nn.Linear(feature_dim, num_classes)
        self.feature_dim = feature_dim
        self.num_classes = num_classes

    def features(self, x: torch.Tensor) -> torch.Tensor:
        backbone = self.backbone
        if self.training:
            backbone = self.__dict__.get("_train_backbone", backbone)
        return backbone(self.normalize(x))

    def compile_for_training(self, **kwargs) -> None:
        """``torch.compile`` the backbone for train-mode calls only. Evaluation (eval
        mode, no_grad, frozen parameters) stays eager, so it does not multiply
        recompilations. Stored outside the module tree: ``state_dict`` is unchanged."""
        object.__setattr__(self, "_train_backbone", torch.compile(self.backbone, **kwargs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
