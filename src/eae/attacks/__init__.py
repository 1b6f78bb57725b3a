"""Attacks for evaluation, registered by name; each is called as ``attack(model, x, y)``.

``build_attack(spec, eps)`` reads the short specs used on the command line:
``fgsm``, ``pgd20`` (PGD, 20 steps, cross-entropy), ``cw20`` (PGD on the CW margin),
``pgd50r10`` (50 steps, 10 restarts). ``clean`` means no attack.
"""
from __future__ import annotations

import re

from . import gradient  # noqa: F401  (registration)
from .base import Attack, attack_mode, ce_loss, input_gradient, margin_loss
from .gradient import CW, FGSM, PGD
from .registry import ATTACKS, register_attack

_SPEC = re.compile(r"^(?P<name>[a-z_]+?)(?P<steps>\d+)?(?:r(?P<restarts>\d+))?$")


def build_attack(spec: str, eps: float, norm: str = "linf") -> Attack | None:
    """An attack from a short spec, or ``None`` for ``clean``."""
    spec = spec.strip().lower()
    if spec == "clean":
        return None
    m = _SPEC.match(spec)
    if not m or m["name"] not in ATTACKS:
        raise ValueError(f"unknown attack spec {spec!r}; use clean or one of {', '.join(ATTACKS.names())}"
                         " with optional steps and restarts, e.g. pgd20, cw20, pgd50r10")
    cls = ATTACKS.get(m["name"])
    kwargs = {}
    if m["steps"]:
        kwargs["steps"] = int(m["steps"])
    if m["restarts"]:
        kwargs["restarts"] = int(m["restarts"])
    if kwargs and m["name"] == "fgsm":
        raise ValueError("fgsm takes no steps or restarts")
    return cls(eps, norm=norm, **kwargs)


def list_attacks() -> list[str]:
    return ATTACKS.names()


__all__ = ["Attack", "attack_mode", "ce_loss", "margin_loss", "input_gradient", "FGSM", "PGD", "CW",
           "ATTACKS", "register_attack", "build_attack", "list_attacks"]
