"""``eae bench headline``: the project's claims checked on one GPU in one command.

In one process, under a wall-clock budget (default 510 s: the whole command in under 9
minutes on an H100-class GPU), most valuable work first:

1. smoke: the CUDA paths on a few steps (bf16 autocast, channels_last, fp32, CUDA-event
   timing, the non-finite guard in both modes, checkpoint and bit-exact resume);
2. speed: seconds per epoch of every method on CIFAR-sized synthetic data, steady state;
3. for eae, fgsm_rs, eae_paper, standard: 15 epochs of PreActResNet-18 on CIFAR-10, CW-20
   (with clean accuracy) on the full test set, AutoAttack with the gradient-masking
   verdict on the first 1,000 test images (a subset, labelled as one);
4. smoke of ``torch.compile`` (an opt-in feature: last).

A part that would not fit in what is left of the budget, or whose run failed, is
skipped with a note in the report; nothing is estimated into the results.
``--tiny`` runs the same path on a small network and a CIFAR-10 slice (CPU, minutes).
Writes ``DIR/headline.json``, ``DIR/REPORT.md`` and ``DIR/pareto.png``.
"""
from __future__ import annotations

import contextlib
import math
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import load
from ..config import TrainConfig, own_settings
from ..data import DeviceLoader, load_test_set
from ..evaluation import evaluate
from ..trainer import train
from ..errors import ConfigError, OutputRefused
from ..outputs import OutputFolder, check_folder
from ..utils import atomic_write_json, device_name, resolve_device
from .runner import provenance
from .budget import Outcome, Task, run_tasks
from .headline_report import write_headline_report
from .suites import CIFAR10_PREACT18

ACCURACY_METHODS = ("eae", "fgsm_rs", "eae_paper", "standard")  # in order of value
SPEED_METHODS = ("standard", "fgsm_rs", "n_fgsm", "eae", "eae_paper", "free", "pgd")

# Planning figures (H100, PreActResNet-18, batch 512, bf16, channels_last; the project's
# measurements and the reference AutoAttack's time, see benchmarks/README.md): they size
# the parts before anything is measured; measured times replace them as the run goes.
MAX_BUDGET_S = 7 * 24 * 3600  # a week: the longest wall-clock budget a plan is printed against
PLAN_STANDARD_EPOCH_S = 0.91
PLAN_COST = {"standard": 1.0, "eae_paper": 1.05, "fgsm_rs": 2.0, "n_fgsm": 2.0, "eae": 2.1, "free": 1.1,
             "pgd": 9.3}
PLAN_FP32 = 3.0  # an fp32 attack pass against a bf16 training pass
PLAN_AA_S_PER_1000 = 85.0  # AutoAttack standard, 1,000 images of a robust (45%) model
PLAN_SETUP_S = 3.0  # model build, data to the device, files, per run
PLAN_PASSES = 4  # passes over the speed set per method (the first not timed), unless Scale says otherwise
# CW-20 accuracy expected before it is measured (it sizes AutoAttack, which spends its time on
# the points still standing): the H100 measurements of FGSM-RS and of eae_paper; eae as FGSM-RS
PLAN_CW = {"eae": 0.45, "fgsm_rs": 0.45, "eae_paper": 0.042, "standard": 0.0}


@dataclass(frozen=True)
class Scale:
    """Sizes of every part: the GPU headline, or ``--tiny`` for a CPU."""
    name: str
    run: dict[str, Any]  # TrainConfig fields of the accuracy runs
    aa_n: int  # AutoAttack on the first aa_n test images
    aa_suite: str  # aa; --tiny: aa-fast (Square's 5,000 queries take minutes on a CPU)
    cw_n: int | None  # CW-20 on the first cw_n test images (None: all)
    diag_n: int
    speed: dict[str, Any]  # TrainConfig fields of the speed runs
    speed_passes: dict[str, int]  # passes over the speed set (the first one is not timed)
    smoke: dict[str, Any]
    smoke_s: float  # planned seconds of the smoke part (compile: twice that)
    speed_step_s: float  # planned seconds of one standard step of the speed runs (before any is measured)


