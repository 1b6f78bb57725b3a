"""Training, seed for seed, against an independent implementation: FGSM-RS and TRADES as
trained by ``eae train`` and by IBM's Adversarial Robustness Toolbox (ART:
``AdversarialTrainerFBFPyTorch``, ``AdversarialTrainerTRADESPyTorch``).

Both sides train the same network (same architecture, normalisation inside the model,
inputs in [0, 1]) from the same initial weights (``torch.manual_seed(seed)`` then
``create_model``, as ``eae train`` does), on the same CIFAR-10 training subset, with the
same optimiser, epochs, batch size and LR schedule where ART allows it (our side is
configured to match ART; what cannot be matched is listed in the output). Batch order and
attack noise come from each implementation's own random streams, so the comparison is of
distributions over seeds: per method, the mean over seeds of clean, CW-20 and AutoAttack
accuracy of ours and ART's, and whether their difference is below two standard errors
(SE of the difference = sqrt(se_ours^2 + se_art^2), se = std / sqrt(n), std with n - 1).

ART is installed at benchmark time only, never as a dependency of the project:

    pip install --no-deps --target /tmp/art adversarial-robustness-toolbox==1.20.1 scikit-learn==1.5.2 \\
        scipy six tqdm joblib threadpoolctl cloudpickle
    PYTHONPATH=src:/tmp/art EAE_DATA_DIR=/path/to/cifar10 OMP_NUM_THREADS=1 \\
        python benchmarks/training_equivalence.py --out benchmarks/results/cpu-2core/equivalence/training

Writes OUT/training_equivalence.json and .md after every trained model (``--resume``
skips the (method, implementation, seed) runs already in the json). ``--pilot`` trains one
seed of each and prints the times, writing nothing.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import eae  # noqa: E402
from eae.data import DataSource, read_splits, read_test_set  # noqa: E402
from eae.utils import git_commit  # noqa: E402

METHODS = ("fgsm_rs", "trades")
IMPLS = ("eae", "art")
# Controls, not part of the comparison: each removes one unmatched difference of FGSM-RS.
# name: (method, our side, their side, what it changes)
CONTROLS = {
    "art_noclip": ("fgsm_rs", "eae", "art_noclip",
                   "ART's FBF with `torch.nn.utils.clip_grad_norm_` made a no-op: no gradient clipping on either side"),
    "eae_rawstart": ("fgsm_rs", "eae_rawstart", "art",
                     "eae's FGSM-RS with its uniform start not clipped to valid images (the gradient taken at "
                     "the unclipped x + delta, as ART does; a patch of the benchmark, not an option of eae)"),
}
METRICS = ("clean", "cw20", "aa")
FBF_PEAK_LR = 0.21  # hard-coded in ART's AdversarialTrainerFBF(PyTorch).fit

UNMATCHED = {
    "fgsm_rs": [
        "Batch order and the uniform start: ART draws them from numpy's global generator "
        "(np.random.shuffle, np.random.uniform), eae from torch generators; the same seed gives "
        "different streams, so runs are compared as distributions over seeds.",
        "Gradient clipping: ART clips the parameter gradient norm at 0.5 on every step "
        "(clip_grad_norm_, not configurable); eae does not clip.",
        "LR schedule: ART's is fixed, a triangle 0 -> 0.21 -> 0 peaking at epoch "
        "floor(2 * epochs / 5), evaluated at the end of each step; eae is configured to the "
        "same (onecycle, lr_peak_frac 0.4, lr_max 0.21, epochs a multiple of 5: identical per step).",
        "The start of the step: eae clips x + delta to [0, 1] before taking the gradient; ART "
        "takes it at the unclipped x + delta (both clip the final example to the eps-ball and to [0, 1]).",
        "Mode: ART takes the attack gradient in eval mode and never switches back, so it also "
        "trains in eval mode (BatchNorm would use its initial running statistics throughout); "
        "eae takes the FGSM gradient and trains in train mode. Neutral here: the network has "
        "no BatchNorm or dropout.",
        "Augmentation: ART's fit does none; eae is run with augment false.",
    ],
    "trades": [
        "Inner maximisation: ART's trainer takes any evasion attack and ART has none that "
        "maximises TRADES's KL(f(x) || f(x')); it is run with its PGD (ProjectedGradientDescentPyTorch) "
        "on the cross-entropy of the true labels, started at x (num_random_init 0), same eps, "
        "step and number of steps. eae maximises the KL from x + 0.001 N(0, I), as the TRADES code.",
        "Batch order: numpy's global generator (ART) vs a torch generator (eae); compared as "
        "distributions over seeds.",
        "KL term: ART clamps the clean probabilities at 1e-8 inside the KL; eae does not.",
        "LR schedule: ART steps an epoch-level scheduler and refuses torch's own schedulers "
        "under torch 2 (they are not _LRScheduler subclasses); it is given MultiStepLR through a "
        "subclass of _LRScheduler, milestones at the epochs where eae's per-step piecewise "
        "schedule drops (fractions chosen so that they fall on epoch boundaries: identical per step).",
        "Augmentation: ART's fit does none; eae is run with augment false.",
    ],
}

# N-FGSM (de Jorge et al., NeurIPS 2022, "Make Some Noise"; the paper and its code,
# github.com/pdejorge/N-FGSM train.py) against ``--method n_fgsm`` with its defaults.
NFGSM_VS_PAPER = [
    ("noise", "eta ~ U(-k eps, k eps) per pixel, k = 2 (code: --unif 2), clamped so that x + eta is an image",
     "U(-2 eps, 2 eps) (nfgsm_noise 2), clipped to valid images", "same"),
    ("step", "one signed-gradient step of alpha = eps (code: --alpha 8 at eps 8/255)",
     "one signed step of nfgsm_alpha, default eps", "same"),
    ("projection to the eps-ball", "none (code: --clip -1; the perturbation reaches up to (k + 1) eps = 3 eps in linf)",
     "none; only clipping to valid images", "same"),
    ("clipping to the image box", "eta + alpha sign(g) clamped to [0, 1] - x (in the normalised space)",
     "clip_to_image after the step", "same"),
    ("attack gradient", "CE of the true label at x + eta, model in train mode (BatchNorm batch statistics)",
     "CE at x + eta, train mode", "same"),
    ("training loss", "CE on x + delta only (no clean term)", "CE on x + delta only", "same"),
    ("cost", "one extra forward/backward per step (as FGSM-RS)", "the same", "same"),
    ("LR schedule (CIFAR-10)", "cyclic 0 -> 0.2 -> 0, peak at 1/2 of training (torch CyclicLR, stepped after "
     "each step, first step at LR 0)", "onecycle, peak at lr_peak_frac = 0.4 of training (Wong et al.'s), LR "
     "at the end of each step, lr_max 0.2", "differs (--lr-peak-frac 0.5 for the paper's)"),
    ("epochs, batch", "30 epochs, batch 128", "15 epochs, batch 512 (defaults)",
     "differs (--epochs 30 --batch-size 128)"),
    ("optimiser", "SGD momentum 0.9, weight decay 5e-4", "SGD momentum 0.9, weight decay 5e-4", "same"),
    ("augmentation", "random crop (pad 4) and horizontal flip", "random crop (pad 4) and flip (augment true)",
     "same"),
    ("SVHN", "eps and alpha ramped up over 5 epochs, lr_max 0.05, peak at 2/5", "no eps ramp", "differs "
     "(not CIFAR-10)"),
    ("relation to FGSM-RS", "FGSM-RS is k = 1, alpha = 1.25 eps, clip to the eps-ball (code: --clip 1)",
     "fgsm_rs's example = n_fgsm's (nfgsm_noise 1, same alpha, same random stream) projected to the "
     "eps-ball; identical training when the projection cannot bind (linf eps 1), different otherwise "
     "(tests/test_nfgsm_degenerate.py)", "same"),
]


# ----------------------------------------------------------------------------- statistics
def summarize(values: Sequence[float]) -> dict[str, float]:
    """n, mean, sample std (n - 1; 0 for one value) and standard error std / sqrt(n)."""
    v = [float(a) for a in values]
    n = len(v)
    if n == 0:
        return {"n": 0, "mean": float("nan"), "std": float("nan"), "se": float("nan")}
    mean = sum(v) / n
    std = math.sqrt(sum((a - mean) ** 2 for a in v) / (n - 1)) if n > 1 else 0.0
    return {"n": n, "mean": mean, "std": std, "se": std / math.sqrt(n)}


def compare(ours: Sequence[float], theirs: Sequence[float], k: float = 2.0) -> dict[str, Any]:
    """Difference of means (ours - theirs), its SE sqrt(se1^2 + se2^2), and whether
    |difference| < k SE (k = 2). Equal means with zero spread count as equivalent."""
    a, b = summarize(ours), summarize(theirs)
    diff = a["mean"] - b["mean"]
    se = math.sqrt(a["se"] ** 2 + b["se"] ** 2)
    within = bool(abs(diff) < k * se or (diff == 0 and se == 0))
    return {"ours": a, "theirs": b, "diff": diff, "se_diff": se, "k": k,
            "z": diff / se if se > 0 else (0.0 if diff == 0 else math.copysign(math.inf, diff)),
            "equivalent": within}


# ----------------------------------------------------------------------------- settings
def onecycle_ok(epochs: int) -> bool:
    """ART's FBF peaks at epoch epochs * 2 // 5; eae's onecycle at 0.4 * epochs: equal iff 5 | epochs."""
    return epochs % 5 == 0


def trades_milestones(epochs: int) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """LR drops (x0.1) at half and three quarters of training, rounded to whole epochs: the
    fractions for eae's piecewise schedule and the epochs for ART's epoch-level scheduler."""
    ms = sorted({max(1, min(epochs - 1, round(epochs * f))) for f in (0.5, 0.75)}) if epochs > 1 else []
    return tuple(m / epochs for m in ms), tuple(ms)


def eae_config(a, method: str, seed: int, out: str) -> "eae.TrainConfig":
    common = dict(out=out, seed=seed, device="cpu", dataset="cifar10", data_dir=a.data_dir, val_size=0,
                  val_seed=a.split_seed, train_subset=a.train_n, augment=False, arch=a.arch, epochs=a.epochs,
                  batch_size=a.batch_size, momentum=0.9, nesterov=False, weight_decay=a.weight_decay,
                  eps=a.eps, method=method, channels_last=False, precision="fp32")
    if method == "fgsm_rs":
        return eae.TrainConfig(**common, lr_schedule="onecycle", lr_peak_frac=0.4, lr_max=FBF_PEAK_LR,
                               fgsm_alpha=1.25 * a.eps, fgsm_init="uniform")
    fracs, _ = trades_milestones(a.epochs)
    return eae.TrainConfig(**common, lr_schedule="piecewise", lr_max=a.trades_lr, lr_milestones=fracs,
                           lr_gamma=0.1, trades_steps=a.trades_steps, trades_alpha=a.trades_alpha,
                           trades_beta=a.trades_beta)


def initial_net(arch: str, seed: int, mean, std) -> torch.nn.Module:
    """The network as ``eae train`` draws it: torch.manual_seed(seed), then create_model."""
    torch.manual_seed(seed)
    return eae.create_model(arch, 10, mean, std)


# ----------------------------------------------------------------------------- training
def train_ours(a, method: str, seed: int, workdir: str, raw_start: bool = False):
    """(final network, wall seconds of eae.train, seconds of the training epochs). ``raw_start``:
    the uniform start is not clipped to valid images (the same draws; a control)."""
    from unittest import mock

    from eae.threat import LinfBall

    cfg = eae_config(a, method, seed, os.path.join(workdir, f"{method}-{seed}-{int(raw_start)}"))
    raw = mock.patch.object(LinfBall, "random_perturb",
                            lambda self, x, scale=1.0: torch.empty_like(x).uniform_(-scale * self.eps, scale * self.eps))
    t0 = time.perf_counter()
    with (raw if raw_start else contextlib.nullcontext()):
        res = eae.train(cfg, quiet=True)
    wall = time.perf_counter() - t0
    return eae.load(res.run_dir, weights="final"), wall, res.train_seconds


def train_art(a, method: str, seed: int, x: np.ndarray, y: np.ndarray, mean, std, clip: bool = True):
    """(final network, wall seconds of the trainer's fit) with ART. ``clip`` False: FBF's
    clip_grad_norm_(0.5) made a no-op (a control that removes one unmatched difference)."""
    from art.estimators.classification import PyTorchClassifier
    from art.defences.trainer import AdversarialTrainerFBFPyTorch, AdversarialTrainerTRADESPyTorch

    net = initial_net(a.arch, seed, mean, std)
    np.random.seed(seed)  # ART's batch order and FBF's uniform start
    lr = FBF_PEAK_LR if method == "fgsm_rs" else a.trades_lr  # FBF overwrites it on every step
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=a.weight_decay)
    clf = PyTorchClassifier(model=net, loss=torch.nn.CrossEntropyLoss(), optimizer=opt, input_shape=(3, 32, 32),
                            nb_classes=10, clip_values=(0.0, 1.0), device_type="cpu")
    onehot = np.eye(10, dtype=np.float32)[y]
    t0 = time.perf_counter()
    if method == "fgsm_rs":
        from unittest import mock

        noop = mock.patch("torch.nn.utils.clip_grad_norm_", lambda params, *args, **kw: torch.tensor(0.0))
        with (contextlib.nullcontext() if clip else noop):
            AdversarialTrainerFBFPyTorch(clf, eps=a.eps).fit(x, onehot, batch_size=a.batch_size,
                                                             nb_epochs=a.epochs)
    else:
        from art.attacks.evasion import ProjectedGradientDescentPyTorch
        from torch.optim.lr_scheduler import MultiStepLR, _LRScheduler

        class EpochMultiStep(_LRScheduler, MultiStepLR):  # ART accepts _LRScheduler subclasses only
            pass

        _, epochs_at = trades_milestones(a.epochs)
        sched = EpochMultiStep(opt, milestones=list(epochs_at), gamma=0.1)
        attack = ProjectedGradientDescentPyTorch(clf, norm=np.inf, eps=a.eps, eps_step=a.trades_alpha,
                                                 max_iter=a.trades_steps, targeted=False, num_random_init=0,
                                                 batch_size=a.batch_size, verbose=False)
        AdversarialTrainerTRADESPyTorch(clf, attack, beta=a.trades_beta).fit(
            x, onehot, batch_size=a.batch_size, nb_epochs=a.epochs, scheduler=sched)
    wall = time.perf_counter() - t0
    net.eval()
    return net, wall


def evaluate_net(a, net, test_x, test_y) -> dict[str, Any]:
    net.eval()
    r = eae.evaluate(net, test_x[:a.eval_n], test_y[:a.eval_n], ["clean", "cw20"], eps=a.eps, device="cpu",
                     seed=0, diagnostics="off", test_size=10000)
    out = {"clean": r.accuracy["clean"], "cw20": r.accuracy["cw20"], "eval_seconds": r.seconds}
    if a.aa_n:
        r2 = eae.evaluate(net, test_x[:a.aa_n], test_y[:a.aa_n], suite=a.aa_suite, eps=a.eps, device="cpu",
                          seed=0, diagnostics="off", test_size=10000)
        out["aa"] = r2.robust_accuracy
        out["aa_seconds"] = r2.seconds
    return out


# ----------------------------------------------------------------------------- report
def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    try:
        art_v = version("adversarial-robustness-toolbox")
    except PackageNotFoundError:
        art_v = None
    return {"eae": eae.__version__, "eae_commit": git_commit(), "adversarial-robustness-toolbox": art_v,
            "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()}


def machine() -> str:
    return (f"{platform.machine()} CPU, {os.cpu_count()} cores, {torch.get_num_threads()} torch thread(s), "
            f"{platform.platform()}")


def summarise_runs(runs: list[dict], methods=METHODS) -> dict:
    """Per method and metric: the comparison of ours vs ART over seeds (runs present on both
    sides); ``method:control`` for ours vs a control run of ART."""
    out: dict[str, Any] = {}
    pairs = [(m, m, "eae", "art") for m in methods] + [
        (f"{m}:{c}", m, ours, theirs) for c, (m, ours, theirs, _) in CONTROLS.items() if m in methods]
    for key, m, mine, other in pairs:
        by = {impl: sorted((r for r in runs if r["method"] == m and r["impl"] == impl), key=lambda r: r["seed"])
              for impl in (mine, other)}
        common = {r["seed"] for r in by[mine]} & {r["seed"] for r in by[other]}  # paired seeds only
        by = {impl: [r for r in rs if r["seed"] in common] for impl, rs in by.items()}
        if not common:
            continue
        res: dict[str, Any] = {}
        for metric in METRICS + ("train_wall_seconds",):
            ours = [r[metric] for r in by[mine] if metric in r]
            theirs = [r[metric] for r in by[other] if metric in r]
            if ours and theirs:
                res[metric] = compare(ours, theirs)
        out[key] = res
    return out


def _pm(s: dict, scale: float = 100.0, digits: int = 1) -> str:
    return f"{s['mean'] * scale:.{digits}f} ± {s['std'] * scale:.{digits}f} (SE {s['se'] * scale:.{digits}f})"


def to_markdown(doc: dict) -> str:
    h = doc["header"]
    s = h["settings"]
    lines = ["# Training equivalence: eae vs the Adversarial Robustness Toolbox", "",
             *(f"- command: `{c}`" for c in h.get("commands", [h.get("command")])),
             *([f"- pooled (`--render --pool`) from: {', '.join(h['pooled_from'])}"] if h.get("pooled_from") else []),
             f"- machine: {h['machine']}",
             "- versions: " + ", ".join(f"{k} {v}" for k, v in h["versions"].items()),
             f"- network `{s['arch']}`, CIFAR-10 training subset of {s['train_n']} images (the first of eae's "
             f"split with val_size 0, val_seed {s['split_seed']}), {s['epochs']} epochs, batch {s['batch_size']}, "
             f"SGD momentum 0.9, weight decay {s['weight_decay']}, no augmentation, eps {s['eps_text']}",
             f"- FGSM-RS: step 1.25 eps, LR triangle 0 -> {FBF_PEAK_LR} -> 0 peaking at 2/5 of training",
             f"- TRADES: beta {s['trades_beta']}, {s['trades_steps']} attack steps of {s['trades_alpha_text']}, "
             f"LR {s['trades_lr']} x0.1 at epochs {', '.join(map(str, s['trades_drop_epochs']))}",
             f"- seeds {', '.join(map(str, s['seeds']))}; initial weights identical for the same seed on both "
             f"sides (checked: {h.get('init_identical')})",
             f"- evaluation: clean and CW-20 (eps {s['eps_text']}) on the first {s['eval_n']} CIFAR-10 test images; "
             f"AutoAttack `{s['aa_suite']}` on the first {s['aa_n']}"
             + (" (aa-fast = APGD-CE + APGD-T only, not the full AutoAttack)" if s['aa_suite'] == "aa-fast" else ""),
             "- rule: equivalent when |mean_eae - mean_ART| < 2 SE, SE = sqrt(se_eae^2 + se_ART^2), "
             "se = std / sqrt(n), std with n - 1", ""]
    names = {"clean": "clean", "cw20": "CW-20", "aa": f"AA ({s['aa_suite']}, n={s['aa_n']})"}
    for key, res in doc["summary"].items():
        m, _, control = key.partition(":")
        mine, other = (CONTROLS[control][1:3] if control else ("eae", "art"))
        if control:
            lines += [f"## {m}: control `{control}` ({mine} vs {other})", "",
                      f"{CONTROLS[control][3]}; everything else as above. Not part of the comparison: it tells "
                      "whether that difference explains a gap.", ""]
        else:
            lines += [f"## {m}", ""]
        lines += [f"| metric (%) | {mine} | {other} | difference | 2 SE | equivalent |",
                  "|---|---|---|---|---|---|"]
        for metric in METRICS:
            if metric in res:
                c = res[metric]
                lines.append(f"| {names[metric]} | {_pm(c['ours'])} | {_pm(c['theirs'])} | {100 * c['diff']:+.1f} | "
                             f"{200 * c['se_diff']:.1f} | {'yes' if c['equivalent'] else 'NO'} |")
        if "train_wall_seconds" in res:
            c = res["train_wall_seconds"]
            lines.append(f"| training wall time (s) | {_pm(c['ours'], 1, 1)} | {_pm(c['theirs'], 1, 1)} | "
                         f"{c['diff']:+.1f} | | |")
        lines += ["", "Per seed:", "", "| impl | seed | clean | CW-20 | AA | train s |", "|---|---|---|---|---|---|"]
        for r in sorted((r for r in doc["runs"] if r["method"] == m and r["impl"] in ((mine, other) if control else IMPLS)
                        and (not control or r["impl"] != "eae" and r["impl"] != "art")),
                        key=lambda r: (r["impl"], r["seed"])):
            aa = f"{100 * r['aa']:.1f}" if "aa" in r else "-"
            lines.append(f"| {r['impl']} | {r['seed']} | {100 * r['clean']:.1f} | {100 * r['cw20']:.1f} | {aa} | "
                         f"{r['train_wall_seconds']:.1f} |")
        if not control:
            lines += ["", "Not matched:", ""] + [f"- {u}" for u in UNMATCHED[m]]
        lines += [""]
    lines += ["## N-FGSM: the paper against `--method n_fgsm` (no training)", "",
              "| point | de Jorge et al. 2022 (paper and code) | eae | |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in NFGSM_VS_PAPER]
    return "\n".join(lines) + "\n"


def write(out: Path, doc: dict, methods=METHODS) -> None:
    doc["summary"] = summarise_runs(doc["runs"], methods)
    doc["header"]["unmatched"] = UNMATCHED
    doc["nfgsm_vs_paper"] = [dict(zip(("point", "paper", "eae", "verdict"), row)) for row in NFGSM_VS_PAPER]
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "training_equivalence.json.tmp"
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(out / "training_equivalence.json")
    (out / "training_equivalence.md").write_text(to_markdown(doc))


# ----------------------------------------------------------------------------- main
def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    f = lambda s: eae.config.parse_float(s)  # noqa: E731
    p.add_argument("--out", default="benchmarks/results/cpu-2core/equivalence/training")
    p.add_argument("--data-dir", default=None, help="CIFAR-10 folder (default: $EAE_DATA_DIR)")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS + tuple(CONTROLS),
                   help="controls (fgsm_rs only): art_noclip, ART's FBF without its gradient clipping; "
                        "eae_rawstart, eae's uniform start not clipped to valid images")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    p.add_argument("--arch", default="convnet_nobn")
    p.add_argument("--train-n", type=int, default=5000)
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--weight-decay", type=f, default=5e-4)
    p.add_argument("--eps", type=f, default=8 / 255)
    p.add_argument("--trades-steps", type=int, default=3)
    p.add_argument("--trades-alpha", type=f, default=None, help="default 2.5 eps / steps")
    p.add_argument("--trades-beta", type=f, default=6.0)
    p.add_argument("--trades-lr", type=f, default=0.1)
    p.add_argument("--eval-n", type=int, default=1000)
    p.add_argument("--aa-n", type=int, default=200)
    p.add_argument("--aa-suite", default="aa", choices=("aa", "aa-fast"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--pilot", action="store_true", help="one seed of each, timed; writes nothing")
    p.add_argument("--render", action="store_true", help="rewrite OUT's json and md from its runs; trains nothing")
    p.add_argument("--pool", nargs="+", default=None, metavar="DIR",
                   help="with --render: the runs of these outputs (disjoint seeds) together, written to OUT")
    a = p.parse_args(argv)
    if a.trades_alpha is None:
        a.trades_alpha = 2.5 * a.eps / a.trades_steps
    a.data_dir = a.data_dir or os.environ.get("EAE_DATA_DIR")
    if "fgsm_rs" in a.methods and not onecycle_ok(a.epochs):
        p.error("--epochs must be a multiple of 5 for FGSM-RS (ART's LR peak is at epoch epochs * 2 // 5)")
    return a


def main(argv=None) -> int:
    a = parse(argv)
    torch.set_num_threads(a.threads)
    if a.render:
        if a.pool:  # the runs of several outputs (disjoint seeds, same settings otherwise) as one
            docs = [json.loads((Path(d) / "training_equivalence.json").read_text()) for d in a.pool]
            doc = {"header": {**docs[0]["header"], "pooled_from": a.pool}, "runs": []}
            seen = set()
            for d in docs:
                for r in d["runs"]:
                    if (r["method"], r["impl"], r["seed"]) not in seen:
                        seen.add((r["method"], r["impl"], r["seed"]))
                        doc["runs"].append(r)
            doc["header"]["settings"] = {**docs[0]["header"]["settings"],
                                         "seeds": sorted({r["seed"] for r in doc["runs"]})}
            doc["header"]["commands"] = [c for d in docs for c in d["header"].get("commands", [d["header"].get("command")])]
        else:
            doc = json.loads((Path(a.out) / "training_equivalence.json").read_text())
        write(Path(a.out), doc, tuple(a.methods))
        print((Path(a.out) / "training_equivalence.md").read_text())
        return 0
    src = DataSource(dataset="cifar10", data_dir=a.data_dir)
    s = read_splits(src, 0, a.split_seed, a.train_n)
    x_art = s.train_x.numpy().astype(np.float32) / 255.0
    y_art = s.train_y.numpy().astype(np.int64)
    test_x, test_y = read_test_set(src, max(a.eval_n, a.aa_n))
    out = Path(a.out)
    settings = {"arch": a.arch, "train_n": a.train_n, "split_seed": a.split_seed, "epochs": a.epochs,
                "batch_size": a.batch_size, "weight_decay": a.weight_decay, "eps": a.eps,
                "eps_text": f"{a.eps * 255:.4g}/255", "trades_steps": a.trades_steps, "trades_alpha": a.trades_alpha,
                "trades_alpha_text": f"{a.trades_alpha * 255:.4g}/255", "trades_beta": a.trades_beta,
                "trades_lr": a.trades_lr, "trades_drop_epochs": list(trades_milestones(a.epochs)[1]),
                "seeds": a.seeds, "eval_n": a.eval_n, "aa_n": a.aa_n, "aa_suite": a.aa_suite}
    path = out / "training_equivalence.json"
    doc = {"runs": []}
    if a.resume and path.is_file():
        doc = json.loads(path.read_text())
        if doc["header"]["settings"] != settings:
            print("refusing --resume: the settings differ from those in", path, file=sys.stderr)
            return 2
    cmd = "OMP_NUM_THREADS=1 python benchmarks/training_equivalence.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    # the initial weights of a run of eae train are those initial_net draws for the same seed
    with tempfile.TemporaryDirectory() as tmp:
        from eae.training.run import Run

        run = Run(eae_config(a, "fgsm_rs", 123, tmp), torch.device("cpu"), lambda *_: None)
        ref = initial_net(a.arch, 123, s.mean, s.std).state_dict()
        same = all(torch.equal(v, ref[k]) for k, v in run.net.state_dict().items())
    old = doc.get("header", {})
    commands = [c for c in old.get("commands", [old["command"]] if "command" in old else []) if c != cmd] + [cmd]
    doc["header"] = {"commands": commands, "machine": machine(), "versions": versions(), "settings": settings,
                     "init_identical": same, "unmatched": UNMATCHED}
    print(f"initial weights identical on both sides: {same}", flush=True)
    done = {(r["method"], r["impl"], r["seed"]) for r in doc["runs"]}
    seeds = a.seeds[:1] if a.pilot else a.seeds
    with tempfile.TemporaryDirectory() as workdir:
        for seed in seeds:
            for method in a.methods:
                for impl in a.impls:
                    if (method, impl, seed) in done or (impl in CONTROLS and CONTROLS[impl][0] != method):
                        continue
                    if impl in ("eae", "eae_rawstart"):
                        net, wall, epochs_s = train_ours(a, method, seed, workdir, raw_start=impl == "eae_rawstart")
                    else:
                        net, wall = train_art(a, method, seed, x_art, y_art, s.mean, s.std, clip=impl == "art")
                        epochs_s = wall
                    t0 = time.perf_counter()
                    row = {"method": method, "impl": impl, "seed": seed, "train_wall_seconds": wall,
                           "train_epoch_seconds": epochs_s, **evaluate_net(a, net, test_x, test_y)}
                    row["eval_wall_seconds"] = time.perf_counter() - t0
                    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}),
                          flush=True)
                    doc["runs"].append(row)
                    if not a.pilot:
                        write(out, doc)
    if not a.pilot:
        write(out, doc)
        print((out / "training_equivalence.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
