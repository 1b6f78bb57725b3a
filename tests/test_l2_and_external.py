"""The L2 threat model in training, and evaluating networks that eae did not train."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from eae.cli import main
from eae.config import LINF_ONLY, TrainConfig
from eae.methods import create_method, list_methods
from eae.models.external import Normalized, load_external, parse_normalize, read_state_dict
from eae.threat import L2Ball
from helpers import only_report

SYN = ["--dataset", "synthetic", "--synthetic-test-size", "64", "--synthetic-image-size", "16"]


# ----------------------------------------------------------------------------- L2 training
def test_norm_and_eps_are_checked_together():
    assert TrainConfig(norm="l2", eps=0.5).eps == 0.5
    assert TrainConfig(norm="l2", eps=3.0).eps == 3.0  # ImageNet's L2 radius: above 1 is fine for L2
    with pytest.raises(ValueError, match="eps must be in \\[0, 1\\] for linf"):
        TrainConfig(eps=3.0)
    with pytest.raises(ValueError, match="norm must be one of linf, l2"):
        TrainConfig(norm="l1")
    with pytest.raises(ValueError, match="eps must be a finite number"):
        TrainConfig(norm="l2", eps=float("nan"))


def test_step_sizes_follow_the_norm_unless_given():
    assert TrainConfig().pgd_alpha == pytest.approx(2 / 255)
    l2 = TrainConfig(norm="l2", eps=0.5)
    assert l2.pgd_alpha == pytest.approx(0.125) and l2.trades_alpha == pytest.approx(0.125)
    assert TrainConfig(method="pgd", norm="l2", eps=0.5, pgd_alpha=0.2).pgd_alpha == 0.2
    assert TrainConfig().replace(norm="l2", eps=0.5).pgd_alpha == pytest.approx(0.125)  # default follows
    assert TrainConfig(method="pgd", pgd_alpha=0.01).replace(norm="l2", eps=0.5).pgd_alpha == 0.01  # a choice stays


@pytest.mark.parametrize("method", list_methods())
def test_every_method_trains_under_l2(method, tiny_cfg):
    """One step of each method with norm l2: finite loss, gradients reach the weights, and
    the method's input-space adversary is the L2 ball's."""
    from eae.models import create_model

    if method in LINF_ONLY:  # defined for linf only by their papers and code: refused, not guessed
        with pytest.raises(ValueError, match="linf only"):
            tiny_cfg.replace(method=method, norm="l2", eps=0.5)
        return
    cfg = tiny_cfg.replace(method=method, norm="l2", eps=0.5)
    m = create_method(cfg)
    assert isinstance(m.threat, L2Ball) and m.threat.eps == 0.5
    torch.manual_seed(0)
    model = create_model("resnet_small").train()
    x, y = torch.rand(16, 3, 16, 16), torch.randint(0, 10, (16,))
    out = m.step(model, x, y, epoch=0)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("which", ["fgsm_rs", "pgd", "n_fgsm"])
def test_l2_examples_stay_in_their_ball(which):
    from eae.methods.fgsm_rs import fgsm_rs_example
    from eae.methods.n_fgsm import n_fgsm_example

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))
    x, y = torch.rand(32, 3, 8, 8), torch.randint(0, 10, (32,))
    ball = L2Ball(0.5)
    if which == "fgsm_rs":
        adv, radius = fgsm_rs_example(model, x, y, ball, 0.625), 0.5
    elif which == "n_fgsm":  # noise of radius 2 eps plus a step of eps, no projection
        adv, radius = n_fgsm_example(model, x, y, ball, 0.5, 2.0), 1.5
    else:
        from eae.attacks import PGD

        adv, radius = PGD(0.5, steps=5, norm="l2")(model, x, y), 0.5
    norms = (adv - x).flatten(1).norm(dim=1)
    assert norms.max() <= radius + 1e-5 and norms.mean() > 0.3 * radius  # in the ball, and not trivially
    assert adv.min() >= 0 and adv.max() <= 1


def test_fab_t_attacks_in_the_l2_ball():
    """FAB-T has its L2 form (APGD and Square may still refuse l2): what it returns lies in
    the L2 ball and the image box, and fools points a linear model leaves near the boundary."""
    from eae.attacks import FABT, build_attack

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10)).eval()
    x = torch.rand(32, 3, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)  # all correct: every point is attacked
    attack = build_attack("fab-t20", 0.5, norm="l2")
    assert isinstance(attack, FABT) and attack.norm == "l2"
    adv = attack(model, x, y)
    norms = (adv - x).flatten(1).norm(dim=1)
    assert norms.max() <= 0.5 + 1e-5 and adv.min() >= 0 and adv.max() <= 1
    with torch.no_grad():
        fooled = model(adv).argmax(1) != y
    assert fooled.any() and (norms[fooled] > 0).all() and (norms[~fooled] == 0).all()


def test_l2_run_is_evaluated_under_l2_by_default(tmp_path, capsys):
    out = tmp_path / "run"
    flags = ["--device", "cpu", *SYN, "--synthetic-train-size", "192", "--val-size", "64", "--arch", "resnet_small",
             "--batch-size", "64", "--val-attack-steps", "1", "--quiet", "--epochs", "1"]
    assert main(["train", *flags, "--method", "fgsm_rs", "--norm", "l2", "--eps", "0.5", "--out", str(out)]) == 0
    assert main(["eval", str(out), "--attacks", "pgd5", "--n", "32", "--diagnostics", "off", "--quiet"]) == 0
    report = json.loads(only_report(out).read_text())
    assert report["norm"] == "l2" and report["eps"] == 0.5 and report["eps_text"] == "0.5"
    assert report["robustbench"]["threat_model"] == "L2" and report["robustbench"]["autoattack_acc"] is None
    assert "0.5 (l2)" in capsys.readouterr().out


# ----------------------------------------------------------------------------- external models
MODEL_FILE = '''
import torch
from torch import nn


class TinyNet(nn.Module):
    """A user's own network: expects normalised 16x16 inputs."""

    def __init__(self, width=8, num_classes=10):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))
