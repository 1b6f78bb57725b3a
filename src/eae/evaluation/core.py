"""Running a suite: clean predictions, then each attack on its pool of points, scored
per example in strict fp32.

Inside ``with shard_across_ranks():`` (training under torchrun, ``eae eval`` under
torchrun) every rank attacks its share of each pool and the per-example results are
summed across ranks, so each rank ends with the full masks and the same report.
Every rank must then make the same calls.
"""
from __future__ import annotations

import contextlib
import re
import sys
import time
from typing import Mapping, Sequence

import torch
from torch import nn

from .. import distributed as dist
from ..errors import ConfigError, ModelError
from ..config import l2_diameter_errors, short
from ..data.loader import shard_bounds

from ..attacks import Attack, attack_key, attack_kind, attack_mode, build_attack, check_ball
from ..attacks.base import check_inputs
from ..utils import progress_bar, row_key, spelled_plainly, torch_seed
from ..utils import resolve_device
from . import checks
from .report import Report
from .suites import CASCADE, STANDALONE, Suite, custom_suite, get_suite


class NonFiniteOutputs(ModelError):
    """The model returned NaN or infinite logits: no accuracy can be scored from them."""


def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Predicted labels, in eval mode and strict fp32; the model's modes are restored.
    NaN or infinite logits are an error, never a prediction (argmax would call them class 0)."""
    with attack_mode(model), torch.no_grad():
        logits = model(x)
    check_outputs(logits, x)
    if not torch.isfinite(logits).all():
        bad = int((~torch.isfinite(logits)).any(1).sum())
        raise NonFiniteOutputs(f"the model returned NaN or infinite logits for {bad} of {len(x)} images "
                               "(clean or attacked): no accuracy can be scored; check the weights and the model")
    return logits.argmax(1)


class BadOutputs(ValueError):
    """The model's outputs are not logits eae can score: not a tensor, the wrong shape,
    or on another device than its inputs."""


def check_outputs(logits, x: torch.Tensor) -> None:
    """Logits as (batch, classes) floats on the inputs' device, or one clear error."""
    if not isinstance(logits, torch.Tensor):
        raise BadOutputs(f"the model returned a {type(logits).__name__}, not a tensor of logits: return the "
                         "(batch, classes) logits")
    if logits.device != x.device:
        raise BadOutputs(f"the model returned its logits on {logits.device} for inputs on {x.device}: "
                         "return them on the inputs' device")
    if logits.dim() != 2 or logits.shape[0] != x.shape[0] or not logits.is_floating_point():
        raise BadOutputs(f"the model returned {tuple(logits.shape)} {logits.dtype} for {x.shape[0]} images: "
                         "expected (batch, classes) floating-point logits")


def as_images(x: torch.Tensor) -> torch.Tensor:
    return x.float().div(255) if x.dtype == torch.uint8 else x.float()


_SHARDED = False


@contextlib.contextmanager
def shard_across_ranks():
    """Split evaluation work across the ranks of the process group (see module doc)."""
    global _SHARDED
    before, _SHARDED = _SHARDED, dist.world_size() > 1
    try:
        yield
    finally:
        _SHARDED = before


def _mine(idx: torch.Tensor) -> torch.Tensor:
    return idx[slice(*shard_bounds(len(idx), dist.rank(), dist.world_size()))] if _SHARDED else idx


def _merged(ok: torch.Tensor) -> torch.Tensor:
    """Each point was scored by exactly one rank (zeros elsewhere): the sum is the union."""
    return dist.all_reduce(ok.int()).bool() if _SHARDED else ok


def predict_all(model, x, y, batch_size, device) -> torch.Tensor:
    return attack_points(model, None, x, y, torch.arange(len(y)), batch_size, device, None)


def attack_points(model, attack: Attack | None, x, y, idx: torch.Tensor, batch_size, device, bar) -> torch.Tensor:
    """Attack the points ``idx`` (None: clean predictions); True where the model is
    still correct afterwards."""
    ok = torch.zeros(len(y), dtype=torch.bool)
    mine = _mine(idx)
    for lo in range(0, len(mine), batch_size):
        b = mine[lo:lo + batch_size]
        xb, yb = as_images(x[b].to(device)), y[b].to(device)
        ok[b] = (predict(model, xb if attack is None else attack(model, xb, yb)) == yb).cpu()
        if bar is not None:
            bar.update(len(b) * (dist.world_size() if _SHARDED else 1))
    return _merged(ok)


