"""Agreement with the official AutoAttack (the pyautoattack package, which repackages
fra31/auto-attack) on a small slice: the same model, images, ε and seed give the same robust
points. Skipped without pyautoattack (scripts/setup.sh installs it when it can). The
1,000-image comparison on trained CIFAR-10 models is benchmarks/autoattack_agreement.py;
its results: docs/equivalence.md."""
import importlib.util
import sys

import pytest
import torch


pytest.importorskip("pyautoattack")

N, EPS = 64, 2 / 255
EPS_L2 = 0.1  # on the tiny model's 16x16 images: some points fall, some stand


def _harness():
    spec = importlib.util.spec_from_file_location(
        "autoattack_agreement", __import__("pathlib").Path(__file__).resolve().parents[1]
        / "benchmarks" / "autoattack_agreement.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


# thousands of small forward passes: one thread is several times faster than two on 2 cores
pytestmark = pytest.mark.usefixtures("one_thread")


def _all_right(model, x):
    """Labels the model gets right everywhere: AutoAttack then attacks every point, so its
    random draws and ours have the same shapes."""
    with torch.no_grad():
        return model(x).argmax(1)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("loss", ["ce", "dlr", "dlr-targeted"])
def test_apgd_iterates_are_autoattacks(tiny16, loss, norm):
    """From the same seed, one APGD run of ours and of AutoAttack draw the same start and
    then take the same steps: same step-size halvings, same fooled points, same best points
    (to float rounding). This is what pins the checkpoint rule's first comparison."""
    from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted

    from eae.attacks.apgd import apgd
    from eae.attacks.base import attack_mode, ce_loss, dlr_loss, dlr_targeted_loss

    model, x, _ = tiny16
    y = _all_right(model, x)
    eps, ref_norm = (EPS, "Linf") if norm == "linf" else (EPS_L2, "L2")
    if loss == "dlr-targeted":
        ref = APGDAttack_targeted(model, n_iter=100, eps=eps, norm=ref_norm, seed=0, device="cpu")
        ref.y_target = target = model(x).sort(1)[1][:, -2].detach()
        ours = (lambda logits, yy: dlr_targeted_loss(logits, yy, target))
    else:
        ref = APGDAttack(model, n_iter=100, eps=eps, norm=ref_norm, seed=0, loss=loss, device="cpu")
        ours = {"ce": ce_loss, "dlr": dlr_loss}[loss]
    ref.init_hyperparam(x)
    torch.manual_seed(0)
    x_best, still, _, x_fooled = ref.attack_single_run(x, y)
    torch.manual_seed(0)
    with attack_mode(model):
        x_adv, fooled = apgd(model, x, y, ours, eps, 100, norm=norm)
    assert 0 < int(fooled.sum()) < len(y)
    assert torch.equal(fooled, ~still)
    torch.testing.assert_close(x_adv[fooled], x_fooled[fooled], rtol=0, atol=1e-6)
    torch.testing.assert_close(x_adv[~fooled], x_best[~fooled], rtol=0, atol=1e-6)


# L2 ε: on the tiny model FAB-T's minimal L2 perturbations spread over about 0.003 .. 0.6,
# so 0.2 fools some points and not others
@pytest.mark.parametrize("norm, eps", [("linf", EPS), ("l2", 0.2)])
def test_fab_t_finds_autoattacks_points(tiny16, norm, eps):
    """FAB-T has no random start in AutoAttack's standard version: per target, ours and
    AutoAttack's fool the same points with the same minimal perturbations (in L∞ and in L2)."""
    from pyautoattack.fab_pt import FABAttack_PT

    from eae.attacks.base import attack_mode
    from eae.attacks.fab import fab_targeted

    def size(d):  # as AutoAttack's perturb measures it
        d = d.flatten(1)
        return d.abs().amax(1) if norm == "linf" else d.square().sum(1).sqrt()

    model, x, _ = tiny16
    y = _all_right(model, x)
    ref = FABAttack_PT(model, norm={"linf": "Linf", "l2": "L2"}[norm], n_restarts=1, n_iter=100, eps=eps, seed=0,
                       targeted=True, device="cpu")
    for rank in (2, 3):
        ref.target_class = rank
        with torch.no_grad():
            adv = ref.attack_single_run(x, y, use_rand_start=False, is_targeted=True)
            ref_size = size(adv - x)
            ref_fooled = (model(adv).argmax(1) != y) & (ref_size <= eps)
            target = model(x).sort(1)[1][:, -rank]
        with attack_mode(model):
            x_adv, fooled = fab_targeted(model, x, y, target, eps, 100, norm=norm)
        assert 0 < int(fooled.sum()) < len(y)
        assert torch.equal(fooled, ref_fooled)
        torch.testing.assert_close(size(x_adv - x)[fooled], ref_size[fooled], rtol=0, atol=1e-5)


def test_l2_square_fools_as_many_points_as_autoattacks(tiny16):
    """Our L2 Square and AutoAttack's (norm='L2', the standard version's p_init 0.8, margin
    loss, schedule not rescaled), 1,000 queries at eps 0.3, leave as many points robust:
    the windows and the blocks' orientations are drawn differently (ours per image), so
    the counts are compared, not the points. Seeds 0-5 of both: robust counts 18-20 of the
    31 correct, at most 2 apart."""
    from pyautoattack.square import SquareAttack

    from eae.attacks import build_attack

    model, x, y = tiny16
    eps, queries = 0.3, 1000
    ref = SquareAttack(model, norm="L2", eps=eps, n_queries=queries, p_init=0.8, loss="margin",
                       resc_schedule=False, seed=0, device="cpu")
    x_ref = ref.perturb(x, y)
    torch.manual_seed(0)
    x_ours = build_attack(f"square{queries}", eps, norm="l2")(model, x, y)
    with torch.no_grad():
        clean = int((model(x).argmax(1) == y).sum())
        robust_ref = int((model(x_ref).argmax(1) == y).sum())
        robust_ours = int((model(x_ours).argmax(1) == y).sum())
    assert 0 < robust_ref < clean and 0 < robust_ours < clean, (clean, robust_ref, robust_ours)
    assert abs(robust_ref - robust_ours) <= 3, (clean, robust_ref, robust_ours)
    assert (x_ours - x).flatten(1).norm(dim=1).max() <= eps + 1e-5


@pytest.mark.parametrize("pair", ["aa", "aa-fast"])
def test_same_robust_points_as_autoattack(tiny16, pair):
    model, x, y = tiny16
    r = _harness().compare(model, x, y, pair, eps=EPS, seed=0, batch_size=N)
    rob = r["robust"]
    assert 0.3 * N < r["clean"] and 0 < rob["reference"] < r["clean"], r  # a slice that tests something
    differ = r["robust_only_for_reference"] + r["robust_only_for_eae"]
    # the random starts (and Square's windows) are drawn differently, so a point on the edge
    # may fall to one and not the other: at most one such point
    assert len(differ) <= 1, r
    assert r["cpu_seconds"]["reference"] > 0 and r["cpu_seconds"]["eae"] > 0
    stages = r["stages"]
    assert stages["reference"].keys() == stages["eae"].keys()
    for k in stages["reference"]:
        assert abs(stages["reference"][k] - stages["eae"][k]) <= 1, (k, r)
