"""One training step of ``gradalign`` and ``fgsm_pgi`` against the authors' own code, on the
same weights, batch and random draws: the loss, every parameter gradient, the BatchNorm
statistics after the step and (PGI) the priors carried to the next epoch must agree to
float tolerance.

The official repositories are fetched at benchmark time and read from where they lie,
never copied into eae:

    git clone https://github.com/tml-epfl/understanding-fast-adv-training /tmp/gradalign
    git clone https://github.com/jiaxiaojunQAQ/FGSM-PGI /tmp/fgsm-pgi
    PYTHONPATH=src EAE_DATA_DIR=/path/to/cifar10 python benchmarks/official_step_equivalence.py \\
        --gradalign /tmp/gradalign --pgi /tmp/fgsm-pgi --out benchmarks/results/cpu-2core/official_step

Their training steps are not functions: each lives inside ``main()``'s loop. The script
takes the step's lines from the files as they are (between two anchor lines it names),
and runs them with the loop's variables set to ours: the model, the batch, ε. What had
to change for a CPU without the authors' environment, and nothing else:
  - ``.cuda()`` (tensors and modules) returns the object itself and ``torch.cuda.FloatTensor``
    is ``torch.FloatTensor``: there is no GPU;
  - ``apex`` (GradAlign, used only with ``--half_prec``) and ``torchvision`` (FGSM-PGI's
    ``utils`` imports its datasets, unused here) are empty stand-in modules;
  - FGSM-PGI's ``atta_aug`` (a random crop of a padded image and a flip, drawn with Python's
    ``random``) is the identity, so that both sides see the same images (eae augments in
    its loader, before the method);
  - ``print`` inside the step is silenced.
Both sides run in fp32 (the authors' code without ``--half_prec`` / apex).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from eae.config import TrainConfig  # noqa: E402
from eae.methods import create_method  # noqa: E402
from eae.models import create_model  # noqa: E402
from eae.utils import git_commit  # noqa: E402

EPS = 8 / 255


# --------------------------------------------------------------------------- the authors' code, as it is
def _cpu_only() -> None:
    """No GPU here: .cuda() is the identity (the one change their code needs to run)."""
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self
    torch.cuda.FloatTensor = torch.FloatTensor
    for name in ("apex", "apex.amp", "torchvision", "torchvision.datasets", "torchvision.transforms",
                 "torchvision.utils"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["apex"].amp = sys.modules["apex.amp"]
    sys.modules["torchvision"].datasets = sys.modules["torchvision.datasets"]
    sys.modules["torchvision"].transforms = sys.modules["torchvision.transforms"]


def _module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _lines(path: Path, first: str, last: str) -> str:
    """The lines of ``path`` from the one starting (after indentation) with ``first`` to the
    one starting with ``last``, both included, dedented."""
    lines = path.read_text().splitlines()
    start = next(i for i, s in enumerate(lines) if s.strip().startswith(first))
    end = next(i for i in range(start, len(lines)) if lines[i].strip().startswith(last))
    return textwrap.dedent("\n".join(lines[start:end + 1])) + "\n"


# --------------------------------------------------------------------------- one step, either side
def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _buffers(model) -> dict[str, torch.Tensor]:
    return {n: b.detach().clone() for n, b in model.named_buffers() if b.is_floating_point()}


def _compare(ours: dict, theirs: dict) -> dict:
    rel = {k: ((ours[k] - theirs[k]).abs().max() / theirs[k].abs().max().clamp_min(1e-30)).item() for k in theirs}
    return {"n": len(theirs), "same_keys": sorted(ours) == sorted(theirs), "max_rel_diff": max(rel.values())}


def gradalign_case(repo: Path, model, state0, x, y, init: str, seed: int) -> dict:
    utils = _module(repo / "utils.py", "gradalign_utils")
    block = "if False:\n    pass\n" + _lines(repo / "train.py", "if args.attack in ['pgd', 'pgd_corner']:", "loss += reg")
    args = types.SimpleNamespace(attack="fgsm", minibatch_replay=1, attack_init="zero" if init == "zero" else "random",
                                 fgsm_alpha=1.25, dataset="cifar10", grad_align_cos_lambda=0.2, batch_size=len(y))
    ns = {"args": args, "model": model, "X": x.clone(), "y": y, "eps": EPS, "opt": None, "half_prec": False,
          "double_bp": True, "utils": utils, "clamp": utils.clamp, "get_input_grad": utils.get_input_grad,
          "l2_norm_batch": utils.l2_norm_batch, "F": F, "torch": torch, "iteration": 0, "i": 0,
          "data": types.SimpleNamespace(shapes_dict={"cifar10": [50000, 32, 32, 3]}),
          "loss_function": torch.nn.CrossEntropyLoss()}
    model.load_state_dict(state0)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    exec(compile(block, str(repo / "train.py"), "exec"), ns)
    model.zero_grad(set_to_none=True)
    ns["loss"].backward()
    theirs = {"loss": ns["loss"].item(), "grads": _grads(model), "buffers": _buffers(model)}

    cfg = TrainConfig(method="gradalign", eps=EPS, gradalign_init=init, precision="fp32")
    model.load_state_dict(state0)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    out = create_method(cfg).step(model, x.clone(), y, 0)
    out.loss.backward()
    ours = {"loss": out.loss.item(), "grads": _grads(model), "buffers": _buffers(model)}
    return _verdict(f"gradalign (init {init})", ours, theirs)


def pgi_case(repo: Path, model, state0, x, y, init: str, seed: int) -> dict:
    utils = _module(repo / "utils.py", "pgi_utils")
    defs = _lines(repo / "FGSM_MEP.py", "def _label_smoothing", "return loss")
    step = _lines(repo / "FGSM_MEP.py", "X=cifar_x[cur_order", "loss = LabelSmoothLoss(output")
    if init == "ep":  # FGSM-EP: the same step with this epoch's adversarial perturbation kept as the prior
        step += "next_delta = delta.detach()\n"
    n = len(y)
    gen = torch.Generator().manual_seed(seed + 1)
    prior = (EPS * torch.empty((n, 3, 32, 32)).uniform_(-EPS, EPS, generator=gen).sign()).clamp(-EPS, EPS)
    momentum = 1e-4 * torch.randn((n, 3, 32, 32), generator=gen)  # a carried momentum, as after an epoch
    args = types.SimpleNamespace(momentum_decay=0.3, factor=0.6, lamda=10.0)
    ns = {"args": args, "model": model, "cifar_x": x.clone(), "cifar_y": y.clone(), "cur_order": np.arange(n),
          "batch_idx": 0, "batch_size": n, "num_of_example": n, "all_delta": prior.clone(),
          "all_momentum": momentum.clone(), "epsilon": EPS / utils.std, "alpha": EPS / utils.std,
          "lower_limit": utils.lower_limit, "upper_limit": utils.upper_limit, "clamp": utils.clamp,
          "atta_aug": lambda X, rst: (X, None), "torch": torch, "nn": torch.nn, "F": F, "np": np,
          "print": lambda *a, **k: None}
    exec(compile("from torch.autograd import Variable\n" + defs, str(repo / "FGSM_MEP.py"), "exec"), ns)
    model.load_state_dict(state0)
    model.zero_grad(set_to_none=True)
    exec(compile(step, str(repo / "FGSM_MEP.py"), "exec"), ns)
    model.zero_grad(set_to_none=True)  # their opt.zero_grad() after ori_loss.backward()
    ns["loss"].backward()
    theirs = {"loss": ns["loss"].item(), "grads": _grads(model), "buffers": _buffers(model),
              "prior": ns["next_delta"].detach(), "momentum": ns["momentum"].detach()}

    cfg = TrainConfig(method="fgsm_pgi", eps=EPS, pgi_init=init, precision="fp32")
    method = create_method(cfg)
    method.setup_examples(n, (3, 32, 32), torch.device("cpu"))
    method.load_example_state({"delta": prior.clone(), "momentum": momentum.clone()})
    method.started, method.examples = 0, (torch.arange(n), 0, n)
    model.load_state_dict(state0)
    model.zero_grad(set_to_none=True)
    out = method.step(model, x.clone(), y, 0)
    out.loss.backward()
    ours = {"loss": out.loss.item(), "grads": _grads(model), "buffers": _buffers(model),
            "prior": method.delta.clone(), "momentum": method.momentum.clone() if init == "mep" else momentum}
    if init == "ep":
        theirs["momentum"] = momentum  # EP keeps no momentum
    return _verdict(f"fgsm_pgi ({init.upper()})", ours, theirs)


def _verdict(name: str, ours: dict, theirs: dict) -> dict:
    row = {"case": name, "loss_ours": ours["loss"], "loss_theirs": theirs["loss"],
           "loss_rel_diff": abs(ours["loss"] - theirs["loss"]) / max(abs(theirs["loss"]), 1e-30),
           "grads": _compare(ours["grads"], theirs["grads"]), "bn_buffers": _compare(ours["buffers"], theirs["buffers"])}
    for k in ("prior", "momentum"):
        if k in theirs:
            row[f"{k}_max_abs_diff"] = (ours[k] - theirs[k]).abs().max().item()
    worst = max(row["loss_rel_diff"], row["grads"]["max_rel_diff"], row["bn_buffers"]["max_rel_diff"])
    row["agrees"] = bool(worst < 1e-4 and row["grads"]["same_keys"] and row.get("prior_max_abs_diff", 0) < 1e-6)
    return row


def _batch(n: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    from eae.data import DataSource, read_splits

    try:
        s = read_splits(DataSource(dataset="cifar10"), val_size=0)
        return s.train_x[:n].float() / 255, s.train_y[:n].long(), f"the first {n} CIFAR-10 training images"
    except Exception as e:  # no CIFAR-10 here: synthetic images say the same about the code
        print(f"(CIFAR-10 not found: {e}; synthetic images)")
        g = torch.Generator().manual_seed(0)
        return torch.rand((n, 3, 32, 32), generator=g), torch.randint(0, 10, (n,), generator=g), f"{n} synthetic images"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gradalign", type=Path, required=True, help="a checkout of tml-epfl/understanding-fast-adv-training")
    ap.add_argument("--pgi", type=Path, required=True, help="a checkout of jiaxiaojunQAQ/FGSM-PGI")
    ap.add_argument("--gradalign-commit", default=None, help="the commit of that checkout (recorded)")
    ap.add_argument("--pgi-commit", default=None, help="the commit of that checkout (recorded)")
    ap.add_argument("--arch", default="preact_resnet18")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    _cpu_only()
    torch.use_deterministic_algorithms(True)
    x, y, what = _batch(a.n)
    rows = []
    for seed in range(a.seeds):
        torch.manual_seed(seed)
        model = create_model(a.arch, num_classes=10).train()
        state0 = {k: v.clone() for k, v in model.state_dict().items()}
        for init in ("zero", "uniform"):
            rows.append({"seed": seed, **gradalign_case(a.gradalign, model, state0, x, y, init, seed)})
        for init in ("mep", "ep"):
            rows.append({"seed": seed, **pgi_case(a.pgi, model, state0, x, y, init, seed)})
        for r in rows[-4:]:
            print(f"seed {seed} {r['case']:<22} loss {r['loss_ours']:.6f} vs {r['loss_theirs']:.6f} | grads max rel "
                  f"{r['grads']['max_rel_diff']:.2e} | BN {r['bn_buffers']['max_rel_diff']:.2e} | "
                  f"{'agrees' if r['agrees'] else 'DIFFERS'}")
    result = {"what": "one training step: eae against the authors' code", "arch": a.arch, "batch": what,
              "official": {k: {"repository": r, "commit": c} for k, r, p, c in
                           (("gradalign", "tml-epfl/understanding-fast-adv-training", a.gradalign, a.gradalign_commit),
                            ("fgsm_pgi", "jiaxiaojunQAQ/FGSM-PGI", a.pgi, a.pgi_commit))},
              "eae_commit": git_commit(), "torch": torch.__version__, "machine": platform.processor() or
              platform.machine(), "cpu": _cpu_model(), "rows": rows, "all_agree": all(r["agrees"] for r in rows)}
    print(f"all agree: {result['all_agree']}")
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "official_step_equivalence.json").write_text(json.dumps(result, indent=2) + "\n")


def _cpu_model() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()
