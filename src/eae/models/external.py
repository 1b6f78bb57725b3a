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
import inspect
import json
import re
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from .base import Normalize
from .library import MissingDependency, import_library
from ..utils import shell_quote

NORMALIZATIONS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
LIBRARIES = ("timm", "torchvision")
_EAE_DIR = Path(__file__).resolve().parents[1]
# The source files of the user's classes that --model loaded: an exception raised in them
# after the model was built (during an attack, say) is the user's to fix, not a bug of ours.
USER_SOURCES: set[Path] = set()


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
    # a std below 1e-4 turns pixel steps into logits of 1e4 and more (NaN in the attacks): a typo
    if len(v) != 6 or not all(torch.isfinite(torch.tensor(v))) or min(v[3:]) < 1e-4 or max(map(abs, v)) > 1e4:
        raise ValueError(f"--normalize takes {' or '.join(NORMALIZATIONS)} or six numbers 'm1,m2,m3,s1,s2,s3' "
                         f"(means and stds of images in [0, 1]: std from 1e-4 to 1e4), got {text!r}")
    return tuple(v[:3]), tuple(v[3:])


def build_model(spec: str, num_classes: int, kwargs: dict[str, Any] | None = None) -> nn.Module:
    """The (untrained) network named by ``spec``; see the module docstring."""
    kwargs = dict(kwargs or {})
    prefix, _, name = spec.partition(":")
    if "num_classes" in kwargs and (prefix in LIBRARIES or ":" not in spec):
        raise ValueError(f"--model-kwargs: num_classes is set from the dataset ({num_classes} classes) for "
                         f"--model {spec}; leave it out")
    if prefix in LIBRARIES:
        if not name:
            raise ValueError(f"--model {spec}: name the {prefix} network after the colon, e.g. {prefix}:resnet18")
        module = import_library(prefix)  # a missing library names its extra, before anything is built
        return _built(spec, kwargs, lambda: _library_model(module, prefix, name, num_classes, kwargs))
    if ":" in spec:
        cls = _user_class(spec)
        return _built(spec, kwargs, lambda: cls(**kwargs))
    from . import MODELS, create_model

    if spec not in MODELS.names():
        hint = (f"; to use a class of {spec}, name it: {spec}:ClassName" if spec.endswith(".py")
                else "")
        raise ValueError(f"unknown model {spec!r}: give a name from `eae list`, timm:NAME, torchvision:NAME, "
                         f"or FILE.py:Class / package.module:Class{hint}")
    return _built(spec, kwargs, lambda: create_model(spec, num_classes=num_classes, **kwargs))


def _built(spec: str, kwargs: dict[str, Any], make) -> nn.Module:
    """``make()``; a constructor that fails (wrong or missing --model-kwargs, an unknown
    library name, the user's own code) is the user's error, named in one line."""
    try:
        model = make()
    except Exception as e:  # noqa: BLE001 - any failure of the user's constructor is reported, not a traceback
        given = f" with --model-kwargs {json.dumps(kwargs)}" if kwargs else ""
        raise ValueError(f"--model {spec}: could not be built{given} ({_one_line(e)}{_where(e)}); "
                         "check the class's arguments (--model-kwargs '{\"name\": value}')") from e
    if not isinstance(model, nn.Module):
        raise ValueError(f"--model {spec}: built a {type(model).__name__}, not a torch nn.Module")
    return model


def _library_model(module, lib: str, name: str, num_classes: int, kwargs: dict[str, Any]) -> nn.Module:
    if lib == "timm":
        return module.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
    import torchvision.models

    return torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def _where(e: BaseException, path: Path | None = None) -> str:
    """', FILE line N': where in the user's code (the file ``path``, else the innermost
    frame outside torch and eae) the exception was raised."""
    if isinstance(e, SyntaxError):  # its message names the file and line already
        return ""
    frames = traceback.extract_tb(e.__traceback__)
    if path is not None:
        frames = [f for f in frames if Path(f.filename).resolve() == path.resolve()]
    else:
        frames = [f for f in frames if "/torch/" not in f.filename and "/eae/" not in f.filename]
    return f", {frames[-1].filename} line {frames[-1].lineno}" if frames else ""


