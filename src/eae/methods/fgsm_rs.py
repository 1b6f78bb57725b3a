"""FGSM with a random start, "Fast is better than free" (Wong, Rice & Kolter, ICLR 2020).

δ ~ U(-ε, ε); one signed-gradient step of α = 1.25 ε; projection back to the ε-ball
and to valid images; train on x + δ. The attack runs in train mode, as in the
paper's code. Costs about two standard steps.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..threat import clip_to_image
from .base import Method, StepOutput, input_grad
from .registry import register_method


@register_method("fgsm_rs")
class FGSMRS(Method):
    """FGSM from a uniform random start, step 1.25 eps (Wong et al. 2020)."""

    name = "fgsm_rs"
    scalable_step = True

    def __init__(self, cfg):
        super().__init__(cfg)
        self.alpha = 1.25 * cfg.eps if cfg.fgsm_alpha is None else cfg.fgsm_alpha

    def step(self, model, x, y, epoch):
        adv = fgsm_rs_example(model, x, y, self.threat, self.alpha * self.alpha_scale,
                              zero_start=self.cfg.fgsm_init == "zero")
        logits = model(adv)
        return StepOutput(F.cross_entropy(logits, y), logits)


def fgsm_rs_example(model, x, y, threat, alpha, zero_start: bool = False):
    """x + δ: a uniform start in the ε-ball (or zero: plain FGSM), one signed step of α,
    projected (detached)."""
    delta = torch.zeros_like(x) if zero_start else threat.random_perturb(x)
    grad = input_grad(model, x, delta, y)
    return (x + clip_to_image(x, threat.project(delta + threat.step(grad, alpha)))).detach()
