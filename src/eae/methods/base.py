"""The contract between the training loop and a training method.

A method turns a clean batch into the loss to minimise. The loop (``eae.train``)
owns everything else: data, optimiser, schedule, precision, timing, logging and
checkpoints, so every method is trained and timed the same way.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..config import TrainConfig
from ..distributed import unwrap
from ..threat import LinfBall


@dataclass
class StepOutput:
    loss: torch.Tensor  # scalar, what the optimiser minimises
    logits: torch.Tensor  # on the inputs the loss was computed on (for train accuracy)
    stats: dict[str, torch.Tensor] = field(default_factory=dict)  # scalars, averaged per epoch


class Method:
    """Subclasses implement ``step``. ``model`` is in train mode and the loop has
    entered autocast; methods never call ``backward`` or the optimiser.

    Under torchrun ``model`` is the DDP wrapper: the forward whose loss is returned
    must go through it (DDP prepares its gradient all-reduce there), while attacks use
    ``unwrap(model)``, as ``input_grad`` does."""

    name = "method"
    replays = 1  # optimiser steps per minibatch (Free-AT replays each minibatch m times)
    # Methods whose attack step the overfitting guard may lower (rollback_lower_step)
    # set this and multiply their step size by ``step_scale``.
    scalable_step = False
    step_scale = 1.0

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.threat = LinfBall(cfg.eps)

    def passes(self, epochs: int) -> int:
        """Passes over the training data for a run of ``epochs`` epochs."""
        return epochs

    def step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, epoch: int) -> StepOutput:
        raise NotImplementedError

    # Methods with state across steps (running statistics) save it in checkpoints.
    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def input_grad(model: nn.Module, x: torch.Tensor, delta: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """d CE / d delta at x + delta, in the model's current (train) mode. Only the input
    gradient is asked for, so no parameter gradient is accumulated."""
    delta = delta.detach().requires_grad_(True)
    loss = nn.functional.cross_entropy(unwrap(model)(x + delta), y)
    (grad,) = torch.autograd.grad(loss, delta)
    return grad
