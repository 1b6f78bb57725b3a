"""PGD adversarial training (Madry et al., ICLR 2018): k steps of size α from a
uniform random start in the ε-ball; train on the last iterate. Costs k + 1 steps."""
from __future__ import annotations

import torch.nn.functional as F

from ..threat import clip_to_image
from .base import Method, StepOutput, input_grad
from .registry import register_method


@register_method("pgd")
class PGDAT(Method):
    """PGD-k adversarial training from a random start (Madry et al. 2018)."""

    name = "pgd"
    scalable_step = True

    def step(self, model, x, y, epoch):
        delta = self.threat.random_perturb(x)
        for _ in range(self.cfg.pgd_steps):
            grad = input_grad(model, x, delta, y)
            delta = clip_to_image(x, self.threat.project(delta + self.threat.step(grad, self.cfg.pgd_alpha * self.alpha_scale)))
        logits = model(x + delta.detach())
        return StepOutput(F.cross_entropy(logits, y), logits)