GPU = Scale(
    "gpu", {**CIFAR10_PREACT18, "val_every": 5, "val_attack_steps": 10}, aa_n=1000, aa_suite="aa", cw_n=None, diag_n=500,
    speed={"dataset": "synthetic", "arch": "preact_resnet18", "batch_size": 512, "synthetic_train_size": 40 * 512 + 256,
           "val_size": 256, "val_attack_steps": 0},
    speed_passes={"free": 2, "pgd": 2}, smoke={"arch": "resnet_small", "synthetic_train_size": 512, "val_size": 64,
                                               "batch_size": 64, "epochs": 2, "val_attack_steps": 2},
    smoke_s=25.0, speed_step_s=PLAN_STANDARD_EPOCH_S / (49000 / 512))
TINY = Scale(
    "tiny", {"dataset": "cifar10", "arch": "resnet_small", "train_subset": 1024, "val_size": 200, "epochs": 2,
             "batch_size": 128, "eps": 8 / 255, "lr_max": 0.2, "val_every": 1, "val_attack_steps": 3},
    aa_n=48, aa_suite="aa-fast", cw_n=400, diag_n=32,
    speed={"dataset": "synthetic", "arch": "resnet_small", "batch_size": 64, "synthetic_train_size": 5 * 64,
           "val_size": 64, "val_attack_steps": 0, "pgd_steps": 3},
    speed_passes={"free": 2, "pgd": 2}, smoke={"arch": "resnet_small", "synthetic_train_size": 256, "val_size": 64,
                                               "batch_size": 64, "epochs": 2, "val_attack_steps": 2},
    smoke_s=30.0, speed_step_s=0.05)


@dataclass
class Planner:
    """Seconds each part should take: planning figures first, measurements as they come
    (the speed part's step time; the first CW-20's seconds per attack pass; for training
    and AutoAttack, measured over planned)."""
    scale: Scale
    speed_step_s: float  # one standard training step of the speed runs
    cost: dict[str, float] = field(default_factory=lambda: dict(PLAN_COST))
    cw_acc: dict[str, float] = field(default_factory=dict)
    pass_s: float | None = None  # one fp32 attack pass (forward + backward) of one image, once measured
    factor: dict[str, float] = field(default_factory=lambda: {"train": 1.0, "aa": 1.0})

    def _steps_per_epoch(self) -> int:
        r = self.scale.run
        n = (r.get("train_subset") or 50000 - r.get("val_size", 1000))
        return max(1, math.ceil(n / r["batch_size"]))

    def _std_epoch_s(self) -> float:
        return self.speed_step_s * self._steps_per_epoch()

    def _pass_s(self) -> float:
        if self.pass_s is not None:
            return self.pass_s
        return PLAN_FP32 * self._std_epoch_s() / (self._steps_per_epoch() * self.scale.run["batch_size"])

    def speed(self) -> float:
        sp = self.scale.speed
        steps = (sp["synthetic_train_size"] - sp["val_size"]) // sp["batch_size"]
        replays = {"free": 8}
        return sum(self.speed_step_s * self.cost[m] * steps * replays.get(m, 1)
                   * self.scale.speed_passes.get(m, PLAN_PASSES) + PLAN_SETUP_S for m in SPEED_METHODS)

    def train(self, method: str) -> float:
        r = self.scale.run
        validations = math.ceil(r["epochs"] / r.get("val_every", 1))
        val = self._pass_s() * r.get("val_size", 1000) * (1 + 2 * r.get("val_attack_steps", 10))
        base = r["epochs"] * self.cost[method] * self._std_epoch_s() + validations * val + PLAN_SETUP_S
        return base * self.factor["train"]

    def cw(self, n: int) -> float:
        return self._pass_s() * n * 21 + 1.0

    def aa(self, method: str, n: int) -> float:
        """AutoAttack at the reference's pace, scaled by this device's attack pass against
        the H100's and by the share of points it still has to attack; plus diagnostics."""
        robust = self.cw_acc.get(method, 0.45)
        h100_pass = PLAN_FP32 * PLAN_STANDARD_EPOCH_S / 49000
        aa = PLAN_AA_S_PER_1000 * n / 1000 * self._pass_s() / h100_pass * (0.1 + 0.9 * min(1.0, robust / 0.45))
        diagnostics = self._pass_s() * min(n, self.scale.diag_n) * 290
        return (aa + diagnostics) * self.factor["aa"]

    def observe_speed(self, rows: list[dict[str, Any]]) -> None:
        std = next(r for r in rows if r["method"] == "standard")
        self.speed_step_s = std["seconds_per_step"]
        self.cost.update({r["method"]: r["x_standard"] for r in rows})

    def observe(self, kind: str, planned: float, took: float, images: int = 0) -> None:
        """Later parts of this kind are planned from what this one took."""
        if kind == "cw":
            self.pass_s = max(took - 1.0, 1e-3) / (images * 21)
        elif planned > 0:
            self.factor[kind] *= min(max(took / planned, 0.1), 10.0)


