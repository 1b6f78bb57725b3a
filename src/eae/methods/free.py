"""Free adversarial training (Shafahi et al., NeurIPS 2019, "Adversarial Training for Free!").

Each minibatch is replayed m times. One backward pass per replay gives both the
parameter gradient (the loop's optimiser step) and the input gradient, which moves
the perturbation δ by one signed step of size ε; δ is carried from replay to replay
and from minibatch to minibatch. Passes over the data are ceil(epochs / m), so the
number of optimiser steps matches ``epochs`` of standard training.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..threat import clip_to_image
from .base import Method, StepOutput
from .registry import register_method


@register_method("free")
class Free(Method):
    """Free-AT: m replays per minibatch, the perturbation carried between them (Shafahi et al. 2019)."""

    name = "free"
    scalable_step = True

    def __init__(self, cfg):
        super().__init__(cfg)
        self.replays = cfg.free_replays
        self.delta: torch.Tensor | None = None  # carried perturbation, the size of a full batch
        self._leaf: torch.Tensor | None = None  # the slice the last step differentiated

    def passes(self, epochs: int) -> int:
        return math.ceil(epochs / self.replays)

    def _flush(self) -> None:
        """Apply the pending update: the input gradient left by the loop's last backward
        pass (the "free" step: no extra pass through the network)."""
        leaf = self._leaf
        if leaf is not None and leaf.grad is not None:
            self.delta[: len(leaf)] = self.threat.project(leaf.detach() + self.threat.step(leaf.grad, self.cfg.eps * self.step_scale))
            leaf.grad = None

    def step(self, model, x, y, epoch):
        self._flush()
        d = self.delta
        if d is None or len(d) < len(x) or d.shape[1:] != x.shape[1:] or d.device != x.device:
            self.delta = torch.zeros_like(x)
        self._leaf = clip_to_image(x, self.delta[: len(x)].clone()).requires_grad_(True)
        logits = model(x + self._leaf)
        return StepOutput(F.cross_entropy(logits, y), logits)

    def state_dict(self) -> dict:
        self._flush()
        return {"delta": self.delta}

    def load_state_dict(self, state: dict) -> None:
        self.delta, self._leaf = state.get("delta"), None
