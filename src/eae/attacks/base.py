"""What every attack shares: hygiene, losses and the input gradient.

An attack is a small object, hyperparameters in ``__init__``, called as
``attack(model, x, y) -> x_adv`` on images in [0, 1]. Calling it:
- refuses to run under ``torch.inference_mode()`` (no autograd there);
- puts every module in eval mode (BatchNorm must not see adversarial batches'
  statistics) and freezes parameters, so only the input gradient is computed and
  parameter ``.grad`` and DDP hooks are never touched;
- runs in fp32 (autocast off, TF32 off) unless its ``precision`` says otherwise, and
  even then decides in strict fp32: a lower precision may only speed up the gradients,
  never say that a point is fooled (see :func:`decision_logits`);
- restores each module's mode and each parameter's ``requires_grad`` exactly.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError


PRECISIONS = ("fp32", "tf32", "bf16")


MAX_STEPS, MAX_RESTARTS = 100_000, 1_000  # beyond these an attack is a typo, not an evaluation


def check_settings(attack: str, eps: object, norm: str, counts: dict[str, object],
                   flags: dict[str, object] | None = None, **reals: tuple[object, float, float]) -> float:
    """An attack's settings that cannot be right, said naming the argument when it is built: an
    eps out of range, a count below 1 or a step of 0 (the attack would attack nothing and score
    every point robust), a text for a switch ("false" would read as true).
    ``counts``: name -> value, whole numbers from 1 (restarts up to MAX_RESTARTS, others up to
    MAX_STEPS); ``flags``: name -> True or False; ``reals``: name=(value, low, high), finite,
    low < value <= high. Returns eps as a float (a Fraction or numpy number as Python's)."""
    import math
    import numbers

    from ..config import eps_errors

    errors = eps_errors(eps, "l2" if str(norm).lower() == "l2" else "linf")
    if errors:
        raise ConfigError(f"{attack}: {errors[0]}", field="eps")
    for name, value in counts.items():
        top = MAX_RESTARTS if name == "restarts" else MAX_STEPS
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 1 <= value <= top:
            raise ConfigError(f"{attack}: {name} must be a whole number in 1..{top:,}, got {value!r}", field=name)
    for name, value in (flags or {}).items():
        if not isinstance(value, bool):
            raise ConfigError(f"{attack}: {name} must be True or False, got {value!r}", field=name)
    for name, (value, low, high) in reals.items():
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
        if not (ok and low < value <= high):
            where = f"in ({low:g}, {high:g}]" if math.isfinite(high) else f"> {low:g}"
            raise ConfigError(f"{attack}: {name} must be a finite number {where}, got {value!r}", field=name)
    return float(eps) + 0.0  # (-0.0 is 0)


def loss_named(loss: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if loss not in LOSSES:
        raise ConfigError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}", field="loss")
    return LOSSES[loss]


def _check_labels(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: "Attack") -> None:
    """Labels the model's classes can hold, and classes enough for the attack's loss (torch would
    fail with an index error deep inside)."""
    from ..evaluation.checks import class_count, output_form

    if not len(y):
        return
    k = output_form(model, x[:1])
    if int(y.max()) >= k:
        raise ConfigError(f"label {int(y.max())} is out of range for a model with {k} classes", field="y")
    class_count(k, [attack])


def check_inputs(x: torch.Tensor, y: torch.Tensor) -> None:
    """Refuse data that would give meaningless numbers, with a message naming the problem."""
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError("x and y must be torch tensors")
    if torch.is_inference_mode_enabled():  # no gradient can be taken there: every attack would fail inside
        raise ConfigError("called under torch.inference_mode(): attacks need input gradients; call it outside "
                          "inference_mode (eae turns gradients off for the model itself)", field="x")
    for name, t in (("x", x), ("y", y)):
        if t.device.type == "meta":
            raise ConfigError(f"{name} is on the meta device (a shape without data): give real tensors", field=name)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ConfigError(f"x must be images (N, C, H, W) with C = 1 or 3, got shape {tuple(x.shape)}", field="x")
    if y.ndim != 1 or len(y) != len(x):
        raise ConfigError(f"y must hold one label per image: got shape {tuple(y.shape)} for {len(x)} images", field="y")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ConfigError(f"y must hold integer class labels, got dtype {y.dtype}", field="y")
    if len(y) and int(y.min()) < 0:
        raise ConfigError(f"labels must be >= 0, got {int(y.min())}", field="y")
    if x.dtype != torch.uint8:
        if not x.is_floating_point():
            raise ConfigError(f"x must be uint8 (0-255) or float in [0, 1], got dtype {x.dtype}", field="x")
        if not torch.isfinite(x).all():
            raise ConfigError("x contains NaN or infinite values", field="x")
        if len(x) and (x.min() < 0 or x.max() > 1):
            raise ConfigError(f"float images must lie in [0, 1] (the model normalises internally), got "
                              f"[{x.min().item():.3g}, {x.max().item():.3g}]", field="x")



@contextlib.contextmanager
def attack_mode(model: nn.Module, *, eval_mode: bool = True, precision: str = "fp32") -> Iterator[None]:
    """Eval mode, frozen parameters, gradients on, and the numeric precision of the
    forward passes: ``fp32`` (autocast and TF32 off), ``tf32`` (TF32 matmuls/convs on
    CUDA) or ``bf16`` (autocast). Everything is restored on exit."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if torch.is_inference_mode_enabled():
        raise RuntimeError("attacks need autograd, but were called under torch.inference_mode(); "
                           "call them outside it (torch.no_grad() around them is fine)")
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.requires_grad) for p in model.parameters()]
    tf32 = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    try:
        if eval_mode:
            model.eval()
        for p, _ in grads:
            p.requires_grad_(False)
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.enable_grad())
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
            for dev in ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",):
                if precision == "bf16":
                    stack.enter_context(torch.autocast(dev, dtype=torch.bfloat16))
                else:
                    stack.enter_context(torch.autocast(dev, enabled=False))
            yield
    finally:
        for m, training in modes:
            m.training = training
        for p, req in grads:
            p.requires_grad_(req)
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32


@contextlib.contextmanager
def strict_fp32() -> Iterator[None]:
    """Autocast and TF32 off inside, whatever the attack's precision; restored on exit."""
    tf32 = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        with torch.autocast("cpu", enabled=False), torch.autocast("cuda", enabled=False):
            yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32


def _reduced_precision(device: torch.device) -> bool:
    if torch.is_autocast_enabled(device.type):
        return True
    return device.type == "cuda" and (torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32)


def fp32_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Logits of a forward pass in strict fp32, without a graph."""
    with torch.no_grad(), strict_fp32():
        return model(x.detach().float()).float()


def decision_logits(model: nn.Module, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """The logits to decide on at ``x`` (is the point fooled? which classes are the
    targets?): ``logits`` themselves when they were computed in fp32, else those of a
    strict-fp32 forward pass. Under ``--precision bf16`` a point whose bf16 argmax is
    wrong but whose fp32 argmax is right is therefore never dropped from the points an
    attack still works on; the cost is one forward pass (no backward) per decision."""
    if _reduced_precision(x.device):
        return fp32_logits(model, x)
    return logits.detach().float()


# ----------------------------------------------------------------------------- losses
# Per-example losses to be *maximised* by the attacker.
def ce_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), y, reduction="none")


def margin_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Carlini-Wagner margin: max_{k != y} z_k - z_y. Unlike cross-entropy it does not
    saturate when the logits are scaled up, which is why it exposes masking."""
    logits = logits.float()
    zy = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    return other - zy


def dlr_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Difference of Logits Ratio (Croce & Hein 2020): the margin divided by the spread
    of the top logits, -(z_y - max_{k != y} z_k) / (z_(1) - z_(3)). Invariant to shifting
    and scaling the logits, so logit inflation cannot hide the gradient."""
    logits = logits.float()
    top = logits.topk(3, dim=1).values
    zy = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    return -(zy - other) / (top[:, 0] - top[:, 2] + 1e-12)


def dlr_targeted_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Targeted DLR: -(z_y - z_t) / (z_(1) - (z_(3) + z_(4)) / 2)."""
    logits = logits.float()
    top = logits.topk(4, dim=1).values
    zy = logits.gather(1, y[:, None]).squeeze(1)
    zt = logits.gather(1, target[:, None]).squeeze(1)
    return -(zy - zt) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "ce": ce_loss,
    "cw": margin_loss,
    "dlr": dlr_loss,
}


