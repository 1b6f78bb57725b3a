"""Auto-PGD (Croce & Hein, ICML 2020): APGD-CE, APGD-DLR and targeted APGD-T, L-inf and L2.

PGD with momentum (0.75) whose step size starts at 2ε and is halved at checkpoints
when progress stalls: at checkpoint j (iterations spaced 22%, then shrinking by 3% of
the budget down to 6%), the step is halved for an example if its loss increased in at
most ρ = 75% of the steps since the last checkpoint (the first step is compared with 0, as
in AutoAttack's code), or if neither the step nor the best loss changed since then; a
halved example restarts from its best point.

Everything is per example and on the device: no Python loop over examples and no
host round trip inside the iterations. Restarts run as one batch (the input
replicated); APGD-T runs its targets on the points no earlier target fooled, as many
targets at once (the points replicated) as fit in the caller's batch.
"""
from __future__ import annotations

import torch
from torch import nn

from .base import Attack, check_settings, decision_logits, dlr_targeted_loss, eot_gradient, fp32_logits, loss_named
from .registry import register_attack


def _period_lengths(steps: int) -> tuple[int, int, int]:
    first = max(int(0.22 * steps), 1)
    shrink = max(int(0.03 * steps), 1)
    minimum = max(int(0.06 * steps), 1)
    return first, shrink, minimum


def _l2_norm(t: torch.Tensor) -> torch.Tensor:
    """||t||_2 per example, shaped to broadcast; summed squares as AutoAttack computes it
    (torch.linalg.norm rounds differently, and over 100 steps the iterates drift ~1e-5)."""
    return (t ** 2).flatten(1).sum(-1).sqrt().view(-1, *([1] * (t.dim() - 1)))


def _l2_unit(t: torch.Tensor) -> torch.Tensor:
    """t / ||t||_2 per example, with AutoAttack's 1e-12 in the denominator."""
    return t / (_l2_norm(t) + 1e-12)


class _Linf:
    """APGD's three norm-dependent parts, L-inf: a start on the ball's surface (a uniform
    draw in the cube, scaled to L-inf norm eps), sign steps, and clamping."""

    @staticmethod
    def start(x, eps):
        t = torch.rand_like(x) * 2 - 1
        view = (-1,) + (1,) * (x.dim() - 1)
        return (x + eps * t / t.flatten(1).abs().amax(1).clamp_min(1e-12).view(view)).clamp(0, 1)

    @staticmethod
    def step(grad):
        return grad.sign()

    @staticmethod
    def project(x_adv, x, eps):
        return torch.minimum(torch.maximum(x_adv, x - eps), x + eps).clamp_(0, 1)


class _L2:
    """The L2 parts, as AutoAttack's L2 path: a start at distance eps in a Gaussian
    direction, steps along the normalised gradient, and projection by rescaling δ to
    norm min(eps, ||δ||) before clipping to the image."""

    @staticmethod
    def start(x, eps):
        return (x + eps * _l2_unit(torch.randn_like(x))).clamp(0, 1)

    @staticmethod
    def step(grad):
        return _l2_unit(grad)

    @staticmethod
    def project(x_adv, x, eps):
        d = x_adv - x
        return (x + _l2_unit(d) * torch.clamp(_l2_norm(d), max=eps)).clamp_(0, 1)


NORMS = {"linf": _Linf, "l2": _L2}


def apgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn, eps: float, steps: int,
         rho: float = 0.75, momentum: float = 0.75, eot: int = 1, norm: str = "linf"
         ) -> tuple[torch.Tensor, torch.Tensor]:
    """One APGD run (``norm`` linf or l2) on a batch; ``loss_fn(logits, y) -> per-example
    loss`` is maximised. With ``eot`` > 1 each gradient and loss is the mean of that many
    forward passes. The step size starts at 2 eps under either norm, as in AutoAttack.

    Returns (x_adv, fooled): for fooled examples the last misclassified iterate, for the
    others the point of highest loss.
    """
    n = len(x)
    view = (-1,) + (1,) * (x.dim() - 1)

    def grad_loss(xa):
        grad, loss, logits = eot_gradient(model, xa, y, loss_fn, eot)
        return grad, loss, decision_logits(model, xa, logits)

    ball = NORMS[norm]
    x_adv = ball.start(x, eps)
    grad, loss, logits = grad_loss(x_adv)
    fooled = logits.argmax(1) != y
    x_out = torch.where(fooled.view(view), x_adv, x)
    x_best, grad_best, loss_best = x_adv.clone(), grad.clone(), loss.clone()
    step = torch.full((n,) + (1,) * (x.dim() - 1), 2.0 * eps, device=x.device)
    x_prev = x_adv.clone()
    period, shrink, minimum = _period_lengths(steps)
    since_check, increases = 0, torch.zeros(n, device=x.device)
    # AutoAttack's code compares the first step's loss with 0 (an unfilled entry of its loss
    # history), not with the starting point's: a DLR loss (< 0 until fooled) then never
    # counts it as an increase, a CE loss always does. Kept, so that the step size halves
    # at the same checkpoints as AutoAttack's.
    loss_prev = torch.zeros_like(loss)
    best_at_check = loss_best.clone()
    halved_at_check = torch.ones(n, dtype=torch.bool, device=x.device)
    for i in range(steps):
        with torch.no_grad():
            a = momentum if i > 0 else 1.0
            z = ball.project(x_adv + step * ball.step(grad), x, eps)
            x_new = ball.project(x_adv + a * (z - x_adv) + (1 - a) * (x_adv - x_prev), x, eps)
            x_prev, x_adv = x_adv, x_new
        grad, loss, logits = grad_loss(x_adv)
        with torch.no_grad():
            now = logits.argmax(1) != y
            x_out = torch.where(now.view(view), x_adv, x_out)
            fooled |= now
            increases += (loss > loss_prev).float()
            loss_prev = loss
            better = loss > loss_best
            x_best = torch.where(better.view(view), x_adv, x_best)
            grad_best = torch.where(better.view(view), grad, grad_best)
            loss_best = torch.where(better, loss, loss_best)
            since_check += 1
            if since_check == period:
                # condition 1: the loss rose in at most rho of the period's steps;
                # condition 2: no halving last time and no improvement of the best loss since
                halve = (increases <= rho * period) | (~halved_at_check & (best_at_check >= loss_best))
                halved_at_check = halve
                best_at_check = loss_best.clone()
                step = torch.where(halve.view(view), step / 2, step)
                x_adv = torch.where(halve.view(view), x_best, x_adv)
                grad = torch.where(halve.view(view), grad_best, grad)
                since_check, increases = 0, torch.zeros_like(increases)
                period = max(period - shrink, minimum)
    x_out = torch.where(fooled.view(view), x_out, x_best)
    return x_out, fooled


