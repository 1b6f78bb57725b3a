"""Square Attack's L2 form: the ball and the box, AutoAttack's blocks and starting point,
and a search that beats random noise. Its agreement with AutoAttack's L2 Square on a
trained net is in test_autoattack_agreement.py."""
import pytest
import torch
from torch import nn

from eae.attacks import Square, build_attack
from eae.attacks.square import l2_start, l2_window_side, pseudo_gaussian, random_blocks, rectangles


# thousands of small forward passes: one thread is several times faster than two on 2 cores
pytestmark = pytest.mark.usefixtures("one_thread")


def _reference(eps=0.5, model=None, queries=0):
    from pyautoattack.square import SquareAttack

    return SquareAttack(model, norm="L2", eps=eps, n_queries=queries, device="cpu")


def _orientations(block):
    return [block, block.t(), -block, -block.t()]


def test_suite_builds_the_l2_attack():
    a = build_attack("square1000", 0.5, norm="l2")
    assert isinstance(a, Square) and a.norm == "l2" and a.queries == 1000 and a.eps == 0.5
    assert "norm='l2'" in repr(a) and "norm" not in repr(build_attack("square", 8 / 255))
    with pytest.raises(ValueError, match="unknown norm 'l1'"):
        Square(0.5, norm="l1")


def test_l2_points_stay_in_the_ball_and_the_box(tiny16):
    """Every returned point is within eps in L2 and in [0, 1], at the box's corners too;
    away from the box's faces no clipping bites, so each point spends all of eps."""
    model, x, y = tiny16
    x, y = x[:48].clone(), y[:48]
    x[:4], x[4:8] = 0.0, 1.0
    x[8:] = 0.3 + 0.4 * x[8:]
    torch.manual_seed(0)
    x_adv = build_attack("square60", 0.5, norm="l2")(model, x, y)
    norms = (x_adv - x).flatten(1).norm(dim=1)
    assert x_adv.shape == x.shape and x_adv.dtype == torch.float32
    assert norms.max() <= 0.5 + 1e-5 and x_adv.min() >= 0 and x_adv.max() <= 1
    torch.testing.assert_close(norms[8:], torch.full_like(norms[8:], 0.5), rtol=0, atol=1e-5)


def test_l2_runs_the_reference_number_of_queries():
    """The starting grid, then one query per iteration (41 forward passes for 40 queries),
    on a model nothing fools."""
    calls = []

    class Stubborn(nn.Module):
        def forward(self, x):
            calls.append(len(x))
            return torch.tensor([[1e3, 0.0]]).repeat(len(x), 1)

    x = torch.rand(3, 3, 16, 16)
    x_adv = Square(0.5, queries=40, norm="l2")(Stubborn(), x, torch.zeros(3, dtype=torch.long))
    assert calls == [3] * 41 and (x_adv - x).flatten(1).norm(dim=1).max() <= 0.5 + 1e-5


def test_window_side_follows_the_reference_rule():
    """round(sqrt(p h w)), at least 3, odd, capped by the image."""
    assert l2_window_side(0.8, 16, 16) == 15  # 14.3 -> 14 -> 15
    assert l2_window_side(0.8 / 16, 16, 16) == 5  # 3.6 -> 4 -> 5
    assert l2_window_side(0.8 / 128, 16, 16) == 3  # 1.3 -> 1 -> at least 3
    assert l2_window_side(0.8 / 2, 32, 32) == 21  # 20.2 -> 20 -> 21
    assert l2_window_side(0.8, 4, 4) == 4  # 3.6 -> 4 -> 5 -> capped


def test_pseudo_gaussian_block_is_autoattacks():
    """Unit L2 norm, and AutoAttack's `eta_rectangles` and `eta` (the meta pseudo-Gaussian
    perturbation) up to its random transpose, for every size a window takes."""
    pytest.importorskip("pyautoattack")
    ref = _reference()
    for rows in range(0, 10):
        for cols in range(1, 10):
            torch.testing.assert_close(rectangles(rows, cols), ref.eta_rectangles(rows, cols), rtol=0, atol=1e-6)
    for s in range(1, 33):
        ours = pseudo_gaussian(s)
        assert abs(float(ours.norm()) - 1) < 1e-6
        theirs = ref.eta(s)
        assert min(float((theirs - o).abs().max()) for o in (ours, ours.t())) < 1e-6, s


def test_random_blocks_are_signed_and_transposed_blocks():
    """Each (image, channel) block is +-P or +-P^T, and both orientations and signs occur."""
    torch.manual_seed(0)
    block = pseudo_gaussian(7)
    blocks = random_blocks(64, 3, 7)
    match = torch.stack([(blocks - o).abs().amax((-2, -1)) < 1e-7 for o in _orientations(block)])
    assert match.any(0).all()
    assert match.flatten(1).any(1).all()  # each of the four occurs
    transposed = match[1] | match[3]
    assert (transposed == transposed[:, :1]).all()  # one orientation per image, across its channels


