"""Square Attack (Andriushchenko et al., ECCV 2020), L∞, score-based black box.

Random search on the margin z_y - max_{k != y} z_k, starting from vertical stripes of
±ε. Each query changes one square window per image to a random ±ε per channel and
is kept if the margin drops. The window's area is a fraction p of the image that
shrinks on a fixed schedule. The defaults are AutoAttack's standard version: 5,000
queries, p_init = 0.8, and the schedule's breakpoints read in queries as they are
(AutoAttack builds Square with ``resc_schedule=False``), so p goes no lower than
p_init / 128 in 5,000 queries. ``rescale=True`` stretches the schedule over any budget
as if it were 10,000 queries (the Square Attack paper's own code for other budgets).
It uses no gradient, so it is the check on gradient masking: a model that resists the
white-box attacks but not this one is hiding its gradients. Every query is a decision,
so it runs in strict fp32 whatever the evaluation's precision.

Each image draws its own window (AutoAttack draws one per batch; each image's window
is uniform either way), at a corner in [0, side - s) as AutoAttack does. Fooled
images drop out of the batch every ``compact_every`` queries (one host sync each
time, never inside the queries).
"""
from __future__ import annotations

import math

import torch

from .base import Attack, margin_loss, linf_only
from .registry import register_attack

# (last query of the interval, divisor of p_init); p_init itself up to query 10
_SCHEDULE = ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128),
             (8000, 256))


def p_schedule(p_init: float, it: int, queries: int = 5000, rescale: bool = False) -> float:
    """Fraction of pixels changed at query ``it`` (0-based). ``rescale``: read ``it`` as if
    the budget were 10,000 queries."""
    if rescale:
        it = int(it / queries * 10000)
    for bound, div in _SCHEDULE:
        if it <= bound:
            return p_init / div
    return p_init / 512


@register_attack("square")
class Square(Attack):
    """Square Attack: black-box random search with square updates on the margin loss (Andriushchenko et al. 2020)."""

    name = "square"
    uses_gradients = False  # its margins are its decisions: strict fp32 whatever the precision

    def __init__(self, eps: float, queries: int = 5000, p_init: float = 0.8, norm: str = "linf",
                 compact_every: int = 50, steps: int | None = None, rescale: bool = False):
        if norm != "linf":
            raise ValueError(linf_only("Square"))
        self.eps, self.p_init, self.rescale = float(eps), p_init, rescale
        self.queries = steps if steps is not None else queries  # `square1000` = 1,000 queries
        self.compact_every = compact_every

    @torch.no_grad()
    def perturb(self, model, x, y):
        n, c, h, w = x.shape
        dev = x.device
        signs = torch.randint(0, 2, (n, c, 1, w), device=dev).float() * 2 - 1
        x_best = (x + self.eps * signs).clamp(0, 1)
        margin = -margin_loss(model(x_best), y)  # > 0 while correctly classified
        idx = torch.arange(n, device=dev)
        rows = torch.arange(h, device=dev).view(1, 1, h, 1)
        cols = torch.arange(w, device=dev).view(1, 1, 1, w)
        for it in range(self.queries):
            if it % self.compact_every == 0:
                idx = (margin > 0).nonzero().squeeze(1)
                if len(idx) == 0:
                    break
            m = len(idx)
            xa, ya, xb, ma = x[idx], y[idx], x_best[idx], margin[idx]
            p = p_schedule(self.p_init, it, self.queries, self.rescale)
            s = min(max(int(round(math.sqrt(p * h * w))), 1), h, w)
            vh = torch.randint(0, max(h - s, 1), (m, 1, 1, 1), device=dev)
            vw = torch.randint(0, max(w - s, 1), (m, 1, 1, 1), device=dev)
            window = (rows >= vh) & (rows < vh + s) & (cols >= vw) & (cols < vw + s)
            new_sign = torch.randint(0, 2, (m, c, 1, 1), device=dev).float() * 2 - 1
            x_new = torch.where(window, xa + self.eps * new_sign, xb).clamp(0, 1)
            m_new = -margin_loss(model(x_new), ya)
            better = m_new < ma
            x_best[idx] = torch.where(better.view(-1, 1, 1, 1), x_new, xb)
            margin[idx] = torch.where(better, m_new, ma)
        return x_best

    def __repr__(self) -> str:
        resc = ", rescale=True" if self.rescale else ""
        return f"Square(eps={self.eps:.6g}, queries={self.queries}, p_init={self.p_init}{resc})"
