"""The evaluation suites, AutoAttack components and gradient-masking alarms."""
import json

import pytest
import torch
from torch import nn

import eae
from eae.attacks import dlr_loss, dlr_targeted_loss
from eae.attacks.fab import project_l2_hyperplane, project_linf_hyperplane
from eae.attacks.square import Square, p_schedule
from eae.data import make_synthetic


@pytest.fixture(scope="module")
def synth_test():
    x, y = make_synthetic(500, size=16, seed=1)
    return torch.from_numpy(x).float() / 255, torch.from_numpy(y)


def test_apgd_beats_pgd_at_equal_steps(trained_small, synth_test):
    model, _, _ = trained_small
    x, y = synth_test
    acc = eae.evaluate(model, x, y, ["clean", "pgd10", "apgd-ce10", "apgd-t10"], 2 / 255,
                       diagnostics="off").accuracy
    assert acc["clean"] - acc["pgd10"] > 0.2  # the budget matters for this model
    assert acc["apgd-ce10"] <= acc["pgd10"]
    assert acc["apgd-t10"] <= acc["apgd-ce10"] + 0.01


def test_agrees_with_torchattacks(trained_small, synth_test):
    """APGD-CE and APGD-T agree within 1 point with an independent implementation."""
    torchattacks = pytest.importorskip("torchattacks")
    model, _, _ = trained_small
    x, y = synth_test
    eps, steps = 2 / 255, 10
    ours = eae.evaluate(model, x, y, ["clean", f"apgd-ce{steps}", f"apgd-t{steps}"], eps, diagnostics="off").accuracy
    model.eval()
    theirs = {}
    for name, atk in (("ce", torchattacks.APGD(model, eps=eps, steps=steps, n_restarts=1, seed=0, loss="ce")),
                      ("t", torchattacks.APGDT(model, eps=eps, steps=steps, n_restarts=1, seed=0, n_classes=10))):
        x_adv = atk(x, y)
        with torch.no_grad():
            theirs[name] = (model(x_adv).argmax(1) == y).float().mean().item()
    assert abs(ours[f"apgd-ce{steps}"] - theirs["ce"]) <= 0.01
    assert abs(ours[f"apgd-t{steps}"] - theirs["t"]) <= 0.01


def test_fab_t_agrees_with_torchattacks(trained_small, synth_test):
    """Our FAB-T (own implementation) against torchattacks' multi-targeted FAB."""
    torchattacks = pytest.importorskip("torchattacks")
    model, _, _ = trained_small
    x, y = synth_test[0][:300], synth_test[1][:300]
    eps, steps = 2 / 255, 10
    ours = eae.evaluate(model, x, y, ["clean", f"fab-t{steps}"], eps, diagnostics="off").accuracy[f"fab-t{steps}"]
    model.eval()
    atk = torchattacks.FAB(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, multi_targeted=True,
                           n_classes=10, seed=0)
    x_adv = atk(x, y)
    with torch.no_grad():
        theirs = (model(x_adv).argmax(1) == y).float().mean().item()
    assert abs(ours - theirs) <= 0.01


class Scaled(nn.Module):
    def __init__(self, model, scale):
        super().__init__()
        self.model, self.scale = model, scale

    def forward(self, x):
        return self.model(x) * self.scale


class Quantized(nn.Module):
    """Input quantisation: rounding has a zero gradient almost everywhere."""

    def __init__(self, model, levels=8):
        super().__init__()
        self.model, self.levels = model, levels

    def forward(self, x):
        return self.model(torch.round(x * self.levels) / self.levels)


@pytest.mark.parametrize("kind, expected", [("plain", "ok"), ("scaled", "masked"), ("quantized", "masked")])
def test_masking_detector(trained_small, synth_test, kind, expected):
    model, _, _ = trained_small
    x, y = synth_test
    net = {"plain": model, "scaled": Scaled(model, 1e4), "quantized": Quantized(model)}[kind]
    report = eae.evaluate(net, x[:200], y[:200], suite="quick", eps=2 / 255, diagnostics="full", diag_n=200)
    assert report.verdict == expected, report.evidence
    assert report.evidence and all(e.startswith("[") for e in report.evidence)
    if kind == "plain":
        assert report.diagnostics["unbounded_eps1"] < 0.01
        sweep = list(report.diagnostics["eps_sweep_cw20"].values())
        assert sweep[0] > sweep[-1]


