"""Square Attack (Andriushchenko et al., ECCV 2020), L∞ and L2, score-based black box.

Random search on the margin z_y - max_{k != y} z_k: each query changes square windows
of every image still correctly classified and is kept if the margin drops. A window's
area is a fraction p of the image that shrinks on a fixed schedule, the same for both
norms. The defaults are AutoAttack's standard version: one query for the starting point,
then 5,000, p_init = 0.8, and the schedule's breakpoints read in queries as they are
(AutoAttack builds Square with ``resc_schedule=False``), so p goes no lower than
p_init / 128 in 5,000 queries. ``rescale=True`` stretches the schedule over any budget
as if it were 10,000 queries (the Square Attack paper's own code for other budgets).
It uses no gradient, so it is the check on gradient masking: a model that resists the
white-box attacks but not this one is hiding its gradients. Every query is a decision,
so it runs in strict fp32 whatever the evaluation's precision.

L∞ (``norm="linf"``) starts from vertical stripes of ±ε; a query sets one window of
side round(sqrt(p h w)) to a random ±ε per channel.

L2 (``norm="l2"``, AutoAttack's ``norm='L2'`` code path) builds its changes from a
pseudo-Gaussian block (:func:`pseudo_gaussian`): nested squares, highest at the centre,
positive in the upper half and negative in the lower, at unit L2 norm, and transposed
half the time. It starts from a grid of such blocks of side h // 5 with a random sign
per image and channel, scaled to L2 norm ε (:func:`l2_start`). A query draws two windows
of side round(sqrt(p h w)), at least 3 and odd: the second is emptied, the first gets a
new signed block plus its own old content (normalised per channel), and per channel that
window carries the L2 mass both windows held plus an equal share of what the ε-ball has
left. The whole δ is then scaled back to L2 norm ε and clipped to the image: a query
moves mass around on the sphere instead of adding to it, so every candidate has norm ε
until the image's box cuts it.

Each image draws its own windows, and under L2 its own block orientations (AutoAttack
draws one per batch: per query, and per grid cell at the start; each image's draws are
distributed the same either way), with corners in [0, side - s) as AutoAttack does.
Fooled images drop out of the batch every ``compact_every`` queries (one host sync each
time, never inside the queries).
"""
from __future__ import annotations

import math

import torch

from ..errors import ConfigError
from .base import Attack, check_settings, margin_loss
from .registry import register_attack

# (last query of the interval, divisor of p_init); p_init itself up to query 10
_SCHEDULE = ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128),
             (8000, 256))


def p_schedule(p_init: float, it: int, queries: int = 5000, rescale: bool = False) -> float:
    """Fraction of pixels changed at query ``it`` (0-based). ``rescale``: read ``it`` as if
    the budget were 10,000 queries. AutoAttack uses the same schedule for L∞ and L2."""
    if rescale:
        it = int(it / queries * 10000)
    for bound, div in _SCHEDULE:
        if it <= bound:
            return p_init / div
    return p_init / 512