class _Checked:
    """A user's attack whose points are checked before they are scored: a robust accuracy at
    eps is only one if every point is an image in [0, 1] within eps of its clean image."""

    _OWN = ("attack", "key", "eps", "norm")

    def __init__(self, attack, name: str, eps: float, norm: str):
        for k, v in zip(self._OWN, (attack, name, float(eps), norm)):
            object.__setattr__(self, k, v)

    def __getattr__(self, attr):  # name, precision, eot, ...: the attack's own
        return getattr(self.attack, attr)

    def __setattr__(self, attr, value):  # the plan sets precision and eot: on the attack itself
        try:
            setattr(self.attack, attr, value)
        except (AttributeError, TypeError):  # a user's attack without them (slots, a builtin): it runs its own way
            pass

    def __call__(self, model, x, y):
        adv = self.attack(model, x.clone(), y.clone())  # its own copies: the check and the score read the originals
        bad = None
        if not isinstance(adv, torch.Tensor) or adv.shape != x.shape or not adv.is_floating_point():
            bad = (f"returned {type(adv).__name__} {tuple(adv.shape) if isinstance(adv, torch.Tensor) else ''}"
                   f"{' ' + str(adv.dtype) if isinstance(adv, torch.Tensor) else ''}, not float images of shape "
                   f"{tuple(x.shape)}")
        elif not torch.isfinite(adv).all() or adv.min() < -1e-6 or adv.max() > 1 + 1e-6:
            bad = "returned values outside [0, 1] (or not finite)"
        else:
            d = (adv.detach().float() - x.float()).flatten(1)
            dist_ = d.abs().amax(1) if self.norm == "linf" else d.norm(dim=1)
            if dist_.max() > self.eps * (1 + 1e-4) + 1e-6:
                bad = f"returned points {dist_.max().item():.4g} away from their images ({self.norm}), beyond eps {self.eps:g}"
        if bad:
            raise ConfigError(f"attacks[{self.key!r}] {bad}: its accuracy would not be a robust accuracy at this eps",
                              field="attacks")
        return adv.to(x.dtype)


@contextlib.contextmanager
def _run_as(attack: "_Checked", **settings):
    """The evaluation's precision and EOT on the attack while it runs, then its own again: an
    attack object a user passed in is given back as it was (a later call, or a direct
    ``attack(model, x, y)``, would otherwise run in this evaluation's settings)."""
    inner = attack.attack
    own = getattr(inner, "__dict__", {})
    before = {k: own[k] for k in settings if k in own}
    for k, v in settings.items():
        setattr(attack, k, v)
    try:
        yield
    finally:
        for k in settings:
            if k in before:
                own[k] = before[k]
            else:
                own.pop(k, None)


def _same_state(model, state: dict[str, torch.Tensor], spec: str) -> None:
    """The model's parameters and buffers are as they were before the attacks: else no number
    would be of one model (its forward pass, or the attack ``spec``, wrote into them)."""
    changed = [k for k, v in model.state_dict().items() if k not in state or not torch.equal(v.detach(), state[k])]
    if changed:
        raise ModelError(f"the model's parameters or buffers changed during {spec} ({', '.join(changed[:3])}"
                         f"{', ...' if len(changed) > 3 else ''}): the model's forward pass or that attack wrote into "
                         "them, and no number would be of one model; evaluate a model whose forward pass leaves its "
                         "state as it is, with attacks that leave the model alone")


