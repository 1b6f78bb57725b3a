"""Named attack suites.

An entry runs either ``standalone`` (on every clean-correct point: its accuracy is
its own) or ``cascade`` (only on the points still robust after the cascaded entries
before it, as AutoAttack does: its accuracy is the robust accuracy after it). So in
``full`` the AutoAttack part gives AutoAttack's own numbers. Robust accuracy is
always the per-example worst case over everything run. ``aa-rand`` is AutoAttack's
version for randomised models: its gradients average 20 forward passes (EOT).
"""
from __future__ import annotations

from dataclasses import dataclass

STANDALONE, CASCADE = "standalone", "cascade"


@dataclass(frozen=True)
class Suite:
    name: str
    entries: tuple[tuple[str, str], ...]  # (attack spec, mode)
    label: str  # printed with every result
    eot: int = 1  # forward passes per gradient unless the caller gives one

    @property
    def specs(self) -> list[str]:
        return [spec for spec, _ in self.entries]


_QUICK = (("fgsm", STANDALONE), ("pgd20", STANDALONE), ("cw20", STANDALONE))
_AA = (("apgd-ce", CASCADE), ("apgd-t", CASCADE), ("fab-t", CASCADE), ("square", CASCADE))

SUITES = {
    "quick": Suite("quick", _QUICK, "quick (FGSM, CE-PGD-20, CW-20)"),
    "aa": Suite("aa", _AA, "AutoAttack standard (APGD-CE, APGD-T, FAB-T, Square)"),
    "aa-fast": Suite("aa-fast", _AA[:2], "aa-fast (APGD-CE + APGD-T only; development, NOT full AutoAttack)"),
    "full": Suite("full", _QUICK + _AA, "full (FGSM, CE-PGD-20, CW-20, and AutoAttack standard)"),
    # AutoAttack's version for randomised models: APGD-CE and APGD-DLR, one run each, every
    # gradient the mean of 20 forward passes
    "aa-rand": Suite("aa-rand", (("apgd-ce", CASCADE), ("apgd-dlr", CASCADE)),
                     "AutoAttack rand (APGD-CE, APGD-DLR with EOT; for randomised models)", eot=20),
}


def get_suite(name: str) -> Suite:
    try:
        return SUITES[name]
    except KeyError:
        from ..errors import UnknownName

        raise UnknownName(f"unknown suite {name!r}; available: {', '.join(SUITES)}", field="suite") from None


def custom_suite(specs: list[str], name: str = "custom") -> Suite:
    specs = [s for s in specs if s != "clean"]
    return Suite(name, tuple((s, STANDALONE) for s in specs),
                 f"{name} ({', '.join(specs)})" if specs else f"{name} (clean accuracy only)")