# ----------------------------------------------------------------------------- L2 blocks
def rectangles(rows: int, cols: int, device=None) -> torch.Tensor:
    """A (rows, cols) bump of nested rectangles around (rows // 2, cols // 2), unit L2 norm.

    Ring k (the cells at Chebyshev distance k from the centre) holds the sum of 1 / (j + 1)^2
    over the rings j from k outwards, so the height falls off from the centre like a
    Gaussian's but is cheap and deterministic. Summed in float64: one rounding per cell."""
    k = torch.arange(max(rows, cols) // 2 + 1, device=device, dtype=torch.float64)
    tail = (1.0 / (k + 1) ** 2).flip(0).cumsum(0).flip(0)  # tail[d] = sum over j >= d
    dr = (torch.arange(rows, device=device) - rows // 2).abs()
    dc = (torch.arange(cols, device=device) - cols // 2).abs()
    bump = tail[torch.maximum(dr[:, None], dc[None, :])]
    return (bump / bump.norm()).float() if bump.numel() else bump.float()


def pseudo_gaussian(s: int, device=None) -> torch.Tensor:
    """The (s, s) block of an L2 query, unit L2 norm, untransposed: a bump in the upper
    s // 2 rows and a negative one in the rest, each at unit norm before the whole is."""
    block = torch.cat([rectangles(s // 2, s, device), -rectangles(s - s // 2, s, device)])
    return block / block.norm()


def _signs(shape, device) -> torch.Tensor:
    return torch.randint(0, 2, shape, device=device).float() * 2 - 1


def random_blocks(n: int, c: int, s: int, device=None) -> torch.Tensor:
    """(n, c, s, s): the pseudo-Gaussian block, transposed in a random half of the n,
    with a random sign per block and channel."""
    block = pseudo_gaussian(s, device)
    transposed = torch.randint(0, 2, (n, 1, 1), device=device).bool()
    return torch.where(transposed, block.t(), block)[:, None] * _signs((n, c, 1, 1), device)


def _unit(delta: torch.Tensor) -> torch.Tensor:
    """Each image's δ at L2 norm 1 (the 1e-12 keeps an all-zero δ at zero)."""
    return delta / (delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1) + 1e-12)


def l2_start(x: torch.Tensor, eps: float) -> torch.Tensor:
    """The starting δ of the L2 attack, before clipping to the image: blocks of side
    s = h // 5 tiled from ((h - 5 s) // 2, same) on, h // s rows and w // s columns of them
    (5 x 5 for the usual sizes; a block past the edge is cut), scaled to L2 norm ``eps``.
    Images under 5 pixels, where AutoAttack's code fails, get 1-pixel blocks."""
    n, c, h, w = x.shape
    s = max(h // 5, 1)
    lo = max((h - 5 * s) // 2, 0)
    gh, gw = h // s, w // s
    grid = random_blocks(n * gh * gw, c, s, x.device).view(n, gh, gw, c, s, s)
    grid = grid.permute(0, 3, 1, 4, 2, 5).reshape(n, c, gh * s, gw * s)  # cell (i, j) at rows i*s.., cols j*s..
    delta = x.new_zeros(n, c, max(h, lo + gh * s), max(w, lo + gw * s))
    delta[:, :, lo:lo + gh * s, lo:lo + gw * s] = grid
    return eps * _unit(delta[:, :, :h, :w])


def l2_window_side(p: float, h: int, w: int) -> int:
    """AutoAttack's L2 window: round(sqrt(p h w)), at least 3, made odd (so the block has
    a centre pixel), then capped by the image."""
    s = max(int(round(math.sqrt(p * h * w))), 3)
    return min(s + 1 - s % 2, h, w)


# ----------------------------------------------------------------------------- windows
def _window_index(n: int, s: int, h: int, w: int, device) -> torch.Tensor:
    """Flat pixel indices (n, s*s) of one random s x s window per image, its corner in
    [0, side - s) as AutoAttack draws it (the last row and column only as part of a window
    that starts further up or left)."""
    top = torch.randint(0, max(h - s, 1), (n, 1, 1), device=device)
    left = torch.randint(0, max(w - s, 1), (n, 1, 1), device=device)
    ar = torch.arange(s, device=device)
    return ((top + ar.view(1, s, 1)) * w + left + ar.view(1, 1, s)).view(n, s * s)


def _take(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(n, c, h, w) at each image's window -> (n, c, s*s)."""
    return t.flatten(2).gather(2, index[:, None].expand(-1, t.shape[1], -1))


def _put(t: torch.Tensor, index: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """A copy of ``t`` with each image's window set to ``values`` (n, c, s*s)."""
    return t.flatten(2).scatter(2, index[:, None].expand(-1, t.shape[1], -1), values).view_as(t)


# ----------------------------------------------------------------------------- the attack
@register_attack("square")
class Square(Attack):
    """Square Attack: black-box random search with square updates on the margin loss (Andriushchenko et al. 2020),
    L∞ or L2."""

    name = "square"
    uses_gradients = False  # its margins are its decisions: strict fp32 whatever the precision

    def __init__(self, eps: float, queries: int = 5000, p_init: float = 0.8, norm: str = "linf",
                 compact_every: int = 50, steps: int | None = None, rescale: bool = False):
        norm = {"Linf": "linf", "inf": "linf", "L2": "l2"}.get(norm, norm)
        if norm not in ("linf", "l2"):
            raise ValueError(f"unknown norm {norm!r}; use linf or l2")
        if steps is not None and queries != 5000:
            raise ConfigError(f"Square: steps is an alias of queries: give one of them, not steps={steps!r} and "
                              f"queries={queries!r}", field="queries")
        queries = steps if steps is not None else queries  # `square1000` = 1,000 queries
        eps = check_settings("Square", eps, norm, {"steps" if steps is not None else "queries": queries,
                                                   "compact_every": compact_every}, {"rescale": rescale},
                             p_init=(p_init, 0, 1))
        self.eps, self.p_init, self.rescale, self.norm, self.queries = eps, p_init, rescale, norm, queries
        self.compact_every = compact_every

    @torch.no_grad()
    def perturb(self, model, x, y):
        start, query = (self._linf_start, self._linf_query) if self.norm == "linf" else (self._l2_start, self._l2_query)
        x_best = start(x)
        margin = -margin_loss(model(x_best), y)  # > 0 while correctly classified
        idx = torch.arange(len(x), device=x.device)
        for it in range(self.queries):
            if it % self.compact_every == 0:
                idx = (margin > 0).nonzero().squeeze(1)
                if len(idx) == 0:
                    break
            xa, ya, xb, ma = x[idx], y[idx], x_best[idx], margin[idx]
            x_new = query(xa, xb, p_schedule(self.p_init, it, self.queries, self.rescale))
            m_new = -margin_loss(model(x_new), ya)
            better = m_new < ma  # AutoAttack's rule for the margin loss: a lower margin (a fooled point has one)
            x_best[idx] = torch.where(better.view(-1, 1, 1, 1), x_new, xb)
            margin[idx] = torch.where(better, m_new, ma)
        return x_best

    # L∞: stripes, then one window per query set to ±ε per channel
    def _linf_start(self, x):
        n, c, h, w = x.shape
        return (x + self.eps * _signs((n, c, 1, w), x.device)).clamp(0, 1)

    def _linf_query(self, xa, xb, p):
        m, c, h, w = xa.shape
        dev = xa.device
        s = min(max(int(round(math.sqrt(p * h * w))), 1), h, w)
        vh = torch.randint(0, max(h - s, 1), (m, 1, 1, 1), device=dev)
        vw = torch.randint(0, max(w - s, 1), (m, 1, 1, 1), device=dev)
        rows = torch.arange(h, device=dev).view(1, 1, h, 1)
        cols = torch.arange(w, device=dev).view(1, 1, 1, w)
        window = (rows >= vh) & (rows < vh + s) & (cols >= vw) & (cols < vw + s)
        return torch.where(window, xa + self.eps * _signs((m, c, 1, 1), dev), xb).clamp(0, 1)

    # L2: the grid of blocks, then mass moved from a second window into the first
    def _l2_start(self, x):
        return (x + l2_start(x, self.eps)).clamp(0, 1)

    def _l2_query(self, xa, xb, p):
        n, c, h, w = xa.shape
        s, dev = l2_window_side(p, h, w), xa.device
        delta = xb - xa  # within the ball (clipping only shrinks it)
        first, second = _window_index(n, s, h, w, dev), _window_index(n, s, h, w, dev)
        old = _take(delta, first)
        both = torch.zeros(n, h * w, dtype=torch.bool, device=dev).scatter(1, first, True).scatter(1, second, True)
        held = delta.flatten(2).masked_fill(~both[:, None], 0).square().sum(2, keepdim=True)  # (n, c, 1)
        # what the ball has left, shared equally by the channels (AutoAttack's rule)
        left = (self.eps ** 2 - delta.flatten(1).square().sum(1)).clamp_min(0).view(n, 1, 1) / c
        new = random_blocks(n, c, s, dev).flatten(2) + old / (old.norm(dim=2, keepdim=True) + 1e-12)
        new = new / (new.norm(dim=2, keepdim=True) + 1e-12) * (left + held).sqrt()
        delta = _put(_put(delta, second, torch.zeros_like(new)), first, new)  # the first wins where they overlap
        return (xa + self.eps * _unit(delta)).clamp(0, 1)

    def __repr__(self) -> str:
        resc = ", rescale=True" if self.rescale else ""
        l2 = ", norm='l2'" if self.norm == "l2" else ""
        return f"Square(eps={self.eps:.6g}{l2}, queries={self.queries}, p_init={self.p_init}{resc})"