def grad_of(loss: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """d loss / d inputs, and zeros where the model gives the input no gradient path at
    all (non-differentiable preprocessing, detached outputs): the attack then makes no
    progress and the masking diagnostics say so, instead of crashing."""
    if not loss.requires_grad:
        return torch.zeros_like(inputs)
    (g,) = torch.autograd.grad(loss, inputs, allow_unused=True)
    return torch.zeros_like(inputs) if g is None else g


def eot_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable, n: int = 1
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(d loss / d x, loss, logits) with the gradient and the per-example loss averaged
    over ``n`` forward passes: expectation over transformation (Athalye et al. 2018) for a
    randomised model, as AutoAttack's ``eot_iter``; the logits are the last pass's. The
    loss is summed over the batch, so each example's gradient does not depend on the
    batch size."""
    x = x.detach().requires_grad_(True)
    grad, loss_sum = torch.zeros_like(x), 0.0
    for _ in range(n):
        logits = model(x)
        loss = loss_fn(logits, y)
        grad += grad_of(loss.sum(), x)
        loss_sum = loss_sum + loss.detach()
    return (grad / n if n > 1 else grad), (loss_sum / n if n > 1 else loss_sum), logits.detach()


def input_gradient(model: nn.Module, x: torch.Tensor, delta: torch.Tensor, y: torch.Tensor,
                   loss_fn: Callable, eot: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(d loss / d delta, logits at x + delta), the gradient averaged over ``eot`` passes.
    The loss is summed over the batch so each example's gradient does not depend on the
    batch size."""
    grad, _, logits = eot_gradient(model, x + delta, y, loss_fn, eot)
    return grad, logits


class Attack:
    """Base class: subclasses implement ``perturb(model, x, y) -> x_adv``.

    ``precision`` (``fp32`` by default) sets the arithmetic of the forward and backward
    passes that give the attack its gradients; its decisions (fooled or not, the target
    order) are taken on strict-fp32 logits, and the evaluator scores the returned points
    in strict fp32. ``eot`` (1 by default) averages each gradient over that many forward
    passes, for randomised models.
    """

    name = "attack"
    eval_mode = True
    precision = "fp32"
    eot = 1  # forward passes averaged per gradient (expectation over transformation)
    uses_gradients = True  # False: every forward pass is a decision, so all run in strict fp32

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        check_inputs(x, y)  # images outside [0, 1] would come back outside the eps-ball (clamped to the box)
        precision = self.precision if self.uses_gradients else "fp32"
        x = x.detach().float().div(255) if x.dtype == torch.uint8 else x.detach().float()
        y = y.detach().long()  # int32 labels too: torch's losses take int64
        with attack_mode(model, eval_mode=self.eval_mode, precision=precision):
            try:
                x_adv = self.perturb(model, x, y)
            except (IndexError, RuntimeError):  # torch's index error: said in the user's words if theirs
                _check_labels(model, x, y, self)
                raise
        return x_adv.detach()

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
