"""Running a suite: clean predictions, then each attack on its pool of points, scored
per example in strict fp32."""
from __future__ import annotations

import time
from typing import Mapping, Sequence

import torch
from torch import nn

from ..attacks import Attack, attack_mode, build_attack
from ..utils import progress_bar
from .report import Report
from .suites import CASCADE, STANDALONE, Suite, custom_suite, get_suite


def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Predicted labels, in eval mode and strict fp32; the model's modes are restored."""
    with attack_mode(model), torch.no_grad():
        return model(x).argmax(1)


def as_images(x: torch.Tensor) -> torch.Tensor:
    return x.float().div(255) if x.dtype == torch.uint8 else x.float()


def predict_all(model, x, y, batch_size, device) -> torch.Tensor:
    out = torch.zeros(len(y), dtype=torch.bool)
    for lo in range(0, len(y), batch_size):
        xb = as_images(x[lo:lo + batch_size].to(device))
        out[lo:lo + batch_size] = (predict(model, xb) == y[lo:lo + batch_size].to(device)).cpu()
    return out


def attack_points(model, attack: Attack, x, y, idx: torch.Tensor, batch_size, device, bar) -> torch.Tensor:
    """Attack the points ``idx``; True where the model is still correct afterwards."""
    ok = torch.zeros(len(y), dtype=torch.bool)
    for lo in range(0, len(idx), batch_size):
        b = idx[lo:lo + batch_size]
        xb, yb = as_images(x[b].to(device)), y[b].to(device)
        ok[b] = (predict(model, attack(model, xb, yb)) == yb).cpu()
        bar.update(len(b))
    return ok


def resolve_plan(attacks, suite, eps, norm) -> tuple[Suite, list[tuple[str, Attack, str]]]:
    if suite is not None and attacks is not None:
        raise ValueError("give either attacks or suite, not both")
    if isinstance(attacks, Mapping):
        named = {k: v for k, v in attacks.items() if k != "clean" and v is not None}
        s = custom_suite(list(named))
        return s, [(k, a, STANDALONE) for k, a in named.items()]
    if attacks is not None:
        s = custom_suite(list(attacks))
    else:
        s = get_suite(suite or "quick")
    return s, [(spec, build_attack(spec, eps, norm), mode) for spec, mode in s.entries]


def run_suite(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
              attacks: Sequence[str] | Mapping[str, Attack | None] | None = None, eps: float = 8 / 255, *,
              suite: str | None = None, norm: str = "linf", batch_size: int = 500,
              device: torch.device | str | None = None, seed: int = 0, precision: str = "fp32",
              test_size: int | None = None, progress: bool = False) -> Report:
    """Clean accuracy and every attack of the plan; no diagnostics (see ``evaluate``)."""
    device = torch.device(device) if device is not None else x.device
    s, plan = resolve_plan(attacks, suite, eps, norm)
    y = y.long()
    n = int(len(y))
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)  # reproducible random starts; the caller's RNG is untouched
        clean = predict_all(model, x, y, batch_size, device)
        robust = clean.clone()  # worst case over everything
        chain = clean.clone()  # what the cascaded attacks have left standing
        correct = {"clean": clean}
        per_attack = {}
        for spec, attack, mode in plan:
            attack.precision = precision
            pool = clean if mode == STANDALONE else chain
            idx = pool.nonzero().squeeze(1)
            t0 = time.perf_counter()
            bar = progress_bar(len(idx), progress, spec, unit="img")
            ok = attack_points(model, attack, x, y, idx, batch_size, device, bar)
            bar.close()
            robust &= ok
            if mode == CASCADE:
                chain &= ok
            correct[spec] = ok
            acc = (ok if mode == STANDALONE else chain).float().mean().item() if n else float("nan")
            per_attack[spec] = {"accuracy": acc, "mode": mode, "seconds": round(time.perf_counter() - t0, 2),
                                "n_attacked": int(len(idx))}
    correct["worst_case"] = robust
    mean = (lambda t: t.float().mean().item() if n else float("nan"))
    return Report(suite=s.name, label=s.label, n=n, eps=eps, norm=norm, seed=seed, precision=precision,
                  clean_accuracy=mean(clean), per_attack=per_attack, robust_accuracy=mean(robust),
                  seconds=time.perf_counter() - start, test_size=test_size, correct=correct)


__all__ = ["predict", "predict_all", "run_suite", "as_images", "CASCADE", "STANDALONE"]
