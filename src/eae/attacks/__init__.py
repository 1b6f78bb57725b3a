"""Attacks for evaluation, registered by name; each is called as ``attack(model, x, y)``.

``build_attack(spec, eps)`` reads the short specs used on the command line:
``fgsm``, ``pgd20`` (PGD, 20 steps, cross-entropy), ``cw20`` (PGD on the CW margin),
``pgd50r10`` (50 steps, 10 restarts), ``apgd-ce``, ``apgd-t``, ``fab-t``, ``square``
(the AutoAttack components). ``clean`` means no attack.
"""
from __future__ import annotations

import numbers

import re

from . import apgd, fab, gradient, square  # noqa: F401  (registration)
from .apgd import APGD, APGDT
from .base import (MAX_RESTARTS, MAX_STEPS, Attack, attack_mode, ce_loss, dlr_loss, dlr_targeted_loss, input_gradient,
                   margin_loss)
from .fab import FABT
from .gradient import CW, FGSM, PGD
from .square import Square
from .registry import ATTACKS, register_attack

_SPEC = re.compile(r"^(?P<name>[a-z_-]+)(?P<steps>\d+)?(?:r(?P<restarts>\d+))?$")

# AutoAttack's names for its attacks -> (registered attack, fixed arguments)
ALIASES = {
    "apgd-ce": ("apgd", {"loss": "ce"}),
    "apgd-dlr": ("apgd", {"loss": "dlr"}),
    "apgd-t": ("apgdt", {}),
    "fab-t": ("fabt", {}),
}
ATTACKS.reserved = {"clean": "the clean accuracy", "worst case": "a row of every report",
                    **{a: f"an alias of {t}" for a, (t, _) in ALIASES.items()}}




def build_attack(spec: str, eps: float, norm: str = "linf") -> Attack | None:
    """An attack from a short spec, or ``None`` for ``clean``.

    ``NAME[STEPS][rRESTARTS]``: ``pgd20``, ``cw20``, ``pgd50r10``, ``apgd-ce``, ``apgd-t``,
    ``fab-t``, ``square`` (5,000 queries; ``square1000`` = 1,000), ``apgd-dlr``; the names
    of ``eae list`` work too.
    """
    from ..config import eps_errors
    from ..errors import ConfigError

    if norm not in ("linf", "l2"):
        raise ConfigError(f"norm must be linf or l2, got {norm!r}", field="norm")
    if isinstance(eps, numbers.Real) and not isinstance(eps, (bool, float)):  # Fraction(8, 255), numpy: a float
        eps = float(eps)
    bad = eps_errors(eps, norm)
    if bad:  # an attack allowed past [0, 1] would score images that are not images
        raise ConfigError(bad[0], field="eps")
    if not isinstance(spec, str):
        raise ConfigError(f"an attack spec is a string such as 'pgd20', got {type(spec).__name__}", field="attacks")
    typed, spec = spec, spec.strip().lower()
    if spec == "clean":
        return None
    m = _SPEC.match(spec)
    name = m["name"] if m else None
    if name in ALIASES:
        name, kwargs = ALIASES[name][0], dict(ALIASES[name][1])
    else:
        kwargs = {}
    if not m or name not in ATTACKS:
        raise ConfigError(f"unknown attack spec {typed.strip()!r}; use clean, {', '.join(ALIASES)} or one of "
                         f"{', '.join(ATTACKS.names())}, with optional steps and restarts, e.g. pgd20, cw20, "
                         "pgd50r10, apgd-ce100", field="attacks")
    for key, top in (("steps", MAX_STEPS), ("restarts", MAX_RESTARTS)):
        if m[key]:
            kwargs[key] = int(m[key])
            if not 1 <= kwargs[key] <= top:
                raise ConfigError(f"attack spec {spec!r}: {key} must be in 1..{top:,}, got {m[key]}", field="attacks")
    factory = ATTACKS.get(name)
    try:
        attack = factory(eps, norm=norm, **kwargs)
    except ValueError as e:
        raise ConfigError(f"attack spec {spec!r}: {e}", field="attacks") from None
    except TypeError:
        raise ConfigError(f"attack spec {spec!r}: {name} does not take "
                          f"{' or '.join(k for k in ('steps', 'restarts') if k in kwargs)}", field="attacks") from None
    except Exception as e:
        if getattr(factory, "__module__", "").startswith("eae."):
            raise  # one of ours: a bug, with its traceback
        raise ConfigError(f"attack spec {spec!r}: the factory registered as {name!r} failed: {type(e).__name__}: "
                          f"{str(e).strip()[:200]}", field="attacks") from e
    if not callable(attack):  # a registered factory is a user's code
        raise ConfigError(f"attack spec {spec!r}: the factory registered as {name!r} returned "
                          f"{type(attack).__name__}, not an attack called as attack(model, x, y)", field="attacks")
    check_ball(f"attack spec {spec!r}", attack, eps, norm,
               "a registered factory must build its attack with the eps and norm it is given")
    return attack


