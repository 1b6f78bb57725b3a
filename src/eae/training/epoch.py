"""One training epoch: a pass over the device-resident training split, the method
turning each clean batch into a loss, timed with CUDA events on GPU; its metrics are
summed on the device (no host sync inside the epoch) and reduced across ranks once."""
from __future__ import annotations

import contextlib
import time
import warnings
from typing import Any

import torch

from .. import distributed as dist
from ..system import cpu_usage, training_precision
from ..utils import Timer, progress_bar
from .guards import NonFiniteGuard


def uses_bf16(precision: str, device: torch.device) -> bool:
    return training_precision(precision, device) == "bf16"


def _autocast(precision: str, device: torch.device):
    if uses_bf16(precision, device):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class _EpochSums:
    """Loss, accuracy, logit norm and the method's statistics, summed over examples on
    the device."""

    def __init__(self, device: torch.device):
        self.device = device
        self.loss = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device)
        self.logit_norm = torch.zeros((), device=device)
        self.stats: dict[str, torch.Tensor] = {}
        self.seen = 0

    def add(self, out, y: torch.Tensor) -> None:
        self.loss += out.loss.detach().float() * len(y)
        self.correct += (out.logits.detach().argmax(1) == y).sum()
        # logit scale of every method: inflation is the signature of masked CE gradients
        self.logit_norm += out.logits.detach().float().norm(dim=1).sum()
        for k, v in out.stats.items():
            self.stats[k] = self.stats.get(k, 0) + v.detach().float() * len(y)
        self.seen += len(y)

    def means(self) -> dict[str, float]:
        """Per-example means over every rank (one all-reduce; a no-op in one process)."""
        keys = sorted(self.stats)
        sums = dist.all_reduce(torch.stack([self.loss, self.correct.float(), self.logit_norm,
                                            torch.tensor(float(self.seen), device=self.device)]
                                           + [torch.as_tensor(self.stats[k], device=self.device) for k in keys]))
        if sums[3].item() == 0:  # every step skipped (--nonfinite skip): no mean, never a 0.0 that looks measured
            return {"train_loss": None, "train_acc": None, "logit_norm": None, **{k: None for k in keys}}
        seen = sums[3]
        return {"train_loss": (sums[0] / seen).item(), "train_acc": (sums[1] / seen).item(),
                "logit_norm": (sums[2] / seen).item(), **{k: (sums[4 + i] / seen).item() for i, k in enumerate(keys)}}


def _step(run, x: torch.Tensor, y: torch.Tensor, epoch: int, share: float, guard: NonFiniteGuard,
          sums: _EpochSums) -> None:
    buffers = guard.saved_buffers(run.net)
    with _autocast(run.cfg.precision, run.device):
        out = run.method.step(run.model, x, y, epoch)
    _check_step(out, y, run.cfg.method)
    run.optimizer.zero_grad(set_to_none=True)
    (out.loss * share if share != 1.0 else out.loss).backward()
    if not guard.step_ok(out.loss, run.params, run.net, buffers):
        with warnings.catch_warnings():  # a skipped step still advances the schedule, which torch warns of
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)` before")
            run.scheduler.step()
        return
    run.optimizer.step()
    run.scheduler.step()
    sums.add(out, y)


def _check_step(out: Any, y: torch.Tensor, method: str) -> None:
    """What a method's step returned, as the loop needs it (a registered method is a user's
    code): checked on shapes and types only, never on values (no device sync)."""
    from ..errors import ModelError
    from ..methods import StepOutput

    bad = None
    if not isinstance(out, StepOutput):
        bad = f"returned a {type(out).__name__}, not an eae.methods.StepOutput(loss, logits, stats)"
    elif not isinstance(out.loss, torch.Tensor) or out.loss.ndim != 0 or not out.loss.is_floating_point():
        bad = "returned a loss that is not a floating-point scalar tensor"
    elif not out.loss.requires_grad:
        bad = "returned a loss with no gradient (computed under no_grad, or detached): nothing would be trained"
    elif not isinstance(out.logits, torch.Tensor) or out.logits.ndim != 2 or out.logits.shape[0] != len(y):
        bad = f"returned logits that are not ({len(y)}, classes) for a batch of {len(y)}"
    elif not isinstance(out.stats, dict) or not all(isinstance(k, str) for k in out.stats):
        bad = "returned stats that are not a dict of named scalars"
    if bad:
        raise ModelError(f"training method {method!r}: its step {bad}")


def _warmup(epochs: int, pass_: int, step: int, steps: int, replays: int) -> float:
    """The eps scale at a step, rising linearly to 1 over ``epochs`` epochs. Counted in
    epoch-equivalents, as --epochs is: a pass of Free-AT (``replays`` replays of each
    minibatch) is ``replays`` epochs, so its warm-up ends when the same epochs have passed."""
    return min(1.0, (pass_ * steps + step) * replays / (epochs * steps))


def train_epoch(run, epoch: int, guard: NonFiniteGuard, progress: bool = False) -> dict[str, Any]:
    """Train ``run`` for one pass over its loader; the epoch's row of metrics (the same on
    every rank). Raises TrainingStopped through ``guard``."""
    run.model.train()
    loader, sums = run.loader, _EpochSums(run.device)
    guard.begin_epoch(run.device)
    bar = progress_bar(len(loader), progress, f"epoch {epoch + 1}/{run.passes}", unit="step")
    steps = 0
    cpu0 = time.process_time()  # every thread of the process: with the wall time, whether it got its cores
    with Timer(run.device) as timer:
        for i, (x, y) in enumerate(loader):
            steps = i + 1
            if run.method.per_example:
                run.method.examples = loader.examples
            if run.cfg.eps_warmup_epochs:  # eps from 0 to its value over the first epochs, per step
                run.method.set_eps_scale(_warmup(run.cfg.eps_warmup_epochs, epoch, i, len(loader), run.method.replays))
            # DDP averages the ranks' gradients; a rank's share of an uneven global
            # batch is reweighted so that the result is the global batch's mean
            share = len(y) * run.world / loader.global_batch if run.world > 1 else 1.0
            for _ in range(run.method.replays):
                _step(run, x, y, epoch, share, guard, sums)
            if guard.should_break(i):
                break
            bar.update()
    bar.close()
    guard.end_epoch(epoch, steps)
    means = sums.means()
    row: dict[str, Any] = {"epoch": epoch + 1, "lr": run.scheduler.get_last_lr()[0],
                           "train_loss": means.pop("train_loss"), "train_acc": means.pop("train_acc"),
                           "seconds": dist.all_reduce(torch.tensor([timer.seconds()]), "max").item()}  # slowest rank
    if guard.skip:
        row["skipped_steps"] = guard.skipped
    if run.cfg.eps_warmup_epochs:
        row["train_eps"] = run.method.eps  # at the epoch's last step
    row.update(cpu_usage(time.process_time() - cpu0))  # this rank's
    row.update(means)  # logit_norm, then the method's statistics
    if run.cfg.dataset == "imagefolder":
        n_skipped = dist.all_reduce(torch.tensor([float(loader.skipped)])).item()
        row["images_skipped"] = int(run.data.skipped + n_skipped)
    return row