def _user_class(spec: str) -> type:
    where, _, cls = spec.rpartition(":")
    if not where or not cls:
        raise ValueError(f"--model {spec}: give FILE.py:ClassName or package.module:ClassName")
    if cls.endswith(".py") or "/" in cls:  # `my dir:x/m.py`: a file whose folder has a colon, its class left out
        raise ValueError(f"--model {spec}: name the class in the file: {spec}:ClassName")
    if where.endswith(".py"):
        from ..config import home_path

        path = Path(home_path(where))
        if not path.is_file():
            raise FileNotFoundError(f"--model {spec}: {path} not found")
        mod_name = f"eae_user_model_{abs(hash(str(path.resolve())))}"
        spec_obj = importlib.util.spec_from_file_location(mod_name, path)
        module = importlib.util.module_from_spec(spec_obj)
        sys.modules[mod_name] = module
        try:
            spec_obj.loader.exec_module(module)
        except (Exception, SystemExit) as e:  # noqa: BLE001 - the user's file failed: say where, in one line
            sys.modules.pop(mod_name, None)
            raise ValueError(f"--model {spec}: running {path} failed ({_one_line(e)}{_where(e, path)}); "
                             f"fix it (`python {path}` shows the traceback)") from e
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as e:
            raise MissingDependency(f"--model {spec}: cannot import {where!r} ({e})") from None
        except (Exception, SystemExit) as e:  # noqa: BLE001
            raise ValueError(f"--model {spec}: importing {where} failed ({_one_line(e)}{_where(e)}); "
                             f"fix it (`python -c 'import {where}'` shows the traceback)") from e
    found = getattr(module, cls, None)
    if not isinstance(found, type) or not issubclass(found, nn.Module):
        raise ValueError(f"--model {spec}: {where} has no nn.Module class {cls!r}")
    try:
        USER_SOURCES.add(Path(inspect.getsourcefile(found)).resolve())
    except (TypeError, OSError):  # a class without a source file: nothing to attribute errors to
        pass
    return found


def user_code_failure(e: BaseException) -> str | None:
    """One line for an exception raised in the user's model code (or in torch, called from
    it) while ``eae`` used the model; None when our code lies below theirs (a bug of ours)."""
    frames = traceback.extract_tb(e.__traceback__)
    theirs = [i for i, f in enumerate(frames) if Path(f.filename).resolve() in USER_SOURCES]
    if not theirs or any(Path(f.filename).resolve().is_relative_to(_EAE_DIR) for f in frames[theirs[-1] + 1:]):
        return None
    f = frames[theirs[-1]]
    return (f"the model given by --model raised {_one_line(e)} ({f.filename} line {f.lineno}) while it was "
            "being evaluated; fix the model (EAE_DEBUG=1 shows the traceback)")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file: safetensors, or a PyTorch file read with
    ``weights_only=True``, unwrapped from the usual containers (``state_dict``, ``model``,
    ...) and from DataParallel's ``module.`` prefix."""
    path = Path(path)
    if path.is_dir():
        raise WeightsError(f"{path} is a folder, not a weights file: give the .safetensors or .pt file itself "
                           "(an eae run folder evaluates as `eae eval RUN_DIR`)")
    if path.exists() and not path.is_file():  # a FIFO, a device such as /dev/null
        raise WeightsError(f"{path} is not a regular file: give the .safetensors or .pt file itself")
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if (path.parent / "config.json").is_file() and path.name in ("checkpoint.pt", "checkpoint_best.pt"):
        raise WeightsError(f"{path} is the training checkpoint of an eae run: evaluate the run itself, "
                           f"`eae eval {shell_quote(path.parent)}` (add --weights best for its best epoch)")
    try:
        with warnings.catch_warnings():  # torch's pickle-protocol warning is noise before our one line
            warnings.simplefilter("ignore")
            if _is_safetensors(path):
                from safetensors.torch import load_file

                state: Any = load_file(str(path))
            else:
                with path.open("rb") as fh:  # a file object: torch.load would go by the suffix itself
                    state = torch.load(fh, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling refused, truncated file, not a weights file at all
        raise WeightsError(f"{path}: not a readable weights file ({_load_failure(e)}); save a state_dict "
                           "(torch.save(model.state_dict(), ...)) or a .safetensors file") from None
    for key in ("state_dict", "model_state_dict", "model", "net", "ema"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    # an empty state_dict is a model's without parameters; one that does not fit is named when loaded
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: no state_dict of tensors found in it")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _is_safetensors(path: Path) -> bool:
    """By content, not by name: a safetensors file begins with an 8-byte header length and
    a JSON header; a PyTorch file is a zip (PK) or a pickle. Unknown: by the suffix."""
    with path.open("rb") as fh:
        head = fh.read(9)
    if len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < path.stat().st_size:
        return True
    if head[:2] == b"PK" or head[:1] == b"\x80":
        return False
    return path.suffix == ".safetensors"


def _load_failure(e: Exception) -> str:
    """Why torch.load or safetensors refused a file, in one short phrase."""
    text = str(e).strip()
    glob = re.search(r"(?i)unsupported global:?\s*(?:GLOBAL\s+)?([\w.]+)", text)
    if glob:
        return f"it holds Python objects beyond tensors ({glob.group(1)}), which eae does not unpickle"
    if "weights_only" in text or "WeightsUnpickler" in text:
        return ("torch.load(weights_only=True) refused it: it holds Python objects beyond tensors, which eae "
                "does not unpickle, or it is not a PyTorch file at all")
    first = text.splitlines()[0] if text else type(e).__name__
    return first.split(". ")[0]  # torch's zip errors go on for several sentences


def load_external(spec: str, weights: str | Path, num_classes: int, *, normalize: str | None = None,
                  kwargs: dict[str, Any] | None = None, device: str | torch.device = "cpu") -> nn.Module:
    """``build_model(spec)`` with the weights of ``weights`` (strict), wrapped with
    ``normalize`` when given, in eval mode on ``device``."""
    norm = parse_normalize(normalize) if normalize is not None else None  # cheap checks before any work
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
