"""Networks from timm and torchvision, as :class:`Classifier` s: normalise -> features -> head.

``--arch timm:NAME`` builds ``timm.create_model(NAME, num_classes=0)``, whose output is
the penultimate (pre-logits) feature vector, the one ``forward_head(pre_logits=True)``
gives, and puts a fresh linear head on it; the normalisation is the model's own
pretrained config (mean, std). ``--arch torchvision:NAME`` builds the model and takes
its last linear layer out as the head. Either way EAE perturbs the same penultimate
features as for our own networks, and a saved run reloads with ``eae.load``.
Pretrained weights are never downloaded.
"""
from __future__ import annotations

import importlib
from typing import Sequence

from torch import nn

from ..errors import EaeError
from .base import Classifier

LIBRARIES = ("timm", "torchvision")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class MissingDependency(EaeError, ImportError):
    """An optional library (timm, torchvision), or a user's module, that cannot be imported."""


def is_library_arch(name: str) -> bool:
    prefix, sep, rest = name.partition(":")
    return bool(sep) and prefix in LIBRARIES and bool(rest)


def import_library(lib: str, arch: str | None = None):
    """The module ``lib``; ``arch``: the architecture asked for (named in the error)."""
    try:
        return importlib.import_module(lib)
    except ImportError:
        raise MissingDependency(f"architecture {arch or lib + ':...'} needs {lib}: pip install 'eae-at[{lib}]' "
                                f"(or pip install {lib})") from None


def library_classifier(name: str, num_classes: int) -> Classifier:
    lib, _, model_name = name.partition(":")
    if lib == "timm":
        return _timm(import_library("timm", name), model_name, num_classes)
    import_library("torchvision", name)
    return _torchvision(model_name, num_classes)


def _timm(timm, name: str, num_classes: int) -> Classifier:
    body = timm.create_model(name, pretrained=False, num_classes=0)  # forward = pre-logits features
    dim = getattr(body, "head_hidden_size", None) or body.num_features
    cfg = getattr(body, "pretrained_cfg", None) or {}
    return Classifier(body, dim, num_classes, cfg.get("mean", IMAGENET_MEAN), cfg.get("std", IMAGENET_STD))


def _torchvision(name: str, num_classes: int) -> Classifier:
    import torchvision.models

    net = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    parent, attr, head = _last_linear(net, num_classes)
    setattr(parent, attr, nn.Identity())  # the body now ends at the penultimate features
    model = Classifier(net, head.in_features, num_classes, IMAGENET_MEAN, IMAGENET_STD)
    model.head = head
    return model


def _last_linear(net: nn.Module, num_classes: int) -> tuple[nn.Module, str, nn.Linear]:
    """(parent module, attribute name, layer) of the last nn.Linear with num_classes outputs."""
    found = None
    for qual, module in net.named_modules():
        if isinstance(module, nn.Linear) and module.out_features == num_classes:
            found = qual, module
    if found is None:
        raise ValueError(f"no final linear layer with {num_classes} outputs found in {type(net).__name__}; "
                         "this network cannot be split into features and head")
    qual, layer = found
    parent_name, _, attr = qual.rpartition(".")
    return net.get_submodule(parent_name) if parent_name else net, attr, layer


def check_arch(name: str, registered: Sequence[str]) -> str | None:
    """An error message for an unknown architecture name, else None."""
    if name in registered or is_library_arch(name):
        return None
    return (f"arch must be one of {', '.join(registered)}, or timm:NAME / torchvision:NAME, got {name!r} "
            "(see `eae list`)")
