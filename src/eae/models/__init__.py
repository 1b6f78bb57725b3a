"""Architectures, registered by name. ``create_model(name, num_classes, mean, std)``."""
from __future__ import annotations

from typing import Sequence

from torch import nn

from . import resnet, wide_resnet  # noqa: F401  (registration)
from .base import Classifier, Normalize
from .registry import MODELS, register_model


def create_model(name: str, num_classes: int = 10, mean: Sequence[float] = (0.5,) * 3,
                 std: Sequence[float] = (0.5,) * 3) -> Classifier:
    return MODELS.get(name)(num_classes=num_classes, mean=mean, std=std)


def list_models() -> list[str]:
    return MODELS.names()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["Classifier", "Normalize", "MODELS", "register_model", "create_model", "list_models",
           "count_parameters"]