'''


@pytest.fixture()
def user_model(tmp_path) -> tuple[Path, Path]:
    """A model file and a state_dict saved as a user's training script would (a dict with
    'state_dict', DataParallel's 'module.' prefix)."""
    src = tmp_path / "mynet.py"
    src.write_text(MODEL_FILE)
    torch.manual_seed(0)
    ns: dict = {}
    exec(compile(MODEL_FILE, str(src), "exec"), ns)
    net = ns["TinyNet"](width=8)
    weights = tmp_path / "ckpt.pth"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, weights)
    return src, weights


def test_external_model_is_built_loaded_and_normalised(user_model, tmp_path):
    src, weights = user_model
    model = load_external(f"{src}:TinyNet", weights, 10, normalize="cifar10", kwargs={"width": 8})
    assert isinstance(model, Normalized) and not model.training
    state = read_state_dict(weights)
    assert set(state) == {"conv.weight", "conv.bias", "fc.weight", "fc.bias"}
    mean, std = parse_normalize("cifar10")
    x = torch.rand(4, 3, 16, 16)
    inner = model.model
    expected = inner((x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1))
    torch.testing.assert_close(model(x), expected)
    from safetensors.torch import save_file

    save_file(state, str(tmp_path / "w.safetensors"))
    same = load_external(f"{src}:TinyNet", tmp_path / "w.safetensors", 10, kwargs={"width": 8})
    torch.testing.assert_close(same(x), inner(x))


def test_eval_of_an_external_checkpoint_writes_robustbench_fields(user_model, tmp_path, capsys):
    src, weights = user_model
    out = tmp_path / "results" / "tiny" / "report.json"  # --output creates its folder
    argv = ["eval", "--model", f"{src}:TinyNet", "--model-kwargs", '{"width": 8}', "--weights", str(weights),
            "--normalize", "cifar10", "--dataset", "imagefolder", "--data-dir", str(_folder(tmp_path)),
            "--image-size", "16", "--attacks", "pgd3", "--diagnostics", "off", "--output", str(out), "--quiet",
            "--device", "cpu"]
    assert main(argv) == 0
    report = json.loads(out.read_text())
    rb = report["robustbench"]
    assert rb["threat_model"] == "Linf" and rb["eps"] == "8/255" and rb["n_examples"] == 40
    assert float(rb["clean_acc"]) == pytest.approx(100 * report["clean_accuracy"], abs=0.01)
    assert report["written_by"] == "eae eval" and report["model"].endswith(":TinyNet")
    assert main(argv) == 0  # replacing its own report is fine


@pytest.mark.parametrize("suite, given", [("aa", True), ("full", False), ("aa-fast", False), (None, False)])
def test_robustbench_accuracy_only_for_autoattacks_standard_version(suite, given):
    from types import SimpleNamespace

    from eae.cli import robustbench_entry

    report = SimpleNamespace(suite=suite, norm="linf", eps=8 / 255, clean_accuracy=0.5, robust_accuracy=0.25, n=100)
    entry = robustbench_entry(report, {"dataset": "cifar10"})
    assert entry["autoattack_acc"] == ("25.00" if given else None) and entry["n_examples"] == 100


def _folder(tmp_path: Path) -> Path:
    """An image folder with train/ and val/ (10 classes, as many as the user's network has
    outputs; 4 validation images each)."""
    from PIL import Image

    root = tmp_path / "imgs"
    g = torch.Generator().manual_seed(0)
    for split, count in (("train", 2), ("val", 4)):
        for c in "abcdefghij":
            (root / split / c).mkdir(parents=True)
            for i in range(count):
                arr = (torch.rand(20, 20, 3, generator=g) * 255).to(torch.uint8).numpy()
                Image.fromarray(arr).save(root / split / c / f"{i}.png")
    return root


@pytest.mark.parametrize("argv_tail, fragment", [
    (["--weights", "WEIGHTS"], "do not fit --model"),  # width 8 weights into a width-4 net
    (["--weights", "MISSING"], "weights file not found"),
    (["--weights", "PICKLE"], "holds Python objects beyond tensors"),
    (["--weights", "WEIGHTS", "--normalize", "0.5,0.5"], "--normalize takes"),
    (["--weights", "WEIGHTS", "--model-kwargs", "{width: 4}"], "--model-kwargs is not valid JSON"),
    ([], "--model needs --weights FILE"),
])
def test_external_eval_refuses_with_one_line(user_model, tmp_path, capsys, argv_tail, fragment):
    src, weights = user_model
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"state_dict": {"w": torch.zeros(1)}, "x": _Evil()}))
    tail = [{"WEIGHTS": str(weights), "MISSING": str(tmp_path / "none.pt"), "PICKLE": str(evil)}.get(a, a)
            for a in argv_tail]
    kwargs = [] if "--model-kwargs" in tail else ["--model-kwargs", '{"width": 4}']
    rc = _main(["eval", "--model", f"{src}:TinyNet", *kwargs, *tail, "--device", "cpu", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and fragment in err and "Traceback" not in err, err
    assert not (tmp_path / "pwned").exists()


def _main(argv) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # usage errors exit through argparse's path
        return e.code


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch pwned",))


def test_output_never_replaces_a_users_file(user_model, tmp_path, capsys):
    src, weights = user_model
    mine = tmp_path / "results.json"
    mine.write_text('{"my": "numbers"}')
    rc = main(["eval", "--model", f"{src}:TinyNet", "--model-kwargs", '{"width": 8}', "--weights", str(weights),
               "--dataset", "imagefolder", "--data-dir", str(_folder(tmp_path)), "--image-size", "16",
               "--attacks", "fgsm", "--diagnostics", "off", "--output", str(mine), "--quiet", "--device", "cpu"])
    captured = capsys.readouterr()
    assert rc == 2 and "was not written by eae eval" in captured.err
    assert "| fgsm |" not in captured.out  # refused before the attacks ran
    assert mine.read_text() == '{"my": "numbers"}'


@pytest.mark.parametrize("lib", ["timm", "torchvision"])
def test_missing_library_names_the_extra(lib, tmp_path, capsys, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_lib(name, *a, **k):  # as if the library were not installed
        if name == lib or name.startswith(lib + "."):
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_lib)
    monkeypatch.setattr("importlib.import_module", lambda name, *a: no_lib(name))
    w = tmp_path / "w.pt"
    torch.save({"a": torch.zeros(1)}, w)
    rc = main(["eval", "--model", f"{lib}:resnet18", "--weights", str(w), "--device", "cpu", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and f"eae-at[{lib}]" in err and "Traceback" not in err


def test_l2_diagnostics_attack_in_the_l2_ball():
    """Under L2 the masking checks sweep L2 radii (eps/8 .. 2 eps) and the unbounded attack
    covers the whole image box; the aa suite runs AutoAttack's four attacks in their L2 forms."""
    from eae.evaluation import evaluate

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 10)).eval()
    x, y = torch.rand(16, 3, 4, 4), torch.randint(0, 10, (16,))
    r = evaluate(model, x, y, ["clean", "pgd5", "cw5"], 0.5, norm="l2", diag_n=16)
    sweep = r.diagnostics["eps_sweep_cw20"]
    assert list(sweep) == ["0.0625", "0.125", "0.25", "0.5", "1"]
    assert r.diagnostics["unbounded_eps1"] == 0.0  # a linear model falls to an unbounded L2 attack
    aa = evaluate(model, x, y, suite="aa", eps=0.05, norm="l2", diagnostics="off")
    assert aa.norm == "l2" and set(aa.per_attack) >= {"apgd-ce", "apgd-t", "fab-t", "square"}
    assert aa.robust_accuracy <= aa.per_attack["apgd-ce"]["accuracy"]
