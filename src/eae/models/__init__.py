"""Architectures, registered by name. ``create_model(name, num_classes, mean, std)``."""
from __future__ import annotations

from typing import Sequence

from torch import nn

from ..errors import ConfigError
from . import resnet, wide_resnet  # noqa: F401  (registration)
from .base import Classifier, CosineHead, Normalize, linear_form
from .library import is_library_arch, library_classifier
from .registry import MODELS, register_model

HEADS = ("linear", "cosine")
MAX_CLASSES = 1_000_000  # beyond any dataset (ImageNet-21k: 21,841); more is a typo that would exhaust memory


def create_model(name: str, num_classes: int = 10, mean: Sequence[float] = (0.5,) * 3,
                 std: Sequence[float] = (0.5,) * 3, head: str = "linear", head_scale: float = 16.0) -> Classifier:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or not 1 <= num_classes <= MAX_CLASSES:
        from ..config import type_fix

        raise ConfigError(f"num_classes must be an integer in [1, {MAX_CLASSES:,}], got {num_classes!r}"
                          f"{type_fix(num_classes, int)}",
                          field="num_classes")
    if is_library_arch(name):  # timm:NAME, torchvision:NAME: the library's own normalisation
        model = library_classifier(name, num_classes)
    else:
        model = _build(name, num_classes, mean, std)
    if head == "cosine":
        model.head = CosineHead(model.feature_dim, num_classes, head_scale)
    elif head != "linear":
        raise ConfigError(f"unknown head {head!r}; use one of {', '.join(HEADS)}", field="head")
    return model


def _build(name: str, num_classes: int, mean: Sequence[float], std: Sequence[float]) -> Classifier:
    """A registered architecture, built; a user's factory that fails or builds something else
    is named (a ModelError), not a traceback from deep inside training."""
    from ..errors import ModelError

    model = MODELS.build(name, f"as {name}(num_classes={num_classes}, mean=..., std=...)", num_classes=num_classes,
                         mean=mean, std=std)
    if not isinstance(model, Classifier):  # the methods read its features and head (EAE's latent term)
        raise ModelError(f"architecture {name!r} built a {type(model).__name__}, not an eae.models.Classifier: build "
                         "it as Classifier(backbone, feature_dim, num_classes, mean, std), whose features and head "
                         "the training methods use")
    if model.num_classes != num_classes:
        raise ModelError(f"architecture {name!r} built a classifier of {model.num_classes} classes, asked for "
                         f"{num_classes}")
    return model


def list_models() -> list[str]:
    return MODELS.names()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["Classifier", "CosineHead", "Normalize", "linear_form", "HEADS", "MODELS", "register_model",
           "create_model", "list_models", "count_parameters"]
