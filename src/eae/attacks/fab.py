"""Targeted FAB (Croce & Hein, ICML 2020, "Minimally distorted adversarial examples
with a fast adaptive boundary attack"), L∞ and L2, as used in AutoAttack (FAB-T).

FAB looks for the smallest perturbation that crosses the decision boundary between the
true class y and a target t. Each iteration linearises g = f_t - f_y at the current
point x1, projects both x1 and the original x0 onto the linearised boundary (minimal
L∞ or L2 step, inside the image box), and moves to a convex combination biased towards x0
(α ≤ α_max), overshooting by η. Whenever the point is adversarial it is recorded if its
norm is the smallest so far, then pulled back towards x0 by β. An example counts as
fooled only if the smallest adversarial found lies in the ε-ball.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..threat import make_threat
from .apgd import targeted_runs
from .base import Attack, check_settings, eot_gradient, fp32_logits
from .registry import register_attack


def project_linf_hyperplane(p: torch.Tensor, w: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Per row: the δ of smallest L∞ norm with w·δ = c and p + δ in [0, 1].

    p, w: (B, D); c: (B,). Along each coordinate the best move is sign(c·w_i) times
    min(t, room_i), where room_i is the distance to the box face in that direction;
    w·δ(t) = Σ |w_i| min(t, room_i) is piecewise linear and increasing in t, so the
    smallest feasible t is found by sorting the rooms. If even the box corner does not
    reach the hyperplane, that corner (the closest one can get) is returned.
    """
    direction = torch.sign(c)[:, None] * torch.sign(w)
    a = w.abs()
    room = torch.where(direction > 0, 1 - p, p).clamp_min(0)
    room_sorted, order = room.sort(1)
    a_sorted = a.gather(1, order)
    excl_au = torch.cumsum(a_sorted * room_sorted, 1) - a_sorted * room_sorted  # Σ_{i<k} a_i room_i
    excl_a = torch.cumsum(a_sorted, 1) - a_sorted
    rest_a = a.sum(1, keepdim=True) - excl_a  # Σ_{i>=k} a_i
    reach = excl_au + room_sorted * rest_a  # w·δ at t = room_(k)
    target = c.abs()[:, None]
    k = (reach < target).sum(1, keepdim=True)  # first breakpoint that reaches the hyperplane
    feasible = k < p.shape[1]
    kk = k.clamp(max=p.shape[1] - 1)
    t = (target - excl_au.gather(1, kk)) / rest_a.gather(1, kk).clamp_min(1e-12)
    t = torch.where(feasible, t, room_sorted[:, -1:])
    delta = direction * torch.minimum(t, room)
    return torch.where(c[:, None] == 0, torch.zeros_like(delta), delta)


