"""Gradient-masking alarms.

A defence that hides its gradients looks robust to gradient attacks without being
robust. Each check below looks for one symptom and returns ``ok``, ``suspicious`` or
``masked`` with the numbers behind it; the verdict is the worst of them.

0. The model itself (:mod:`.checks`, after AutoAttack's checks): randomised outputs,
   probabilities instead of logits, outputs that depend on the batch, autograd called in
   the forward pass, all-zero input gradients (cross-entropy and DLR), gradients that are
   non-zero but no better than a random direction.
1. Cross-entropy PGD versus margin-loss PGD: a large gap means the CE gradient
   vanishes (saturated softmax) while the margin still points the way.
2. Square (black box) breaking points that every white-box attack left standing.
3. Robust accuracy that rises, or barely falls, as ε grows (1, 2, 4, 8, 16/255) ...
4. ... or that keeps falling from 10 to 100 steps (the attack had not converged).
5. Logit scale (mean logit norm, mean max-softmax).
6. An unbounded attack (ε = 1) that does not bring accuracy to about 0%.

``cheap`` runs 0 and 5 and reuses what the suite already ran for 1 and 2; ``full`` (the
default) adds the attacks needed for 1, 3, 4 and 6 on the first ``diag_n`` points.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..attacks import CW, PGD, attack_mode
from ..utils import torch_seed
from . import checks as model_checks
from .core import as_images, attack_points, predict_all
from .report import Report, fmt_eps
from .suites import STANDALONE

LEVELS = ("ok", "suspicious", "masked")
EPS_SWEEP = (1 / 255, 2 / 255, 4 / 255, 8 / 255, 16 / 255)

# thresholds, in accuracy (fraction of points)
CE_GAP = (0.05, 0.15)  # suspicious, masked
# accuracy at 16/255 as a fraction of accuracy at 1/255 (sound robust CIFAR-10 models
# keep well under half: about 0.15-0.35), judged only while accuracy at 16/255 is above
# EPS_FLOOR
EPS_KEPT = (0.5, 0.8)
EPS_FLOOR = 0.05
EPS_RISE = 0.02  # accuracy rising with ε by more than this
STEPS_DROP = (0.03, 0.08)
LOGIT_NORM = 100.0
UNBOUNDED = (0.005, 0.02)


def _worst(levels: list[str]) -> str:
    return max(levels, key=LEVELS.index) if levels else "ok"


def _grade(value: float, limits: tuple[float, float]) -> str:
    return "masked" if value > limits[1] else "suspicious" if value > limits[0] else "ok"


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def _logit_stats(model, x, batch_size, device) -> dict[str, float]:
    norms, maxsm = [], []
    for lo in range(0, len(x), batch_size):
        xb = as_images(x[lo:lo + batch_size].to(device))
        with attack_mode(model), torch.no_grad():
            logits = model(xb).float()
        norms.append(logits.norm(dim=1).cpu())
        maxsm.append(logits.softmax(1).amax(1).cpu())
    cat = (lambda t: torch.cat(t).float().mean().item())
    return {"mean_logit_norm": cat(norms), "mean_max_softmax": cat(maxsm)}


def _model_checks(model, x, y, eps, batch_size, device, eot) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    """Check 0, on the first batch of the diagnostic points (AutoAttack uses its first
    batch too); the gradient checks on all of them."""
    xb, yb = as_images(x[:batch_size].to(device)), y[:batch_size].to(device)
    n_classes = model_checks.output_form(model, xb)
    random, rnd = model_checks.randomness(model, xb, yb, eot)
    found = [rnd, model_checks.probabilities(model, xb), model_checks.inference_gradients(model, xb)]
    if not random:  # a randomised model differs across any two calls, batched or not
        found.append(model_checks.batch_dependence(model, xb))
    zero: dict[str, list[int]] = {}
    informative = []
    for lo in range(0, len(y), batch_size):
        xb, yb = as_images(x[lo:lo + batch_size].to(device)), y[lo:lo + batch_size].to(device)
        for k, (z, of) in model_checks.zero_gradient_counts(model, xb, yb, n_classes, eot).items():
            zero.setdefault(k, [0, 0])
            zero[k][0] += z
            zero[k][1] += of
        informative.append(model_checks.informative_fraction(model, xb, yb, eps, eot) * len(yb))
    n = max(len(y), 1)
    zero_frac = {k: z / max(of, 1) for k, (z, of) in zero.items()}
    found.append(model_checks.zero_gradient_check(zero_frac))
    found.append(model_checks.informative_check(sum(informative) / n, eps))
    details = {"randomised": random, "n_classes": n_classes, "zero_grad_frac": zero_frac,
               "informative_grad_frac": sum(informative) / n}
    return found, details


def _acc(model, attack, x, y, clean, batch_size, device, eot=1) -> float:
    attack.eot = eot
    ok = attack_points(model, attack, x, y, clean.nonzero().squeeze(1), batch_size, device, None)
    return ok.float().mean().item()


@dataclass
class _Probe:
    """The diagnostic points and how to attack them: ``acc(attack)`` is the accuracy that
    remains on them (points the model gets wrong count as fooled)."""
    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    clean: torch.Tensor
    batch_size: int
    device: torch.device
    eot: int
    eps: float
    norm: str

    def acc(self, attack) -> float:
        return _acc(self.model, attack, self.x, self.y, self.clean, self.batch_size, self.device, self.eot)

    def cw(self, eps: float | None = None, steps: int = 20) -> float:
        return self.acc(CW(self.eps if eps is None else eps, steps=steps, norm=self.norm))

    def pgd(self, eps: float | None = None, steps: int = 20) -> float:
        return self.acc(PGD(self.eps if eps is None else eps, steps=steps, norm=self.norm))


def _logit_check(model, x, batch_size, device, zero_grad_frac: float, details: dict) -> list[tuple[str, str]]:
    """5. Logit scale: inflated logits saturate the softmax and hide the CE gradient."""
    st = _logit_stats(model, x, batch_size, device)
    st["zero_grad_frac"] = zero_grad_frac
    details["logits"] = st
    found = [("ok", f"mean logit norm {st['mean_logit_norm']:.1f}, mean max-softmax {st['mean_max_softmax']:.3f}")]
    if st["mean_logit_norm"] > LOGIT_NORM:
        found.append(("suspicious", f"inflated logits: mean logit norm {st['mean_logit_norm']:.1f} > {LOGIT_NORM:.0f}"))
    return found


def _pgd_loss(label: str, row: dict) -> str | None:
    """The loss of a row's PGD-family attack (PGD, CW): recorded in the row; a report written
    before rows recorded it is read by its labels (pgd..., cw...)."""
    if "attack" in row:
        return row.get("loss") if row["attack"] in ("PGD", "CW") else None
    return "ce" if label.startswith("pgd") else "cw" if label.startswith("cw") else None


def _ce_vs_margin(report: Report, probe: _Probe, level: str, details: dict) -> list[tuple[str, str]]:
    """1. CE-PGD versus margin-PGD: from the suite's own standalone runs when it has both,
    else (full level) PGD-20 and CW-20 on the diagnostic points."""
    ce = [s for s, r in report.per_attack.items() if r["mode"] == STANDALONE and _pgd_loss(s, r) == "ce"]
    mg = [s for s, r in report.per_attack.items() if r["mode"] == STANDALONE and _pgd_loss(s, r) == "cw"]
    if ce and mg:
        a_ce, a_mg = report.per_attack[ce[-1]]["accuracy"], report.per_attack[mg[-1]]["accuracy"]
        src = f"{ce[-1]} vs {mg[-1]}, {report.n:,} points"
    elif level == "full":
        a_ce, a_mg = probe.pgd(), probe.cw()
        src = f"pgd20 vs cw20, {len(probe.y):,} points"
    else:
        return []
    gap = a_ce - a_mg
    details["ce_vs_margin"] = {"ce": a_ce, "margin": a_mg, "gap": gap, "source": src}
    return [(_grade(gap, CE_GAP), f"cross-entropy PGD {_pct(a_ce)} vs margin-loss PGD {_pct(a_mg)}: "
                                  f"gap {100 * gap:.1f} points ({src})")]


FEW_POINTS = 100  # below this the diagnostics' accuracies move by 1 point or more per image


def _eps_check(probe: _Probe, details: dict) -> list[tuple[str, str]]:
    """3. CW-20 accuracy against ε (eps/8 .. 2 eps under L2): it must fall, and clearly."""
    if probe.norm == "l2" and not 2 * probe.eps >= model_checks.GREY_LEVEL:  # the L2 sweep scales ε, up to 2ε
        return [("ok", f"ε is {fmt_eps(probe.eps, probe.norm)}: even doubled it is below one grey level (1/255), where "
                       "no model's accuracy moves; no ε sweep, this check says nothing")]
    eps_values = EPS_SWEEP if probe.norm != "l2" else tuple(probe.eps * e / (8 / 255) for e in EPS_SWEEP)
    sweep = {fmt_eps(e, probe.norm): probe.cw(e) for e in eps_values}
    details["eps_sweep_cw20"] = sweep
    accs = list(sweep.values())
    rises = max(b - a for a, b in zip(accs, accs[1:]))
    text = ", ".join(f"{k}: {_pct(v)}" for k, v in sweep.items())
    kept = accs[-1] / max(accs[0], 1e-9)
    details["eps_kept_16_vs_1"] = kept
    if rises > EPS_RISE:
        return [("masked", f"CW-20 accuracy rises with ε ({text})")]
    if max(accs) == 0:  # nothing to fall from: no evidence either way
        return [("ok", f"CW-20 accuracy is 0% at every ε, the smallest included ({text}): this check says nothing")]
    if accs[-1] > EPS_FLOOR and kept > EPS_KEPT[0]:
        return [(_grade(kept, EPS_KEPT), f"CW-20 accuracy barely falls as ε grows 16-fold: {100 * kept:.0f}% of "
                                         f"it is kept ({text})")]
    return [("ok", f"CW-20 accuracy falls with ε ({text})")]


def _steps_check(probe: _Probe, details: dict) -> list[tuple[str, str]]:
    """4. CW accuracy from 10 to 100 steps: a large drop means the attacks had not converged."""
    a10, a100 = probe.cw(steps=10), probe.cw(steps=100)
    details["steps_cw"] = {"10": a10, "100": a100}
    return [(_grade(a10 - a100, STEPS_DROP), f"CW accuracy {_pct(a10)} after 10 steps, {_pct(a100)} after 100")]


def _unbounded_check(probe: _Probe, details: dict) -> list[tuple[str, str]]:
    """6. An attack allowed the whole image box (ε = 1 under L∞, sqrt(d) under L2) must
    leave about 0% accuracy."""
    unbounded = 1.0 if probe.norm != "l2" else float(probe.x[0].numel()) ** 0.5
    unb = min(probe.cw(unbounded), probe.pgd(unbounded))
    details["unbounded_eps1"] = unb
    return [(_grade(unb, UNBOUNDED), f"unbounded attack (ε = {unbounded:.3g}, CE- and CW-PGD-20) leaves "
                                     f"{_pct(unb)} accuracy")]


def diagnose(model: nn.Module, x: torch.Tensor, y: torch.Tensor, report: Report, *, level: str = "full",
             diag_n: int = 1000, batch_size: int = 500, device=None, seed: int = 0, eot: int = 1) -> Report:
    """Fill ``report.verdict``, ``report.evidence`` and ``report.diagnostics``."""
    if level == "off":
        return report
    if level not in ("cheap", "full"):
        raise ValueError("diagnostics must be off, cheap or full")
    device = torch.device(device) if device is not None else x.device
    m = min(diag_n, len(y))
    xd, yd = x[:m], y[:m].long()
    checks: list[tuple[str, str]] = list(report.notes)
    details: dict[str, Any] = {"n": m, "level": level}
    if m == 0:
        report.evidence = ["no points for the diagnostics (diag_n = 0 or no images): no verdict"]
        return report
    eps, norm = report.eps, report.norm
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(torch_seed(seed + 1))
        # 0. the model itself; the sign-step check moves every pixel: under L2 by eps / sqrt(d),
        # a move of L2 size eps
        step = eps if norm != "l2" else eps / xd[0].numel() ** 0.5
        found, details["model"] = _model_checks(model, xd, yd, step, batch_size, device, eot)
        checks += found
        checks += _logit_check(model, xd, batch_size, device, details["model"]["zero_grad_frac"]["ce"], details)
        probe = _Probe(model, xd, yd, predict_all(model, xd, yd, batch_size, device), batch_size, device, eot,
                       eps, norm)
        checks += _ce_vs_margin(report, probe, level, details)
        sq = model_checks.square_extra(report.per_attack)  # 2. black box beating white box
        if sq is not None:
            details["square_extra"], found = sq
            checks.append(found)
        if level == "full":
            checks += _eps_check(probe, details) + _steps_check(probe, details) + _unbounded_check(probe, details)
    if m < FEW_POINTS:
        checks.append(("ok", f"only {m} image{'s' * (m != 1)} for these checks: a verdict on so few says little "
                             f"(diag_n {FEW_POINTS}+ gives them meaning)"))
    report.verdict = _worst([lvl for lvl, _ in checks])
    order = {"masked": 0, "suspicious": 1, "ok": 2}
    report.evidence = [f"[{lvl}] {msg}" for lvl, msg in sorted(checks, key=lambda c: order[c[0]])]
    report.diagnostics = details
    return report
