"""Models that were not trained by ``eae``: built from a name, loaded from a weights file.

``eae eval --model SPEC --weights FILE`` evaluates a checkpoint from elsewhere. SPEC is
- a name from ``eae list`` (our architectures; weights as ``eae.load`` writes them),
- ``timm:NAME`` or ``torchvision:NAME`` (when the library is installed), or
- ``path/to/file.py:ClassName`` or ``package.module:ClassName``: the user's own class,
  built with ``kwargs`` (JSON on the command line). This imports and runs that file,
  as ``python file.py`` would: name only code you trust.

The model must map images in [0, 1] to logits; a model that expects normalised inputs
is wrapped with its ``mean``/``std`` (``--normalize``), so attacks and ε stay in pixels.
Weights are read with ``safetensors`` or ``torch.load(weights_only=True)``, which
never runs code from the file.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from .base import Normalize
from .library import MissingDependency, import_library

NORMALIZATIONS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
LIBRARIES = ("timm", "torchvision")


class WeightsError(ValueError):
    """A weights file that cannot be read, or that does not fit the model."""


class Normalized(nn.Module):
    """``model(normalize(x))``: a model that expects normalised inputs, seen in pixel space."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalize(x))


def parse_normalize(text: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``cifar10``, ``imagenet`` or six numbers ``m1,m2,m3,s1,s2,s3`` -> (mean, std)."""
    if text in NORMALIZATIONS:
        return NORMALIZATIONS[text]
    try:
        v = [float(t) for t in text.split(",")]
    except ValueError:
        v = []
    if len(v) != 6 or not all(torch.isfinite(torch.tensor(v))) or min(v[3:]) <= 0:
        raise ValueError(f"--normalize takes {' or '.join(NORMALIZATIONS)} or six numbers 'm1,m2,m3,s1,s2,s3' "
                         f"(std > 0), got {text!r}")
    return tuple(v[:3]), tuple(v[3:])


def build_model(spec: str, num_classes: int, kwargs: dict[str, Any] | None = None) -> nn.Module:
    """The (untrained) network named by ``spec``; see the module docstring."""
    kwargs = dict(kwargs or {})
    prefix, _, name = spec.partition(":")
    if prefix in LIBRARIES and name:
        return _library_model(prefix, name, num_classes, kwargs)
    if ":" in spec:
        return _user_class(spec)(**kwargs)
    from . import MODELS, create_model

    if spec not in MODELS.names():
        raise ValueError(f"unknown model {spec!r}: give a name from `eae list`, timm:NAME, torchvision:NAME, "
                         "or FILE.py:Class / package.module:Class")
    return create_model(spec, num_classes=num_classes, **kwargs)


def _library_model(lib: str, name: str, num_classes: int, kwargs: dict[str, Any]) -> nn.Module:
    module = import_library(lib)
    if lib == "timm":
        return module.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
    import torchvision.models

    return torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)


def _user_class(spec: str) -> type:
    where, _, cls = spec.rpartition(":")
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise FileNotFoundError(f"--model {spec}: {path} not found")
        mod_name = f"eae_user_model_{abs(hash(str(path.resolve())))}"
        spec_obj = importlib.util.spec_from_file_location(mod_name, path)
        module = importlib.util.module_from_spec(spec_obj)
        sys.modules[mod_name] = module
        spec_obj.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as e:
            raise MissingDependency(f"--model {spec}: cannot import {where!r} ({e})") from None
    found = getattr(module, cls, None)
    if not isinstance(found, type) or not issubclass(found, nn.Module):
        raise ValueError(f"--model {spec}: {where} has no nn.Module class {cls!r}")
    return found


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file: safetensors, or a PyTorch file read with
    ``weights_only=True``, unwrapped from the usual containers (``state_dict``, ``model``,
    ...) and from DataParallel's ``module.`` prefix."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling refused, truncated file, not a weights file at all
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "weights_only" in first or "Unsupported global" in first:
            first = "it holds Python objects beyond tensors, which eae does not unpickle"
        raise WeightsError(f"{path}: not a readable weights file ({first}); save a state_dict "
                           "(torch.save(model.state_dict(), ...)) or a .safetensors file") from None
    for key in ("state_dict", "model_state_dict", "model", "net", "ema"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: no state_dict of tensors found in it")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_external(spec: str, weights: str | Path, num_classes: int, *, normalize: str | None = None,
                  kwargs: dict[str, Any] | None = None, device: str | torch.device = "cpu") -> nn.Module:
    """``build_model(spec)`` with the weights of ``weights`` (strict), wrapped with
    ``normalize`` when given, in eval mode on ``device``."""
    norm = parse_normalize(normalize) if normalize else None  # cheap checks before any work
    model = build_model(spec, num_classes, kwargs)
    state = read_state_dict(weights)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        missing, unexpected = _key_mismatch(model, state)
        detail = "; ".join(p for p in (missing, unexpected) if p) or str(e).strip().splitlines()[-1].strip()
        raise WeightsError(f"{weights}: these weights do not fit --model {spec} ({detail})") from None
    if norm:
        model = Normalized(model, *norm)
    return model.to(device).eval()


def _key_mismatch(model: nn.Module, state: dict[str, torch.Tensor]) -> tuple[str, str]:
    want, have = set(model.state_dict()), set(state)

    def few(keys: set[str]) -> str:
        keys = sorted(keys)
        return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")

    return (f"missing: {few(want - have)}" if want - have else "",
            f"unexpected: {few(have - want)}" if have - want else "")