def plan_table(scale: Scale) -> list[tuple[str, float]]:
    """Every part and its planned seconds, from the planning figures alone (what
    ``--dry-run`` prints; benchmarks/README.md shows it for the GPU)."""
    p = Planner(scale, scale.speed_step_s)
    rows = [("smoke", scale.smoke_s), ("speed", p.speed())]
    for m in ACCURACY_METHODS:
        p.cw_acc[m] = PLAN_CW[m]
        rows += [(f"train:{m}", p.train(m)), (f"cw20:{m}", p.cw(scale.cw_n or 10000)), (f"aa:{m}", p.aa(m, scale.aa_n))]
    return rows + [("smoke:compile", 1.5 * scale.smoke_s)]


class Headline:
    """The parts of the headline, sharing the output folder, the device and the planner."""

    def __init__(self, out: Path, scale: Scale, device: str, data_dir: str | None, quiet: bool):
        self.out, self.scale, self.device, self.data_dir, self.quiet = out, scale, device, data_dir, quiet
        self.dev = resolve_device(device)
        self.plan = Planner(scale, scale.speed_step_s)
        self.runs: dict[str, dict[str, Any]] = {}
        self.speed_rows: list[dict[str, Any]] = []
        self.smoke_rows: list[dict[str, Any]] = []

    def log(self, msg: str) -> None:
        if not self.quiet:
            print(msg, flush=True)

    def config(self, out: Path, **fields: Any) -> TrainConfig:
        return TrainConfig.from_dict({"seed": 0, "device": self.device, **self._data_dir(fields), "out": str(out),
                                      **fields})

    def _data_dir(self, fields: dict[str, Any]) -> dict[str, Any]:
        """--data-dir for the parts that read CIFAR-10; the tiny parts' synthetic data has none."""
        return {} if fields.get("dataset") == "synthetic" else {"data_dir": self.data_dir}

    # ------------------------------------------------------------------ parts
    def tasks(self) -> list[Task]:
        plan, s = self.plan, self.scale
        tasks = [Task("smoke", lambda: s.smoke_s, self.smoke, what="bf16, channels_last, fp32, CUDA events, "
                                                                   "non-finite guard, checkpoint and resume"),
                 Task("speed", plan.speed, self.speed, what="seconds per epoch of every method")]
        for m in ACCURACY_METHODS:
            n_cw = s.cw_n or 10000
            tasks += [Task(f"train:{m}", lambda m=m: plan.train(m), lambda m=m: self.train_run(m)),
                      Task(f"cw20:{m}", lambda n=n_cw: plan.cw(n), lambda m=m: self.cw20(m), needs=(f"train:{m}",)),
                      Task(f"aa:{m}", lambda m=m: plan.aa(m, s.aa_n), lambda m=m: self.aa(m),
                           needs=(f"train:{m}",))]
        tasks.append(Task("smoke:compile", lambda: 1.5 * s.smoke_s, self.smoke_compile, what="torch.compile"))
        return tasks

    def smoke(self) -> list[dict[str, Any]]:
        from .headline_smoke import smoke_checks

        self.smoke_rows += smoke_checks(self)
        _raise_if_failed(self.smoke_rows)
        return self.smoke_rows

    def smoke_compile(self) -> list[dict[str, Any]]:
        from .headline_smoke import compile_check

        rows = compile_check(self)
        self.smoke_rows += rows
        _raise_if_failed(rows)
        return rows

    def speed(self) -> list[dict[str, Any]]:
        for m in SPEED_METHODS:
            passes = self.scale.speed_passes.get(m, PLAN_PASSES)
            cfg = self.config(self.out / "speed" / m, method=m, **own_settings(self.scale.speed, m))
            cfg = cfg.replace(epochs=passes * _replays(cfg), val_every=passes * _replays(cfg))
            self.log(f"[speed] {m}: {passes} passes of {len_steps(cfg)} steps x {_replays(cfg)} replays")
            res = train(cfg, quiet=True)
            secs = [r["seconds"] for r in res.metrics][1:]  # the first pass carries the warm-up
            steps = len_steps(cfg) * _replays(cfg)
            self.speed_rows.append({"method": m, "passes_timed": len(secs), "steps_per_pass": steps,
                                    "seconds_per_step": statistics.median(secs) / steps, "pass_seconds": secs})
        std = next(r for r in self.speed_rows if r["method"] == "standard")["seconds_per_step"]
        epoch_steps = 49000 / 512  # one CIFAR-10 epoch (1,000 images held out) at batch 512
        for r in self.speed_rows:
            r["x_standard"] = r["seconds_per_step"] / std
            r["seconds_per_cifar10_epoch"] = r["seconds_per_step"] * epoch_steps
        self.plan.observe_speed(self.speed_rows)
        return self.speed_rows

    def train_run(self, method: str) -> dict[str, Any]:
        cfg = self.config(self.out / "runs" / method, method=method, **self.scale.run)
        planned, t = self.plan.train(method), time.perf_counter()
        res = train(cfg, quiet=self.quiet)
        self.plan.observe("train", planned, time.perf_counter() - t)
        last = res.final
        self.runs[method] = {"method": method, "epochs": cfg.epochs, "train_seconds": res.train_seconds,
                             "val": {k: last[k] for k in ("val_clean", "val_pgd", "val_cw", "val_robust")
                                     if k in last}, "logit_norm": last.get("logit_norm")}
        return self.runs[method]

    def _model_and_test(self, method: str, n: int | None):
        run = self.out / "runs" / method
        cfg = TrainConfig.from_dict({**self.scale.run, **self._data_dir(self.scale.run), "out": str(run)})
        x, y = load_test_set(cfg)
        n = min(n or len(y), len(y))
        return load(run, device=self.dev), x[:n], y[:n], len(y), cfg.eps

    def cw20(self, method: str) -> dict[str, Any]:
        model, x, y, size, eps = self._model_and_test(method, self.scale.cw_n)
        t = time.perf_counter()
        r = evaluate(model, x, y, ["clean", "cw20"], eps, device=self.dev, diagnostics="off", test_size=size,
                     progress=not self.quiet)
        self.plan.observe("cw", 0.0, time.perf_counter() - t, images=len(y))
        self.plan.cw_acc[method] = r.accuracy["cw20"]
        self.runs[method].update(clean=r.clean_accuracy, cw20=r.accuracy["cw20"], cw_n=r.n, test_size=size,
                                 cw_correct=r.correct["worst_case"])
        return {"clean": r.clean_accuracy, "cw20": r.accuracy["cw20"], "n": r.n}

    def aa(self, method: str) -> dict[str, Any]:
        model, x, y, size, eps = self._model_and_test(method, self.scale.aa_n)
        planned, t = self.plan.aa(method, len(y)), time.perf_counter()
        r = evaluate(model, x, y, suite=self.scale.aa_suite, eps=eps, device=self.dev, diagnostics="full",
                     diag_n=self.scale.diag_n, test_size=size, progress=not self.quiet)
        self.plan.observe("aa", planned, time.perf_counter() - t)
        worst = r.correct["worst_case"]
        cw = self.runs[method].get("cw_correct")
        if cw is not None:  # the worst case per image of the AA subset: AA and CW-20 on the same images
            worst = worst & cw[:len(worst)]
            self.runs[method]["cw20_on_aa_subset"] = cw[:len(worst)].float().mean().item()
        self.runs[method].update(aa=r.robust_accuracy, aa_n=r.n, aa_label=r.label, aa_clean=r.clean_accuracy,
                                 aa_per_attack={k: v["accuracy"] for k, v in r.per_attack.items()},
                                 worst_case=worst.float().mean().item(), verdict=r.verdict, evidence=r.evidence,
                                 aa_seconds=r.seconds, test_size=size)
        atomic_write_json(self.out / "runs" / method / "headline_aa.json", r.to_dict())
        return {"aa": r.robust_accuracy, "verdict": r.verdict}


