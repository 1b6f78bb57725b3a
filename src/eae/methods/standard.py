"""Standard (non-adversarial) training: cross-entropy on clean images."""
from __future__ import annotations

import torch.nn.functional as F

from .base import Method, StepOutput
from .registry import register_method


@register_method("standard")
class Standard(Method):
    """Cross-entropy on clean images (no adversary)."""

    name = "standard"
    adversarial = False

    def step(self, model, x, y, epoch):
        logits = model(x)
        return StepOutput(F.cross_entropy(logits, y), logits)
