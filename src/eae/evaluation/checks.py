"""Checks on the model itself: is it a model that gradient attacks can judge?

After the checks AutoAttack runs before an evaluation (its ``checks.py``, explained in its
``flags_doc.md``), plus two of our own. Each returns ``(level, message)`` evidence for the
verdict (``ok``, ``suspicious`` or ``masked``), or raises ``ValueError`` when the model
cannot be evaluated at all.

- :func:`output_form`: the model returns one row of finite float scores per image, at least
  two classes (else an error); :func:`class_count` says what the attacks can do with that
  many classes (DLR needs 3, targeted DLR 4, nine targets need 10).
- :func:`randomness`: outputs that change across identical calls (a randomised defence:
  attack it with ``--eot N``).
- :func:`probabilities`: outputs in [0, 1] whose rows sum to 1 (softmax applied: the attacks
  need logits).
- :func:`batch_dependence`: an image's output depends on the other images of its batch
  (BatchNorm without running statistics, batch-level defences).
- :func:`inference_gradients`: the forward pass calls autograd (a dynamic defence that
  optimises at inference time).
- :func:`zero_gradient_check`: points whose cross-entropy or DLR input gradient is exactly zero.
- :func:`informative_check`: a one-step move along the sign of the gradient must raise
  the margin loss more than a random-sign move of the same size; a non-zero but useless
  gradient fails it.
- :func:`square_extra`: Square (black box) breaking points every white-box attack left.
"""
from __future__ import annotations

import sys
from typing import Callable

import torch
from torch import nn

from ..attacks import APGD, APGDT, FABT, Attack, attack_mode, ce_loss, dlr_loss, margin_loss
from ..attacks.base import eot_gradient
from ..errors import ModelError

Check = tuple[str, str]

RANDOM_TOL = 1e-4  # AutoAttack's: L2 distance of L2-normalised logits across identical calls
PROB_TOL = 1e-5  # AutoAttack's
BATCH_TOL = 1e-3  # L2 distance of normalised logits, alone vs in a batch (kernels differ by ~1e-6)
ZERO_GRAD = (0.01, 0.05)  # fraction of points with an all-zero CE gradient: suspicious, masked
INFORMATIVE = (0.9, 0.7)  # fraction where the gradient step beats the random one: suspicious, masked below
SQUARE_EXTRA = (0.002, 0.02)  # AutoAttack warns from 0.2 points
RECOMMENDED_EOT = 20  # AutoAttack's 'rand' version


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def _normalised(logits: torch.Tensor) -> torch.Tensor:
    return logits / (logits.norm(dim=1, keepdim=True) + 1e-10)


def _forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with attack_mode(model), torch.no_grad():
        return model(x)


# ----------------------------------------------------------------------------- can it be evaluated?
def output_form(model: nn.Module, x: torch.Tensor) -> int:
    """The number of classes, after checking that ``model(x)`` is a (len(x), K) float
    tensor with K >= 2; anything else is an error naming what came back."""
    try:
        out = _forward(model, x)
    except ModelError:  # said by an eae layer in its own words (a channel count)
        raise
    except Exception as e:  # noqa: BLE001 - the first forward pass: a model that cannot take these images
        text = str(e).strip().splitlines()
        why = f"{type(e).__name__}: {text[0]}" if text else type(e).__name__
        kinds = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters()
                        if p.is_floating_point() and p.dtype != torch.float32})
        if kinds:  # a half or bf16 model: the images are float32, and the first layer says so in its own words
            raise ModelError(f"the model failed on float32 images ({why}): its parameters are {', '.join(kinds)}; "
                             "eae attacks and scores float32 images (with bf16 autocast where asked): convert it "
                             "to float32 (model.float() in Python; for --model, a constructor that builds float32 "
                             "layers)") from e
        raise ModelError(f"the model failed on a batch of shape {tuple(x.shape)} (images in [0, 1]): {why}; "
                         "check that it takes images of this size and channel count") from e
    if not isinstance(out, torch.Tensor):
        kind = type(out).__name__
        raise ModelError(f"the model returned a {kind}, not a tensor of logits: evaluate a module whose forward "
                         f"returns the (N, classes) logits only (wrap it to pick them out of the {kind})")
    if out.ndim != 2 or out.shape[0] != len(x):
        raise ModelError(f"the model returned shape {tuple(out.shape)} for {len(x)} images; logits must be "
                         f"({len(x)}, classes)")
    if not out.is_floating_point():
        raise ModelError(f"the model returned {out.dtype} outputs; logits must be floating point")
    if out.shape[1] < 2:
        raise ModelError(f"the model returned {out.shape[1]} score per image; a classifier needs at least 2 classes")
    return int(out.shape[1])


