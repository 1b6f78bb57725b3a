"""One frozen dataclass describes a training run.

The CLI flags and the TOML presets map onto its fields 1:1 (``eae_eta`` is
``--eae-eta`` on the command line and ``eae_eta = 0.02`` in TOML), and the
resolved config is written as ``config.json`` beside every result, so a run can
always be rebuilt from its directory.

Perturbation sizes are floats in pixel units of images in [0, 1]. Anywhere a
float is read from text (CLI, TOML strings) a fraction such as ``8/255`` is
accepted.
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import datetime
import json
import math
import numbers
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Mapping

from .errors import ConfigError


def _f(default: Any, help: str, **meta: Any) -> Any:
    return field(default=default, metadata={"help": help, **meta})


LR_SCHEDULES = ("onecycle", "piecewise", "constant")
PRECISIONS = ("auto", "bf16", "fp32")
EAE_NORMS = ("l2", "linf")
EAE_SEED_RULES = ("quantile", "confidence", "mahalanobis", "all")
EAE_LATENTS = ("penultimate", "logits")
EAE_BUDGETS = ("minimal", "relative")
EAE_BASES = ("clean", "fgsm_rs", "n_fgsm", "free", "gradalign", "fgsm_pgi")
DATASETS = ("cifar10", "cifar100", "svhn", "tiny-imagenet", "synthetic", "imagefolder")
CIFAR100_LABELS = ("fine", "coarse")
IMAGE_SIDES = {"cifar10": 32, "cifar100": 32, "svhn": 32, "tiny-imagenet": 64}  # of the array datasets
BAD_IMAGES = ("error", "skip")
NONFINITE = ("stop", "skip")
OVERFIT_ACTIONS = ("warn", "stop", "rollback", "rollback_lower_step")
FGSM_INITS = ("uniform", "zero")
PGI_INITS = ("mep", "ep")
LINF_ONLY = ("gradalign", "fgsm_pgi")  # methods whose papers and code define no l2 form
NORMS = ("linf", "l2")
EPS_HELP = "8/255 is 0.031 for linf; 0.5 is the usual l2 radius on CIFAR-10"


def norm_defaults(norm: str, eps: float) -> dict[str, float]:
    """Step sizes of the multi-step attacks when not given: 2/255 under L-inf (the usual
    choice at eps = 8/255), eps / 4 under L2 (2.5 eps over 10 steps, as in Madry et al.)."""
    step = 2 / 255 if norm != "l2" else eps / 4
    return {"pgd_alpha": step, "trades_alpha": step}

# Defaults that depend on the method (fields declared with by_method=True and None as
# their dataclass default; a value given in a preset, a flag or from_dict always wins).
# ``eae_paper`` is the paper's EAE as reconstructed (docs/eae.md), which masks gradients
# on a GPU-scale run; ``eae``, the default EAE, is the best variant that does not mask
# (docs/eae.md, "what the default does"). Every other method gets the ``eae`` values,
# which it ignores.
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "eae_paper": {"eae_base": "clean", "eae_lambda": 1.0, "eae_base_frac": 1.0, "eae_base_every": 1,
                  "eae_base_downsample": 1},
    "eae": {"eae_base": "n_fgsm", "eae_lambda": 0.1, "eae_base_frac": 1.0, "eae_base_every": 1,
            "eae_base_downsample": 1},
}


# The settings each method reads: one given for a run whose method does not read it would be
# recorded in config.json and never act, so it is refused (as a dataset's options are).
METHOD_FIELDS: dict[str, tuple[str, ...]] = {
    "fgsm_rs": ("fgsm_alpha", "fgsm_init"),
    "pgd": ("pgd_steps", "pgd_alpha"),
    "free": ("free_replays",),
    "trades": ("trades_beta", "trades_steps", "trades_alpha"),
    "gradalign": ("fgsm_alpha", "gradalign_lambda", "gradalign_init"),
    "fgsm_pgi": ("pgi_init", "pgi_alpha", "pgi_lambda", "pgi_momentum", "pgi_smoothing", "pgi_reset_every"),
    "n_fgsm": ("nfgsm_noise", "nfgsm_alpha"),
}
# what the EAE methods read of their base's settings (their fgsm_rs base always starts uniform)
EAE_BASE_FIELDS: dict[str, tuple[str, ...]] = {**{b: METHOD_FIELDS.get(b, ()) for b in EAE_BASES},
                                                  "fgsm_rs": ("fgsm_alpha",)}
# methods whose training attack has a step the overfitting guard can lower (rollback_lower_step)
SCALABLE_STEP_METHODS = ("fgsm_rs", "n_fgsm", "pgd", "free", "gradalign", "fgsm_pgi")
# EAE settings that act under one choice of another: (field, the choosing field, the choices)
EAE_CHOICE_FIELDS = (("eae_q", "eae_seed_rule", ("quantile", "mahalanobis")),
                     ("eae_conf_low", "eae_seed_rule", ("confidence",)),
                     ("eae_conf_high", "eae_seed_rule", ("confidence",)),
                     ("eae_maha_momentum", "eae_seed_rule", ("mahalanobis",)),
                     ("eae_eta", "eae_budget", ("minimal",)),
                     ("eae_rel", "eae_budget", ("relative",)))


# Set while a config recorded by a run (its config.json, a checkpoint) is rebuilt: a setting it
# never read was accepted by the version that trained it, and must not make the run unloadable.
_RECORDED: contextvars.ContextVar[bool] = contextvars.ContextVar("eae_recorded_config", default=False)


@contextlib.contextmanager
def _recorded(on: bool = True):
    token = _RECORDED.set(on)
    try:
        yield
    finally:
        _RECORDED.reset(token)


def own_settings(fields: dict[str, Any], method: str) -> dict[str, Any]:
    """``fields`` without the settings of methods other than ``method`` (a scale shared by the
    rows of every method, such as a bench's 3 PGD steps, applies to the methods that read it)."""
    others = {f for fs in METHOD_FIELDS.values() for f in fs} - set(METHOD_FIELDS.get(method, ()))
    return {k: v for k, v in fields.items() if k not in others}


def method_defaults(method: str) -> dict[str, Any]:
    """The values the by-method fields take for ``method`` when not given."""
    return METHOD_DEFAULTS.get(method, METHOD_DEFAULTS["eae"])


# Fields that say where and how a run executes, not what it computes: they may
# differ when a run is resumed (e.g. on another machine). bad_images too: an image that
# fails to decode mid-run stops it, and the advice is to resume with `skip`.
PLACEMENT_FIELDS = ("out", "device", "data_dir", "compile", "tensorboard", "workers", "bad_images")


@dataclass(frozen=True)
class TrainConfig:
    # --- run ---------------------------------------------------------------
    out: str = _f("runs/default", "run directory (config.json, metrics.jsonl, weights)")
    seed: int = _f(0, "random seed of the run (init, batch order, augmentation, attacks)")
    device: str = _f("auto", "auto | cpu | cuda | cuda:N")
    # --- data --------------------------------------------------------------
    dataset: str = _f("cifar10", "cifar10 | cifar100 | svhn | tiny-imagenet | synthetic | imagefolder "
                                 "(D/train/<class>/*, D/val/<class>/*)", choices=DATASETS)
    data_dir: str | None = _f(None, "cifar10, cifar100, svhn, tiny-imagenet: the folder holding the dataset's "
                                    "folder (cifar-10-batches-py, cifar-100-python, svhn, tiny-imagenet-200) or that "
                                    "folder itself (else $EAE_DATA_DIR, else ~/.cache/eae); imagefolder: the folder "
                                    "D holding train/ and val/")
    cifar100_labels: str = _f("fine", "cifar100: fine (100 classes) or coarse (the 20 superclasses)",
                              choices=CIFAR100_LABELS)
    svhn_extra: bool = _f(False, "svhn: add the 531,131 images of extra_32x32.mat to the training set")
    unverified_data: bool = _f(False, "cifar100, svhn, tiny-imagenet: use a copy that is not the published files "
                                      "(re-encoded, a subset, other labels), which is refused otherwise; "
                                      "dataset.json records what differs")
    image_size: int = _f(224, "imagefolder: side of the training crops (RandomResizedCrop) and test crops")
    workers: int = _f(8, "imagefolder: decoding processes per training process; tiny-imagenet: for its one decoding "
                         "(at most the cores the process may use)")
    bad_images: str = _f("error", "imagefolder: a non-image, unreadable or empty file or class folder stops "
                                  "the run (error) or is left out and counted (skip)", choices=BAD_IMAGES)
    val_size: int = _f(1000, "images held out of the training set for per-epoch validation")
    val_seed: int = _f(0, "seed of the (fixed) validation split")
    train_subset: int = _f(0, "train on the first N images of the (shuffled) training split; 0 = all")
    synthetic_train_size: int = _f(2048, "synthetic dataset: training images")
    synthetic_test_size: int = _f(512, "synthetic dataset: test images")
    synthetic_image_size: int = _f(32, "synthetic dataset: image side in pixels")
    augment: bool = _f(True, "random crop (pad 4) and horizontal flip (no flip on svhn: digits), on the device")
    # --- model -------------------------------------------------------------
    arch: str = _f("preact_resnet18", "architecture (see `eae list`)")
    head: str = _f("linear", "classifier head: linear, or cosine (normalised features and weights, fixed scale)",
                   choices=("linear", "cosine"))
    head_scale: float = _f(16.0, "cosine head: the fixed logit scale s")
    # --- optimisation ------------------------------------------------------
    epochs: int = _f(15, "training epochs")
    batch_size: int = _f(512, "minibatch size")
    lr_max: float = _f(0.2, "peak learning rate")
    lr_schedule: str = _f("onecycle", "onecycle (linear up then down) | piecewise | constant", choices=LR_SCHEDULES)
    lr_peak_frac: float = _f(0.4, "onecycle: fraction of training at which the LR peaks")
    lr_milestones: tuple[float, ...] = _f((0.5, 0.75), "piecewise: fractions of training where the LR drops")
    lr_gamma: float = _f(0.1, "piecewise: LR factor at each milestone")
    momentum: float = _f(0.9, "SGD momentum")
    nesterov: bool = _f(False, "Nesterov momentum")
    weight_decay: float = _f(5e-4, "SGD weight decay")
    # --- method ------------------------------------------------------------
    method: str = _f("standard", "training method (see `eae list`)")
    norm: str = _f("linf", "threat model of the input-space adversaries: linf or l2 (eps is then the L2 radius)",
                   choices=NORMS)
    eps: float = _f(8 / 255, "radius of the threat model in pixel units (8/255 for linf; e.g. 0.5 for l2)")
    eps_warmup_epochs: int = _f(0, "training attacks' eps, and their step sizes with it, rise linearly from 0 over the "
                                   "first N epochs, step by step (the SVHN recipe of GradAlign and N-FGSM: 5); "
                                   "validation and evaluation always use eps")
    fgsm_alpha: float | None = _f(None, "fgsm_rs: step size; default 1.25 * eps")
    fgsm_init: str = _f("uniform", "fgsm_rs: start of the step: uniform in the eps-ball (FGSM-RS), or zero "
                                   "(plain FGSM, prone to catastrophic overfitting)", choices=FGSM_INITS)
    pgd_steps: int = _f(10, "pgd: attack steps during training")
    pgd_alpha: float | None = _f(None, "pgd: attack step size; default 2/255 (linf) or eps / 4 (l2)")
    free_replays: int = _f(8, "free: replays m of each minibatch (passes over the data = ceil(epochs / m))")
    trades_beta: float = _f(6.0, "trades: weight of the KL robustness term")
    trades_steps: int = _f(10, "trades: steps of the KL inner maximisation")
    trades_alpha: float | None = _f(None, "trades: step size of the inner maximisation; default 2/255 (linf) "
                                          "or eps / 4 (l2)")
    gradalign_lambda: float = _f(0.2, "gradalign: weight of the gradient-alignment regulariser lambda (1 - cos); "
                                      "0.2 is the authors' value at eps 8/255")
    gradalign_init: str = _f("zero", "gradalign: start of its FGSM step: zero (the authors' runs) or uniform in "
                                     "the eps-ball", choices=FGSM_INITS)
    pgi_init: str = _f("mep", "fgsm_pgi: the prior carried to the next epoch: ep (this epoch's adversarial "
                              "perturbation) or mep (a step along a momentum of its gradients)", choices=PGI_INITS)
    pgi_alpha: float | None = _f(None, "fgsm_pgi: step size; default eps")
    pgi_lambda: float = _f(10.0, "fgsm_pgi: weight of the output-consistency term (MSE between the logits at the "
                                 "prior and at the adversarial point)")
    pgi_momentum: float = _f(0.3, "fgsm_pgi (mep): decay of the gradient momentum, in [0, 1]")
    pgi_smoothing: float = _f(0.6, "fgsm_pgi: label smoothing: the probability left on the true class (1 = none)")
    pgi_reset_every: int = _f(40, "fgsm_pgi: restart the priors every this many epochs")
    nfgsm_noise: float = _f(2.0, "n_fgsm: noise U(-k eps, k eps), k = this")
    nfgsm_alpha: float | None = _f(None, "n_fgsm: step size; default eps")
    eae_norm: str = _f("l2", "eae: norm of the minimal latent perturbation", choices=EAE_NORMS)
    eae_eta: float = _f(0.02, "eae: overshoot; the latent moves (1 + eta) times the distance to the boundary")
    eae_lambda: float | None = _f(None, "eae: weight of the EAE loss term", by_method=True)
    eae_seed_rule: str = _f("quantile", "eae: how seed examples are chosen", choices=EAE_SEED_RULES)
    eae_q: float = _f(0.5, "eae: quantile rule: keep correct examples whose boundary distance is in the lower q-quantile")
    eae_conf_low: float = _f(0.5, "eae: confidence rule: lower bound on p(y|x)")
    eae_conf_high: float = _f(0.99, "eae: confidence rule: upper bound on p(y|x)")
    eae_maha_momentum: float = _f(0.05, "eae: mahalanobis rule: EMA momentum of the class means and shared covariance")
    eae_warmup_epochs: int = _f(0, "eae: epochs trained on the base inputs alone (clean for eae_paper) before the EAE term starts")
    eae_latent: str = _f("penultimate", "eae: perturb the penultimate features or the logits", choices=EAE_LATENTS)
    eae_budget: str = _f("minimal", "eae: minimal (to the boundary, times 1 + eta) or relative (rel x ||latent|| "
                                    "along the same direction)", choices=EAE_BUDGETS)
    eae_rel: float = _f(0.1, "eae: relative budget: size of the shift as a fraction of the latent's norm")
    eae_temperature: float = _f(1.0, "eae: the EAE term is CE(f(z~) / T, y)")
    eae_logit_penalty: float = _f(0.0, "eae: weight of a mean squared logit-norm penalty on the clean logits")
    eae_base: str | None = _f(None, "eae: the input whose latent is perturbed: clean, or a cheap input-space "
                                    "adversary trained on as well: fgsm_rs, n_fgsm, or free (Free-AT's "
                                    "carried perturbation, free_replays replays of each minibatch, no extra "
                                    "pass); or a whole method, its input and its loss: gradalign, fgsm_pgi",
                              choices=EAE_BASES,
                              by_method=True)
    eae_base_frac: float | None = _f(None, "eae: fraction of each batch given the input-space adversary",
                                     by_method=True)
    eae_base_every: int | None = _f(None, "eae: the input-space adversary on every k-th step only (the others "
                                          "train on clean inputs): 1 / k of its cost", by_method=True)
    eae_base_downsample: int | None = _f(None, "eae: the input-space adversary's gradient is taken through the "
                                               "model on the input average-pooled by this factor (2: a quarter "
                                               "of the pixels, about a quarter of the cost; the step is constant "
                                               "on 2x2 blocks)", by_method=True)
    # --- validation during training ----------------------------------------
    val_attack_steps: int = _f(10, "steps of the validation PGD (cross-entropy) and CW (margin) attacks")
    val_every: int = _f(1, "validate every N epochs (and always after the last)")
    val_aa_n: int = _f(0, "also run aa-fast (APGD-CE + APGD-T) on the first N validation images at each "
                          "validation (diagnosis of masking during training; 0 = off)")
    # --- guards --------------------------------------------------------------
    nonfinite: str = _f("stop", "a non-finite loss or gradient: stop the run (stop) or skip the optimiser "
                                "step and count it (skip; costs one host sync per step)", choices=NONFINITE)
    overfit_action: str = _f("warn", "catastrophic overfitting (validation PGD accuracy collapsing): warn "
                                     "(record it), stop, rollback (to the best checkpoint), or "
                                     "rollback_lower_step (and scale the attack step by overfit_step_factor)",
                             choices=OVERFIT_ACTIONS)
    overfit_drop: float = _f(0.05, "collapse: validation PGD accuracy below half of its best and at least this "
                                  "much (absolute) under it")
    overfit_step_factor: float = _f(0.5, "rollback_lower_step: factor applied to the attack step at each rollback")
    max_rollbacks: int = _f(3, "rollbacks allowed before the run stops")
    # --- system ------------------------------------------------------------
    precision: str = _f("auto", "auto (bf16 autocast on CUDA and on CPUs with native bf16 units: AMX, "
                                "AVX512-BF16; fp32 elsewhere) | bf16 | fp32", choices=PRECISIONS)
    channels_last: bool = _f(True, "channels_last memory format for images and weights")
    sync_bn: bool = _f(False, "under torchrun: BatchNorm statistics over the global batch (CUDA only)")
    compile: bool = _f(False, "torch.compile the network body for training")
    deterministic: bool = _f(False, "deterministic algorithms (cuDNN, cuBLAS): a resumed run reaches the same "
                                    "final weights as an uninterrupted one on GPUs too; slower")
    tensorboard: bool = _f(False, "also log metrics to TensorBoard (if installed)")

    def __post_init__(self) -> None:
        """Fill in what the method and the norm decide, then check every field: all that is wrong
        is said at once, one clause a field, the first field in `.field`."""
        for name in ("out", "data_dir"):  # a pathlib.Path is a path as much as a string (recorded as text)
            if isinstance(getattr(self, name), os.PathLike) and isinstance(os.fspath(getattr(self, name)), str):
                object.__setattr__(self, name, os.fspath(getattr(self, name)))
        wrong = _type_errors(self)  # first: the range checks below assume the types
        if wrong:
            raise ConfigError("invalid config: " + "; ".join(wrong), field=wrong[0].split()[0])
        object.__setattr__(self, "out", home_path(self.out))  # a preset's "~/runs/x": what a shell would make of it
        for f in dataclasses.fields(self):  # -0.0 is 0 (recorded and printed as "-0" otherwise)
            if isinstance(getattr(self, f.name), float) and getattr(self, f.name) == 0:
                object.__setattr__(self, f.name, 0.0)
        object.__setattr__(self, "_recorded", _RECORDED.get())  # (not a field: neither compared nor saved)
        derived = self._resolve_defaults()
        side = {"synthetic": self.synthetic_image_size, "imagefolder": self.image_size}.get(
            self.dataset, IMAGE_SIDES.get(self.dataset, 32))
        # first: a setting that cannot act is said as such, not as out of range (whose fix would then
        # be refused as unread)
        errors = self._unread_errors() + self._guard_errors() + self._method_errors(side)
        eps_errors_, said = self._eps_errors(side, derived)
        errors += eps_errors_ + [e for e in self._sign_errors() if not e.startswith(said)]
        errors += self._limit_errors() + self._text_errors() + self._data_errors()
        if errors:
            first = {}  # one clause a field: "lr_max ... >= 0" says what "lr_max ... finite" would again
            for e in errors:
                first.setdefault(e.split()[0], e)
            raise ConfigError("invalid config: " + "; ".join(first.values()), field=errors[0].split()[0])

    def _resolve_defaults(self) -> list[str]:
        """The method's defaults and the norm's step sizes where none was given; returns the names
        of the step sizes derived from eps."""
        for name, value in method_defaults(self.method).items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)  # frozen: resolved once, here
        derived = [name for name in norm_defaults(self.norm, 0.0) if getattr(self, name) is None]
        for name, value in norm_defaults(self.norm, self.eps).items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        return derived

    def _eps_errors(self, side: Any, derived: list[str]) -> tuple[list[str], tuple[str, ...]]:
        """eps for its norm and image size; returns the errors and the prefixes of errors that
        would say the same again (a bad eps is not also a non-finite eps, nor its derived steps)."""
        bad = eps_errors(self.eps, self.norm)
        errors = bad + _arch_errors(self.arch)
        if not errors and isinstance(side, int) and side > 0:
            errors += l2_diameter_errors(self.eps, self.norm, (3, side, side))
        if self.norm == "l2" and self.eps == 0 and derived:
            bad = [f"eps 0 under l2 makes the step sizes derived from it (eps / 4: {', '.join(derived)}) zero: "
                   "give eps > 0, or those step sizes"]
            errors += bad
        return errors, tuple(f"{n} " for n in ("eps", *derived)) if bad else ()

    def _sign_errors(self) -> list[str]:
        """Finite numbers; counts >= 1 or >= 0; rates and fractions in their intervals."""
        errors = []
        if isinstance(self.momentum, (int, float)) and math.isfinite(self.momentum) and not self.momentum < 1:
            errors.append(f"momentum must be in [0, 1) (SGD momentum; 0.9 is usual), got {self.momentum}")
        if self.nesterov and self.momentum == 0:
            errors.append("nesterov needs momentum > 0 (its look-ahead is along the momentum): give momentum "
                          "(0.9 is usual), or leave nesterov out")
        for name in ("lr_max", "momentum", "weight_decay", "overfit_drop"):
            v = getattr(self, name)
            if not (v >= 0 and math.isfinite(v)):
                errors.append(f"{name} must be a finite number >= 0, got {v}")
        errors += self._check_numbers()
        if isinstance(self.overfit_drop, (int, float)) and self.overfit_drop > 1:
            errors.append(f"overfit_drop must be in [0, 1] (an accuracy drop; above 1 the guard could never fire), "
                          f"got {self.overfit_drop}")
        if not 0 < self.overfit_step_factor <= 1:
            errors.append(f"overfit_step_factor must be in (0, 1], got {self.overfit_step_factor}")
        # 0 attack steps would train on noise under an attack's name
        for name in ("epochs", "batch_size", "val_every", "synthetic_train_size", "synthetic_test_size",
                     "synthetic_image_size", "free_replays", "image_size", "eae_base_every", "eae_base_downsample",
                     "pgi_reset_every", "pgd_steps", "trades_steps"):
            if getattr(self, name) < 1:
                errors.append(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("val_size", "train_subset", "eae_warmup_epochs", "eps_warmup_epochs", "val_attack_steps",
                     "val_aa_n", "workers", "max_rollbacks"):
            if getattr(self, name) < 0:
                errors.append(f"{name} must be >= 0, got {getattr(self, name)}")
        for name, ok, allowed in (("eae_base_frac", 0 < self.eae_base_frac <= 1, "in (0, 1]"),
                                  ("eae_temperature", self.eae_temperature > 0, "> 0"),
                                  ("eae_q", 0 < self.eae_q <= 1, "in (0, 1]"),
                                  ("lr_peak_frac", 0 < self.lr_peak_frac < 1, "in (0, 1)")):
            if not ok:
                errors.append(f"{name} must be {allowed}, got {getattr(self, name)}")
        if not 0 <= self.eae_conf_low <= self.eae_conf_high <= 1:
            errors.append("need 0 <= eae_conf_low <= eae_conf_high <= 1")
        if any(not 0 < m < 1 for m in self.lr_milestones):
            errors.append(f"lr_milestones are fractions of training in (0, 1), got {self.lr_milestones}")
        return errors

    def _limit_errors(self) -> list[str]:
        """Upper bounds: seeds in 64 bits, sizes in 32, and values beyond which a number is a typo
        that would run for days, run out of memory or overflow."""
        errors = []
        for name in ("seed", "val_seed"):
            if not 0 <= getattr(self, name) <= MAX_SEED:
                errors.append(f"{name} must be in 0..{MAX_SEED} (2^63 - 1), got {short(getattr(self, name))}")
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, int) and not isinstance(v, bool) and f.name not in ("seed", "val_seed") and v > MAX_INT:
                errors.append(f"{f.name} must be at most {MAX_INT:,}, got {short(v)}")
        for name, top in (("pgd_steps", 100_000), ("trades_steps", 100_000), ("val_attack_steps", 100_000),
                          ("free_replays", 1_000), ("synthetic_train_size", 1_000_000), ("synthetic_test_size", 1_000_000),
                          ("synthetic_image_size", 1024), ("image_size", 1024), ("workers", 256)):
            v = getattr(self, name)
            if isinstance(v, int) and v > top:
                errors.append(f"{name} must be at most {top:,}, got {short(v)}")
        # lr_gamma is a decay (above 1 the LR would grow to overflow); weight decay above 10 is a typo
        for name, top in (("lr_max", 1e6), ("weight_decay", 10.0), ("lr_gamma", 1.0), ("head_scale", 1e4),
                          ("eae_eta", 100.0), ("trades_beta", 1e4), ("gradalign_lambda", 1e4), ("pgi_lambda", 1e4),
                          ("eae_lambda", 1e4), ("eae_logit_penalty", 1e4), ("nfgsm_noise", 100.0)):
            v = getattr(self, name)
            if isinstance(v, (int, float)) and math.isfinite(v) and v > top:
                errors.append(f"{name} must be at most {top:g}, got {v:g}")
        return errors

    def _text_errors(self) -> list[str]:
        """Choices, NUL characters, and empty paths ('' would be the current folder, or another place)."""
        errors = []
        for f in fields(self):
            v, choices = getattr(self, f.name), f.metadata.get("choices")
            if choices and v not in choices:
                errors.append(f"{f.name} must be one of {', '.join(choices)}, got {v!r}")
            if isinstance(v, str) and "\x00" in v:
                errors.append(f"{f.name} holds a NUL character")
        blank = {True: "empty", False: "blank (only white space)"}
        if isinstance(self.data_dir, str) and not self.data_dir.strip():
            errors.append(f"data_dir is {blank[not self.data_dir]}: give the folder, or leave it out to use "
                          "$EAE_DATA_DIR or the cache")
        if isinstance(self.out, str) and not self.out.strip():
            errors.append(f"out is {blank[not self.out]}: give the run's folder")
        return errors

    def _method_errors(self, side: Any) -> list[str]:
        """What the method and its schedule need: milestones, warm-ups shorter than training, the
        EAE base's settings, linf-only methods, compile."""
        errors = []
        if self.lr_schedule == "piecewise" and len(self.lr_milestones) == 0:
            errors.append("lr_milestones is empty: the piecewise schedule needs at least one (e.g. 0.5, 0.75)")
        if self.eps_warmup_epochs and self.method == "standard":
            errors.append("eps_warmup_epochs applies to adversarial training: standard training has no eps")
        if self.epochs >= 1 and self.eps_warmup_epochs > self.epochs:
            errors.append(f"eps_warmup_epochs {self.eps_warmup_epochs} is longer than training (epochs {self.epochs}): "
                          "eps would never reach its value; give at most epochs")
        if self.epochs >= 1 and self.eae_warmup_epochs >= self.epochs and self.method in ("eae", "eae_paper"):
            errors.append(f"eae_warmup_epochs {self.eae_warmup_epochs} is not shorter than training (epochs "
                          f"{self.epochs}): the EAE term would never start; give fewer")
        errors += self._eae_base_errors(side)
        if self.method in LINF_ONLY and self.norm != "linf":
            errors.append(f"method {self.method} is defined for linf only (as in its paper and code): "
                          "choose norm linf, or another method for l2")
        # double backpropagation (gradalign) and a second backward through the first forward (fgsm_pgi)
        # fail inside torch.compile's compiled backward ("non-empty donated buffers")
        if self.sync_bn and self.device == "cpu":
            errors.append("sync_bn needs CUDA devices (PyTorch's SyncBatchNorm has no CPU implementation): leave it "
                          "out on the CPU")
        uses = {self.method} | ({self.eae_base} if self.method.startswith("eae") else set())
        if self.compile and uses & set(LINF_ONLY):
            errors.append(f"compile is not supported with {' and '.join(sorted(uses & set(LINF_ONLY)))} (torch.compile "
                          "cannot differentiate its backward twice): train without compile")
        return errors

    def _given(self, name: str) -> bool:
        """Whether ``name`` differs from what it is when not given (the method's or norm's default)."""
        default = {**method_defaults(self.method), **norm_defaults(self.norm, self.eps)}.get(name, FIELD_DEFAULTS[name])
        value = getattr(self, name)
        if isinstance(value, float) and isinstance(default, float) and math.isnan(value) and math.isnan(default):
            return False  # a step size derived from a NaN eps: the eps is what is said
        return (tuple(value) if isinstance(value, list) else value) != default

    def _unread_errors(self) -> list[str]:
        """Settings of a method this run does not train with, of an EAE choice not made, of another
        schedule, head or dataset, of validation without images: recorded in config.json, they would
        never act. Not asked of a config a run recorded (older versions accepted them)."""
        if self._recorded:
            return []
        eae = self.method.startswith("eae")
        read = set(METHOD_FIELDS.get(self.method, ())) | (set(EAE_BASE_FIELDS.get(self.eae_base, ())) if eae else set())
        errors = []
        for name in dict.fromkeys(f for names in METHOD_FIELDS.values() for f in names):
            if name not in read and self._given(name):
                users = [m for m, names in METHOD_FIELDS.items() if name in names]
                users += [f"eae with eae_base {b}" for b, names in EAE_BASE_FIELDS.items() if name in names]
                errors.append(f"{name} is read by method {' or '.join(users)}, not by {self.method}"
                              f"{f' with eae_base {self.eae_base}' if eae else ''}: leave it out")
        if not eae:
            errors += [f"{name} is for method eae or eae_paper, not {self.method}: leave it out"
                       for name in FIELD_DEFAULTS if name.startswith("eae_") and self._given(name)]
        else:
            errors += [f"{name} acts with {choice} {' or '.join(values)} only, not {getattr(self, choice)!r}"
                       for name, choice, values in EAE_CHOICE_FIELDS
                       if getattr(self, choice) not in values and self._given(name)]
        for name, setting, value in (("head_scale", "head", "cosine"), ("lr_peak_frac", "lr_schedule", "onecycle"),
                                     ("lr_milestones", "lr_schedule", "piecewise"),
                                     ("lr_gamma", "lr_schedule", "piecewise")):
            if getattr(self, setting) != value and self._given(name):
                errors.append(f"{name} acts with {setting} {value} only, not {getattr(self, setting)!r}")
        errors += self._unread_eae_and_guard()
        if self.dataset != "synthetic":
            errors += [f"{name} is for dataset synthetic, not {self.dataset}" for name in
                       ("synthetic_train_size", "synthetic_test_size", "synthetic_image_size") if self._given(name)]
        if self.val_size == 0:  # no validation
            errors += [f"{name} {getattr(self, name)} acts with validation images, but val_size is 0: leave it out"
                       for name in ("val_every", "val_seed", "val_attack_steps")
                       if self._given(name) and not (name == "val_attack_steps" and self.val_attack_steps == 0)]
        return errors

    def _unread_eae_and_guard(self) -> list[str]:
        """An EAE run on clean inputs has no input-space adversary to shape or warm up; the guard's
        settings where it cannot act (no robustness to lose, no validation PGD, no step to lower)."""
        errors = []
        if self.method.startswith("eae") and self.eae_base == "clean":
            errors += [f"{name} {getattr(self, name)} shapes the input-space adversary, but eae_base clean has none: "
                       "leave it out, or give an eae_base" for name in
                       ("eae_base_frac", "eae_base_every", "eae_base_downsample", "eps_warmup_epochs")
                       if self._given(name)]
        watched = self.method != "standard" and self.val_size > 0 and self.val_attack_steps > 0
        if self._given("overfit_drop") and not watched:
            errors.append(f"overfit_drop {self.overfit_drop} acts where the guard watches validation PGD accuracy of "
                          "adversarial training (a method other than standard, val_size and val_attack_steps > 0): "
                          "leave it out")
        if self._given("overfit_step_factor") and self.method not in SCALABLE_STEP_METHODS:
            errors.append(f"overfit_step_factor {self.overfit_step_factor} lowers the training attack's step of "
                          f"{', '.join(SCALABLE_STEP_METHODS)}; {self.method} has none to lower: leave it out "
                          "(rollback_lower_step then rolls back only)")
        validations = self.validations()
        if watched and validations == 1 and (self.overfit_action != "warn" or self._given("overfit_drop")):
            name = "overfit_action" if self.overfit_action != "warn" else "overfit_drop"
            passes = self.passes()
            more = (f"give val_every below {passes}" if passes > 1 else
                    "train more epochs" + (f" (above free_replays {self.free_replays})" if self.free_replays_read()
                                           else ""))
            errors.append(f"{name} {getattr(self, name)!r} compares each validation with the best before it, but "
                          f"this run validates only once ({passes} pass{'es' * (passes > 1)} over the training "
                          f"data, val_every {self.val_every}): {more}, or leave {name} out")
        return errors

    def passes(self) -> int:
        """Passes over the training data: Free-AT (and EAE on a Free base) replays each minibatch
        free_replays times in ceil(epochs / free_replays) passes (as ``Method.passes``)."""
        replays = self.free_replays if self.free_replays_read() else 1
        return -(-self.epochs // max(replays, 1))

    def free_replays_read(self) -> bool:
        return self.method == "free" or (self.method.startswith("eae") and self.eae_base == "free")

    def validations(self) -> int:
        """Validations during the run: after every val_every-th pass and after the last (0 without
        validation images)."""
        if self.val_size == 0 or self.epochs < 1 or self.val_every < 1:
            return 0
        return -(-self.passes() // self.val_every)

    def _eae_base_errors(self, side: Any) -> list[str]:
        errors = []
        shaped = (self.eae_base_frac, self.eae_base_every, self.eae_base_downsample) != (1, 1, 1)
        whole_methods = ("gradalign", "fgsm_pgi")  # bases that bring their own loss: on every step, whole batch
        if self.eae_base in whole_methods and shaped:
            errors.append(f"eae_base {self.eae_base} is a whole method (its adversary and its loss) under the EAE "
                          "term: eae_base_frac, eae_base_every and eae_base_downsample must be 1")
        if self.method.startswith("eae") and self.eae_base in whole_methods and self.norm != "linf":
            errors.append(f"eae_base {self.eae_base} is defined for linf only (as in its paper and code): "
                          "choose norm linf")
        if self.eae_base == "free" and shaped:
            errors.append("eae_base free takes its input gradient from the training step itself: "
                          "eae_base_frac, eae_base_every and eae_base_downsample must be 1")
        if (self.method.startswith("eae") and isinstance(side, int) and isinstance(self.eae_base_downsample, int)
                and self.eae_base_downsample > side):
            errors.append(f"eae_base_downsample {self.eae_base_downsample} is larger than the images ({side} pixels): "
                          f"the input-space adversary would see no pixel; give at most {side} (2 or 4 are usual)")
        return errors

    def _guard_errors(self) -> list[str]:
        """Options of the overfitting guard act only with their action, and the guard only with
        validation images: otherwise they would be recorded in config.json, and never act."""
        errors = []
        if self.overfit_step_factor != 0.5 and self.overfit_action != "rollback_lower_step":
            errors.append(f"overfit_step_factor {self.overfit_step_factor} acts with overfit_action "
                          f"rollback_lower_step only, not {self.overfit_action!r}")
        if self.max_rollbacks != 3 and self.overfit_action not in ("rollback", "rollback_lower_step"):
            errors.append(f"max_rollbacks {self.max_rollbacks} acts with overfit_action rollback or "
                          f"rollback_lower_step only, not {self.overfit_action!r}")
        if self.val_size == 0 and self.overfit_action != "warn":
            errors.append(f"overfit_action {self.overfit_action!r} needs validation (the guard watches validation "
                          "PGD accuracy), but val_size is 0: give val_size > 0, or leave overfit_action at 'warn'")
        elif self.val_attack_steps == 0 and self.overfit_action != "warn":
            errors.append(f"overfit_action {self.overfit_action!r} needs the validation PGD (the guard watches its "
                          "accuracy), but val_attack_steps is 0: give val_attack_steps > 0, or leave overfit_action "
                          "at 'warn'")
        elif self.method == "standard" and self.overfit_action != "warn":
            errors.append(f"overfit_action {self.overfit_action!r} guards adversarial training (catastrophic "
                          "overfitting is the collapse of its robustness); standard training has none to lose: "
                          "leave overfit_action at 'warn'")
        return errors

    def _data_errors(self) -> list[str]:
        """Dataset options set for another dataset (recorded, never used), image sizes, and
        validation sizes that fit."""
        errors = []
        if self.dataset == "imagefolder" and isinstance(self.data_dir, str) and self.data_dir.strip() and self.out:
            data, out = os.path.realpath(self.data_dir), os.path.realpath(self.out)
            if out == data or out.startswith(data + os.sep):  # its files would be read as images of the set
                errors.append(f"out {self.out!r} is inside the image folder data_dir {self.data_dir!r}, whose every "
                              "file is read as an image of the set: give an out outside it")
        for name, value, dataset in (("svhn_extra", self.svhn_extra, ("svhn",)),
                                     ("cifar100_labels", self.cifar100_labels != "fine", ("cifar100",)),
                                     ("unverified_data", self.unverified_data, ("cifar100", "svhn", "tiny-imagenet")),
                                     ("image_size", self.image_size != 224, ("imagefolder",)),
                                     ("bad_images", self.bad_images != "error", ("imagefolder",)),
                                     ("workers", self.workers != 8, ("imagefolder", "tiny-imagenet"))):
            if value and self.dataset not in dataset:
                errors.append(f"{name} is for dataset {' or '.join(dataset)}, not {self.dataset}")
        if isinstance(self.val_aa_n, int) and isinstance(self.val_size, int) and self.val_aa_n > self.val_size > 0:
            errors.append(f"val_aa_n {self.val_aa_n} is more than the {self.val_size} validation images (val_size): "
                          "give at most val_size")
        if self.val_size == 0 and self.val_aa_n > 0:
            errors.append(f"val_aa_n {self.val_aa_n} needs validation images, but val_size is 0: give val_size > "
                          "0, or val_aa_n 0")
        elif self.val_attack_steps == 0 and self.val_aa_n > 0:  # its number would stand alone, and choose nothing
            errors.append(f"val_aa_n {self.val_aa_n} with val_attack_steps 0 would measure aa-fast on a subset while "
                          "the validation attacks that choose the best weights are off: give val_attack_steps > 0 "
                          "(10 is usual), or val_aa_n 0")
        if self.dataset == "imagefolder" and self.image_size < 8:
            errors.append(f"image_size must be >= 8 (pixels; the networks downsample by 8), got {self.image_size}")
        if self.dataset == "synthetic" and self.data_dir is not None:  # it would be recorded, and never read
            errors.append("data_dir is for data read from disk; synthetic data is generated: leave data_dir out, "
                          "or give the dataset it holds")
        if self.dataset == "synthetic" and self.synthetic_image_size < 8:
            errors.append(f"synthetic_image_size must be >= 8 (pixels; the networks downsample by 8), "
                          f"got {self.synthetic_image_size}")
        return errors

    def _check_numbers(self) -> list[str]:
        """Every float finite; step sizes, scales and weights in their ranges (a NaN or a
        negative step would train silently on nonsense)."""
        errors = [f"{f.name} must be a finite number, got {getattr(self, f.name)}" for f in fields(self)
                  if isinstance(getattr(self, f.name), float) and not math.isfinite(getattr(self, f.name))]
        positive = ("fgsm_alpha", "pgd_alpha", "trades_alpha", "nfgsm_alpha", "pgi_alpha", "head_scale", "lr_gamma",
                    "eae_rel")
        non_negative = ("nfgsm_noise", "trades_beta", "eae_eta", "eae_lambda", "eae_logit_penalty", "gradalign_lambda",
                        "pgi_lambda")
        for name in positive:
            v = getattr(self, name)
            if v is not None and math.isfinite(v) and not v > 0:
                errors.append(f"{name} must be > 0, got {v}")
        for name in non_negative:
            v = getattr(self, name)
            if v is not None and math.isfinite(v) and v < 0:
                errors.append(f"{name} must be >= 0, got {v}")
        if not 0 <= self.pgi_momentum <= 1:
            errors.append(f"pgi_momentum must be in [0, 1], got {self.pgi_momentum}")
        if not 0.5 <= self.pgi_smoothing <= 1:
            errors.append(f"pgi_smoothing must be in [0.5, 1] (the probability left on the true class; 1 = no "
                          f"smoothing, 0.6 the authors'), got {self.pgi_smoothing}")
        if not 0 < self.eae_maha_momentum <= 1:
            errors.append(f"eae_maha_momentum must be in (0, 1], got {self.eae_maha_momentum}")
        return errors

    # --- (de)serialisation ---------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, strict: bool = True) -> "TrainConfig":
        """A config from {field: value}: the values as a preset or config.json gives them (a
        whole number for a count, true or false for a switch; "8/255" for a real number).
        ``strict=False`` reads what a run recorded: unknown fields and settings it never read pass."""
        if not isinstance(d, Mapping) or not all(isinstance(k, str) for k in d):
            raise ConfigError(f"a config is a dict of field names to values, got {short(d)}", field="config")
        exact_types(dict(d), None, where="TrainConfig.from_dict")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(d) - set(known))
        if unknown and strict:
            raise ConfigError(f"unknown config field(s): {', '.join(unknown)}", field=unknown[0])
        hints = typing.get_type_hints(cls)
        kwargs = {k: coerce(hints[k], v, k) for k, v in d.items() if k in known}
        with _recorded(not strict):
            return cls(**kwargs)

    @classmethod
    def from_toml(cls, path: str | Path, **overrides: Any) -> "TrainConfig":
        preset = load_toml(path)
        try:
            return cls.from_dict({**preset, **overrides})
        except ConfigError as e:  # a field the file set: the user must know where to look
            name_preset_fields(e, set(preset) - set(overrides), path)
            raise

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with ``changes``. When the method changes, a by-method field still at the old
        method's default takes the new method's default."""
        if changes.get("norm", self.norm) != self.norm or changes.get("eps", self.eps) != self.eps:
            for name, value in norm_defaults(self.norm, self.eps).items():
                if name not in changes and getattr(self, name) == value:
                    changes[name] = None
        if changes.get("method", self.method) != self.method:
            old = method_defaults(self.method)
            for name, value in old.items():
                if name not in changes and getattr(self, name) == value:
                    changes[name] = None
        with _recorded(self._recorded):
            return dataclasses.replace(self, **changes)

    def identity(self) -> str:
        """:func:`config_identity` of this config as config.json holds it."""
        return config_identity(self.to_dict())

    def differences(self, other: "TrainConfig", ignore: tuple[str, ...] = PLACEMENT_FIELDS) -> dict[str, tuple[Any, Any]]:
        a, b = self.to_dict(), other.to_dict()
        return {k: (a[k], b[k]) for k in a if k not in ignore and a[k] != b[k]}


FIELD_DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(TrainConfig)}


def config_identity(d: dict[str, Any]) -> str:
    """A run's config.json as written, placement fields aside, as sorted JSON: recorded in its
    weights, so that weights copied from another run, or a config.json edited since, are seen
    (and what differs is named). Over the file's own keys: a later version's new fields do not
    change it."""
    return json.dumps({k: v for k, v in d.items() if k not in PLACEMENT_FIELDS}, sort_keys=True)


MAX_SEED = 2**63 - 1  # torch.manual_seed takes a signed 64-bit integer
MAX_INT = 2**31 - 1  # sizes, counts and steps: beyond this no tensor or run is meant


def _type_ok(tp: Any, v: Any) -> bool:
    """``v`` is exactly of type ``tp``: no bool for an int or a float, no str for a number."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(a, v) for a in typing.get_args(tp))
    if origin is tuple:
        elem = typing.get_args(tp)[0]
        return isinstance(v, (tuple, list)) and all(_type_ok(elem, e) for e in v)
    if tp is type(None):
        return v is None
    if tp is bool:
        return isinstance(v, bool)
    if tp is int:
        return isinstance(v, int) and not isinstance(v, bool)
    if tp is float:
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    return isinstance(v, tp)


_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _type_errors(cfg: "TrainConfig") -> list[str]:
    hints = typing.get_type_hints(type(cfg))
    errors = []
    for f in fields(cfg):
        v, tp = getattr(cfg, f.name), hints[f.name]
        if not _type_ok(tp, v):
            optional = typing.get_origin(tp) in (typing.Union, types.UnionType)
            base = next(a for a in typing.get_args(tp) if a is not type(None)) if optional else tp
            want = "a list of numbers" if typing.get_origin(base) is tuple else _TYPE_NAMES.get(base, str(base))
            fix = type_fix(v, base) if base in (int, float) else ""
            errors.append(f"{f.name} must be {want}{' (or None)' if optional else ''}, "
                          f"got {short(v)}{fix or f' ({type(v).__name__})'}")
    return errors


def home_path(path):
    """A path as a shell reads it: ``~/x`` and ``~user/x`` expanded (a path that reached us
    unexpanded: a preset, the API, a quoted flag). One that still starts with ``~`` (``./~/x``,
    ``~nosuchuser``, ``~+``: a folder of that name here, as POSIX sh leaves them) is made
    absolute, so that no message prints it as if it were in the home folder. A ``pathlib.Path``
    has lost a leading ``./``: ``Path("./~")`` reads as ``~``; give such a path as a string."""
    if not isinstance(path, (str, Path)):
        return path
    text = os.fspath(path)
    if text.startswith("~") and os.path.expanduser(text) != text:
        text = os.path.expanduser(text)
    elif Path(text).parts[:1] and Path(text).parts[0].startswith("~"):
        text = os.path.abspath(text)
    else:
        return path
    return text if isinstance(path, str) else Path(text)


def type_fix(v: Any, tp: type) -> str:
    """What fixes a number of another library (numpy, fractions, decimal) where a Python
    ``tp`` is wanted: '' when that is not the mistake."""
    if isinstance(v, bool) or type(v) in (int, float) or not isinstance(v, numbers.Number):
        return ""
    if tp is int and isinstance(v, numbers.Integral) or tp is float and isinstance(v, numbers.Real):
        return f" ({type(v).__module__}.{type(v).__name__}): give a Python {tp.__name__}, {tp.__name__}(value)"
    return ""


def short(v: Any, limit: int = 40) -> str:
    """repr of a value for a message, cut (a 300-digit number is not read)."""
    text = repr(v)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _arch_errors(arch: str) -> list[str]:
    from .models import list_models
    from .models.library import check_arch

    error = check_arch(arch, list_models())
    return [error] if error else []


def eps_errors(eps: Any, norm: str) -> list[str]:
    """ε the same way everywhere (train, eval, evaluate()): a finite number in pixel units,
    in [0, 1] under L-inf (no pixel can move by more than its whole range), >= 0 under L2."""
    number = not isinstance(eps, bool) and isinstance(eps, numbers.Real) and math.isfinite(eps)
    if not isinstance(eps, numbers.Real) or isinstance(eps, bool):  # "8/255", a tensor: the type is the mistake
        return [f"eps must be a number (a float such as 8/255 written in Python), got {type(eps).__name__} {eps!r}"]
    if norm != "l2" and not (number and 0 <= eps <= 1):
        return [f"eps must be in [0, 1] for linf (pixel units of images in [0, 1]; {EPS_HELP}), got {eps!r}"]
    if norm == "l2" and not (number and eps >= 0):
        return [f"eps must be a finite number >= 0 for l2 (pixel units; {EPS_HELP}), got {eps!r}"]
    return []


def l2_diameter_errors(eps: Any, norm: str, shape: tuple[int, ...]) -> list[str]:
    """An L2 radius beyond the diameter of the image box, sqrt(C*H*W) (within it, every
    image reaches every other), is a mistake (eps in 0-255 units?), not a threat model."""
    diameter = math.sqrt(math.prod(shape))
    if norm == "l2" and isinstance(eps, (int, float)) and eps > diameter:
        return [f"eps {eps:g} for l2 is beyond the largest L2 distance between two {tuple(shape)} images in "
                f"[0, 1] ({diameter:.1f}); eps is in pixel units of images in [0, 1] ({EPS_HELP})"]
    return []


def _named_at(field: str) -> str:
    """Where a message names ``field``: a name with an underscore anywhere it stands as a word
    ("give val_every below 5"); a plain word (out, eps, norm) only where a clause begins, as
    English uses it too ("out of range")."""
    return rf"(?<![\w-]){field}(?![\w-])" if "_" in field else rf"(^|: |; ){field} "


def name_preset_fields(e: ConfigError, fields: Iterable[str], path: Any) -> None:
    """Add "(FIELDS set in PATH)" to an error that names fields a preset file set."""
    named = [f for f in fields if re.search(_named_at(f), str(e))]
    if named:
        where = f" ({', '.join(sorted(named))} set in {path})"
        e.args, e.cli = (f"{e.args[0]}{where}",) + e.args[1:], f"{e.cli}{where}"


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML preset. Tables are flattened with their name as prefix, so
    ``[eae] eta = 0.1`` and ``eae_eta = 0.1`` mean the same."""
    if not isinstance(path, (str, os.PathLike)) or isinstance(os.fspath(path), bytes):
        raise ConfigError(f"config file: give a path (str or pathlib.Path), got {type(path).__name__}", field="config")
    if not str(path).strip():  # '' would be the current folder
        raise ConfigError("the config file's path is empty: give the path of a TOML preset (e.g. "
                          "configs/cifar10_preact18_eae.toml)", field="config")
    path = Path(home_path(path))
    if path.is_dir():
        raise ConfigError(f"config file {path} is a folder: give a TOML file (e.g. configs/cifar10_preact18_eae.toml)",
                          field="config")
    if path.exists() and not path.is_file():
        raise ConfigError(f"config file {path} is not a regular file: give a TOML file", field="config")
    if not path.is_file():
        from .errors import MissingFile

        raise MissingFile(f"config file not found: {path}", field="config")
    if path.stat().st_size > 1 << 20:
        raise ConfigError(f"config file {path} is over 1 MiB: not a preset; give a TOML file", field="config")
    if path.suffix.lower() == ".json":  # read as TOML it fails anyway; say what presets are
        raise ConfigError(f"config file {path} is JSON: presets are TOML (`lr_max = 0.2`); to continue the run "
                          "a config.json belongs to, use `eae train --out RUN --resume`", field="config")
    try:
        raw = tomllib.loads(path.read_bytes().decode("utf-8-sig"))  # a BOM (some editors write one) is fine
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text (a binary file, or another encoding such as "
                          "UTF-16): save it as UTF-8 TOML", field="config") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path}: not valid TOML ({e})", field="config") from None
    except RecursionError:
        raise ConfigError(f"config file {path}: nested too deeply to read: not a preset", field="config") from None
    flat = _flatten(raw, "", path)
    unknown = sorted(k for k in flat if k not in {f.name for f in fields(TrainConfig)})
    if unknown:  # named with the file here (from_dict does not know it)
        flags = [k for k in unknown if k in ("resume", "quiet", "stop_after", "config", "dry_run")]
        raise ConfigError(f"config file {path}: unknown field(s) {', '.join(unknown)}"
                          + (f" ({', '.join(flags)}: a command-line option, not a setting of the run)" if flags else "")
                          + "; `eae train --help` lists the settings", field=unknown[0])
    return exact_types(flat, path)


def exact_types(flat: dict[str, Any], path: Path | None, where: str | None = None) -> dict[str, Any]:
    """A preset (or a run's config.json) says what it means: a whole number for a count, true
    or false for a switch (a string or a float there is a mistake, not a value to convert); a
    fraction such as "8/255" stays allowed for the real-valued fields."""
    hints = typing.get_type_hints(TrainConfig)
    where = where or f"config file {path}"
    for key, value in flat.items():
        if isinstance(value, (datetime.date, datetime.time)):  # TOML dates and times: no field takes one
            raise ConfigError(f"{where}: {key} = {value}: a date or time, which no setting takes "
                              f"(did a value lose its quotes?)", field=key)
        tp = hints.get(key)
        if typing.get_origin(tp) in (typing.Union, types.UnionType):  # X | None: X
            tp = next(a for a in typing.get_args(tp) if a is not type(None))
        if tp is int and isinstance(value, (str, float)):
            raise ConfigError(f"{where}: {key} = {value!r}: give a whole number, without quotes",
                              field=key)
        if tp is bool and isinstance(value, str):
            raise ConfigError(f"{where}: {key} = {value!r}: give true or false, without quotes", field=key)
        want = {int: "a whole number", float: "a number", bool: "true or false", str: "a string"}.get(tp)
        if want and tp is not bool and isinstance(value, bool):  # `epochs = true` is not 1
            raise ConfigError(f"{where}: {key} = {str(value).lower()}: give {want}", field=key)
        if want and isinstance(value, (list, dict)):
            raise ConfigError(f"{where}: {key} = {short(value)}: give one value, {want}", field=key)
    return flat


def _flatten(table: dict[str, Any], prefix: str, path: Path) -> dict[str, Any]:
    """Tables are prefixes, at any depth: ``[eae] base_frac = 0.5`` and ``[eae.base] frac = 0.5``
    both mean ``eae_base_frac = 0.5``."""
    flat: dict[str, Any] = {}
    for k, v in table.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            inner = _flatten(v, f"{key}_", path)
            twice = sorted(set(inner) & set(flat))
            if twice:  # `eps_warmup_epochs = 1` and `[eps.warmup] epochs = 2`: which was meant?
                raise ConfigError(f"config file {path}: {twice[0]} is set twice (two spellings of one field); "
                                  "keep one", field="config")
            flat.update(inner)
        elif key in flat:
            raise ConfigError(f"config file {path}: {key} is set twice (two spellings of one field); keep one",
                              field="config")
        elif isinstance(v, list) and v and all(isinstance(t, dict) for t in v):
            raise ConfigError(f"config file {path}: [[{key.replace('_', '.')}]] is an array of tables; eae's tables "
                              f"are prefixes: write [{key.replace('_', '.')}] (single brackets)", field="config")
        else:
            flat[key] = v
    return flat


def parse_float(text: str | float | int) -> float:
    """``0.03``, ``8/255`` or ``8 / 255`` -> float."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    s = str(text).strip()
    if s.count("/") > 1 or s.startswith("/") or s.endswith("/"):  # 8/, /255, 8//255, 8/255/2
        raise ValueError(f"{s!r} is neither a number nor a fraction such as 8/255")
    if "/" in s:
        num, _, den = s.partition("/")
        if float(den) == 0:
            raise ValueError(f"division by zero in {s!r}")
        if not (math.isfinite(float(num)) and math.isfinite(float(den))):  # 1/3e400 would read as 0
            raise ValueError(f"not a finite fraction: {s!r}")
        return _not_underflowed(float(num) / float(den), num, s)
    return _not_underflowed(float(s), s, s)


def _not_underflowed(value: float, mantissa_of: str, s: str) -> float:
    """1e-400 is not 0, but float() says so: a value too small for a float is refused."""
    if value == 0 and re.search(r"[1-9]", mantissa_of.lower().partition("e")[0]):
        raise ValueError(f"{s!r} is too small for a float (it would be read as 0)")
    return value


def parse_bool(text: str | bool) -> bool:
    if isinstance(text, bool):
        return text
    s = str(text).strip().lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def coerce(tp: Any, value: Any, name: str = "value") -> Any:
    """Convert ``value`` (from JSON, TOML or the command line) to type ``tp``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "")):
            return None
        return coerce(args[0], value, name)
    try:
        if origin is tuple:
            (elem, *_rest) = typing.get_args(tp)
            if isinstance(value, str):
                value = [v for v in value.split(",") if v.strip()]
            return tuple(coerce(elem, v, name) for v in value)
        if tp is bool:
            if not isinstance(value, (bool, str)):  # TOML 1 / 0 for a boolean: say true or false
                raise ValueError(f"expected true or false, got {value!r}")
            return parse_bool(value)
        if isinstance(value, bool) and tp in (int, float):  # TOML true for a number: a mistake, not 1
            raise ValueError(f"expected a number, got {value!r}")
        if tp is float:
            try:
                return parse_float(value)
            except ValueError as e:
                raise ValueError(str(e) if "division" in str(e) or "too small" in str(e) else f"not a number: {value!r}") from None
        if tp is int:
            if not isinstance(value, (int, float, str)):
                raise ValueError(f"expected an integer, got {short(value)}")
            if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
                raise ValueError(f"not an integer: {value}")
            try:
                return int(value)
            except ValueError:
                raise ValueError(f"not an integer: {value!r}") from None
        if tp is str:
            if not isinstance(value, str):
                raise ValueError(f"expected a string, got {value!r}")
            return value
    except ConfigError:  # an element of a tuple, named already
        raise
    except (TypeError, ValueError, OverflowError) as e:
        raise ConfigError(f"config field {name}: {e}", field=name) from None
    raise TypeError(f"config field {name}: unsupported type {tp}")


def _jsonable(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v
