"""Training methods, one small module each, registered by name."""
from __future__ import annotations

from . import eae, fgsm_pgi, fgsm_rs, free, gradalign, n_fgsm, pgd, standard, trades  # noqa: F401  (registration)
from .base import Method, StepOutput, input_grad
from .registry import METHODS, register_method


def create_method(cfg) -> Method:
    """The method of ``cfg``; a registered factory that fails or builds something else is
    named (a ModelError), not a traceback."""
    from ..errors import ModelError

    method = METHODS.build(cfg.method, "with the run's TrainConfig", cfg)
    if not isinstance(method, Method):
        raise ModelError(f"training method {cfg.method!r} built a {type(method).__name__}, not an eae.methods.Method "
                         "subclass")
    return method


def list_methods() -> list[str]:
    return METHODS.names()


__all__ = ["Method", "StepOutput", "input_grad", "METHODS", "register_method", "create_method", "list_methods"]
