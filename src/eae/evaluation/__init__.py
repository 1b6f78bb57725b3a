"""Evaluation that cannot be fooled.

``evaluate(model, x, y, suite="aa", eps=8/255)`` runs a suite of attacks, scores each
point by its worst case over all of them (clean included), and runs the
gradient-masking diagnostics, returning a :class:`Report` with ``robust_accuracy``,
``per_attack`` and ``verdict``. It takes any ``nn.Module`` that maps images in [0, 1]
to logits.
"""
from __future__ import annotations

import numbers

from typing import Mapping, Sequence

import torch
from torch import nn

from ..attacks import Attack
from ..config import MAX_INT, MAX_SEED, eps_errors, short, type_fix
from ..errors import ConfigError
from ..utils import spelled_plainly
from .core import predict, run_suite
from .diagnostics import diagnose
from .report import Report, fmt_eps
from .suites import SUITES, Suite, get_suite

EvalResult = Report  # the name of the 0.1 API


MAX_TEST_SIZE = 10**9  # a test set of more images is a typo (ImageNet's has 50,000)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             attacks: Sequence[str] | Mapping[str, Attack | None] | None = None, eps: float = 8 / 255, *,
             suite: str | None = None, norm: str = "linf", batch_size: int = 500,
             device: torch.device | str | None = None, seed: int = 0, precision: str = "fp32",
             diagnostics: str = "full", diag_n: int = 1000, test_size: int | None = None,
             progress: bool = False, eot: int | None = None) -> Report:
    """Evaluate ``model`` on images ``x`` (uint8, or float in [0, 1]) with labels ``y``.

    Give a ``suite`` (``quick``, ``aa``, ``aa-fast``, ``full``) or a list of attack
    ``attacks`` (``["clean", "pgd20", "cw20"]``); default: ``quick``. Batches are moved
    to ``device`` (default: ``x.device``), where the model must already be.
    ``precision`` (fp32, tf32, bf16) applies to the attacks' gradient computations only;
    their decisions (is a point fooled?) and every score are computed in strict fp32.
    ``diagnostics``: ``full`` (default), ``cheap`` or ``off``; they use the first
    ``diag_n`` points. ``eot``: average each gradient over that many forward passes
    (expectation over transformation, for randomised models; default: the suite's, 20 for
    ``aa-rand``, else 1). ``test_size``: the size of the set
    ``x`` was taken from, so that a subset is labelled as one.
    """
    if isinstance(eps, numbers.Real) and not isinstance(eps, (bool, float)):  # Fraction(8, 255), numpy: a float
        eps = float(eps)
    if attacks is not None and not isinstance(attacks, (str, Mapping)) and not hasattr(attacks, "__len__"):
        attacks = list(attacks)  # a generator or map of specs: read once, here
    check_arguments(eps=eps, batch_size=batch_size, diag_n=diag_n, precision=precision, diagnostics=diagnostics,
                    norm=norm, eot=eot, seed=seed, attacks=attacks)
    if not isinstance(progress, bool):  # "no" would read as true
        raise ConfigError(f"progress must be True or False, got {short(progress)}", field="progress")
    if suite is not None and (not isinstance(suite, str) or not suite.strip()):  # never the default in disguise
        raise ConfigError(f"suite must be a suite name such as 'quick' or 'aa' (or None for quick), got {suite!r}",
                          field="suite")
    for name, t in (("x", x), ("y", y)):
        if not isinstance(t, torch.Tensor):
            raise ConfigError(f"{name} must be a torch tensor (e.g. torch.as_tensor(...)), got {type(t).__name__}",
                              field=name)
    if device is not None:
        from ..utils import as_device

        device = as_device(device)
    n = len(x) if hasattr(x, "__len__") else None
    if n == 0:
        raise ConfigError("x holds no images: nothing can be scored", field="x")
    if test_size is not None and (isinstance(test_size, bool) or not isinstance(test_size, int)
                                  or n is not None and test_size < n or test_size > MAX_TEST_SIZE):
        raise ConfigError(f"test_size must be an integer from the number of images given ({n}) to "
                          f"{MAX_TEST_SIZE:,} (the size of the test set they come from), got {short(test_size)}"
                          f"{type_fix(test_size, int)}",
                          field="test_size")
    report = run_suite(model, x, y, attacks, eps, suite=suite, norm=norm, batch_size=batch_size, device=device,
                       seed=seed, precision=precision, test_size=test_size, progress=progress, eot=eot)
    return diagnose(model, x, y, report, level=diagnostics, diag_n=diag_n, batch_size=batch_size, device=device,
                    seed=seed, eot=report.eot)


