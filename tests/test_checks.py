"""The checks on the model itself (after AutoAttack's checks) and what the verdict says."""
import pytest
import torch
from torch import nn

import eae
from eae.data import make_synthetic
from eae.evaluation import checks


@pytest.fixture(scope="module")
def synth():
    x, y = make_synthetic(120, size=16, seed=1)
    return torch.from_numpy(x).float() / 255, torch.from_numpy(y)


def _cheap(model, x, y, attacks=("clean",), **kw):
    return eae.evaluate(model, x, y, list(attacks), 2 / 255, diagnostics="cheap", batch_size=60, **kw)


class Wrap(nn.Module):
    def __init__(self, model, fn):
        super().__init__()
        self.model, self.fn = model, fn

    def forward(self, x):
        return self.fn(self.model, x)


class NoisyGrad(torch.autograd.Function):
    """Identity forward; a backward that returns noise: gradients non-zero and useless."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return torch.randn_like(g)


def _purify(model, x):
    """A dynamic defence: one gradient step on the input inside the forward pass."""
    with torch.enable_grad():
        z = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(model(z).logsumexp(1).sum(), z)
    return model((x + 1e-3 * g.sign()).clamp(0, 1))


MODELS = {
    "random": (lambda m, x: m((x + 0.05 * torch.randn_like(x)).clamp(0, 1)), "randomised model"),
    "softmax": (lambda m, x: m(x).softmax(1), "look like probabilities"),
    "batch": (None, "depend on the batch"),
    "dynamic": (_purify, "calls autograd"),
    "noisy_grad": (lambda m, x: m(NoisyGrad.apply(x)), "random-sign move"),
}


@pytest.mark.parametrize("kind", list(MODELS))
def test_each_check_flags_its_model(trained_small, synth, kind):
    model, _, _ = trained_small
    x, y = synth
    fn, words = MODELS[kind]
    net = (nn.Sequential(nn.BatchNorm2d(3, track_running_stats=False, affine=False), model) if kind == "batch"
           else Wrap(model, fn))
    report = _cheap(net, x, y)
    assert report.verdict in ("suspicious", "masked"), report.evidence
    flagged = [e for e in report.evidence if not e.startswith("[ok]")]
    assert any(words in e for e in flagged), report.evidence
    if kind == "random":
        assert report.diagnostics["model"]["randomised"]
        assert any("--eot 20" in e for e in flagged)
    if kind == "noisy_grad":
        assert report.diagnostics["model"]["zero_grad_frac"]["ce"] == 0  # non-zero, yet useless
        assert report.diagnostics["model"]["informative_grad_frac"] < 0.7


def test_a_plain_model_passes_every_check(trained_small, synth):
    model, _, _ = trained_small
    x, y = synth
    report = _cheap(model, x, y)
    assert report.verdict == "ok", report.evidence
    d = report.diagnostics["model"]
    assert not d["randomised"] and d["n_classes"] == 10 and d["informative_grad_frac"] > 0.9
    assert d["zero_grad_frac"] == {"ce": 0.0, "dlr": 0.0}


def test_quantised_input_has_zero_dlr_gradients(trained_small, synth):
    model, _, _ = trained_small
    x, y = synth
    report = _cheap(Wrap(model, lambda m, x: m(torch.round(x * 8) / 8)), x, y)
    assert report.verdict == "masked"
    assert report.diagnostics["model"]["zero_grad_frac"]["dlr"] == 1.0


def test_square_beating_white_box_is_flagged_from_two_tenths_of_a_point():
    def per_attack(before, after):
        return {"apgd-t": {"accuracy": before, "mode": "cascade"}, "square": {"accuracy": after, "mode": "cascade"}}

    assert checks.square_extra(per_attack(0.500, 0.499))[1][0] == "ok"
    assert checks.square_extra(per_attack(0.500, 0.497))[1][0] == "suspicious"
    assert checks.square_extra(per_attack(0.500, 0.470))[1][0] == "masked"
    assert checks.square_extra({"square": {"accuracy": 0.4, "mode": "standalone"}}) is None


class Classes(nn.Module):
    def __init__(self, k):
        super().__init__()
        self.fc = nn.Linear(3 * 16 * 16, k)

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_class_count(synth):
    x, _ = synth
    y = torch.zeros(len(x), dtype=torch.long)
    with pytest.raises(ValueError, match="needs at least 4 classes"):
        eae.evaluate(Classes(3), x[:8], y[:8], ["apgd-t"], diagnostics="off")
    with pytest.raises(ValueError, match="needs at least 3 classes"):
        eae.evaluate(Classes(2), x[:8], y[:8], ["apgd-dlr"], diagnostics="off")
    report = eae.evaluate(Classes(5), x[:8], y[:8], ["apgd-t2"], diagnostics="cheap")
    assert any("runs 4 target classes, not 9" in e for e in report.evidence)


@pytest.mark.parametrize("forward, words", [
    (lambda x: (x.flatten(1)[:, :10], None), "returned a tuple"),
    (lambda x: x.flatten(1)[:, 0], "returned shape"),
    (lambda x: x.flatten(1)[:, :1], "at least 2 classes"),
    (lambda x: (x.flatten(1)[:, :10] * 10).long(), "floating point"),
])
def test_non_standard_outputs_are_refused(synth, forward, words):
    x, y = synth

    class Odd(nn.Module):
        def forward(self, x):
            return forward(x)

    with pytest.raises(ValueError, match=words):
        eae.evaluate(Odd(), x[:4], y[:4], ["clean"], diagnostics="off")


def _noisy(model):
    return Wrap(model, MODELS["random"][0])


def test_eot_averages_gradients_over_forward_passes(trained_small, synth):
    """--eot N: every gradient of the gradient attacks is the mean of N forward passes."""
    model, _, _ = trained_small
    x, y = synth[0][:8], synth[1][:8]
    calls = []
    handle = model.register_forward_hook(lambda m, i, o: calls.append(torch.is_grad_enabled()))
    try:
        counts = {}
        for eot in (1, 3):
            calls.clear()
            eae.evaluate(model, x, y, ["apgd-ce4", "pgd2", "fab-t2"], 2 / 255, eot=eot, diagnostics="off")
            counts[eot] = sum(calls)  # the passes that build a graph: one per gradient and EOT sample
    finally:
        handle.remove()
    assert counts[3] == 3 * counts[1] > 0


def test_a_randomised_model_is_flagged_and_eot_runs(trained_small, synth):
    model, _, _ = trained_small
    x, y = synth[0][:40], synth[1][:40]
    plain = _cheap(_noisy(model), x, y, attacks=("clean", "apgd-ce3"))
    assert plain.verdict == "suspicious" and plain.eot == 1
    assert any(e.startswith("[suspicious] randomised model") and "--eot 20" in e for e in plain.evidence)
    eot = _cheap(_noisy(model), x, y, attacks=("clean", "apgd-ce3"), eot=4)
    assert eot.eot == 4 and eot.to_dict()["eot"] == 4 and "EOT 4" in eot.to_markdown()
    assert any(e.startswith("[ok] randomised model") and "averaged 4 forward passes" in e for e in eot.evidence)


def test_aa_rand_is_autoattacks_version_for_randomised_models():
    from eae.evaluation import get_suite

    suite = get_suite("aa-rand")
    assert suite.specs == ["apgd-ce", "apgd-dlr"] and suite.eot == 20
    assert all(mode == "cascade" for _, mode in suite.entries)
    apgd = eae.build_attack("apgd-dlr", 8 / 255)
    assert apgd.steps == 100 and apgd.restarts == 1 and apgd.loss == "dlr"
