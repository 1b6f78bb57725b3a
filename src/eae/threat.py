"""Threat models as tiny objects (after MadryLab's ``attack_steps``).

A threat model knows three things about its perturbation set: how to draw a
random point in it, how to take an ascent step, and how to project back. Every
attack and every adversarial training method uses these, so "the ε-ball" means
the same thing everywhere. All work on the perturbation δ of images x in [0, 1];
:func:`clip_to_image` keeps x + δ a valid image.
"""
from __future__ import annotations

import torch


def _per_example_norm(t: torch.Tensor, p: float) -> torch.Tensor:
    return t.flatten(1).norm(p=p, dim=1).view(-1, *([1] * (t.dim() - 1)))


def clip_to_image(x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """The δ' closest to δ such that x + δ' is in [0, 1]."""
    return (x + delta).clamp_(0, 1) - x


class LinfBall:
    norm = "linf"

    def __init__(self, eps: float):
        self.eps = float(eps)

    def random_perturb(self, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """Uniform in the ball of radius ``scale * eps`` (scale 2 gives N-FGSM's noise)."""
        r = scale * self.eps
        return clip_to_image(x, torch.empty_like(x).uniform_(-r, r))

    def step(self, grad: torch.Tensor, alpha: float) -> torch.Tensor:
        return alpha * grad.sign()

    def project(self, delta: torch.Tensor) -> torch.Tensor:
        return delta.clamp(-self.eps, self.eps)

    def __repr__(self) -> str:
        return f"LinfBall(eps={self.eps:.6g})"


class L2Ball:
    norm = "l2"

    def __init__(self, eps: float):
        self.eps = float(eps)

    def random_perturb(self, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """Uniform in the ball: a Gaussian direction, radius eps * U^(1/d)."""
        d = x[0].numel()
        direction = torch.randn_like(x)
        direction = direction / _per_example_norm(direction, 2).clamp_min(1e-12)
        radius = scale * self.eps * torch.rand(x.shape[0], device=x.device).pow(1.0 / d)
        return clip_to_image(x, direction * radius.view(-1, *([1] * (x.dim() - 1))))

    def step(self, grad: torch.Tensor, alpha: float) -> torch.Tensor:
        return alpha * grad / _per_example_norm(grad, 2).clamp_min(1e-12)

    def project(self, delta: torch.Tensor) -> torch.Tensor:
        n = _per_example_norm(delta, 2)
        return delta * (self.eps / n.clamp_min(1e-12)).clamp(max=1.0)

    def __repr__(self) -> str:
        return f"L2Ball(eps={self.eps:.6g})"


def make_threat(norm: str, eps: float) -> LinfBall | L2Ball:
    if norm in ("linf", "Linf", "inf"):
        return LinfBall(eps)
    if norm in ("l2", "L2"):
        return L2Ball(eps)
    raise ValueError(f"unknown norm {norm!r}; use linf or l2")
