"""Targeted FAB (Croce & Hein, ICML 2020, "Minimally distorted adversarial examples
with a fast adaptive boundary attack"), L∞, as used in AutoAttack (FAB-T).

FAB looks for the smallest perturbation that crosses the decision boundary between the
true class y and a target t. Each iteration linearises g = f_t - f_y at the current
point x1, projects both x1 and the original x0 onto the linearised boundary (minimal
L∞ step, inside the image box), and moves to a convex combination biased towards x0
(α ≤ α_max), overshooting by η. Whenever the point is adversarial it is recorded if its
norm is the smallest so far, then pulled back towards x0 by β. An example counts as
fooled only if the smallest adversarial found lies in the ε-ball.
"""
from __future__ import annotations

import torch
from torch import nn

from .apgd import targeted_runs
from .base import Attack, eot_gradient, fp32_logits, linf_only
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


def fab_targeted(model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor, eps: float,
                 steps: int = 100, eta: float = 1.05, beta: float = 0.9, alpha_max: float = 0.1, eot: int = 1
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (x_adv, fooled); fooled means misclassified within the ε-ball. With ``eot``
    > 1 the linearisation (g and its gradient) is the mean of that many forward passes."""
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
            d = project_linf_hyperplane(torch.cat([x1, x0]), torch.cat([w, w]),
                                        torch.cat([-g, (w * (x1 - x0)).sum(1) - g]))
            d1, d2 = d[:n], d[n:]
            a1 = d1.abs().amax(1, keepdim=True).clamp_min(1e-8)
            a2 = d2.abs().amax(1, keepdim=True).clamp_min(1e-8)
            alpha = (a1 / (a1 + a2)).clamp(0, alpha_max)
            x1 = ((x1 + eta * d1) * (1 - alpha) + (x0 + eta * d2) * alpha).clamp(0, 1)
            adv = fp32_logits(model, x1.view_as(x)).argmax(1) != y
            norm = (x1 - x0).abs().amax(1)
            better = adv & (norm < best)
            x_best = torch.where(better[:, None], x1, x_best)
            best = torch.where(better, norm, best)
            x1 = torch.where(adv[:, None], x0 + (x1 - x0) * beta, x1)
    fooled = best <= eps
    x_adv = torch.where(fooled[:, None], x0 + (x_best - x0).clamp(-eps, eps), x0)
    return x_adv.view_as(x), fooled


@register_attack("fabt")
class FABT(Attack):
    """Targeted FAB, minimal-L-inf boundary attack towards the 9 most likely wrong classes (Croce & Hein 2020)."""

    name = "fabt"

    def __init__(self, eps: float, steps: int = 100, targets: int = 9, norm: str = "linf",
                 eta: float = 1.05, beta: float = 0.9, alpha_max: float = 0.1):
        if norm != "linf":
            raise ValueError(linf_only("FAB-T"))
        self.eps, self.steps, self.targets = float(eps), steps, targets
        self.eta, self.beta, self.alpha_max = eta, beta, alpha_max

    def perturb(self, model, x, y):
        def run(xr, yr, target):
            return fab_targeted(model, xr, yr, target, self.eps, self.steps, self.eta, self.beta, self.alpha_max,
                                self.eot)

        return targeted_runs(run, model, x, y, self.targets)

    def __repr__(self) -> str:
        return f"FABT(eps={self.eps:.6g}, steps={self.steps}, targets={self.targets})"