def _unchanged(model, x, y, clean: torch.Tensor, batch_size, device, eot: int) -> list[tuple[str, str]]:
    """The model's clean predictions at the end are those of the start (else evidence:
    outputs that depend on earlier calls or on chance; a randomised model evaluated with EOT
    is expected to move)."""
    moved = int((predict_all(model, x, y, batch_size, device) != clean).sum())
    if not moved:
        return []
    if eot > 1:
        return [("ok", f"the clean predictions changed during the evaluation at {moved:,} of {len(y):,} points, as "
                       "a randomised model's do (evaluated with EOT)")]
    return [("suspicious", f"the clean predictions changed during the evaluation at {moved:,} of {len(y):,} points: "
                           "the model's outputs depend on earlier calls or on chance, so its numbers are not those "
                           "of one fixed model (a randomised model: rerun with --suite aa-rand or --eot)")]


def resolve_plan(attacks, suite, eps, norm) -> tuple[Suite, list[tuple[str, Attack, str]]]:
    if suite is not None and attacks is not None:
        raise ConfigError("give either attacks or suite, not both", field="attacks")
    if isinstance(attacks, Mapping):
        _check_keys(attacks)
        named = {k: v for k, v in attacks.items() if k != "clean"}
        for k, a in named.items():  # the report labels every number with eps and norm: they must be the attack's
            check_ball(f"attacks[{k!r}]", a, eps, norm, "build it with the same eps and norm, or pass them to evaluate")
        _no_twice(named.items(), repr)
        s = custom_suite(list(named))
        return s, [(k, _Checked(a, k, eps, norm), STANDALONE) for k, a in named.items()]
    if attacks is not None:
        s = custom_suite(_plain_specs(list(attacks), eps, norm))  # (a generator is read once)
    else:
        s = get_suite(suite or "quick")
    built = [(spec, build_attack(spec, eps, norm), mode) for spec, mode in s.entries]
    _no_twice([(spec, a) for spec, a, _ in built if a is not None], repr)
    # registered attacks are users' code too: every point is checked before it counts
    return s, [(spec, _Checked(attack, spec, eps, norm), mode) for spec, attack, mode in built]


def _plain_specs(attacks: list, eps, norm) -> list:
    """Specs read as the command line reads them ("Clean", "PGD5 ", full-width "pgd５" are clean,
    pgd5); two spellings of one attack (pgd5, pgd5r1) refused in the words they were typed."""
    from ..attacks import canonical_spec

    seen: dict[str, str] = {}
    plain = []
    for typed in attacks:
        if not isinstance(typed, str):
            plain.append(typed)  # (refused by custom_suite, naming the list)
            continue
        spec = spelled_plainly(typed)
        try:
            build_attack(spec, eps, norm)
        except ConfigError as e:  # said in the words typed, not folded
            raise ConfigError(str(e).replace(repr(spec), repr(typed.strip()), 1), field="attacks") from None
        key = canonical_spec(spec, eps, norm)
        if key in seen:
            what = "clean, which every report has once" if key == "clean" else f"one attack ({key})"
            raise ConfigError(f"attacks {seen[key]!r} and {typed!r} are {what}: give it once", field="attacks")
        seen[key] = typed
        plain.append(spec)
    return plain


def _no_twice(attacks, shown) -> None:
    """pgd2 and pgd2r1, fab-t and fabt, one attack under two names: it would fill two rows."""
    seen: dict[str, str] = {}
    for name, attack in attacks:
        key = attack_key(attack)
        if key in seen:
            raise ConfigError(f"attacks {shown(seen[key])} and {shown(name)} are one attack: each row of a report is "
                              "another attack (for more restarts, write e.g. pgd20r5)", field="attacks")
        seen[key] = name


def _what(attack) -> dict[str, str]:
    """The attack's class and loss, recorded in its row: the diagnostics pair a cross-entropy PGD
    with a margin-loss one by what they are, not by how the user labelled them."""
    attack = attack.attack if isinstance(attack, _Checked) else attack
    loss = getattr(attack, "loss", None)
    return {"attack": type(attack).__name__, **({"loss": loss} if isinstance(loss, str) else {})}


