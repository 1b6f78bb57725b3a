"""Free adversarial training (Shafahi et al., NeurIPS 2019, "Adversarial Training for Free!").

Each minibatch is replayed m times. One backward pass per replay gives both the
parameter gradient (the loop's optimiser step) and the input gradient, which moves
the perturbation δ by one signed step of size ε; δ is carried from replay to replay
and from minibatch to minibatch. Passes over the data are ceil(epochs / m), so the
number of optimiser steps matches ``epochs`` of standard training.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..threat import clip_to_image
from .base import Method, StepOutput
from .registry import register_method


class CarriedPerturbation:
    """Free-AT's perturbation: δ carried from step to step and moved by one signed step of
    the input gradient the loop's last backward pass left on it (no extra pass)."""

    def __init__(self, threat, step_size):
        self.threat, self.step_size = threat, step_size  # step_size(): read at each update
        self.delta: torch.Tensor | None = None  # the size of a full batch
        self._leaf: torch.Tensor | None = None  # the slice the last step differentiated

    def flush(self) -> None:
        """Apply the pending update from the last backward pass."""
        leaf = self._leaf
        if leaf is not None and leaf.grad is not None:
            self.delta[: len(leaf)] = self.threat.project(leaf.detach() + self.threat.step(leaf.grad, self.step_size()))
            leaf.grad = None

    def leaf(self, x: torch.Tensor) -> torch.Tensor:
        """δ for this batch, requiring grad: the caller trains on x + δ."""
        self.flush()
        d = self.delta
        if d is None or len(d) < len(x) or d.shape[1:] != x.shape[1:] or d.device != x.device:
            self.delta = torch.zeros_like(x)
        self._leaf = clip_to_image(x, self.delta[: len(x)].clone()).requires_grad_(True)
        return self._leaf

    def state_dict(self) -> dict:
        self.flush()
        return {"delta": self.delta}

    def load_state_dict(self, state: dict) -> None:
        self.delta, self._leaf = state.get("delta"), None


@register_method("free")
class Free(Method):
    """Free-AT: m replays per minibatch, the perturbation carried between them (Shafahi et al. 2019)."""

    name = "free"
    scalable_step = True

    def __init__(self, cfg):
        super().__init__(cfg)
        self.replays = cfg.free_replays
        self.carried = CarriedPerturbation(self.threat, lambda: self.eps * self.step_scale)

    def step(self, model, x, y, epoch):
        logits = model(x + self.carried.leaf(x))
        return StepOutput(F.cross_entropy(logits, y), logits)

    def state_dict(self) -> dict:
        return self.carried.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.carried.load_state_dict(state)
