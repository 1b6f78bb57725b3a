"""N-FGSM (de Jorge et al., NeurIPS 2022, "Make Some Noise"): a stronger noise
δ ~ U(-2ε, 2ε) and one signed step of size ε, with no projection back to the ε-ball
(only to valid images). Avoids catastrophic overfitting at the cost of FGSM-RS."""
from __future__ import annotations

import torch.nn.functional as F

from ..threat import clip_to_image
from .base import Method, StepOutput, input_grad
from .registry import register_method


@register_method("n_fgsm")
class NFGSM(Method):
    """N-FGSM: noise U(-2 eps, 2 eps), one step of eps, no eps-ball projection (de Jorge et al. 2022)."""

    name = "n_fgsm"
    scalable_step = True

    def __init__(self, cfg):
        super().__init__(cfg)
        self.alpha = cfg.eps if cfg.nfgsm_alpha is None else cfg.nfgsm_alpha

    def step(self, model, x, y, epoch):
        logits = model(n_fgsm_example(model, x, y, self.threat, self.alpha * self.alpha_scale, self.cfg.nfgsm_noise))
        return StepOutput(F.cross_entropy(logits, y), logits)


def n_fgsm_example(model, x, y, threat, alpha, noise):
    """x + δ: noise U(-noise·ε, noise·ε), one signed step of α, no ε-ball projection (detached)."""
    delta = threat.random_perturb(x, scale=noise)
    grad = input_grad(model, x, delta, y)
    return (x + clip_to_image(x, delta + threat.step(grad, alpha))).detach()