def class_count(n_classes: int, attacks: list[Attack]) -> list[Check]:
    """What the attacks can do with ``n_classes`` classes (AutoAttack's ``check_n_classes``):
    an error where a loss cannot be formed, a note where fewer targets are run."""
    dlr = [a for a in attacks if isinstance(a, APGD) and a.loss == "dlr"]
    targeted = [a for a in attacks if isinstance(a, (APGDT, FABT))]
    fix = "run other attacks, e.g. ['apgd-ce', 'fab-t', 'square'] (a suite that holds it cannot run)"
    cli = "give --attacks without it, e.g. --attacks apgd-ce,fab-t,square (a suite that holds it cannot run)"
    if dlr and n_classes < 3:
        what = f"the DLR loss (apgd-dlr) needs at least 3 classes; the model has {n_classes}: "
        raise ModelError(what + fix, cli=what + cli)
    if any(isinstance(a, APGDT) for a in attacks) and n_classes < 4:
        what = f"the targeted DLR loss (apgd-t) needs at least 4 classes; the model has {n_classes}: "
        raise ModelError(what + fix, cli=what + cli)
    return [("ok", f"{a.name} {fewer_targets(n_classes, a)}") for a in targeted if fewer_targets(n_classes, a)]


def fewer_targets(n_classes: int, attack: Attack) -> str | None:
    """What a targeted attack asked for more target classes than the model has others runs
    instead (said in its row of the report, whatever the diagnostics)."""
    if isinstance(attack, (APGDT, FABT)) and attack.targets > n_classes - 1:
        return f"runs {n_classes - 1} target classes, not {attack.targets}: the model has {n_classes} classes"
    return None


# ----------------------------------------------------------------------------- the model's behaviour
def randomness(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eot: int, calls: int = 5
               ) -> tuple[bool, Check]:
    """Identical calls must give identical outputs (AutoAttack's ``check_randomized``)."""
    outs = [_forward(model, x) for _ in range(calls)]
    correct = [int((o.argmax(1) == y).sum()) for o in outs]
    diff = max((_normalised(a) - _normalised(b)).norm(dim=1).max().item()
               for i, a in enumerate(outs) for b in outs[i + 1:])
    random = diff > RANDOM_TOL or len(set(correct)) > 1
    if not random:
        return False, ("ok", f"deterministic: {calls} identical calls gave the same outputs")
    what = (f"its outputs differ across {calls} identical calls (normalised logits up to {diff:.2g} apart; "
            f"{min(correct)}-{max(correct)} of {len(y)} correct)")
    if eot > 1:
        return True, ("ok", f"randomised model: {what}; the gradient attacks averaged {eot} forward passes (EOT)")
    return True, ("suspicious", f"randomised model: {what}, so single-pass gradients and scores overstate its "
                                f"robustness; rerun with --eot {RECOMMENDED_EOT} (expectation over "
                                "transformation), or --suite aa-rand")


def probabilities(model: nn.Module, x: torch.Tensor) -> Check:
    """Logits, not probabilities (AutoAttack's ``check_range_output``)."""
    out = _forward(model, x).float()
    if out.max() < 1 + PROB_TOL and out.min() > -PROB_TOL and ((out.sum(1) - 1).abs() < PROB_TOL).all():
        return ("suspicious", "the outputs look like probabilities (in [0, 1], each row sums to 1): softmax has "
                              "been applied, which flattens the attacks' gradients; evaluate the logits (pre-softmax)")
    return ("ok", "the outputs are logits, not probabilities")


def batch_dependence(model: nn.Module, x: torch.Tensor, probe: int = 4) -> Check:
    """An image's logits must not depend on the other images of its batch."""
    together = _forward(model, x)
    k = min(probe, len(x))
    alone = torch.cat([_forward(model, x[i:i + 1]) for i in range(k)])
    reordered = _forward(model, x.flip(0)).flip(0)
    diff = max((_normalised(alone) - _normalised(together[:k])).norm(dim=1).max().item(),
               (_normalised(reordered) - _normalised(together)).norm(dim=1).max().item())
    if diff > BATCH_TOL:
        return ("suspicious", f"the outputs depend on the batch (an image's normalised logits move by {diff:.2g} "
                              "alone or in another batch order; e.g. BatchNorm without running statistics): its "
                              "accuracy depends on how the test set is batched and the attacks do not model it")
    return ("ok", "the outputs do not depend on the batch")


_AUTOGRAD_CALLS = ("grad", "backward", "_make_grads")


def inference_gradients(model: nn.Module, x: torch.Tensor) -> Check:
    """The forward pass must not compute gradients (AutoAttack's ``check_dynamic``): a model
    that optimises at inference time is a dynamic defence and needs an adaptive attack."""
    seen: list[str] = []

    def tracer(frame, event, arg):
        code = frame.f_code
        if event == "call" and code.co_name in _AUTOGRAD_CALLS and "torch" in code.co_filename:
            seen.append(code.co_name)
        return None  # no line-by-line tracing

    before = sys.gettrace()
    sys.settrace(tracer)
    try:
        _forward(model, x)
    finally:
        sys.settrace(before)
    if seen:
        return ("suspicious", f"the forward pass calls autograd ({', '.join(sorted(set(seen)))}): a dynamic defence "
                              "that optimises at inference time; AutoAttack-style attacks may overstate its "
                              "robustness: attack it adaptively")
    return ("ok", "the forward pass computes no gradients")