def _not_a_builtin_name(name: str, attack) -> None:
    """A label that reads as a built-in attack's spec must hold that attack: a row reading pgd20
    (or PGD-20) with a PGD-2's number would be read as PGD-20's. A name without a number states
    the kind of attack only: pgd is any cross-entropy PGD, apgd-dlr any APGD on the DLR loss, square
    any Square attack."""
    text = spelled_plainly(name)
    where = getattr(attack, "threat", attack)
    eps, norm = getattr(where, "eps", 8 / 255), getattr(where, "norm", "linf")
    for spec in dict.fromkeys((text, re.sub(r"[\s_-]+(?=\d)", "", text), text.replace("_", "-"))):
        try:
            builtin = build_attack(spec, float(eps), norm)
        except (ConfigError, TypeError, ValueError):
            continue  # not a spec: any label
        same = attack_key if any(c.isdigit() for c in spec) else attack_kind
        if builtin is not None and same(builtin) != same(attack):
            raise ConfigError(f"attacks[{name!r}] reads as the built-in attack {spec} but is another attack: "
                              "name it otherwise", field="attacks")
        return


def _check_keys(attacks: Mapping) -> None:
    """An attack dict's names label the report's rows: text, not empty, and 'clean' only for
    the clean accuracy (None), which every report has anyway."""
    for k, a in attacks.items():
        if not isinstance(k, str) or not k.strip() or k != k.strip() or not k.isprintable() or "|" in k:
            raise ConfigError(f"attacks: the names are the report's row labels, text without surrounding "
                              f"spaces or '|' (a table's column mark), got {k!r}", field="attacks")
        if k == "clean" and a is not None:
            raise ConfigError("attacks['clean'] is the clean accuracy (every report has it): give None there, "
                              "or name the attack otherwise", field="attacks")
        if k != "clean" and row_key(k) in ("clean", "worstcase"):
            raise ConfigError(f"attacks[{k!r}]: a row of every report is named so already; name the attack otherwise",
                              field="attacks")
        if k != "clean" and a is None:
            raise ConfigError(f"attacks[{k!r}] is None, which only 'clean' may be: give an attack "
                              "(eae.build_attack(...)), or list built-in attacks by name (['clean', 'pgd20'])",
                              field="attacks")
        if k != "clean" and not callable(a):
            raise ConfigError(f"attacks[{k!r}] must be an attack (eae.build_attack(...) or a callable "
                              f"attack(model, x, y)), got {short(a)}", field="attacks")
        _not_a_builtin_name(k, a)


def check_radius(eps: float, norm: str, x: torch.Tensor) -> None:
    """Refuse an L2 radius beyond the diameter of the image box (see ``l2_diameter_errors``)."""
    errors = l2_diameter_errors(eps, norm, tuple(x.shape[1:])) if x.ndim == 4 else []
    if errors:
        raise ConfigError(errors[0], field="eps")


def _check_model(model, x, y, device, attacks: list[Attack]) -> tuple[int, list[tuple[str, str]]]:
    """Refuse a model whose outputs cannot be scored, or labels and attacks its number of
    classes cannot serve; its number of classes, and notes for the verdict where the attacks do
    less than usual."""
    kinds = {p.dtype for p in model.parameters() if p.is_floating_point()}
    if torch.float64 in kinds:  # the images are float32: the first layer would fail on them
        raise ModelError("the model's parameters are float64; eae attacks and scores float32 images (with bf16 "
                         "where asked): convert it to float32 (model.float() in Python; for --model, a constructor "
                         "that builds float32 layers)")
    k = checks.output_form(model, as_images(x[:2].to(device)))
    if len(y) and int(y.max()) >= k:
        raise ConfigError(f"label {int(y.max())} is out of range for a model with {k} classes", field="y")
    return k, checks.class_count(k, attacks)


def _check_model_and_precision(model, precision: str, device: torch.device) -> None:
    """A network instance, and a precision this device has."""
    if precision == "tf32" and device.type != "cuda":  # it would label fp32 numbers as another evaluation's
        raise ConfigError(f"precision tf32 is a mode of NVIDIA GPUs (TF32 tensor cores); on {device.type} the attacks "
                          "would run in fp32 under another name: give fp32 (or bf16)",
                          cli=f"--precision tf32 is a mode of NVIDIA GPUs (TF32 tensor cores); on {device.type} the "
                              "attacks would run in fp32 under another name: give --precision fp32 (or bf16)",
                          field="precision")
    if isinstance(model, type) and issubclass(model, nn.Module):
        raise ModelError(f"model is the class {model.__name__}, not a network: pass an instance, "
                         f"{model.__name__}(...)")
    if not isinstance(model, nn.Module):  # attacks need its modules (eval mode, frozen parameters)
        raise ModelError(f"model must be a torch.nn.Module, got {type(model).__name__}: wrap a function in a "
                         "Module whose forward calls it")