def test_cheap_diagnostics_catch_saturated_logits(trained_small, synth_test):
    model, _, _ = trained_small
    x, y = synth_test
    report = eae.evaluate(Scaled(model, 1e4), x[:100], y[:100], ["clean", "pgd10", "cw10"], 2 / 255,
                          diagnostics="cheap")
    assert report.verdict == "masked"
    assert report.diagnostics["logits"]["zero_grad_frac"] > 0.5
    assert "eps_sweep_cw20" not in report.diagnostics  # cheap: no extra attacks


def test_aa_cascade_and_report(trained_small, synth_test):
    model, _, _ = trained_small
    x, y = synth_test
    r = eae.evaluate(model, x[:60], y[:60], suite="aa", eps=4 / 255, diagnostics="cheap", test_size=500)
    assert list(r.per_attack) == ["apgd-ce", "apgd-t", "fab-t", "square"]
    accs = [v["accuracy"] for v in r.per_attack.values()]
    assert all(v["mode"] == "cascade" for v in r.per_attack.values())
    assert accs == sorted(accs, reverse=True)  # "robust accuracy after" can only fall
    assert r.robust_accuracy == pytest.approx(accs[-1])
    assert r.per_attack["apgd-t"]["n_attacked"] <= r.per_attack["apgd-ce"]["n_attacked"]
    d = json.loads(json.dumps(r.to_dict()))
    assert d["subset"] is True and d["verdict"] in ("ok", "suspicious", "masked")
    assert "square_extra" in d["diagnostics"]
    md = r.to_markdown()
    assert "SUBSET" in md and "worst case" in md and "AutoAttack" in md


def test_aa_fast_is_labelled(trained_small, synth_test):
    model, _, _ = trained_small
    x, y = synth_test
    r = eae.evaluate(model, x[:20], y[:20], suite="aa-fast", eps=2 / 255, diagnostics="off")
    assert list(r.per_attack) == ["apgd-ce", "apgd-t"] and "NOT full AutoAttack" in r.label


def test_suite_or_attacks_not_both(trained_small, synth_test):
    model, _, _ = trained_small
    x, y = synth_test
    with pytest.raises(ValueError):
        eae.evaluate(model, x[:4], y[:4], ["pgd5"], suite="quick")
    with pytest.raises(ValueError, match="suite"):
        eae.evaluate(model, x[:4], y[:4], suite="autoattack")


def test_linf_projection_onto_hyperplane():
    g = torch.Generator().manual_seed(0)
    p = torch.rand(64, 50, generator=g)
    w = torch.randn(64, 50, generator=g)
    c = torch.randn(64, generator=g) * 0.5
    d = project_linf_hyperplane(p, w, c)
    assert ((p + d) >= -1e-6).all() and ((p + d) <= 1 + 1e-6).all()
    torch.testing.assert_close((w * d).sum(1), c, rtol=1e-4, atol=1e-4)
    # minimal: shrinking the L-inf radius by 1% can no longer reach the hyperplane
    t = d.abs().amax(1, keepdim=True) * 0.99
    room = torch.where(torch.sign(c)[:, None] * torch.sign(w) > 0, 1 - p, p)
    reach = (w.abs() * torch.minimum(t, room)).sum(1)
    assert (reach < c.abs()).all()


def test_linf_projection_infeasible_goes_to_the_corner():
    p = torch.full((1, 4), 0.5)
    w = torch.ones(1, 4)
    d = project_linf_hyperplane(p, w, torch.tensor([10.0]))  # needs w·d = 10, at most 2 reachable
    torch.testing.assert_close(d, torch.full((1, 4), 0.5))


def _l2_projection_case():
    """Rows with coordinates on the box faces, zero weights, c = 0, and c out of reach."""
    g = torch.Generator().manual_seed(0)
    p = torch.rand(256, 50, generator=g, dtype=torch.float64)
    p[:32, :10], p[32:64, :10] = 0.0, 1.0
    w = torch.randn(256, 50, generator=g, dtype=torch.float64)
    w[64:96, :20] = 0.0
    c = torch.randn(256, generator=g, dtype=torch.float64) * torch.logspace(-3, 1.3, 256, dtype=torch.float64)
    c[::50] = 0.0
    return p, w, c