# ----------------------------------------------------------------------------- the gradients
LEVELS = ("ok", "suspicious", "masked")


def _grade_low(value: float, limits: tuple[float, float]) -> str:
    return "masked" if value < limits[1] else "suspicious" if value < limits[0] else "ok"


def _grade(value: float, limits: tuple[float, float]) -> str:
    return "masked" if value > limits[1] else "suspicious" if value > limits[0] else "ok"


def _gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable, eot: int) -> torch.Tensor:
    with attack_mode(model):
        return eot_gradient(model, x, y, loss_fn, eot)[0]


def zero_gradient_counts(model: nn.Module, x: torch.Tensor, y: torch.Tensor, n_classes: int, eot: int = 1
                         ) -> dict[str, tuple[int, int]]:
    """(points with an all-zero input gradient, points looked at): of the cross-entropy on
    every point, and (with 3 classes or more) of DLR on the correctly classified points,
    those the attacks work on (DLR is constant, so flat, where the label ranks third)."""
    zero = (lambda loss_fn, xs, ys: int((_gradient(model, xs, ys, loss_fn, eot).flatten(1).abs().amax(1) == 0).sum()))
    counts = {"ce": (zero(ce_loss, x, y), len(y))}
    if n_classes >= 3:
        with attack_mode(model), torch.no_grad():
            right = model(x).argmax(1) == y
        counts["dlr"] = (zero(dlr_loss, x[right], y[right]) if right.any() else 0, int(right.sum()))
    return counts


def zero_gradient_check(fracs: dict[str, float]) -> Check:
    """All-zero input gradients stop gradient attacks. Of the cross-entropy they can come
    from a saturated softmax (graded from 1% of points); of DLR, which no logit scale
    saturates, from non-differentiable parts such as input quantisation (AutoAttack warns
    on any point; so do we)."""
    level = _grade(fracs["ce"], ZERO_GRAD)
    text = f"{_pct(fracs['ce'])} of points have an all-zero input gradient of the cross-entropy"
    if "dlr" in fracs:
        text += f", {_pct(fracs['dlr'])} of the correctly classified points of the DLR loss"
        level = max(level, _grade(fracs["dlr"], (0.0, ZERO_GRAD[1])), key=LEVELS.index)
    return level, text


GREY_LEVEL = 1 / 255  # the smallest step an image can take: a move below it leaves 8-bit pixels as they are


def informative_step(eps: float) -> float:
    """The size of the one-step moves: ε, but never below one grey level (a smaller move
    is lost in fp32 rounding near 1, and would call any model's gradient useless)."""
    return max(float(eps), GREY_LEVEL)


def informative_fraction(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, eot: int = 1) -> float:
    """The fraction of points where one step (:func:`informative_step`) along the sign of
    the margin loss's gradient raises that loss more than the same step along a random sign."""
    g = _gradient(model, x, y, margin_loss, eot)
    rand = torch.randint(0, 2, x.shape, device=x.device).to(x.dtype) * 2 - 1
    step = informative_step(eps)
    with attack_mode(model), torch.no_grad():
        up = margin_loss(model((x + step * g.sign()).clamp(0, 1)), y)
        other = margin_loss(model((x + step * rand).clamp(0, 1)), y)
    return (up > other).float().mean().item()


def informative_check(frac: float, eps: float | None = None) -> Check:
    """Useful gradients beat a random direction nearly everywhere; a gradient that is
    non-zero but carries no information (noise, a wrong surrogate) wins about half the
    time, and passes the zero-gradient check."""
    size = "ε" if eps is None or informative_step(eps) == eps else "1/255: ε is below one grey level"
    return (_grade_low(frac, INFORMATIVE), f"a one-step move along the gradient's sign raises the margin loss more "
                                           f"than a random-sign move of the same size ({size}) at {_pct(frac)} of "
                                           "points")


def square_extra(per_attack: dict) -> tuple[float, Check] | None:
    """Square (black box), last in a cascade, breaking points that every white-box attack
    before it left standing (AutoAttack's ``check_square_sr``)."""
    specs = list(per_attack)
    if "square" not in specs or per_attack["square"]["mode"] != "cascade" or specs.index("square") == 0:
        return None
    before = per_attack[specs[specs.index("square") - 1]]["accuracy"]
    extra = before - per_attack["square"]["accuracy"]
    return extra, (_grade(extra, SQUARE_EXTRA), f"Square (black box) broke {_pct(extra)} of points that survived "
                                                "every white-box attack")


__all__ = ["output_form", "class_count", "fewer_targets", "randomness", "probabilities", "batch_dependence", "inference_gradients",
           "zero_gradient_counts", "zero_gradient_check", "informative_fraction", "informative_check", "square_extra",
           "RECOMMENDED_EOT"]
