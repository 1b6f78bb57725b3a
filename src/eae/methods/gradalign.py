"""GradAlign (Andriushchenko & Flammarion, "Understanding and Improving Fast Adversarial
Training", NeurIPS 2020): FGSM plus a regulariser that keeps the input gradient aligned
within the ε-ball,

    CE(f(x + δ), y) + λ · (1 − mean_i cos(∇ₓℓ(x_i + δ0_i), ∇ₓℓ(x_i + η_i))),   η ~ U(-ε, ε),

where δ0 is FGSM's start (zero for GradAlign's own runs, or uniform) and the second
gradient is taken with ``create_graph`` so that the regulariser is trained through
(double backpropagation: about 3× FGSM's cost). As in the authors' code
(``tml-epfl/understanding-fast-adv-training``, ``train.py`` and ``utils.get_input_grad``):
the first gradient is the FGSM gradient itself, taken at ``x + δ0`` clipped to images
the authors' way (see ``_authors_clamp``) and *detached*, so the regulariser's gradient flows through the second one only; the second
point ``x + η`` is not clipped to images; examples where either gradient is zero are
left out of the mean; the FGSM step is ``α·sign(g)`` from δ0, projected to the ε-ball and
to images. Defaults are the authors' for ε = 8/255 on CIFAR-10
(``sh/exps_diff_eps_cifar10.sh``: ``--attack_init=zero --grad_align_cos_lambda=0.2``,
``fgsm_alpha`` 1.25). L∞ only, as in the paper.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..distributed import unwrap
from ..threat import clip_to_image
from .base import AdversaryThenLoss
from .registry import register_method


@register_method("gradalign")
class GradAlign(AdversaryThenLoss):
    """FGSM + lambda (1 - cos) gradient-alignment regulariser, double backprop (Andriushchenko & Flammarion 2020)."""

    name = "gradalign"
    scalable_step = True

    def __init__(self, cfg):
        super().__init__(cfg)
        self.alpha = 1.25 * cfg.eps if cfg.fgsm_alpha is None else cfg.fgsm_alpha

    def adversarial(self, model, x, y, epoch):
        cfg = self.cfg
        net = unwrap(model)  # input gradients bypass DDP; the training forward does not
        start = torch.zeros_like(x) if cfg.gradalign_init == "zero" else torch.empty_like(x).uniform_(-self.eps, self.eps)
        delta = start.requires_grad_(True)
        g1 = torch.autograd.grad(F.cross_entropy(net(_authors_clamp(x + delta)), y), delta)[0].detach()
        delta = clip_to_image(x, self.threat.project(start.detach() + self.threat.step(g1, self.alpha * self.alpha_scale)))
        return x + delta.detach(), (x, g1)

    def loss(self, model, logits, y, aux):
        cfg = self.cfg
        loss = F.cross_entropy(logits, y)
        if cfg.gradalign_lambda == 0:
            return loss, {}
        x, g1 = aux
        eta = torch.empty_like(x).uniform_(-self.eps, self.eps).requires_grad_(True)
        g2 = torch.autograd.grad(F.cross_entropy(unwrap(model)(x + eta), y), eta, create_graph=True)[0]
        cos = gradient_cosine(g1, g2)
        return loss + cfg.gradalign_lambda * (1.0 - cos), {"gradalign_cos": cos.detach()}


def _authors_clamp(v: torch.Tensor) -> torch.Tensor:
    """v clipped to [0, 1] as the authors' ``utils.clamp`` does it, with ``torch.min`` and
    ``torch.max``: at a pixel exactly 0 or 1 (saturated pixels are common in CIFAR-10, and
    with the zero start every pixel is x itself) a tie passes half the gradient, where
    ``clamp`` passes all of it. The regulariser's first gradient depends on it."""
    return torch.max(torch.min(v, torch.ones_like(v)), torch.zeros_like(v))


def gradient_cosine(g1: torch.Tensor, g2: torch.Tensor) -> torch.Tensor:
    """Mean per-example cosine of two input gradients over the examples where neither is
    zero (the authors' ``grads_nnz_idx``); 0-dim, differentiable in both."""
    g1, g2 = g1.flatten(1).float(), g2.flatten(1).float()
    keep = (g1.norm(dim=1) != 0) & (g2.norm(dim=1) != 0)
    cos = (g1 / g1.norm(dim=1, keepdim=True).clamp_min(1e-30)) * (g2 / g2.norm(dim=1, keepdim=True).clamp_min(1e-30))
    # the mean over the kept examples (no host sync; no example kept: 0, where the authors' code gives NaN)
    return (cos.sum(1) * keep).sum() / keep.sum().clamp_min(1)
