import pytest
import torch
from torch import nn

from eae.attacks import ATTACKS, CW, PGD, build_attack
from eae.errors import ConfigError
from eae.evaluation import evaluate

EPS = 8 / 255


def _attack(name):
    return ATTACKS.get(name)(EPS) if name == "fgsm" else ATTACKS.get(name)(EPS, steps=3)


@pytest.mark.parametrize("name", ATTACKS.names())
def test_stays_in_eps_ball_and_image_range(name, trained_small):
    model, x, y = trained_small
    x = x[:64].clone()
    x[:4] = 0.0  # corners of the image box
    x[4:8] = 1.0
    x_adv = _attack(name)(model, x, y[:64])
    assert x_adv.shape == x.shape and x_adv.dtype == torch.float32
    assert (x_adv - x).abs().max() <= EPS + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1


@pytest.mark.parametrize("name", ATTACKS.names())
def test_l2_stays_in_eps_ball_and_image_range(name, trained_small):
    """Every attack has its L2 form (RobustBench's second threat model, eps 0.5)."""
    model, x, y = trained_small
    x = x[:32].clone()
    x[:4] = 0.0
    x[4:8] = 1.0
    attack = ATTACKS.get(name)(0.5, norm="l2") if name == "fgsm" else ATTACKS.get(name)(0.5, steps=3, norm="l2")
    x_adv = attack(model, x, y[:32])
    assert (x_adv - x).flatten(1).norm(dim=1).max() <= 0.5 + 1e-5
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv != x).any()


@pytest.mark.parametrize("name", ATTACKS.names())
def test_restores_modes_and_requires_grad(name, trained_small):
    model, x, y = trained_small
    model.zero_grad(set_to_none=True)  # the shared model as another test may have left it
    model.train()
    model.backbone[1].eval()  # a module in a different mode from its parent
    frozen = model.backbone[0].weight
    frozen.requires_grad_(False)
    modes = {n: m.training for n, m in model.named_modules()}
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    bn = model.backbone[-4]
    stats = bn.running_mean.clone()
    _attack(name)(model, x[:16], y[:16])
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert {n: p.requires_grad for n, p in model.named_parameters()} == grads
    assert all(p.grad is None for p in model.parameters())  # only the input gradient
    assert torch.equal(bn.running_mean, stats)  # eval mode inside: BN statistics untouched
    frozen.requires_grad_(True)
    model.eval()


def test_refuses_inference_mode(trained_small):
    model, x, y = trained_small
    with torch.inference_mode(), pytest.raises(ConfigError, match="inference_mode"):
        PGD(EPS, steps=1)(model, x[:4], y[:4])


def test_attacks_lower_accuracy_of_a_nonrobust_model(trained_small):
    model, x, y = trained_small
    res = evaluate(model, x, y, ["clean", "fgsm", "pgd10", "cw10"], EPS, batch_size=128, diagnostics="off")
    acc = res.accuracy
    assert acc["clean"] > 0.6
    assert acc["pgd10"] < acc["clean"] - 0.3
    assert acc["pgd10"] <= acc["fgsm"] + 0.02  # more steps are at least as strong
    assert res.robust_accuracy <= min(acc.values())


class Scaled(nn.Module):
    """Logits multiplied by a huge factor: softmax saturates and cross-entropy
    gradients vanish in fp32, the signature of gradient masking."""

    def __init__(self, model, scale):
        super().__init__()
        self.model, self.scale = model, scale

    def forward(self, x):
        return self.model(x) * self.scale


def test_margin_loss_sees_through_saturated_softmax(trained_small):
    model, x, y = trained_small
    masked = Scaled(model, 1e4)
    acc = evaluate(masked, x, y, ["clean", "pgd10", "cw10"], EPS, batch_size=128, diagnostics="off").accuracy
    plain = evaluate(model, x, y, ["clean", "cw10"], EPS, batch_size=128, diagnostics="off").accuracy
    assert acc["pgd10"] > acc["cw10"] + 0.2  # CE-PGD is fooled ...
    assert acc["cw10"] == pytest.approx(plain["cw10"], abs=0.05)  # ... the margin loss is not


class Fixed:
    """A fake attack that fools a fixed set of examples (by index) by returning a
    marker image the model misclassifies."""

    def __init__(self, fooled):
        self.fooled = fooled

    def __call__(self, model, x, y):
        out = x.clone()
        out[self.fooled[: len(x)]] += EPS  # a legal point (in the eps-ball and the box) the Oracle calls wrong
        return out


class Oracle(nn.Module):
    def forward(self, x):  # right on the grey images of the tests (0.5), wrong once a pixel moved up
        wrong = x.flatten(1)[:, 0] > 0.5 + EPS / 2
        logits = torch.zeros(len(x), 2)
        logits[:, 0] = torch.where(wrong, -1.0, 1.0)
        return logits


def test_worst_case_is_per_example():
    x = torch.full((4, 1, 2, 2), 0.5)
    y = torch.zeros(4, dtype=torch.long)
    a = Fixed(torch.tensor([True, True, False, False]))
    b = Fixed(torch.tensor([False, False, True, False]))
    res = evaluate(Oracle(), x, y, {"clean": None, "a": a, "b": b}, EPS, batch_size=4, device="cpu",
                   diagnostics="off")
    assert res.accuracy == {"clean": 1.0, "a": 0.5, "b": 0.75}
    assert res.robust_accuracy == 0.25  # not min(0.5, 0.75)