def test_l2_projection_onto_hyperplane():
    """Exact: it matches a bisection on the KKT form δ = clip(λw, -p, 1 - p), whose root
    is the minimal-L2 solution (the problem is convex)."""
    p, w, c = _l2_projection_case()
    d = project_l2_hyperplane(p, w, c)
    assert ((p + d) >= 0).all() and ((p + d) <= 1).all()
    lo, hi = torch.full_like(c, -1e6), torch.full_like(c, 1e6)
    for _ in range(200):  # w·clip(λw) is nondecreasing in λ
        mid = (lo + hi) / 2
        over = (w * torch.clamp(mid[:, None] * w, -p, 1 - p)).sum(1) > c
        lo, hi = torch.where(over, lo, mid), torch.where(over, mid, hi)
    kkt = torch.clamp(lo[:, None] * w, -p, 1 - p)
    feasible = ((w * kkt).sum(1) - c).abs() < 1e-9
    assert 0.8 * len(c) < int(feasible.sum()) < len(c)  # the case has both kinds of rows
    torch.testing.assert_close((w * d).sum(1)[feasible], c[feasible], rtol=0, atol=1e-9)
    torch.testing.assert_close(d[feasible], kkt[feasible], rtol=0, atol=1e-9)
    assert (d[c == 0] == 0).all()
    # out of reach: the box corner in the direction of c·w (the bisection ends there too)
    torch.testing.assert_close(d[~feasible], kkt[~feasible], rtol=0, atol=1e-9)


def test_l2_projection_is_autoattacks():
    fab_projections = pytest.importorskip("pyautoattack.fab_projections")
    p, w, c = _l2_projection_case()
    ref = fab_projections.projection_l2(p, w, (w * p).sum(1) + c)  # its hyperplane: w·z = b
    torch.testing.assert_close(project_l2_hyperplane(p, w, c), ref, rtol=0, atol=1e-9)
    p, w, c = p.float(), w.float(), c.float()
    ref = fab_projections.projection_l2(p, w, (w * p).sum(1) + c)
    torch.testing.assert_close(project_l2_hyperplane(p, w, c), ref, rtol=0, atol=1e-5)


def test_l2_projection_infeasible_goes_to_the_corner():
    p = torch.full((1, 4), 0.5)
    w = torch.tensor([[1.0, 2.0, -1.0, 0.0]])
    d = project_l2_hyperplane(p, w, torch.tensor([10.0]))  # needs w·d = 10, at most 2 reachable
    torch.testing.assert_close(d, torch.tensor([[0.5, 0.5, -0.5, 0.0]]))


def test_dlr_is_shift_and_scale_invariant():
    z = torch.randn(16, 10)
    y = torch.randint(0, 10, (16,))
    t = (y + 1) % 10
    torch.testing.assert_close(dlr_loss(z * 7 + 3, y), dlr_loss(z, y), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(dlr_targeted_loss(z * 7 + 3, y, t), dlr_targeted_loss(z, y, t), rtol=1e-4, atol=1e-5)


def test_square_schedule_is_autoattacks():
    """AutoAttack's standard version reads the breakpoints in queries as they are
    (resc_schedule=False): p_init up to query 10, halved at 11, 51, 201, 501, 1001, 2001
    and 4001, so 0.8 / 128 is the smallest p in 5,000 queries."""
    expected = {0: 1, 10: 1, 11: 2, 50: 2, 51: 4, 200: 4, 201: 8, 500: 8, 501: 16, 1000: 16, 1001: 32,
                2000: 32, 2001: 64, 4000: 64, 4001: 128, 4999: 128}
    for it, div in expected.items():
        assert p_schedule(0.8, it, 5000) == 0.8 / div, it
    assert p_schedule(0.8, 8001, 10000) == 0.8 / 512
    values = [p_schedule(0.8, i, 5000) for i in range(5000)]
    assert values == sorted(values, reverse=True) and min(values) == 0.8 / 128
    # the labelled option: the schedule stretched over the budget as if it were 10,000 queries
    assert p_schedule(0.8, 10, 5000, rescale=True) == 0.8 / 2
    assert p_schedule(0.8, 4999, 5000, rescale=True) == 0.8 / 512
    assert Square(8 / 255).rescale is False and Square(8 / 255).queries == 5000


def test_square_runs_the_reference_number_of_queries():
    """The stripes, then one query per iteration for `queries` iterations (5,001 forward
    passes for AutoAttack's 5,000), on a model nothing fools."""
    calls = []

    class Stubborn(nn.Module):
        def forward(self, x):
            calls.append(len(x))
            return torch.tensor([[1e3, 0.0]]).repeat(len(x), 1)

    x = torch.rand(3, 3, 8, 8)
    x_adv = Square(8 / 255, queries=40)(Stubborn(), x, torch.zeros(3, dtype=torch.long))
    assert len(calls) == 41 and (x_adv - x).abs().max() <= 8 / 255 + 1e-6