def run_suite(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
              attacks: Sequence[str] | Mapping[str, Attack | None] | None = None, eps: float = 8 / 255, *,
              suite: str | None = None, norm: str = "linf", batch_size: int = 500,
              device: torch.device | str | None = None, seed: int = 0, precision: str = "fp32",
              test_size: int | None = None, progress: bool = False, eot: int | None = None) -> Report:
    """Clean accuracy and every attack of the plan; no diagnostics (see ``evaluate``).
    ``eot``: forward passes per gradient (default: the suite's, 1 but for ``aa-rand``)."""
    device = resolve_device(device) if isinstance(device, str) else torch.device(device) if device is not None \
        else x.device  # a device name is checked (ConfigError naming device), not handed to torch
    _check_model_and_precision(model, precision, device)
    check_inputs(x, y)
    check_radius(eps, norm, x)
    s, plan = resolve_plan(attacks, suite, eps, norm)
    eot = s.eot if eot is None else eot
    y = y.long()
    classes, notes = _check_model(model, x, y, device, [a.attack for _, a, _ in plan]) if len(y) else (None, [])
    n = int(len(y))
    state = {k: v.detach().clone() for k, v in model.state_dict().items()} if plan else {}
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        # reproducible random starts; the caller's RNG is untouched
        torch.manual_seed(torch_seed(seed + (7919 * dist.rank() if _SHARDED else 0)))
        clean = predict_all(model, x, y, batch_size, device)
        robust = clean.clone()  # worst case over everything
        chain = clean.clone()  # what the cascaded attacks have left standing
        correct = {"clean": clean}
        per_attack = {}
        for spec, attack, mode in plan:
            pool = clean if mode == STANDALONE else chain
            idx = pool.nonzero().squeeze(1)
            t0 = time.perf_counter()
            bar = progress_bar(len(idx), progress and dist.is_main(), spec, unit="img")
            with _run_as(attack, precision=precision, eot=eot):
                ok = attack_points(model, attack, x, y, idx, batch_size, device, bar)
            bar.close()
            _same_state(model, state, spec)
            robust &= ok
            if mode == CASCADE:
                chain &= ok
            correct[spec] = ok
            acc = (ok if mode == STANDALONE else chain).float().mean().item() if n else float("nan")
            per_attack[spec] = {"accuracy": acc, "mode": mode, "seconds": round(time.perf_counter() - t0, 2),
                                "n_attacked": int(len(idx)), **_what(attack)}
            fewer = checks.fewer_targets(classes, attack.attack) if classes else None
            if fewer:  # in the row itself: the verdict, which says it too, may not have been asked for
                per_attack[spec]["note"] = fewer
            if progress and dist.is_main() and not sys.stderr.isatty():  # a log file gets a line per attack
                print(f"  {spec}: {100 * acc:.1f}% on {n:,} images ({int(len(idx)):,} attacked, "
                      f"{per_attack[spec]['seconds']:.1f} s)", file=sys.stderr, flush=True)
        if plan and n:
            notes += _unchanged(model, x, y, clean, batch_size, device, eot)
    correct["worst_case"] = robust
    mean = (lambda t: t.float().mean().item() if n else float("nan"))
    label = s.label if eot == s.eot else s.label.replace(" with EOT", f" with EOT {eot}" if eot > 1 else ", no EOT")
    return Report(suite=s.name, label=label, n=n, eps=eps, norm=norm, seed=seed, precision=precision, eot=eot,
                  clean_accuracy=mean(clean), per_attack=per_attack, robust_accuracy=mean(robust),
                  seconds=time.perf_counter() - start, test_size=test_size, correct=correct, notes=notes)


__all__ = ["predict", "predict_all", "run_suite", "as_images", "shard_across_ranks", "CASCADE", "STANDALONE"]
