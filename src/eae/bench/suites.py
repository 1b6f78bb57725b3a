"""Benchmark suites: which runs, with which settings, evaluated how.

Every method is trained by the same loop on the same device-resident data, with the
same schedule and precision, and evaluated by the same code: the comparison is fair
by construction.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Entry:
    name: str  # the row in the table
    overrides: dict[str, Any]  # TrainConfig fields


@dataclass(frozen=True)
class BenchSuite:
    name: str
    kind: str  # "accuracy": train + evaluate; "speed": seconds per epoch; "budget": equal wall-clock
    base: dict[str, Any]
    entries: tuple[Entry, ...]
    aa_suite: str = "aa"  # AutoAttack part of the evaluation ("aa" or "aa-fast")
    eval_n: int | None = None  # test images for seed 0 (None: the full test set)
    aa_n: int | None = None  # AutoAttack on the first N of them for seed 0 (None: all eval_n)
    aa_n_other_seeds: int | None = 2000  # AutoAttack on the first N test images for seeds > 0
    aa_full_n: int = 0  # also full AutoAttack (aa) on the first N of the aa images, seed 0 (0: not run)
    quick_attacks: tuple[str, ...] | None = None  # the first evaluation's attacks (None: the quick suite)
    diagnostics: str = "full"
    diag_n: int = 1000
    speed_epochs: int = 3  # speed: passes per method (the first, with warm-up, is not counted)
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


METHODS = (
    Entry("standard", {"method": "standard"}),
    Entry("pgd10", {"method": "pgd", "pgd_steps": 10, "pgd_alpha": 2 / 255}),
    Entry("free8", {"method": "free", "free_replays": 8}),
    Entry("fgsm_rs", {"method": "fgsm_rs"}),
    Entry("n_fgsm", {"method": "n_fgsm"}),
    Entry("trades", {"method": "trades", "trades_beta": 6.0, "trades_steps": 10}),
    Entry("gradalign", {"method": "gradalign"}),  # FGSM + gradient alignment (double backprop)
    Entry("fgsm_pgi", {"method": "fgsm_pgi"}),  # prior-guided FGSM (MEP)
    Entry("eae", {"method": "eae"}),  # the default EAE: does not mask
    Entry("eae_paper", {"method": "eae_paper"}),  # the faithful reconstruction: masks (docs/eae.md)
)

CIFAR10_PREACT18 = {
    "dataset": "cifar10", "arch": "preact_resnet18", "epochs": 15, "batch_size": 512, "eps": 8 / 255,
    "lr_schedule": "onecycle", "lr_max": 0.2, "momentum": 0.9, "weight_decay": 5e-4,
}

SMOKE_BASE = {
    "dataset": "cifar10", "arch": "resnet_small", "train_subset": 1000, "val_size": 200, "epochs": 2,
    "batch_size": 128, "eps": 8 / 255, "lr_max": 0.2, "val_attack_steps": 2,
}


def _smoke_entries() -> tuple[Entry, ...]:
    out = []
    for e in METHODS:
        o = dict(e.overrides)
        if o["method"] == "free":
            o["free_replays"] = 2  # 2 epochs -> 1 pass of 2 replays
        if o["method"] in ("pgd", "trades"):
            o[f"{o['method']}_steps"] = 3
        out.append(Entry(e.name, o))
    return tuple(out)


def _eae(name: str, **overrides: Any) -> Entry:
    # One knob at a time on the faithful reconstruction (eae_paper: clean base, lambda 1);
    # per-epoch aa-fast on 200 validation images: how robustness evolves, not just CE/CW-PGD.
    return Entry(name, {"method": "eae_paper", "val_aa_n": 200, **overrides})


# The EAE ablation: which knob drives the masking of the reconstruction, and which remedy removes it.
# Entries with eae_lambda = 0 are the input-space adversary alone (the same cheap schedule
# without the latent term): the control that says what the EAE term itself adds.
EAE_ABLATION = (
    Entry("standard", {"method": "standard"}),
    Entry("fgsm_rs", {"method": "fgsm_rs", "val_aa_n": 200}),
    Entry("n_fgsm", {"method": "n_fgsm", "val_aa_n": 200}),
    Entry("gradalign", {"method": "gradalign", "val_aa_n": 200}),
    Entry("fgsm_pgi", {"method": "fgsm_pgi", "val_aa_n": 200}),
    _eae("eae_paper"),  # the reconstruction (docs/eae.md)
    _eae("eae_eta0.1", eae_eta=0.1),
    _eae("eae_q0.25", eae_q=0.25),
    _eae("eae_lambda0.5", eae_lambda=0.5),
    _eae("eae_warmup", eae_warmup_epochs=5),  # a third of the run
    _eae("eae_logits", eae_latent="logits"),
    _eae("eae_cosine16", head="cosine", head_scale=16.0),
    _eae("eae_logitpen", eae_logit_penalty=1e-3),
    _eae("eae_relative0.1", eae_budget="relative", eae_rel=0.1),
    _eae("eae_temp4", eae_temperature=4.0),
    _eae("eae_on_fgsm_rs", eae_base="fgsm_rs"),
    _eae("eae_on_n_fgsm", eae_base="n_fgsm"),
    _eae("eae0.1_on_n_fgsm", eae_base="n_fgsm", eae_lambda=0.1),
    _eae("eae_on_fgsm_rs_half", eae_base="fgsm_rs", eae_base_frac=0.5),
    _eae("eae_on_fgsm_rs_every4", eae_base="fgsm_rs", eae_base_every=4),
    # cheaper input gradients (half the attack passes, or fewer), with and without the EAE term
    _eae("n_fgsm_half", eae_base="n_fgsm", eae_base_frac=0.5, eae_lambda=0.0),
    _eae("eae0.1_on_n_fgsm_half", eae_base="n_fgsm", eae_base_frac=0.5, eae_lambda=0.1),
    _eae("n_fgsm_every2", eae_base="n_fgsm", eae_base_every=2, eae_lambda=0.0),
    _eae("eae0.1_on_n_fgsm_every2", eae_base="n_fgsm", eae_base_every=2, eae_lambda=0.1),
    _eae("n_fgsm_lowres2", eae_base="n_fgsm", eae_base_downsample=2, eae_lambda=0.0),
    _eae("eae0.1_on_n_fgsm_lowres2", eae_base="n_fgsm", eae_base_downsample=2, eae_lambda=0.1),
    # the fixes for catastrophic overfitting users compare against, with the EAE term on top
    _eae("eae0.1_on_gradalign", eae_base="gradalign", eae_lambda=0.1),
    _eae("eae0.1_on_fgsm_pgi", eae_base="fgsm_pgi", eae_lambda=0.1),
    # the input gradient for free: Free-AT's carried perturbation, 4 replays per minibatch
    _eae("free4", eae_base="free", free_replays=4, eae_lambda=0.0),
    _eae("eae0.1_on_free4", eae_base="free", free_replays=4, eae_lambda=0.1),
)

# The same ablation at a size a 2-core CPU finishes in about an hour: a pipeline check and a
# first look, not a result (a 0.3M-parameter network for 5 epochs on 10,000 images).
CPU_ABLATION_BASE = {
    "dataset": "cifar10", "arch": "resnet_small", "train_subset": 10000, "val_size": 500, "epochs": 5,
    "batch_size": 128, "eps": 8 / 255, "lr_max": 0.2, "val_attack_steps": 5,
}


def _cpu_sized(entries: tuple[Entry, ...]) -> tuple[Entry, ...]:
    out = []
    for e in entries:
        o = dict(e.overrides)
        if "val_aa_n" in o:
            # per-epoch aa-fast for the diagnosis of the reconstruction's knobs only: on 2 cores
            # it costs more than the training itself
            diagnosis = o["method"] == "eae_paper" and "eae_base" not in o
            o["val_aa_n"] = 100 if diagnosis else 0
        if "eae_warmup_epochs" in o:
            o["eae_warmup_epochs"] = 2  # a third of the run, as 5 of 15 epochs on the GPU
        out.append(Entry(e.name, o))
    return tuple(out)


# The `cifar10` recipe unchanged, with an evaluation a 2-core CPU finishes, in the order the
# rows are wanted: the published anchor first, then the default and its control, the cheap
# candidate, the baseline every time ratio is taken against, and the reconstruction.
# Validation every 3rd epoch (and after the last): fp32 attacks on 1,000 held-out images cost
# half a training epoch on a CPU; validation does not change what is trained.
CPU_REAL_SCALE = (
    Entry("fgsm_rs", {"method": "fgsm_rs"}),
    Entry("eae", {"method": "eae"}),
    Entry("n_fgsm", {"method": "n_fgsm"}),
    Entry("eae0.1_on_n_fgsm_half", {"method": "eae", "eae_base": "n_fgsm", "eae_base_frac": 0.5,
                                     "eae_lambda": 0.1}),
    Entry("standard", {"method": "standard"}),
    Entry("eae_paper", {"method": "eae_paper"}),
)

# bf16 autocast against fp32 training at CPU size: the same runs but for the precision.
PRECISION_PARITY = tuple(Entry(f"{m}_{p}", {"method": m, "precision": p}) for m in ("fgsm_rs", "eae")
                         for p in ("fp32", "bf16"))

BENCH_SUITES = {
    "cifar10": BenchSuite(
        "cifar10", "accuracy", CIFAR10_PREACT18, METHODS,
        description="PreActResNet-18, CIFAR-10, eps 8/255, 15 epochs (Free: 2 passes x 8 replays), batch 512, "
                    "one-cycle LR; clean, FGSM, PGD-20, CW-20 and AutoAttack"),
    "cifar10-budget": BenchSuite(
        "cifar10-budget", "budget", CIFAR10_PREACT18, METHODS,
        description="every method trained for the same wall-clock budget: K x the time of 15 standard epochs "
                    "on this device (epochs from the speed suite)"),
    "speed": BenchSuite(
        "speed", "speed", {**CIFAR10_PREACT18, "val_attack_steps": 0}, METHODS,
        description="seconds per epoch (per epoch-equivalent for Free) of every method, one process, one device"),
    "eae-ablation": BenchSuite(
        "eae-ablation", "accuracy", CIFAR10_PREACT18, EAE_ABLATION, aa_n=1000,
        description="the EAE reconstruction, one knob at a time, and the remedies (cosine head, "
                    "logit penalty, relative budget, temperature, EAE on a cheap input-space adversary, with "
                    "lambda = 0 controls); PreActResNet-18, 15 epochs; CE/CW-PGD-20 on the full test set, "
                    "AutoAttack on the first 1,000 test images (a screen: the leaders go through `cifar10` "
                    "with 3 seeds and the full test set)"),
    "eae-ablation-cpu": BenchSuite(
        "eae-ablation-cpu", "accuracy", CPU_ABLATION_BASE, _cpu_sized(EAE_ABLATION), aa_suite="aa-fast",
        eval_n=1000, aa_n=500, aa_n_other_seeds=500, diagnostics="cheap", diag_n=500,
        description="eae-ablation at CPU size: the entries of eae-ablation with resnet_small, 10,000 CIFAR-10 "
                    "images, 5 epochs, batch 128; CE/CW-PGD-20 on the first 1,000 test images, aa-fast on "
                    "the first 500 (SUBSETS): not a result"),
    "cifar10-cpu": BenchSuite(
        "cifar10-cpu", "accuracy", {**CIFAR10_PREACT18, "val_every": 3}, CPU_REAL_SCALE, aa_suite="aa-fast",
        aa_n=1000, aa_n_other_seeds=1000, aa_full_n=200, quick_attacks=("clean", "cw20"), diag_n=500,
        description="the cifar10 suite's training recipe (PreActResNet-18, 49,000 CIFAR-10 images, 15 epochs, "
                    "batch 512, one-cycle LR 0.2, eps 8/255) with an evaluation a CPU finishes: clean and CW-20 "
                    "on the full test set, aa-fast on the first 1,000 test images, full aa on the first 200"),
    "precision-parity-cpu": BenchSuite(
        "precision-parity-cpu", "accuracy", CPU_ABLATION_BASE, PRECISION_PARITY, aa_suite="aa-fast",
        eval_n=1000, aa_n=500, aa_n_other_seeds=500, diagnostics="cheap", diag_n=500,
        description="fp32 against bf16-autocast training at CPU size (resnet_small, 10,000 CIFAR-10 images, "
                    "5 epochs, batch 128), fgsm_rs and eae; clean, PGD-20 and CW-20 on the first 1,000 test "
                    "images, aa-fast on the first 500 (SUBSETS); run with --seeds 3"),
    "smoke": BenchSuite(
        "smoke", "accuracy", SMOKE_BASE, _smoke_entries(), aa_suite="aa-fast", eval_n=100, aa_n_other_seeds=100,
        diagnostics="cheap", diag_n=100,
        description="CPU-sized check of the whole pipeline (resnet_small, 1,000 CIFAR-10 images, 2 epochs; "
                    "100 test images, aa-fast): not a result"),
}


def get_bench_suite(name: str) -> BenchSuite:
    try:
        return BENCH_SUITES[name]
    except KeyError:
        raise ValueError(f"unknown bench suite {name!r}; available: {', '.join(BENCH_SUITES)}") from None
