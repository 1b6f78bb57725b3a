"""What every attack shares: hygiene, losses and the input gradient.

An attack is a small object, hyperparameters in ``__init__``, called as
``attack(model, x, y) -> x_adv`` on images in [0, 1]. Calling it:
- refuses to run under ``torch.inference_mode()`` (no autograd there);
- puts every module in eval mode (BatchNorm must not see adversarial batches'
  statistics) and freezes parameters, so only the input gradient is computed and
  parameter ``.grad`` and DDP hooks are never touched;
- runs in fp32 (autocast off, TF32 off) unless the attack says otherwise;
- restores each module's mode and each parameter's ``requires_grad`` exactly.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn


@contextlib.contextmanager
def attack_mode(model: nn.Module, *, eval_mode: bool = True, fp32: bool = True) -> Iterator[None]:
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
            if fp32:
                torch.backends.cudnn.allow_tf32 = False
                torch.backends.cuda.matmul.allow_tf32 = False
                for dev in ("cpu", "cuda"):
                    stack.enter_context(torch.autocast(dev, enabled=False))
            yield
    finally:
        for m, training in modes:
            m.training = training
        for p, req in grads:
            p.requires_grad_(req)
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32


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


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "ce": ce_loss,
    "cw": margin_loss,
}


def input_gradient(model: nn.Module, x: torch.Tensor, delta: torch.Tensor, y: torch.Tensor,
                   loss_fn: Callable) -> tuple[torch.Tensor, torch.Tensor]:
    """(d loss / d delta, logits at x + delta). The loss is summed over the batch so
    each example's gradient does not depend on the batch size."""
    delta = delta.detach().requires_grad_(True)
    logits = model(x + delta)
    (grad,) = torch.autograd.grad(loss_fn(logits, y).sum(), delta)
    return grad, logits.detach()


class Attack:
    """Base class: subclasses implement ``perturb(model, x, y) -> x_adv``."""

    name = "attack"
    eval_mode = True

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with attack_mode(model, eval_mode=self.eval_mode):
            x_adv = self.perturb(model, x.detach().float(), y.detach())
        return x_adv.detach()

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
