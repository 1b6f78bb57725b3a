"""Gradient attacks: FGSM and PGD (with cross-entropy or CW-margin loss)."""
from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import ConfigError
from ..threat import clip_to_image, make_threat
from .base import Attack, check_settings, decision_logits, fp32_logits, input_gradient, loss_named
from .registry import register_attack


@register_attack("fgsm")
class FGSM(Attack):
    """One signed-gradient step of size ε from the clean image (Goodfellow et al. 2015)."""

    name = "fgsm"

    def __init__(self, eps: float, norm: str = "linf", loss: str = "ce"):
        eps = check_settings("FGSM", eps, norm, {})
        self.threat = make_threat(norm, eps)
        self.loss, self.loss_fn = loss, loss_named(loss)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        grad, _ = input_gradient(model, x, torch.zeros_like(x), y, self.loss_fn, self.eot)
        delta = self.threat.project(self.threat.step(grad, self.threat.eps))
        return x + clip_to_image(x, delta)


@register_attack("pgd")
class PGD(Attack):
    """k steps of projected gradient ascent from a random start (Madry et al. 2018).

    With several restarts, and at every iterate, the first point found that the model
    misclassifies is kept: the result is the per-example worst case over all of them.
    """

    name = "pgd"

    def __init__(self, eps: float, steps: int = 20, alpha: float | None = None, restarts: int = 1,
                 loss: str = "ce", norm: str = "linf", random_start: bool = True):
        if restarts != 1 and random_start is False:
            raise ConfigError(f"{type(self).__name__}: restarts={restarts!r} without a random start repeats one run: "
                              "give random_start=True, or restarts=1", field="restarts")
        eps = check_settings(type(self).__name__, eps, norm, {"steps": steps, "restarts": restarts},
                       {"random_start": random_start}, **({} if alpha is None else {"alpha": (alpha, 0, math.inf)}))
        self.threat = make_threat(norm, eps)
        self.steps, self.restarts = steps, restarts
        # 2/255 at ε = 8/255, the usual choice for PGD-10/20 on CIFAR-10
        self.alpha = eps / 4 if alpha is None else alpha
        self.loss, self.loss_fn = loss, loss_named(loss)
        self.random_start = random_start

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x_adv = x.clone()
        fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        for _ in range(self.restarts):
            delta = self.threat.random_perturb(x) if self.random_start else torch.zeros_like(x)
            for _ in range(self.steps):
                grad, logits = input_gradient(model, x, delta, y, self.loss_fn, self.eot)
                self._keep(x_adv, fooled, x + delta, decision_logits(model, x + delta, logits), y)
                delta = clip_to_image(x, self.threat.project(delta + self.threat.step(grad, self.alpha)))
            self._keep(x_adv, fooled, x + delta, fp32_logits(model, x + delta), y)
            # Unfooled examples end at the last iterate (its loss is the highest we saw
            # in the usual case), so x_adv is always a real attack point.
            x_adv = torch.where(fooled[:, None, None, None], x_adv, x + delta)
        return x_adv

    @staticmethod
    def _keep(x_adv, fooled, candidate, logits, y) -> None:
        new = (logits.argmax(1) != y) & ~fooled
        x_adv.copy_(torch.where(new[:, None, None, None], candidate, x_adv))
        fooled |= new

    def __repr__(self) -> str:
        return (f"PGD(eps={self.threat.eps:.6g}, steps={self.steps}, alpha={self.alpha:.6g}, "
                f"restarts={self.restarts}, loss={self.loss})")


@register_attack("cw")
class CW(PGD):
    """CW-inf: PGD on the Carlini-Wagner margin loss (Carlini & Wagner 2017)."""

    name = "cw"

    def __init__(self, eps: float, steps: int = 20, alpha: float | None = None, restarts: int = 1,
                 norm: str = "linf", random_start: bool = True):
        super().__init__(eps, steps, alpha, restarts, loss="cw", norm=norm, random_start=random_start)