def check_arguments(*, eps: float, batch_size: int, diag_n: int, precision: str, diagnostics: str,
                    norm: str, eot: int | None = None, seed: int = 0, attacks=None) -> None:
    """Refuse values that would print a wrong number (a 0% from a negative batch size, an ε
    of 8 read as 2040/255), naming the argument."""
    errors = eps_errors(eps, norm)
    checked = [("batch_size", batch_size, 1), ("diag_n", diag_n, 0)] + ([("eot", eot, 1)] if eot is not None else [])
    for name, v, low in checked:
        top = 10_000 if name == "eot" else MAX_INT
        if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= top:
            errors.append(f"{name} must be an integer in {low}..{top:,}, got {short(v)}{type_fix(v, int)}")
    for name, v, allowed in (("precision", precision, ("fp32", "tf32", "bf16")),
                             ("diagnostics", diagnostics, ("full", "cheap", "off")), ("norm", norm, ("linf", "l2"))):
        if v not in allowed:
            errors.append(f"{name} must be one of {', '.join(allowed)}, got {v!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        errors.append(f"seed must be an integer in 0..2^63 - 1, got {short(seed)}{type_fix(seed, int)}")
    if attacks is not None and not isinstance(attacks, str) and len(attacks) == 0:
        errors.append("attacks is empty: give e.g. ['clean', 'pgd20', 'cw20'], or None for the quick suite")
    elif isinstance(attacks, str):  # "fgsm" would be read letter by letter
        errors.append(f"attacks must be a list of attack specs (e.g. ['clean', 'pgd20']), got the string {attacks!r}")
    elif attacks is not None and not isinstance(attacks, Mapping) and not all(isinstance(a, str) for a in attacks):
        errors.append(f"attacks must be a list of attack specs (strings), got {short(attacks)}")
    elif attacks is not None and not isinstance(attacks, Mapping) and [spelled_plainly(a) for a in attacks].count(
            "clean") > 1:
        first, second = [a for a in attacks if spelled_plainly(a) == "clean"][:2]
        errors.append(f"attacks {first!r} and {second!r} are both clean, which every report has once: give it once")
    if not errors:
        errors += _unread_errors(diag_n=diag_n, precision=precision, diagnostics=diagnostics, eot=eot,
                                 attacks=attacks, eps=eps, norm=norm)
    if errors:
        raise ConfigError("; ".join(errors), field=errors[0].split()[0])


def _unread_errors(*, diag_n, precision, diagnostics, eot, attacks, eps, norm) -> list[str]:
    """Settings that would be recorded in the report (and its name) while nothing reads them: the
    diagnostics' size with the diagnostics off, or their level on no points; the attacks' gradient
    settings where no attack takes a gradient (clean, Square; the diagnostics' own attacks run in
    fp32, with the evaluation's EOT). The seed is always read: a randomised model draws from it."""
    errors = []
    if diagnostics == "off" and diag_n not in (1000, 0):
        errors.append(f"diag_n {diag_n} sets the points of the diagnostics, but diagnostics is off: leave it out")
    if diagnostics == "cheap" and diag_n == 0:
        errors.append("diagnostics cheap runs on the first diag_n points, but diag_n is 0: give diag_n > 0, or "
                      "diagnostics off")
    kinds = None if attacks is None else [_takes_gradients(a, eps, norm)
                                          for a in (attacks.values() if isinstance(attacks, Mapping) else attacks)]
    if kinds is None or None in kinds or any(kinds):  # a suite, an unknown spec (said later), or a gradient
        return errors
    runs = "only clean accuracy is measured" if all(a is None or (isinstance(a, str) and a.strip().lower() == "clean")
                                                    for a in (attacks.values() if isinstance(attacks, Mapping)
                                                              else attacks)) else \
        "no attack of eae's takes a gradient (Square, and a function of yours, run as they are)"
    if precision != "fp32":
        errors.append(f"precision {precision} acts on attack gradients, but {runs} (the diagnostics run in fp32): "
                      "leave it out")
    if eot not in (None, 1) and (diagnostics == "off" or diag_n == 0):  # 1, the default, is no setting
        errors.append(f"eot {eot} acts on attack gradients, but {runs} and no diagnostics run: leave it out")
    return errors


def _takes_gradients(attack, eps, norm) -> bool | None:
    """Whether an attack (or spec) computes gradients; None for a spec that builds nothing known."""
    if isinstance(attack, str):
        if attack.strip().lower() == "clean":
            return False
        from ..attacks import build_attack

        try:
            attack = build_attack(attack, eps, norm)
        except Exception:  # noqa: BLE001 - an unknown spec is said, in its own words, where attacks are built
            return None
    from ..attacks import Attack

    return isinstance(attack, Attack) and attack.uses_gradients


__all__ = ["evaluate", "check_arguments", "run_suite", "diagnose", "predict", "Report", "EvalResult", "SUITES", "Suite", "get_suite",
           "fmt_eps"]
