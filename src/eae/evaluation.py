"""Accuracy under a set of attacks, scored per example.

A point counts as robust only if it is classified correctly clean *and* under
every attack run: the worst case is taken per example, never by averaging or by
taking the lowest per-attack number (which can overstate robustness when
attacks fail on different points).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from .attacks import Attack, attack_mode, build_attack
from .utils import progress_bar


@dataclass
class EvalResult:
    n: int
    eps: float
    accuracy: dict[str, float]  # per attack, "clean" included
    robust_accuracy: float  # per-example worst case over everything run
    seconds: float
    correct: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)  # per-example bool

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "eps": self.eps, "accuracy": self.accuracy,
                "robust_accuracy": self.robust_accuracy, "seconds": round(self.seconds, 3)}


def _to_float_images(x: torch.Tensor) -> torch.Tensor:
    return x.float().div(255) if x.dtype == torch.uint8 else x.float()


def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Predicted labels, in eval mode and fp32; the model's modes are restored."""
    with attack_mode(model), torch.no_grad():
        return model(x).argmax(1)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             attacks: Sequence[str] | Mapping[str, Attack | None] = ("clean", "fgsm", "pgd20", "cw20"),
             eps: float = 8 / 255, *, norm: str = "linf", batch_size: int = 500,
             device: torch.device | str | None = None, seed: int = 0, progress: bool = False) -> EvalResult:
    """Evaluate ``model`` (images in [0,1] -> logits) on ``x`` (uint8 or float in [0,1]).

    Batches are moved to ``device`` (default: ``x.device``); the model must already be there.

    ``attacks`` is a list of specs (``clean``, ``fgsm``, ``pgd20``, ``cw20``, ...) or a
    mapping name -> attack object (``None`` for clean). Each attack runs on every
    point that is clean-correct; its accuracy is over all ``n`` points.
    """
    if isinstance(attacks, Mapping):
        named = dict(attacks)
    else:
        named = {spec: build_attack(spec, eps, norm) for spec in attacks}
    named.pop("clean", None)
    # explicit device, else where the data is: never guessed from the model's parameters
    device = torch.device(device) if device is not None else x.device
    n = int(len(y))
    start = time.perf_counter()
    # random starts are reproducible and do not disturb the caller's RNG streams
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        correct = {name: torch.zeros(n, dtype=torch.bool) for name in ["clean", *named]}
        bar = progress_bar(n * (1 + len(named)), progress, "eval", unit="img")
        for lo in range(0, n, batch_size):
            xb = _to_float_images(x[lo:lo + batch_size].to(device))
            yb = y[lo:lo + batch_size].to(device)
            ok = predict(model, xb) == yb
            correct["clean"][lo:lo + len(yb)] = ok.cpu()
            bar.update(len(yb))
            idx = ok.nonzero().squeeze(1)
            for name, attack in named.items():
                ok_a = torch.zeros_like(ok)
                if len(idx):  # attack only what is still correct clean
                    ok_a[idx] = predict(model, attack(model, xb[idx], yb[idx])) == yb[idx]
                correct[name][lo:lo + len(yb)] = ok_a.cpu()
                bar.update(len(yb))
        bar.close()
    worst = torch.stack(list(correct.values())).all(0)
    acc = {k: v.float().mean().item() if n else float("nan") for k, v in correct.items()}
    return EvalResult(n=n, eps=eps, accuracy=acc, robust_accuracy=worst.float().mean().item() if n else float("nan"),
                      seconds=time.perf_counter() - start, correct={**correct, "worst_case": worst})