def attack_key(attack) -> str:
    """What an attack does (its class and settings), whatever spec built it. Only eae's attacks
    are known by their settings; any other callable is itself (two functions are two attacks).
    The precision and EOT an evaluation runs it in are the evaluation's, not the attack's."""
    if not isinstance(attack, Attack):
        return f"{type(attack).__name__} at {id(attack):#x}"
    kind = attack_kind(attack)[0].__name__
    return f"{kind}{sorted((k, repr(v)) for k, v in vars(attack).items() if k not in ('precision', 'eot'))}"


def attack_kind(attack) -> tuple[type, str | None]:
    """An attack's class and loss: CW is PGD on the margin loss, so PGD(loss="cw") is a CW."""
    return (PGD if type(attack) is CW else type(attack)), getattr(attack, "loss", None)


def canonical_spec(spec: str, eps: float = 8 / 255, norm: str = "linf") -> str:
    """One spelling of one attack, for report names: lowercase, its steps written out (pgd is
    pgd20, square is square5000), no r1, AutoAttack's name where it has one (apgd is apgd-ce100,
    fabt is fab-t100). A text that is not a spec is given back as it is."""
    from ..errors import ConfigError

    text = spec.strip().lower() if isinstance(spec, str) else spec
    try:
        attack = build_attack(text, eps, norm)
    except ConfigError:
        return spec
    if attack is None:
        return text
    key, m = attack_key(attack), _SPEC.match(text)
    target = ALIASES.get(m["name"], (m["name"],))[0]
    names = sorted({m["name"], target, *(a for a, (t, _) in ALIASES.items() if t == target)},
                   key=lambda n: (n not in ALIASES, n))  # AutoAttack's names first
    number = next((str(getattr(attack, k)) for k in ("steps", "queries") if isinstance(getattr(attack, k, None), int)), "")
    restarts = getattr(attack, "restarts", 1)
    for name in names:
        candidate = f"{name}{number}" + (f"r{restarts}" if restarts != 1 else "")
        try:
            if attack_key(build_attack(candidate, eps, norm)) == key:
                return candidate
        except ConfigError:
            continue
    return text


def check_ball(label: str, attack, eps: float, norm: str, fix: str) -> None:
    """An attack's own radius and norm (where it states them) are those of the evaluation: every
    number of a report is labelled with the evaluation's eps."""
    import math

    from ..errors import ConfigError

    where = getattr(attack, "threat", attack)  # the PGD family keeps its ball in .threat
    a_eps, a_norm = getattr(where, "eps", eps), getattr(where, "norm", norm)
    try:
        same = a_norm == norm and math.isclose(float(a_eps), float(eps), rel_tol=1e-9, abs_tol=1e-12)
    except (TypeError, ValueError):
        same = False
    if not same:
        shown = f"{a_eps:g}" if isinstance(a_eps, (int, float)) and not isinstance(a_eps, bool) else repr(a_eps)
        raise ConfigError(f"{label} is built for eps {shown} ({a_norm}), but this evaluation is at eps {eps:g} "
                          f"({norm}), the radius its report states: {fix}", field="attacks")


def list_attacks() -> list[str]:
    return ATTACKS.names()


__all__ = ["Attack", "attack_key", "canonical_spec", "check_ball", "attack_mode", "ce_loss", "margin_loss", "dlr_loss", "dlr_targeted_loss", "input_gradient",
           "FGSM", "PGD", "CW", "APGD", "APGDT", "FABT", "Square",
           "ATTACKS", "ALIASES", "register_attack", "build_attack", "list_attacks"]
