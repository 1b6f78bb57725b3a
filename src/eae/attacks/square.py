"""Square Attack (Andriushchenko et al., ECCV 2020), L∞, score-based black box.

Random search on the margin z_y - max_{k != y} z_k, starting from vertical stripes of
±ε. Each query changes one square window per image to a random ±ε per channel and
is kept if the margin drops. The window's area is a fraction p of the image that
shrinks on a fixed schedule (p_init = 0.8, as in AutoAttack, with 5,000 queries).
It uses no gradient, so it is the check on gradient masking: a model that resists the
white-box attacks but not this one is hiding its gradients.

Each image has its own window; fooled images drop out of the batch every
``compact_every`` queries (one host sync each time, never inside the queries).
"""
from __future__ import annotations

import math

import torch

from .base import Attack, margin_loss
from .registry import register_attack

_SCHEDULE = ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128),
             (8000, 256))


def p_schedule(p_init: float, it: int, queries: int) -> float:
    """Fraction of pixels changed at query ``it`` (schedule defined for 10,000 queries)."""
    it = int(it / queries * 10000)
    div = 512
    for bound, d in _SCHEDULE:
        if it <= bound:
            div = d
            break
    return p_init / div


@register_attack("square")
class Square(Attack):
    """Square Attack: black-box random search with square updates on the margin loss (Andriushchenko et al. 2020)."""

    name = "square"

    def __init__(self, eps: float, queries: int = 5000, p_init: float = 0.8, norm: str = "linf",
                 compact_every: int = 50, steps: int | None = None):
        if norm != "linf":
            raise NotImplementedError("Square is implemented for L-inf")
        self.eps, self.p_init = float(eps), p_init
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
        rows = torch.arange(h, device=dev)
        cols = torch.arange(w, device=dev)
        for it in range(1, self.queries):
            if it == 1 or it % self.compact_every == 0:
                idx = (margin > 0).nonzero().squeeze(1)
                if len(idx) == 0:
                    break
            m = len(idx)
            xa, ya, xb, ma = x[idx], y[idx], x_best[idx], margin[idx]
            s = int(round(math.sqrt(p_schedule(self.p_init, it, self.queries) * h * w)))
            s = min(max(s, 1), h - 1)
            vh = torch.randint(0, h - s + 1, (m, 1, 1, 1), device=dev)
            vw = torch.randint(0, w - s + 1, (m, 1, 1, 1), device=dev)
            window = ((rows.view(1, 1, h, 1) >= vh) & (rows.view(1, 1, h, 1) < vh + s)
                      & (cols.view(1, 1, 1, w) >= vw) & (cols.view(1, 1, 1, w) < vw + s))
            new_sign = torch.randint(0, 2, (m, c, 1, 1), device=dev).float() * 2 - 1
            delta = torch.where(window, self.eps * new_sign, xb - xa)
            x_new = (xa + delta).clamp(0, 1)
            m_new = -margin_loss(model(x_new), ya)
            better = m_new < ma
            x_best[idx] = torch.where(better.view(-1, 1, 1, 1), x_new, xb)
            margin[idx] = torch.where(better, m_new, ma)
        return x_best

    def __repr__(self) -> str:
        return f"Square(eps={self.eps:.6g}, queries={self.queries}, p_init={self.p_init})"
