"""Training guards: non-finite numbers, and catastrophic overfitting with its rollback.

Under torchrun every decision is taken by all ranks together (through reductions and
broadcasts), so none is left waiting in a collective when the others stop.
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Callable, Iterator

import torch

from .. import distributed as dist
from ..checkpoint import BEST_CHECKPOINT, BEST_WEIGHTS
from ..config import TrainConfig, method_defaults
from ..errors import EaeError
from ..evaluation.core import NonFiniteOutputs
from ..utils import torch_seed


class TrainingStopped(EaeError, RuntimeError):
    """A guard stopped the run (non-finite numbers, catastrophic overfitting)."""


def all_finite(tensors) -> torch.Tensor:
    """One device boolean: every tensor finite. No host sync, and few kernels: the
    per-tensor norms are one multi-tensor launch on CUDA (a NaN or inf anywhere makes
    the sum of norms non-finite)."""
    tensors = [t.detach() for t in tensors if t is not None and t.is_floating_point()]
    if not tensors:
        return torch.ones((), dtype=torch.bool)
    return torch.isfinite(torch.stack([n.float() for n in torch._foreach_norm(tensors)]).sum())


def any_rank(count: torch.Tensor) -> bool:
    """Whether the count is non-zero on any rank (all ranks get the same answer)."""
    return dist.all_reduce(count.detach().float().clone()).item() > 0


class NonFiniteGuard:
    """A non-finite loss or gradient. ``stop``: steps are counted on the device (no host
    sync), looked at every ``check_every`` steps and at the end of the epoch, and the run
    stops. ``skip``: every step is checked (one host sync per step); a bad one makes no
    optimiser step, its BatchNorm statistics are undone, and it is counted. ``recovery()``
    says where the run can continue from, ``advice`` how a new run avoids the stop."""

    check_every = 25

    def __init__(self, mode: str, world: int = 1, advice: str = "",
                 recovery: Callable[[], str] = lambda: "no checkpoint has been written"):
        self.skip = mode == "skip"
        self.world, self.advice, self.recovery = world, advice, recovery
        self.skipped_total = 0  # steps skipped over the whole run (kept in the checkpoint)
        self.bad: torch.Tensor | None = None
        self.skipped = 0  # this epoch

    def begin_epoch(self, device: torch.device) -> None:
        self.bad = torch.zeros((), device=device)
        self.skipped = 0

    def saved_buffers(self, net: torch.nn.Module) -> list[torch.Tensor] | None:
        """What ``step_ok`` needs to undo a step (skip mode only)."""
        return [b.clone() for b in net.buffers()] if self.skip else None

    def step_ok(self, loss: torch.Tensor, params, net: torch.nn.Module, buffers) -> bool:
        """After the backward pass: False when the step must be skipped (its BatchNorm
        statistics are then restored from ``buffers``)."""
        # gradients are all-reduced, the loss is not: ranks agree through reductions
        ok = all_finite([loss.detach()] + [p.grad for p in params])
        if not self.skip:
            self.bad += ~ok
            return True
        if self.world > 1:  # every rank must take the same decision
            ok = dist.all_reduce((~ok).float()) == 0
        if ok.item():
            return True
        self.skipped += 1
        with torch.no_grad():
            for b, saved in zip(net.buffers(), buffers):
                b.copy_(saved)
        return False

    def should_break(self, step: int) -> bool:
        """Stop mode: leave the epoch early once a bad step is seen (one sync every
        ``check_every`` steps)."""
        return not self.skip and step % self.check_every == self.check_every - 1 and any_rank(self.bad)

    def end_epoch(self, epoch: int, steps: int) -> None:
        """Raise TrainingStopped if a step of this epoch was non-finite (stop mode)."""
        if not self.skip and any_rank(self.bad):
            raise TrainingStopped(f"non-finite loss or gradient in epoch {epoch + 1} (by step {steps}): stopped "
                                  f"without saving that epoch; {self.recovery()}. {self.advice}".rstrip())
        self.skipped_total += self.skipped

    def check_weights(self, net: torch.nn.Module, epoch: int) -> None:
        if not all_finite(list(net.state_dict().values())).item():
            raise TrainingStopped(f"non-finite weights after epoch {epoch + 1}: stopped without saving them; "
                                  f"{self.recovery()}. {self.advice}".rstrip())

    @contextlib.contextmanager
    def outputs(self, epoch: int) -> Iterator[None]:
        """Non-finite logits where validation scores the network: stop as for weights."""
        try:
            yield
        except NonFiniteOutputs as e:
            what = str(e).split(":")[0]  # "the model returned NaN or infinite logits for k of n images (...)"
            raise TrainingStopped(f"non-finite outputs when validating after epoch {epoch + 1} ({what}): stopped "
                                  f"without saving that epoch; {self.recovery()}. {self.advice}".rstrip()) from None


def nonfinite_advice(cfg: TrainConfig, bf16: bool) -> str:
    """How a new run avoids non-finite numbers, naming the flags to change. (A NaN or
    inf in the config itself is refused before training: every number is checked.)"""
    fixes = [f"a lower --lr-max (now {cfg.lr_max:g})"]
    fixes += [f"a smaller --{name.replace('_', '-')} (now {now:g}; default {default:g})"
              for name, now, default in raised_scales(cfg)]
    if cfg.method.startswith("eae") and cfg.eae_temperature < 1.0:  # the EAE logits are divided by it
        fixes.append(f"a larger --eae-temperature (now {cfg.eae_temperature:g}; default 1)")
    if bf16:
        fixes.append("--precision fp32 (this run computes in bf16)")
    if bf16 and cfg.channels_last and cfg.device != "cuda" and not cfg.device.startswith("cuda:"):
        # torch's CPU bf16 channels_last convolutions give NaN or huge weight gradients on 1x1 feature
        # maps (seen with torchvision's resnet18 on 16-pixel images; torch 2.13 and 2.14, AVX512-BF16)
        fixes.append("--no-channels-last (on CPUs, some bf16 convolutions on tiny feature maps are not finite)")
    if cfg.nonfinite != "skip":
        fixes.append("--nonfinite skip (skips such steps and counts them)")
    return f"A new run (another --out) with {', or '.join(fixes)} avoids it; check the data too"


# Fields that scale a loss term or the logits, by the methods (or head) that use them:
# raised far above their defaults they, not the learning rate, are the likely cause.
_SCALES = {"head_scale": lambda c: c.head == "cosine", "trades_beta": lambda c: c.method == "trades",
           "gradalign_lambda": lambda c: "gradalign" in (c.method, c.eae_base if c.method.startswith("eae") else None),
           "pgi_lambda": lambda c: "fgsm_pgi" in (c.method, c.eae_base if c.method.startswith("eae") else None),
           "eae_eta": lambda c: c.method.startswith("eae"), "eae_lambda": lambda c: c.method.startswith("eae"),
           "eae_logit_penalty": lambda c: c.method.startswith("eae"),
           "nfgsm_noise": lambda c: c.method == "n_fgsm" or (c.method.startswith("eae") and c.eae_base == "n_fgsm"),
           "eae_rel": lambda c: c.method.startswith("eae") and c.eae_budget == "relative",
           "weight_decay": lambda c: True}


def raised_scales(cfg: TrainConfig) -> list[tuple[str, float, float]]:
    """(field, value, default) for the loss or logit scales this run uses above their defaults."""
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)} | method_defaults(cfg.method)
    out = []
    for name, used in _SCALES.items():
        now, default = getattr(cfg, name), defaults.get(name)
        if used(cfg) and isinstance(default, (int, float)) and now > default:
            out.append((name, now, default))
    return out


ROLLBACKS = ("rollback", "rollback_lower_step")


class OverfitGuard:
    """Catastrophic overfitting: robustness to the multi-step validation attack collapses
    within an epoch while training goes on looking fine. ``observe`` flags it in an
    epoch's row; ``respond`` warns, stops, or rolls the run back to its best checkpoint
    (optionally with a smaller attack step). Standard training loses its chance
    robustness as it learns: no alarm there."""

    def __init__(self, cfg: TrainConfig, adversarial: bool):
        self.cfg, self.adversarial = cfg, adversarial
        self.rollbacks = 0
        self.best_pgd = -1.0

    def state_dict(self) -> dict[str, Any]:
        return {"rollbacks": self.rollbacks, "best_pgd": self.best_pgd}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rollbacks = int(state.get("rollbacks", 0))
        self.best_pgd = float(state.get("best_pgd", -1.0))

    def observe(self, row: dict[str, Any]) -> bool:
        """Whether the validation PGD accuracy of this row collapsed (then ``overfit`` is set)."""
        pgd = row.get("val_pgd")
        if pgd is None or not self.adversarial:
            return False
        collapsed = self.best_pgd - pgd >= self.cfg.overfit_drop and pgd < 0.5 * self.best_pgd
        if collapsed:
            row["overfit"] = True
        self.best_pgd = max(self.best_pgd, pgd)
        return collapsed

    def respond(self, row: dict[str, Any], run, folder, log: Callable[..., None]) -> int | None:
        """Act on a collapse: None to go on (warn), the epoch to retrain from after a
        rollback; TrainingStopped to stop. A collective under torchrun."""
        action, info = self._action(row, folder)
        msg = (f"catastrophic overfitting at epoch {row['epoch']}: validation PGD accuracy "
               f"{100 * row['val_pgd']:.1f}% after a best of {100 * self.best_pgd:.1f}%")
        if action == "warn":
            log(f"warning: {msg} (--overfit-action warn: training goes on)")
            folder.event(row["epoch"], "catastrophic_overfitting", action="warn", **info)
            return None
        if action == "stop":
            folder.event(row["epoch"], "catastrophic_overfitting", action="stop", **info)
            folder.mark_stopped({"epoch": row["epoch"], "event": "catastrophic_overfitting", "action": "stop", **info})
            api, cli = self._stopped(msg, folder)
            raise TrainingStopped(api, cli=cli)
        epoch = self._roll_back(action, run, folder, log)
        info.update(action=action, to_epoch=epoch, step_scale=run.method.step_scale, rollbacks=self.rollbacks)
        folder.event(row["epoch"], "catastrophic_overfitting", **info)
        log(f"warning: {msg}: rolled back to epoch {epoch}"
            + (f", attack step x{run.method.step_scale:g}" if action == "rollback_lower_step" else ""))
        return epoch

    def _stopped(self, msg: str, folder) -> tuple[str, str]:
        """The stop, in the words of the Python API and of the command line: where the best epoch
        is, and that a new run (not a resume, which would repeat the stop) tries otherwise."""
        from ..utils import shell_quote as quote

        tried = self.cfg.overfit_action == "rollback_lower_step" and self.rollbacks >= self.cfg.max_rollbacks
        said = f"{msg}: stopped. The best epoch ({folder.best['epoch']}) is in {BEST_WEIGHTS}"
        if not (folder.path / BEST_WEIGHTS).is_file():  # moved, or never written (a full disk)
            said = f"{msg}: stopped. The best epoch ({folder.best['epoch']}) has no {BEST_WEIGHTS} (moved or deleted)"
        if tried:
            api = cli = (f"; {self.rollbacks} rollbacks with a lower step did not prevent it: a new run (another "
                         "out) can try N-FGSM, a smaller step or more rollbacks")
            cli = cli.replace("another out", "another --out").replace("more rollbacks", "a higher --max-rollbacks")
        else:
            api = ("; a new run (another out) can try overfit_action='rollback_lower_step', N-FGSM or a smaller step")
            cli = "; a new run (another --out) can try --overfit-action rollback_lower_step, N-FGSM or a smaller step"
        if not (folder.path / BEST_WEIGHTS).is_file():
            return said + api, said + cli
        where = quote(str(folder.path))
        return (f"{said} (eae.evaluate(eae.load({str(folder.path)!r}, weights='best'), ...) scores it){api}",
                f"{said} (`eae eval {where} --weights best` scores it){cli}")

    def _action(self, row: dict[str, Any], folder) -> tuple[str, dict[str, Any]]:
        action = self.cfg.overfit_action
        info = {"val_pgd": row["val_pgd"], "best_val_pgd": self.best_pgd, "best_epoch": folder.best["epoch"]}
        if action in ROLLBACKS and self.rollbacks >= self.cfg.max_rollbacks:
            action = "stop"
            info["note"] = f"max_rollbacks={self.cfg.max_rollbacks} reached"
        if action in ROLLBACKS and not folder.has_best_checkpoint():
            action = "stop"
            info["note"] = f"no {BEST_CHECKPOINT} to roll back to"
        return action, info

    def _roll_back(self, action: str, run, folder, log: Callable[..., None]) -> int:
        """Restore the best checkpoint; the guard's own counters and the attack step carry
        over (the step compounds over successive rollbacks)."""
        state = folder.load_best_checkpoint()
        scale = run.method.step_scale
        epoch = run.restore(state)
        folder.best = state["best"]
        self.rollbacks += 1
        run.method.step_scale = scale
        if action == "rollback_lower_step":
            if run.method.scalable_step:
                run.method.step_scale = scale * self.cfg.overfit_step_factor
            else:
                log(f"note: {self.cfg.method} has no attack step to lower; rolling back only")
        # fresh random streams: the retrained epochs must not replay the collapse
        torch.manual_seed(torch_seed(self.cfg.seed + 7919 * self.rollbacks + 1_000_003 * run.rank))
        return epoch