@pytest.mark.parametrize("side", [16, 28, 32])
def test_l2_start_is_autoattacks(side):
    """The starting perturbation has L2 norm eps before clipping and AutoAttack's structure:
    the same grid of blocks (side h // 5, from (h - 5 (h // 5)) // 2 on), each +-P or +-P^T
    at an equal share of eps, zero elsewhere."""
    pytest.importorskip("pyautoattack")
    eps, n, c = 0.5, 8, 3
    x = torch.full((n, c, side, side), 0.5)  # nothing clipped: the reference's start is its delta
    model = nn.Sequential(nn.Flatten(), nn.Linear(c * side * side, 10))
    ref = _reference(eps, model)
    ref.init_hyperparam(x)
    with torch.no_grad():
        _, x_ref = ref.attack_single_run(x, torch.zeros(n, dtype=torch.long))  # 0 queries: its start
    ours, theirs = l2_start(x, eps), x_ref - x
    assert ((x + ours).min() > 0) and ((x + ours).max() < 1)
    s, lo = side // 5, (side - 5 * (side // 5)) // 2
    block = pseudo_gaussian(s)
    for delta in (ours, theirs):
        torch.testing.assert_close(delta.flatten(1).norm(dim=1), torch.full((n,), eps), rtol=0, atol=1e-5)
        inside = torch.zeros(side, side, dtype=torch.bool)
        inside[lo:lo + 5 * s, lo:lo + 5 * s] = True
        assert (delta[..., ~inside] == 0).all()
        cells = delta[..., lo:lo + 5 * s, lo:lo + 5 * s].reshape(n, c, 5, s, 5, s).transpose(3, 4)
        share = eps / (c * 25) ** 0.5  # every block carries the same L2 mass
        dist = torch.stack([(cells - share * o).abs().amax((-2, -1)) for o in _orientations(block)]).amin(0)
        assert dist.max() < 1e-6
    torch.testing.assert_close(ours.abs().flatten().sort().values, theirs.abs().flatten().sort().values,
                               rtol=0, atol=1e-6)


def test_l2_square_beats_random_noise_of_the_same_norm(tiny16):
    """A random search that keeps what lowers the margin fools far more points than the
    best of as many random directions of the same L2 norm (23 of 31 left against 8)."""
    model, x, y = tiny16
    eps, queries = 1.0, 100
    torch.manual_seed(0)
    with torch.no_grad():
        clean = model(x).argmax(1) == y
        noise = clean.clone()
        for _ in range(queries):
            d = torch.randn_like(x)
            noise &= model((x + eps * d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)).clamp(0, 1)).argmax(1) == y
        x_adv = build_attack(f"square{queries}", eps, norm="l2")(model, x, y)
        square = model(x_adv).argmax(1) == y
    counts = int(clean.sum()), int(noise.sum()), int(square.sum())
    assert 0 < counts[2] and counts[2] + 8 <= counts[1], counts


def test_l2_queries_take_autoattacks_steps(monkeypatch):
    """With the same windows, block orientations and signs fed to both, three accepted
    queries of ours and of AutoAttack's L2 Square send the model the same points: the
    budget left in the ball, the second window emptied, the first window's old content
    kept, the renormalisation to eps and the clipping all as the reference computes them.
    (The block is ours on both sides; test_pseudo_gaussian_block_is_autoattacks ties it
    to the reference's.)"""
    pytest.importorskip("pyautoattack")
    import eae.attacks.square as sq

    class Recorder(nn.Module):
        """Its margin drops at every call, so every query is accepted."""

        def __init__(self):
            super().__init__()
            self.inputs = []

        def forward(self, x):
            self.inputs.append(x.clone())
            return torch.tensor([[1e3 - len(self.inputs), 0.0]]).repeat(len(x), 1)

    eps, c, side, p_init = 3.0, 3, 16, 0.05  # windows of side 5, corners anywhere in [0, 11)
    corners = [(2, 7), (5, 9), (0, 0), (10, 10), (6, 3), (6, 5)]  # (first, second) per query
    signs = [torch.tensor([1.0, -1.0, 1.0]), torch.tensor([-1.0, -1.0, 1.0]), torch.tensor([1.0, 1.0, -1.0])]
    transposed = [False, True, False]
    torch.manual_seed(0)
    x = torch.rand(1, c, side, side)
    y = torch.zeros(1, dtype=torch.long)

    ref_model = Recorder()
    ref = _reference(eps, ref_model, queries=3)
    ref.p_init, ref.rescale_schedule = p_init, False
    ref.init_hyperparam(x)
    ints = iter([torch.tensor([v]) for pair in corners for v in pair])
    choices = iter([torch.ones(1, c, 1, 1)] * 25 + [s.view(1, c, 1, 1) for s in signs])
    ref.random_int = lambda low=0, high=1, shape=(1,): next(ints)
    ref.random_choice = lambda shape: next(choices)
    query_etas = iter([pseudo_gaussian(5).t() if t else pseudo_gaussian(5) for t in transposed])
    ref.eta = lambda s: pseudo_gaussian(s) if s == 3 else next(query_etas)  # side 3: the start's grid
    with torch.no_grad():
        ref.attack_single_run(x, y)

    ours = Recorder()
    windows = iter(corners)

    def window_index(n, s, h, w, device):
        top, left = next(windows)
        ar = torch.arange(s)
        return ((top + ar.view(s, 1)) * w + left + ar.view(1, s)).view(1, s * s)

    queries = iter(zip(signs, transposed))

    def blocks(n, c, s, device=None):
        if n == 25:  # the start's 5 x 5 grid
            return pseudo_gaussian(s)[None, None].repeat(n, c, 1, 1)
        sign, t = next(queries)
        block = pseudo_gaussian(s).t() if t else pseudo_gaussian(s)
        return block[None, None] * sign.view(1, c, 1, 1)

    monkeypatch.setattr(sq, "_window_index", window_index)
    monkeypatch.setattr(sq, "random_blocks", blocks)
    Square(eps, queries=3, p_init=p_init, norm="l2")(ours, x, y)

    assert len(ours.inputs) == len(ref_model.inputs) == 4
    for k, (a, b) in enumerate(zip(ours.inputs, ref_model.inputs)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=f"forward pass {k}")
    assert ((ours.inputs[-1] - x).flatten(1).norm(dim=1) < eps - 0.01).all()  # the box bit, so the ball had room left