def len_steps(cfg: TrainConfig) -> int:
    return (cfg.synthetic_train_size - cfg.val_size) // cfg.batch_size or 1


def _replays(cfg: TrainConfig) -> int:
    from ..methods import create_method

    return create_method(cfg).replays


def _raise_if_failed(rows: list[dict[str, Any]]) -> None:
    bad = [r for r in rows if r["status"] != "ok"]
    if bad:
        raise RuntimeError("smoke failed: " + "; ".join(f"{r['check']}: {r['detail']}" for r in bad))


def run_headline(out: str | Path, *, budget: float | None = 510.0, tiny: bool = False, device: str = "auto",
                 data_dir: str | None = None, quiet: bool = False) -> dict[str, Any]:
    """Run the headline into the new folder ``out``; return what headline.json holds."""
    t0 = time.perf_counter()
    out = Path(out)
    if out.is_dir() and any(out.iterdir()):
        raise OutputRefused(f"{out} exists and is not empty: the headline writes into a new folder; choose "
                            "another out", cli=f"{out} exists and is not empty: the headline writes into a new "
                                                "folder; choose another --out")
    check_folder(out, "headline")  # a file, a dangling link
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float))
                               or not 1 <= budget <= MAX_BUDGET_S):
        raise ConfigError(f"budget must be seconds in 1..{MAX_BUDGET_S:,} (a week), got {budget!r}",
                          cli=f"--budget must be seconds in 1..{MAX_BUDGET_S:,} (a week), got {budget!r}",
                          field="budget")
    # cuBLAS reads its workspace setting when its first handle is made: set it before any
    # CUDA work, or the smoke's bit-exact resume check could fail for want of it
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    OutputFolder(out, "headline").claim()
    h = Headline(out, TINY if tiny else GPU, device, data_dir, quiet)
    h.log(f"eae bench headline ({h.scale.name}) on {device_name(h.dev)}; budget "
          + (f"{budget:.0f} s" if budget else "none"))
    outcomes = run_tasks(h.tasks(), budget, log=h.log, start=t0)
    results = _results(h, outcomes, budget, time.perf_counter() - t0)
    atomic_write_json(out / "headline.json", results)
    write_headline_report(out, results)
    h.log(f"report: {out / 'REPORT.md'}")
    return results


