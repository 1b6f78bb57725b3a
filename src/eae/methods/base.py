"""The contract between the training loop and a training method.

A method turns a clean batch into the loss to minimise. The loop (``eae.train``)
owns everything else: data, optimiser, schedule, precision, timing, logging and
checkpoints, so every method is trained and timed the same way.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ..config import TrainConfig
from ..distributed import unwrap
from ..threat import make_threat


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
    adversarial = True  # trains against an adversary (the catastrophic-overfitting guard watches it)
    replays = 1  # optimiser steps per minibatch (Free-AT replays each minibatch m times)
    # Methods whose attack step the overfitting guard may lower (rollback_lower_step)
    # set this and multiply their step size by ``step_scale``.
    scalable_step = False
    step_scale = 1.0

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.threat = make_threat(cfg.norm, cfg.eps)  # the L2 forms of every method follow from it

    # eps warm-up (eps_warmup_epochs): the loop sets the fraction of eps this step's attack
    # uses; step sizes scale with it (as in the GradAlign and N-FGSM code for SVHN)
    eps_scale = 1.0

    def set_eps_scale(self, scale: float) -> None:
        self.eps_scale = scale
        self.threat.eps = self.cfg.eps * scale

    @property
    def eps(self) -> float:
        """The radius of this step's training attack."""
        return self.cfg.eps * self.eps_scale

    @property
    def alpha_scale(self) -> float:
        """What this step's attack step sizes are multiplied by (guard rollback x eps warm-up)."""
        return self.step_scale * self.eps_scale

    def passes(self, epochs: int) -> int:
        """Passes over the training data for a run of ``epochs`` (standard-equivalent) epochs:
        a method that replays each minibatch m times passes over the data ceil(epochs / m) times."""
        return math.ceil(epochs / self.replays)

    def step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, epoch: int) -> StepOutput:
        raise NotImplementedError

    # Methods with state across steps (running statistics) save it in checkpoints.
    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    # Methods with state per training image (``per_example = True``) get the loop's
    # ``examples`` before every step: (the global batch's image indices, this rank's
    # slice lo, hi). Their per-image state is the same on every rank and saved once.
    per_example = False
    examples: tuple[torch.Tensor, int, int] | None = None

    def setup_examples(self, n: int, shape: tuple[int, ...], device: torch.device) -> None:
        pass

    def example_state(self) -> dict:
        return {}

    def load_example_state(self, state: dict) -> None:
        pass


class Downsampled(nn.Module):
    """The model seen through an average pooling of its input by ``factor``: the
    gradient of a loss of ``Downsampled(m, 2)(v)`` with respect to the full-size ``v``
    is the low-resolution gradient spread evenly over each 2x2 block, at about a
    quarter of the cost of a full-resolution pass (a cheap, coarse adversary).

    BatchNorm running statistics are left as they were: low-resolution activations
    must not leak into the statistics the model is evaluated with."""

    def __init__(self, model: nn.Module, factor: int):
        super().__init__()
        self.model, self.factor = model, int(factor)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        # momentum 0 keeps the running statistics as they are (the running buffers are saved
        # for the backward pass, so they cannot be restored in place after the forward)
        bns = [m for m in self.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
               and m.training and m.track_running_stats]
        saved = [(m.momentum, m.num_batches_tracked.clone()) for m in bns]
        for m in bns:
            m.momentum = 0.0
        try:
            return self.model(nn.functional.avg_pool2d(v, self.factor))
        finally:
            for m, (momentum, tracked) in zip(bns, saved):
                m.momentum = momentum
                m.num_batches_tracked.copy_(tracked)


class AdversaryThenLoss(Method):
    """A method whose step is an adversarial input, then a loss on the logits there (with
    whatever the adversary left for it in ``aux``). The EAE term can be put on such a
    method (``eae_base``): EAE then adds its latent term to this loss, at this input."""

    def adversarial(self, model, x, y, epoch) -> tuple[torch.Tensor, object]:
        raise NotImplementedError

    def loss(self, model, logits, y, aux) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def step(self, model, x, y, epoch):
        x_adv, aux = self.adversarial(model, x, y, epoch)
        logits = model(x_adv)
        loss, stats = self.loss(model, logits, y, aux)
        return StepOutput(loss, logits, stats)


def input_grad(model: nn.Module, x: torch.Tensor, delta: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """d CE / d delta at x + delta, in the model's current (train) mode. Only the input
    gradient is asked for, so no parameter gradient is accumulated."""
    delta = delta.detach().requires_grad_(True)
    loss = nn.functional.cross_entropy(unwrap(model)(x + delta), y)
    (grad,) = torch.autograd.grad(loss, delta)
    return grad