def _reduce_runs(x_runs: torch.Tensor, fooled_runs: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(R * n, ...) runs of the same n examples -> per example, a fooling point if any run
    found one (else the first run's point), and whether any run fooled it."""
    r = x_runs.shape[0] // n
    x_runs = x_runs.view(r, n, *x_runs.shape[1:])
    fooled_runs = fooled_runs.view(r, n)
    first = fooled_runs.float().argmax(0)  # index of the first run that fooled (0 if none)
    return x_runs[first, torch.arange(n, device=x_runs.device)], fooled_runs.any(0)


def targeted_runs(run, model: nn.Module, x: torch.Tensor, y: torch.Tensor, targets: int, restarts: int = 1
                  ) -> torch.Tensor:
    """Run ``run(xr, yr, target) -> (x_adv, fooled)`` towards the ``targets`` most likely
    wrong classes of each clean point (AutoAttack's order), each target only on the points
    no earlier target fooled, as AutoAttack does.

    Targets go in chunks: as many targets at once (the points replicated) as fit in the
    batch the caller gave, so memory stays within ``--batch-size`` while the few points
    that stand after the first targets still make one large batch on a GPU.
    Returns, per point, the point that fooled it, else the first target's best point.
    """
    n = len(x)
    order = fp32_logits(model, x).argsort(1, descending=True)
    k = min(targets, order.shape[1] - 1)
    x_adv, fooled = x.clone(), torch.zeros(n, dtype=torch.bool, device=x.device)
    first, view = 1, (-1,) + (1,) * (x.dim() - 1)
    while first <= k:
        idx = (~fooled).nonzero().squeeze(1)  # one host sync per chunk, not per iteration
        if not len(idx):
            break
        chunk = range(first, min(first + max(1, n // (len(idx) * restarts)), k + 1))
        reps = len(chunk) * restarts
        tgt = order[idx][:, list(chunk)].T.reshape(-1).repeat(restarts)
        xs, fs = _reduce_runs(*run(x[idx].repeat(reps, 1, 1, 1), y[idx].repeat(reps), tgt), len(idx))
        keep = fs if first > 1 else torch.ones_like(fs)  # the first target's best point stands otherwise
        x_adv[idx] = torch.where(keep.view(view), xs, x_adv[idx])
        fooled[idx] |= fs
        first = chunk.stop
    return x_adv


@register_attack("apgd")
class APGD(Attack):
    """APGD with cross-entropy (apgd-ce) or DLR loss, step-size schedule and momentum (Croce & Hein 2020)."""

    name = "apgd"

    def __init__(self, eps: float, steps: int = 100, loss: str = "ce", restarts: int = 1, norm: str = "linf",
                 rho: float = 0.75):
        if norm not in NORMS:
            raise ValueError(f"APGD: norm must be one of {', '.join(NORMS)}, got {norm!r}")
        eps = check_settings("APGD", eps, norm, {"steps": steps, "restarts": restarts}, rho=(rho, 0, 1))
        self.eps, self.steps, self.restarts, self.rho, self.norm = eps, steps, restarts, rho, norm
        self.loss, self.loss_fn = loss, loss_named(loss)

    def perturb(self, model, x, y):
        n = len(x)
        xr, yr = x.repeat(self.restarts, 1, 1, 1), y.repeat(self.restarts)
        x_adv, fooled = apgd(model, xr, yr, self.loss_fn, self.eps, self.steps, self.rho, eot=self.eot,
                             norm=self.norm)
        return _reduce_runs(x_adv, fooled, n)[0]

    def __repr__(self) -> str:
        return (f"APGD(eps={self.eps:.6g}, steps={self.steps}, loss={self.loss}, restarts={self.restarts}, "
                f"norm={self.norm})")


@register_attack("apgdt")
class APGDT(Attack):
    """Targeted APGD on the DLR loss, towards each of the 9 most likely wrong classes (Croce & Hein 2020)."""

    name = "apgdt"

    def __init__(self, eps: float, steps: int = 100, targets: int = 9, restarts: int = 1, norm: str = "linf",
                 rho: float = 0.75):
        if norm not in NORMS:
            raise ValueError(f"APGD-T: norm must be one of {', '.join(NORMS)}, got {norm!r}")
        eps = check_settings("APGD-T", eps, norm, {"steps": steps, "targets": targets, "restarts": restarts},
                       rho=(rho, 0, 1))
        self.eps, self.steps, self.targets, self.restarts, self.rho = eps, steps, targets, restarts, rho
        self.norm = norm

    def perturb(self, model, x, y):
        def run(xr, yr, target):
            return apgd(model, xr, yr, lambda logits, yy: dlr_targeted_loss(logits, yy, target),
                        self.eps, self.steps, self.rho, eot=self.eot, norm=self.norm)

        return targeted_runs(run, model, x, y, self.targets, self.restarts)

    def __repr__(self) -> str:
        return (f"APGDT(eps={self.eps:.6g}, steps={self.steps}, targets={self.targets}, restarts={self.restarts}, "
                f"norm={self.norm})")