def test_specs():
    assert build_attack("clean", EPS) is None
    pgd = build_attack("pgd50r10", EPS)
    assert isinstance(pgd, PGD) and pgd.steps == 50 and pgd.restarts == 10 and pgd.loss == "ce"
    cw = build_attack("cw20", EPS)
    assert isinstance(cw, CW) and cw.loss == "cw" and cw.steps == 20
    with pytest.raises(ValueError):
        build_attack("fgsm5", EPS)
    with pytest.raises(ValueError):
        build_attack("deepfool", EPS)


def test_restarts_are_per_example_worst_case(trained_small):
    model, x, y = trained_small
    one = evaluate(model, x, y, ["pgd2"], EPS / 4, batch_size=256, seed=0, diagnostics="off").accuracy["pgd2"]
    many = evaluate(model, x, y, ["pgd2r4"], EPS / 4, batch_size=256, seed=0, diagnostics="off").accuracy["pgd2r4"]
    assert many <= one


def test_evaluation_is_seeded_and_leaves_rng_alone(trained_small):
    model, x, y = trained_small
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    r1 = evaluate(model, x[:64], y[:64], ["pgd3"], EPS, seed=5, diagnostics="off")
    after = torch.rand(1)
    r2 = evaluate(model, x[:64], y[:64], ["pgd3"], EPS, seed=5, diagnostics="off")
    assert torch.equal(after, expected_next)
    assert torch.equal(r1.correct["pgd3"], r2.correct["pgd3"])


class NearTie(nn.Module):
    """Class 1 leads class 0 by about 0.2 at logits near 256: right in fp32, a tie that
    argmax gives to class 0 in bf16 (whose spacing there is 2). The input moves the
    logits by less than 0.01 in an 8/255 ball, so no attack can fool it in fp32."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 4 * 4, 4)
        with torch.no_grad():
            self.fc.weight.zero_()
            self.fc.weight[1, :8] = 0.01
            self.fc.bias.copy_(torch.tensor([256.0, 256.2, 0.0, -1.0]))

    def forward(self, x):
        return self.fc(x.flatten(1))


@pytest.fixture
def near_tie():
    model = NearTie()
    x = torch.rand(6, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * 0.5
    y = torch.ones(6, dtype=torch.long)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert (model(x).argmax(1) != y).all()  # bf16 says fooled ...
    assert (model(x).argmax(1) == y).all()  # ... fp32 says correct
    return model, x, y


def test_bf16_decisions_are_taken_in_fp32(near_tie):
    """Under --precision bf16 the gradients may come from bf16, but a point is dropped
    (from APGD-T's remaining targets, Square's active set, the cascade) only if its fp32
    logits say it is fooled."""
    from eae.attacks.apgd import apgd, targeted_runs
    from eae.attacks.base import attack_mode, ce_loss

    model, x, y = near_tie
    with attack_mode(model, precision="bf16"):
        _, fooled = apgd(model, x, y, ce_loss, EPS, steps=5)
        assert not fooled.any()
        sizes = []

        def run(xr, yr, target):  # records who is still attacked, target by target
            sizes.append(len(xr))
            return apgd(model, xr, yr, ce_loss, EPS, steps=3)

        targeted_runs(run, model, x, y, targets=3)
    assert sizes == [6, 6, 6]  # every target on all 6 (none fooled), one target per batch of 6
    report = evaluate(model, x, y, suite="aa", eps=EPS, precision="bf16", batch_size=6, device="cpu",
                      diagnostics="off")
    assert report.robust_accuracy == 1.0
    assert [r["n_attacked"] for r in report.per_attack.values()] == [6, 6, 6, 6]


def test_targets_run_in_chunks_within_the_batch_and_skip_fooled_points():
    """APGD-T / FAB-T: the replicated targets never exceed the batch the caller gave (memory
    on a GPU), several targets share a batch when few points stand, and a point fooled by
    one target is not attacked with the next (as AutoAttack does)."""
    from eae.attacks.apgd import targeted_runs

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 10)).eval()
    x, y = torch.rand(8, 3, 4, 4), torch.zeros(8, dtype=torch.long)
    calls = []

    def run(xr, yr, target):  # "fools" every 4th image of each batch it is given
        calls.append(len(xr))
        return xr + 0.01, (yr == 0) & (torch.arange(len(xr)) % 4 == 0)

    out = targeted_runs(run, model, x, y, targets=9)
    assert max(calls) <= 8 and calls[0] == 8 and sum(calls) < 8 * 9, calls
    assert torch.allclose(out, x + 0.01)


def test_square_counts_queries_on_fp32_margins(near_tie):
    """Square has no gradient to speed up: every query runs in fp32, so a point bf16
    would call fooled stays in its active set for every query."""
    model, x, y = near_tie
    calls = []
    model.register_forward_hook(lambda m, i, o: calls.append((len(i[0]), o.dtype)))
    attack = build_attack("square20", EPS)
    attack.precision = "bf16"
    attack(model, x, y)
    assert calls == [(6, torch.float32)] * 21