def project_l2_hyperplane(p: torch.Tensor, w: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Per row: the δ of smallest L2 norm with w·δ = c and p + δ in [0, 1].

    p, w: (B, D); c: (B,). By KKT δ_i = clip(λ w_i, -p_i, 1 - p_i) with λ of the sign of c:
    with τ = |λ| each coordinate moves along sign(c·w_i) by min(τ|w_i|, room_i), room_i being
    the distance to the box face that way, so w·δ(τ) = Σ min(τ w_i², |w_i| room_i) is piecewise
    linear and increasing in τ, with breakpoints room_i / |w_i|; sorting them gives τ exactly.
    c = 0 gives δ = 0. If even the box corner does not reach the hyperplane, that corner is
    returned, and coordinates with |w_i| <= 1e-8 stay still, both as in AutoAttack's
    projection_l2 (such breakpoints would be near-infinite, their effect on w·δ nil).
    """
    w = torch.where(w.abs() > 1e-8, w, torch.zeros_like(w))
    direction = torch.sign(c)[:, None] * torch.sign(w)
    a = w.abs()
    room = torch.where(direction > 0, 1 - p, p).clamp_min(0)
    # still coordinates get breakpoint 0: they sort first and add nothing to either sum
    knee = torch.where(a > 0, room / torch.where(a > 0, a, torch.ones_like(a)), torch.zeros_like(a))
    knee_sorted, order = knee.sort(1)
    a_sorted, room_sorted = a.gather(1, order), room.gather(1, order)
    sat = torch.cumsum(a_sorted * room_sorted, 1)
    sat = torch.cat([torch.zeros_like(sat[:, :1]), sat[:, :-1]], 1)  # Σ_{i<k} |w_i| room_i: saturated
    rest = a_sorted.square().flip(1).cumsum(1).flip(1)  # Σ_{i>=k} w_i²: still moving
    reach = sat + knee_sorted * rest  # w·δ at τ = breakpoint k
    target = c.abs()[:, None]
    k = (reach < target).sum(1, keepdim=True)  # first breakpoint that reaches the hyperplane
    feasible = k < p.shape[1]
    kk = k.clamp(max=p.shape[1] - 1)
    tau = (target - sat.gather(1, kk)) / rest.gather(1, kk).clamp_min(torch.finfo(p.dtype).tiny)
    # infeasible rows go to the corner: every moving coordinate at its face
    return direction * torch.where(feasible, torch.minimum(tau * a, room), room)


_PROJECTIONS = {"linf": project_linf_hyperplane, "l2": project_l2_hyperplane}


def _size(d: torch.Tensor, norm: str) -> torch.Tensor:
    """Per row of a flat (B, D) tensor, the norm FAB minimises (sqrt of the sum of squares
    for L2, as AutoAttack computes it)."""
    return d.square().sum(1).sqrt() if norm == "l2" else d.abs().amax(1)


def fab_targeted(model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor, eps: float,
                 steps: int = 100, eta: float = 1.05, beta: float = 0.9, alpha_max: float = 0.1, eot: int = 1,
                 norm: str = "linf") -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (x_adv, fooled); fooled means misclassified within the ε-ball of ``norm``
    ("linf" or "l2": the projection, the step weights and the recorded sizes all use it).
    With ``eot`` > 1 the linearisation (g and its gradient) is the mean of that many forward
    passes. No random start: AutoAttack's FAB-T runs one restart without one."""
    project = _PROJECTIONS[norm]
    n = len(x)
    x0 = x.flatten(1)
    x1 = x0.clone()
    best = torch.full((n,), float("inf"), device=x.device)
    x_best = x0.clone()
    rows = torch.arange(n, device=x.device)
    def gap(logits, yy):
        return logits[rows, target] - logits[rows, yy]

    for _ in range(steps):
        w, g, _ = eot_gradient(model, x1.view_as(x), y, gap, eot)
        with torch.no_grad():
            w = w.flatten(1)
            # both projections onto {z : g + w·(z - x1) = 0} in one batch
            d = project(torch.cat([x1, x0]), torch.cat([w, w]), torch.cat([-g, (w * (x1 - x0)).sum(1) - g]))
            d1, d2 = d[:n], d[n:]
            a1 = _size(d1, norm)[:, None].clamp_min(1e-8)
            a2 = _size(d2, norm)[:, None].clamp_min(1e-8)
            alpha = (a1 / (a1 + a2)).clamp(0, alpha_max)
            x1 = ((x1 + eta * d1) * (1 - alpha) + (x0 + eta * d2) * alpha).clamp(0, 1)
            adv = fp32_logits(model, x1.view_as(x)).argmax(1) != y
            size = _size(x1 - x0, norm)
            better = adv & (size < best)
            x_best = torch.where(better[:, None], x1, x_best)
            best = torch.where(better, size, best)
            x1 = torch.where(adv[:, None], x0 + (x1 - x0) * beta, x1)
    fooled = best <= eps
    # best <= eps already; the projection only guards the ε-ball against rounding
    x_adv = torch.where(fooled[:, None], x0 + make_threat(norm, eps).project(x_best - x0), x0)
    return x_adv.view_as(x), fooled


@register_attack("fabt")
class FABT(Attack):
    """Targeted FAB, minimal-L∞ or -L2 boundary attack towards the 9 most likely wrong classes (Croce & Hein 2020)."""

    name = "fabt"

    def __init__(self, eps: float, steps: int = 100, targets: int = 9, norm: str = "linf",
                 eta: float = 1.05, beta: float = 0.9, alpha_max: float = 0.1):
        if norm not in _PROJECTIONS:
            raise ValueError(f"FAB-T: unknown norm {norm!r}; use linf or l2")
        eps = check_settings("FAB-T", eps, norm, {"steps": steps, "targets": targets}, eta=(eta, 0, math.inf),
                       beta=(beta, 0, 1), alpha_max=(alpha_max, 0, 1))
        self.eps, self.steps, self.targets = eps, steps, targets
        self.eta, self.beta, self.alpha_max, self.norm = eta, beta, alpha_max, norm

    def perturb(self, model, x, y):
        def run(xr, yr, target):
            return fab_targeted(model, xr, yr, target, self.eps, self.steps, self.eta, self.beta, self.alpha_max,
                                self.eot, self.norm)

        return targeted_runs(run, model, x, y, self.targets)

    def __repr__(self) -> str:
        return f"FABT(eps={self.eps:.6g}, steps={self.steps}, targets={self.targets}, norm={self.norm})"
