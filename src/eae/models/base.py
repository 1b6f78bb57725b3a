"""What every model here is: normalisation -> backbone -> head.

Images enter in [0, 1]; normalisation is the model's first layer, so attacks,
ε-balls and clipping all live in pixel space and nobody normalises twice (or
forgets to). ``features(x)`` returns the penultimate features z and ``head(z)``
the logits, with ``forward = head ∘ features``: EAE perturbs the latent in closed
form using the head's weights, through :func:`linear_form`.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn


class Normalize(nn.Module):
    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        _check_normalisation(mean, std)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = max(self.mean.shape[1], self.std.shape[1])
        if x.ndim == 4 and x.shape[1] != channels and channels != 1:
            # broadcasting would make RGB of grey images: an attack confined to grey perturbations
            from ..errors import ModelError

            grey = " (x.expand(-1, 3, -1, -1) makes grey images RGB)" if x.shape[1] == 1 and channels == 3 else ""
            raise ModelError(f"the model takes {channels}-channel images (its normalisation has {channels} "
                             f"channel constants), got {x.shape[1]}-channel ones: give images of {channels} "
                             f"channels{grey}")
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


def _check_normalisation(mean: Any, std: Any) -> None:
    """Per-channel constants, 1 or 3 of each, finite, std > 0: else every logit is NaN or inf,
    or a broadcasting error blamed on the model much later."""
    from ..errors import ConfigError

    for name, v in (("mean", mean), ("std", std)):
        try:
            values = [float(a) for a in v]
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be a sequence of numbers (one per channel), got {v!r}", field=name) from None
        if len(values) not in (1, 3) or not all(math.isfinite(a) for a in values):
            raise ConfigError(f"{name} must be 1 or 3 finite numbers (one per channel), got {v!r}", field=name)
        if name == "std" and min(values) <= 0:
            raise ConfigError(f"std must be > 0 for every channel (the images are divided by it), got {v!r}",
                              field="std")


class CosineHead(nn.Module):
    """logits_k = s · cos(z, w_k): normalised features and weights, a fixed scale s, no
    bias. The logit scale is bounded by s, so the network cannot inflate it."""

    def __init__(self, in_features: int, out_features: int, scale: float = 16.0):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.scale = float(scale)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.scale * F.normalize(z, dim=1) @ F.normalize(self.weight, dim=1).T

    def extra_repr(self) -> str:
        return f"in_features={self.weight.shape[1]}, out_features={self.weight.shape[0]}, scale={self.scale}"


def linear_form(head: nn.Module, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(latent u, weight W, bias b) with head(z) = u W^T + b: the space in which the head
    is linear. For nn.Linear u = z; for the cosine head u = z / ||z|| and W = s · w / ||w||."""
    if isinstance(head, nn.Linear):
        return z, head.weight, head.bias
    if isinstance(head, CosineHead):
        return F.normalize(z, dim=1), head.scale * F.normalize(head.weight, dim=1), None
    raise TypeError(f"no linear form known for head {type(head).__name__}")


class Classifier(nn.Module):
    """``normalize`` (a module), ``backbone`` (images -> (B, D) features), ``head``
    (nn.Linear, or :class:`CosineHead`)."""

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

    def forward(self, x: torch.Tensor, return_features: bool = False):
        """Logits; with ``return_features``, (logits, features) from one pass (EAE uses
        this so that its training forward goes through the DDP wrapper)."""
        z = self.features(x)
        return (self.head(z), z) if return_features else self.head(z)
