import pytest
import torch
import torch.nn.functional as F

from eae.config import TrainConfig
from eae.methods import METHODS, create_method
from eae.methods.eae import EAE, minimal_perturbation, quantile_threshold
from eae.models import create_model


def _batch(n=32, size=16, seed=0):
    from eae.data import make_synthetic

    x, y = make_synthetic(n, size=size, seed=seed)
    return torch.from_numpy(x).float() / 255, torch.from_numpy(y)


def _one_step(cfg, epoch=0):
    torch.manual_seed(0)
    model = create_model("resnet_small")
    model.train()
    method = create_method(cfg)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    before = [p.detach().clone() for p in model.parameters()]
    x, y = _batch()
    if method.per_example:  # as the loop does: the images' indices in the training set
        method.setup_examples(len(y), tuple(x.shape[1:]), x.device)
        method.examples = (torch.arange(len(y)), 0, len(y))
    out = method.step(model, x, y, epoch)
    assert all(m.training for m in model.modules())  # methods leave the model in train mode
    opt.zero_grad()
    out.loss.backward()
    opt.step()
    changed = sum(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    return out, changed, len(before)


@pytest.mark.parametrize("name", METHODS.names())
def test_one_step_of_every_method(name):
    out, changed, total = _one_step(TrainConfig(method=name, **({"pgd_steps": 2} if name == "pgd" else {})))
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert out.logits.shape == (32, 10)
    assert changed == total  # every parameter moved
    for v in out.stats.values():
        assert torch.isfinite(v)


@pytest.mark.parametrize("rule", ["quantile", "confidence", "mahalanobis", "all"])
@pytest.mark.parametrize("latent", ["penultimate", "logits"])
@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_eae_variants_step(rule, latent, norm):
    cfg = TrainConfig(method="eae", eae_seed_rule=rule, eae_latent=latent, eae_norm=norm,
                      **({"eae_conf_low": 0.0, "eae_conf_high": 1.0} if rule == "confidence" else {}))
    out, changed, total = _one_step(cfg)
    assert torch.isfinite(out.loss) and changed == total


def test_eae_warmup_is_clean_training():
    cfg = TrainConfig(method="eae_paper", eae_warmup_epochs=2)
    torch.manual_seed(0)
    model = create_model("resnet_small").train()
    x, y = _batch()
    out = create_method(cfg).step(model, x, y, epoch=1)
    torch.manual_seed(0)
    model2 = create_model("resnet_small").train()
    torch.testing.assert_close(out.loss, F.cross_entropy(model2(x), y))
    assert out.stats["seed_frac"] == 0


def _linear_problem(norm, seed=0, n=256, d=24, k=6):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(k, d, generator=g)
    b = torch.randn(k, generator=g)
    z = torch.randn(n, d, generator=g) * 2
    logits = z @ w.T + b
    y = logits.argmax(1)  # every example correctly classified
    return w, b, z, y, logits


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_closed_form_crosses_the_nearest_boundary(norm):
    w, b, z, y, logits = _linear_problem(norm)
    delta, k, dist = minimal_perturbation(logits, w, y, norm)
    assert (k != y).all()
    # small positive overshoot: classified as the nearest class k̂
    crossed = ((z + 1.001 * delta) @ w.T + b).argmax(1)
    assert (crossed == k).float().mean() > 0.99
    # negative overshoot: the label is kept
    kept = ((z + 0.5 * delta) @ w.T + b).argmax(1)
    assert torch.equal(kept, y)
    # ||δ|| is the distance reported, in the right norm
    p = 2 if norm == "l2" else float("inf")
    torch.testing.assert_close(delta.norm(p=p, dim=1), dist, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_eae_margin_is_minus_eta_times_the_clean_margin(norm):
    """The mechanism behind the masking of eae_paper: because δ is recomputed at every step,
    the EAE's margin to k̂ is exactly -η times the clean one, at any logit scale. Growing the
    clean margin never lowers the EAE term (it raises it), so its gradient never fades."""
    w, b, z, y, logits = _linear_problem(norm, seed=2)
    for scale in (1.0, 10.0):  # the network inflating its features and logits
        lg = scale * z @ w.T + b
        y = lg.argmax(1)  # correctly classified, as seeds are
        delta, k, _ = minimal_perturbation(lg, w, y, norm)
        eta = 0.02
        tilde = (scale * z + (1 + eta) * delta) @ w.T + b
        gap = lg.gather(1, y[:, None]) - lg.gather(1, k[:, None])
        eae_margin = tilde.gather(1, y[:, None]) - tilde.gather(1, k[:, None])
        torch.testing.assert_close(eae_margin, -eta * gap, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_closed_form_is_the_minimum_over_classes(norm):
    """Brute force over every class: k̂ has the smallest |f'_k| / ||w'_k||_dual."""
    w, b, z, y, logits = _linear_problem(norm, seed=1)
    _, k, dist = minimal_perturbation(logits, w, y, norm)
    q = 2 if norm == "l2" else 1
    for i in range(20):
        cands = [((logits[i, j] - logits[i, y[i]]).abs() / (w[j] - w[y[i]]).norm(p=q)).item()
                 for j in range(w.shape[0]) if j != y[i]]
        assert dist[i].item() == pytest.approx(min(cands), rel=1e-4)


def test_quantile_threshold_without_sync():
    v = torch.tensor([5.0, 1.0, 3.0, 2.0, 4.0, 0.5])
    mask = torch.tensor([True, True, True, True, True, False])
    assert quantile_threshold(v, mask, 0.4).item() == 2.0  # lower 40% of {1,2,3,4,5}
    assert quantile_threshold(v, mask, 1.0).item() == 5.0
    assert torch.isinf(quantile_threshold(v, torch.zeros(6, dtype=torch.bool), 0.5))


def test_eae_quantile_seed_fraction():
    cfg = TrainConfig(method="eae", eae_q=0.5)
    method = EAE(cfg)
    w, b, z, y, logits = _linear_problem("l2")
    _, _, dist = minimal_perturbation(logits, w, y, "l2")
    seeds = method.seeds(logits, z, z, dist, y)
    assert seeds.sum().item() == 128  # all correct, lower half


def test_eae_loss_uses_the_perturbed_latent():
    """With λ = 0 the EAE loss is exactly clean CE; with λ > 0 it is larger (EAEs are
    misclassified by construction when η > 0)."""
    torch.manual_seed(0)
    x, y = _batch(64)
    model = create_model("resnet_small").train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(10):  # get some correct examples
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    clean = F.cross_entropy(model(x), y)
    out0 = EAE(TrainConfig(method="eae_paper", eae_lambda=0.0)).step(model, x, y, 0)
    out1 = EAE(TrainConfig(method="eae_paper", eae_lambda=1.0, eae_eta=0.02)).step(model, x, y, 0)
    torch.testing.assert_close(out0.loss, clean)
    assert out1.stats["seed_frac"] > 0
    assert out1.loss > clean + 0.5  # CE at a point past the boundary is > log 2


def test_free_carries_the_perturbation_between_replays():
    cfg = TrainConfig(method="free", free_replays=4, eps=8 / 255)
    torch.manual_seed(0)
    model = create_model("resnet_small").train()
    method = create_method(cfg)
    x, y = _batch(16)
    deltas = []
    for _ in range(3):
        out = method.step(model, x, y, 0)
        out.loss.backward()
        deltas.append(method.carried._leaf.detach().clone())
    assert torch.equal(deltas[0], torch.zeros_like(x))  # starts at zero ...
    assert deltas[1].abs().max() > 0  # ... then moves by the previous backward's input gradient
    assert deltas[2].abs().max() <= 8 / 255 + 1e-6 and ((x + deltas[2]) <= 1).all() and ((x + deltas[2]) >= 0).all()
    # a smaller (last) batch uses a slice of the carried perturbation
    out = method.step(model, x[:5], y[:5], 0)
    assert out.logits.shape == (5, 10) and method.carried.delta.shape[0] == 16


@pytest.mark.parametrize("overrides", [
    {"head": "cosine"}, {"eae_budget": "relative"}, {"eae_temperature": 4.0}, {"eae_logit_penalty": 0.01},
    {"eae_base": "fgsm_rs"}, {"eae_base": "n_fgsm", "eae_base_frac": 0.5},
    {"eae_base": "n_fgsm", "eae_base_downsample": 2},
], ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_eae_remedies_step(overrides):
    cfg = TrainConfig(method="eae", **overrides)
    torch.manual_seed(0)
    model = create_model("resnet_small", head=cfg.head).train()
    out = create_method(cfg).step(model, *_batch(), 0)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_linear_form_of_both_heads():
    from eae.models import linear_form

    torch.manual_seed(0)
    z = torch.randn(8, 128) * 3
    for head in ("linear", "cosine"):
        model = create_model("resnet_small", head=head, head_scale=10.0)
        u, w, b = linear_form(model.head, z)
        torch.testing.assert_close(model.head(z), u @ w.T + (0 if b is None else b))
        if head == "cosine":
            assert model.head(z).abs().max() <= 10.0 + 1e-5  # bounded logits


def test_eae_relative_budget_and_temperature():
    cfg = TrainConfig(method="eae", eae_budget="relative", eae_rel=0.2)
    method = EAE(cfg)
    latent = torch.randn(16, 32)
    delta = torch.randn(16, 32)
    shift = method.shift(latent, delta)
    torch.testing.assert_close(shift.norm(dim=1), 0.2 * latent.norm(dim=1))
    assert (F.cosine_similarity(shift, delta) > 0.999).all()  # same direction as δ
    # a huge temperature flattens the EAE term to log K
    torch.manual_seed(0)
    x, y = _batch(64)
    model = create_model("resnet_small").eval()
    out = EAE(TrainConfig(method="eae", eae_temperature=1e6, eae_seed_rule="all")).step(model, x, y, 0)
    assert out.stats["seed_frac"] > 0  # some examples are correct by chance
    assert out.stats["eae_loss"].item() == pytest.approx(torch.log(torch.tensor(10.0)).item(), rel=1e-3)


def test_eae_base_adversary_on_a_fraction():
    cfg = TrainConfig(method="eae", eae_base="fgsm_rs", eae_base_frac=0.5, eps=8 / 255)
    torch.manual_seed(0)
    model = create_model("resnet_small").train()
    x, y = _batch(32)
    xb = EAE(cfg).base_input(model, x, y)
    assert torch.equal(xb[16:], x[16:])  # the second half stays clean
    moved = (xb[:16] - x[:16]).abs().flatten(1).amax(1)
    assert (moved > 0).all() and (moved <= 8 / 255 + 1e-6).all()


def test_eae_base_adversary_on_every_kth_step_and_resumes():
    cfg = TrainConfig(method="eae", eae_base="fgsm_rs", eae_base_every=3, eps=8 / 255)
    torch.manual_seed(0)
    model = create_model("resnet_small").train()
    x, y = _batch(8)
    method = EAE(cfg)
    moved = [not torch.equal(method.base_input(model, x, y), x) for _ in range(4)]
    assert moved == [True, False, False, True]
    again = EAE(cfg)
    again.load_state_dict(method.state_dict())  # the step count survives a resume
    assert [not torch.equal(again.base_input(model, x, y), x) for _ in range(3)] == [False, False, True]


def test_downsampled_adversary_gradient_and_batchnorm_statistics():
    from eae.methods.base import Downsampled, input_grad

    torch.manual_seed(0)
    model = create_model("resnet_small").train()
    x, y = _batch(8, size=16)
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    momenta = [m.momentum for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    grad = input_grad(Downsampled(model, 2), x, torch.zeros_like(x), y)
    # the running statistics (and their counters) are those of before: no low-resolution leak
    for k, v in model.named_buffers():
        assert torch.equal(v, buffers[k]), k
    assert [m.momentum for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)] == momenta
    # the gradient is the low-resolution one, spread evenly over each 2x2 block
    low = F.avg_pool2d(x, 2).requires_grad_(True)
    F.cross_entropy(model(low), y).backward()
    expected = low.grad.repeat_interleave(2, 2).repeat_interleave(2, 3) / 4
    torch.testing.assert_close(grad, expected)
    # and a full-resolution forward in train mode does move them (the check above can fail)
    model(x)
    assert not all(torch.equal(v, buffers[k]) for k, v in model.named_buffers())


def test_eae_base_downsampled_adversary_stays_in_the_ball():
    cfg = TrainConfig(method="eae", eae_base="fgsm_rs", eae_base_downsample=2, eps=8 / 255)
    torch.manual_seed(0)
    model = create_model("resnet_small").train()
    x, y = _batch(8, size=16)
    torch.manual_seed(1)
    xb = EAE(cfg).base_input(model, x, y)
    moved = xb - x
    assert moved.abs().max() <= 8 / 255 + 1e-6 and moved.abs().max() > 0
    with pytest.raises(ValueError, match="eae_base_downsample"):
        TrainConfig(method="eae", eae_base_downsample=0)
    with pytest.raises(ValueError, match=r"eae_base_downsample 17 is larger than the images \(16 pixels\)"):
        TrainConfig(method="eae", dataset="synthetic", synthetic_image_size=16, eae_base_downsample=17)
    TrainConfig(method="eae", dataset="synthetic", synthetic_image_size=16, eae_base_downsample=16)


def test_eae_on_free_carries_the_training_steps_input_gradient():
    cfg = TrainConfig(method="eae", eae_base="free", free_replays=3, eae_lambda=0.1, eps=8 / 255)
    torch.manual_seed(0)
    model = create_model("resnet_small").train()
    x, y = _batch(16)
    method = create_method(cfg)
    assert method.replays == 3 and method.passes(7) == 3
    out = method.step(model, x, y, 0)
    out.loss.backward()  # the loop's backward leaves the input gradient on the perturbation
    assert method.carried._leaf.grad is not None and torch.equal(method.carried._leaf.detach(), torch.zeros_like(x))
    xb = method.base_input(model, x, y)  # the next replay: one signed step of eps, inside the ball
    moved = (xb - x).abs().flatten(1).amax(1)
    assert (moved > 0).all() and (moved <= 8 / 255 + 1e-6).all()
    again = create_method(cfg)
    again.load_state_dict(method.state_dict())
    torch.testing.assert_close(again.carried.delta, method.carried.delta)
    with pytest.raises(ValueError, match="eae_base free"):
        TrainConfig(method="eae", eae_base="free", eae_base_frac=0.5)


def test_gradalign_regulariser_is_trained_through_and_zero_lambda_is_fgsm():
    from eae.methods.gradalign import gradient_cosine

    g = torch.randn(4, 3, 8, 8)
    assert gradient_cosine(g, 2 * g).item() == pytest.approx(1.0, abs=1e-6)
    assert gradient_cosine(g, -g).item() == pytest.approx(-1.0, abs=1e-6)
    g2 = g.clone()
    g2[0] = 0  # an example with a zero gradient is left out of the mean, not counted as 0
    assert gradient_cosine(g, g2).item() == pytest.approx(1.0, abs=1e-6)
    out, changed, total = _one_step(TrainConfig(method="gradalign"))
    assert "gradalign_cos" in out.stats and -1 <= out.stats["gradalign_cos"] <= 1 and changed == total
    plain, _, _ = _one_step(TrainConfig(method="gradalign", gradalign_lambda=0.0))
    assert out.loss.item() > plain.loss.item()  # the regulariser adds lambda (1 - cos) > 0


@pytest.mark.parametrize("init", ["mep", "ep"])
def test_prior_guided_fgsm_carries_each_images_prior_to_the_next_epoch(init):
    cfg = TrainConfig(method="fgsm_pgi", pgi_init=init, pgi_reset_every=2)
    torch.manual_seed(0)
    model = create_model("resnet_small").train()
    x, y = _batch()
    method = create_method(cfg)
    method.setup_examples(64, tuple(x.shape[1:]), x.device)
    method.examples = (torch.arange(32, 64), 0, 32)  # this batch: images 32..63 of a 64-image set
    method.step(model, x, y, 0)
    start = (cfg.eps * torch.ones(()))
    assert torch.all(method.delta[:32].abs() == start)  # untouched images keep their start, +-eps
    moved = method.delta[32:]
    assert not torch.equal(moved.abs(), start.expand_as(moved))  # this batch's priors were updated
    assert moved.abs().max() <= cfg.eps + 1e-7 and ((x + moved) >= -1e-7).all() and ((x + moved) <= 1 + 1e-7).all()
    assert (method.momentum is None) == (init == "ep")
    kept = method.delta.clone()
    method.step(model, x, y, 1)  # epoch 1: no restart
    assert not torch.equal(method.delta[32:], kept[32:]) and torch.equal(method.delta[:32], kept[:32])
    method.step(model, x, y, 2)  # epoch 2 = pgi_reset_every: the priors restart from the same draw
    again = create_method(cfg)
    again.setup_examples(64, tuple(x.shape[1:]), x.device)
    again._restart(2)
    assert torch.equal(method.delta[:32], again.delta[:32])


def test_prior_guided_fgsm_refuses_a_training_set_too_large_for_its_priors():
    method = create_method(TrainConfig(method="fgsm_pgi"))
    with pytest.raises(ValueError, match="per training image: 1,281,167 images of 3x224x224"):
        method.setup_examples(1_281_167, (3, 224, 224), torch.device("cpu"))


@pytest.mark.parametrize("given, field", [({"gradalign_lambda": -0.1}, "gradalign_lambda"),
                                          ({"pgi_momentum": 1.5}, "pgi_momentum"), ({"pgi_lambda": -1.0}, "pgi_lambda"),
                                          ({"pgi_smoothing": 0.2}, "pgi_smoothing"), ({"pgi_alpha": 0.0}, "pgi_alpha"),
                                          ({"pgi_reset_every": 0}, "pgi_reset_every"),
                                          ({"method": "gradalign", "norm": "l2", "eps": 0.5}, "linf only"),
                                          ({"method": "fgsm_pgi", "norm": "l2", "eps": 0.5}, "linf only")])
def test_new_methods_hyperparameters_are_validated(given, field):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**given)


@pytest.mark.parametrize("base", ["gradalign", "fgsm_pgi"])
def test_eae_on_a_whole_method_is_that_method_plus_the_latent_term(base):
    alone, _, _ = _one_step(TrainConfig(method=base))
    under, changed, total = _one_step(TrainConfig(method="eae", eae_base=base, eae_lambda=0.0))
    assert under.loss.item() == pytest.approx(alone.loss.item(), rel=1e-6)  # the same input, loss and draws
    assert set(alone.stats) <= set(under.stats) and changed == total
    assert {"seed_frac", "eae_loss", "latent_dist"} <= set(under.stats)  # the latent term ran (weight 0)


@pytest.mark.parametrize("given", [{"method": "gradalign"}, {"method": "fgsm_pgi"},
                                   {"method": "eae", "eae_base": "gradalign"}])
def test_compile_is_refused_for_methods_that_differentiate_a_backward_again(given):
    with pytest.raises(ValueError, match="compile is not supported with"):
        TrainConfig(compile=True, **given)


def test_prior_guided_fgsm_takes_the_largest_seeds_and_keeps_its_priors_finite():
    method = create_method(TrainConfig(method="fgsm_pgi", seed=2**63 - 1))
    x, y = _batch()
    method.setup_examples(len(y), tuple(x.shape[1:]), x.device)
    method._restart(7)  # seed * 1_000_003 + epoch is beyond torch's range: reduced, not an overflow
    assert method.delta.abs().max() > 0
    before = method.delta.clone()
    nan = torch.full_like(x, float("nan"))
    method._remember(torch.arange(len(y)), 0, len(y), x, before, nan, nan)  # a non-finite step
    assert torch.isfinite(method.delta).all() and torch.isfinite(method.momentum).all()


def test_nonfinite_advice_names_the_lambda_of_a_whole_method_under_eae():
    from eae.training.guards import nonfinite_advice

    advice = nonfinite_advice(TrainConfig(method="eae", eae_base="fgsm_pgi", pgi_lambda=10000.0), bf16=False)
    assert "--pgi-lambda (now 10000; default 10)" in advice
