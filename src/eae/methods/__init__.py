"""Training methods, one small module each, registered by name."""
from __future__ import annotations

from . import eae, fgsm_pgi, fgsm_rs, free, gradalign, n_fgsm, pgd, standard, trades  # noqa: F401  (registration)
from .base import Method, StepOutput, input_grad
from .registry import METHODS, register_method


def create_method(cfg) -> Method:
    return METHODS.get(cfg.method)(cfg)


def list_methods() -> list[str]:
    return METHODS.names()


__all__ = ["Method", "StepOutput", "input_grad", "METHODS", "register_method", "create_method", "list_methods"]