def _results(h: Headline, outcomes: list[Outcome], budget, wall: float) -> dict[str, Any]:
    runs = [{k: v for k, v in r.items() if k != "cw_correct"} for r in h.runs.values()]
    std = next((r["train_seconds"] for r in runs if r["method"] == "standard"), None)
    for r in runs:
        r["x_standard"] = r["train_seconds"] / std if std else None
    return {"meta": _meta(h, budget, wall), "parts": [o.to_dict() for o in outcomes], "smoke": h.smoke_rows,
            "speed": h.speed_rows, "runs": runs,
            "skipped": [o.to_dict() for o in outcomes if o.status != "done"]}


def _meta(h: Headline, budget, wall: float) -> dict[str, Any]:
    cuda = h.dev.type == "cuda"
    return {"scale": h.scale.name, "device": device_name(h.dev), **provenance(),
            "cuda": torch.version.cuda if cuda else None,
            "cudnn": torch.backends.cudnn.version() if cuda else None, "budget_s": budget, "wall_seconds": round(wall, 1),
            "run_config": h.scale.run, "aa_n": h.scale.aa_n, "cw_n": h.scale.cw_n, "diag_n": h.scale.diag_n}


@contextlib.contextmanager
def poisoned_batch(at: int = 1):
    """A NaN pixel in batch ``at`` of every epoch (the non-finite guard's smoke test)."""
    real = DeviceLoader.__iter__

    def poisoned(self):
        for i, (x, y) in enumerate(real(self)):
            if i == at:
                x = x.clone().float()
                x[0, 0, 0, 0] = float("nan")
            yield x, y

    DeviceLoader.__iter__ = poisoned
    try:
        yield
    finally:
        DeviceLoader.__iter__ = real


__all__ = ["run_headline", "Planner", "Scale", "GPU", "TINY", "poisoned_batch"]
