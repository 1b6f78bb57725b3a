"""The training loop, written once for every method.

Build the run, then per epoch: train (one pass over the training split, the method
turning each clean batch into a loss), validate (on the held-out split, timed apart
from training), guard (non-finite numbers, catastrophic overfitting), save (a line
in ``metrics.jsonl``, a checkpoint). The test set is never touched here. Each of
these is a part of :mod:`eae.training` that owns its state and its files.

Under ``torchrun`` the same loop runs in every process (see ``eae.distributed``):
each rank trains on its slice of every global batch through DDP, epoch metrics and
validation are reduced across ranks, and only rank 0 prints and writes files; the
checkpoint holds every rank's RNG and method state, so ``--resume`` is exact.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import distributed as dist
from .checkpoint import BEST_WEIGHTS, EVENTS, WEIGHTS, check_dataset, save_checkpoint
from .config import MAX_INT, TrainConfig
from .errors import ConfigError, UnknownName
from .evaluation import run_suite
from .models.library import import_library, is_library_arch
from .training import (NonFiniteGuard, OverfitGuard, Run, RunFolder, TrainingStopped, Validator, lr_factor,
                       train_epoch)
from .system import available_cores, configure_threads
from .training.epoch import uses_bf16
from .training.folder import RunSaveError, environment, metrics_digest
from .training.guards import nonfinite_advice

__all__ = ["train", "RunResult", "TrainingStopped", "RunSaveError", "lr_factor"]


@dataclass
class RunResult:
    run_dir: Path
    config: TrainConfig
    metrics: list[dict[str, Any]]
    finished: bool

    @property
    def train_seconds(self) -> float:
        return sum(m["seconds"] for m in self.metrics)

    @property
    def final(self) -> dict[str, Any]:
        return self.metrics[-1] if self.metrics else {}


def _check_arguments(cfg, resume, quiet, stop_after) -> None:
    """train()'s own arguments, checked as the config's fields are (the Python door)."""
    if not isinstance(cfg, TrainConfig):
        raise ConfigError(f"cfg must be an eae.TrainConfig, got {type(cfg).__name__}", field="cfg")
    for name, value in (("resume", resume), ("quiet", quiet)):
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be True or False, got {value!r}", field=name)
    if stop_after is not None and (isinstance(stop_after, bool) or not isinstance(stop_after, int)
                                   or not 1 <= stop_after <= MAX_INT):
        raise ConfigError(f"stop_after must be None or an integer >= 1 (epochs of this call), got {stop_after!r}",
                          cli=f"--stop-after must be >= 1, got {stop_after!r}", field="stop_after")


def _check_names(cfg: TrainConfig) -> None:
    from .methods import METHODS
    from .models import MODELS

    for field, reg in (("method", METHODS), ("arch", MODELS)):
        if getattr(cfg, field) not in reg and not (field == "arch" and ":" in cfg.arch):  # timm:/torchvision:
            raise UnknownName(f"config field {field}: unknown {reg.kind} {getattr(cfg, field)!r}; "
                              f"available: {', '.join(reg.names())}", field=field)


def train(cfg: TrainConfig, *, resume: bool = False, quiet: bool = False,
          stop_after: int | None = None) -> RunResult:
    """Train according to ``cfg``; write the run directory ``cfg.out``.

    ``resume``: continue from ``cfg.out/checkpoint.pt`` if there is one (the
    config must match, placement fields aside). ``stop_after``: return after this
    many epochs of this call (the run stays resumable).
    """
    _check_arguments(cfg, resume, quiet, stop_after)
    _check_names(cfg)
    # $EAE_DATA_DIR is where the published datasets are looked for; an image folder is always named by data_dir
    given = cfg.data_dir or (os.environ.get("EAE_DATA_DIR") if cfg.dataset not in ("synthetic", "imagefolder")
                             else None)
    if given and given == given.strip():  # (white space around $EAE_DATA_DIR is refused where it is read)  # recorded absolute: a resume or an eval from another folder or shell finds the same data
        cfg = dataclasses.replace(cfg, data_dir=os.path.abspath(os.path.expanduser(given)))
    if cfg.tensorboard:  # a missing package, before the run folder is claimed
        try:
            import torch.utils.tensorboard  # noqa: F401
        except ImportError:
            raise ConfigError("tensorboard=True needs the tensorboard package: pip install tensorboard",
                              cli="--tensorboard needs the tensorboard package: pip install tensorboard",
                              field="tensorboard") from None
    if is_library_arch(cfg.arch):  # a missing timm / torchvision, before the run folder is claimed
        import_library(cfg.arch.partition(":")[0], cfg.arch)
    device = dist.init(cfg.device)  # joins torchrun's process group, if any
    if cfg.sync_bn and device.type != "cuda":  # device auto on a machine without CUDA: said, not recorded unused
        raise ConfigError(f"sync_bn needs CUDA devices (PyTorch's SyncBatchNorm has no CPU implementation), and this "
                          f"run is on {device.type}", cli=f"--sync-bn needs CUDA devices (PyTorch's SyncBatchNorm has "
                          f"no CPU implementation), and this run is on {device.type}: leave it out", field="sync_bn")
    dist.agree("the run's settings", json.dumps({**cfg.to_dict(), "resume": resume}, sort_keys=True, default=str))
    if device.type == "cpu":
        configure_threads()  # the cores this process may use (taskset, cgroups), unless OMP_NUM_THREADS says
    log = (lambda *a: None) if quiet or not dist.is_main() else (lambda *a: print(*a, flush=True))
    folder = RunFolder(cfg, log, write_checkpoint=save_checkpoint)
    try:
        result = _train(cfg, folder, folder.open(resume), device, log, quiet, stop_after)
    except BaseException:
        folder.close(failed=True)
        raise
    folder.close()
    return result


def _train(cfg, folder, ckpt, device, log, quiet, stop_after) -> RunResult:
    """Build, then per epoch: train, validate, guard, save."""
    run = Run(cfg, device, log)
    dist.agree("the training data", json.dumps(run.dataset(), sort_keys=True))  # files differ between machines?
    if ckpt is not None:  # the run goes on only on the data it started on
        check_dataset(folder.path, run.dataset(), resume=True)
    validator = Validator(cfg, run.data.val_x, run.data.val_y, device, run.passes, suite=run_suite)
    nonfinite = NonFiniteGuard(cfg.nonfinite, run.world, nonfinite_advice(cfg, uses_bf16(cfg.precision, device)),
                               folder.recovery)
    overfit = OverfitGuard(cfg, run.method.adversarial)
    epoch = 0 if ckpt is None else _resume(ckpt, run, folder, nonfinite, overfit)
    del ckpt  # a full training state: not kept for the whole run
    metrics = folder.start(environment(device, cfg.precision), run.dataset())
    _announce(run, validator, log)
    epochs_now = 0
    while epoch < run.passes:
        row = train_epoch(run, epoch, nonfinite, progress=not quiet and run.main)
        nonfinite.check_weights(run.net, epoch)
        collapsed = validator.due(epoch) and _validate(row, run, epoch, validator, (nonfinite, overfit), folder)
        metrics.append(row)
        folder.record(row)
        log(_epoch_line(row, run.passes, run.method.adversarial))
        back = overfit.respond(row, run, folder, log) if collapsed else None
        if back is not None:  # rolled back: the epochs after the best one are redone
            epoch, metrics = back, [r for r in metrics if r["epoch"] <= back]
            folder.rewrite_metrics(metrics)
            folder.save_checkpoint(_state(run, epoch, folder, nonfinite, overfit, metrics), epoch)  # survives a crash
            continue
        epoch, epochs_now = epoch + 1, epochs_now + 1
        folder.save_epoch(_state(run, epoch, folder, nonfinite, overfit, metrics), epoch)
        if stop_after is not None and epochs_now >= stop_after and epoch < run.passes:
            return RunResult(folder.path, cfg, metrics, finished=False)
    folder.save_final(run.net, also_best=not validator.enabled)
    log(f"done: {sum(m['seconds'] for m in metrics):.1f} s of training; weights in {folder.path / WEIGHTS}"
        + ("" if validator.enabled else f" (and {BEST_WEIGHTS}: no validation, the best is the last)"))
    return RunResult(folder.path, cfg, metrics, finished=True)


def _announce(run: Run, validator: Validator, log) -> None:
    log(run.describe())
    if run.data.skipped and run.main:  # said even with --quiet: the run trains on fewer images than the folder holds
        n = run.data.skipped
        print(f"note: {n:,} {'entry' if n == 1 else 'entries'} of the training folder (files or class folders) "
              f"{'was' if n == 1 else 'were'} left out (--bad-images skip; each "
              "epoch's images_skipped in metrics.jsonl counts them with the ones substituted later)",
              file=sys.stderr, flush=True)
    cfg = run.cfg
    if run.main and cfg.dataset in ("imagefolder", "tiny-imagenet") and cfg.workers != 8 \
            and cfg.workers > available_cores():  # said even with --quiet: a setting given that acts in part
        print(f"note: --workers {cfg.workers}: this process may use {available_cores()} cores, so "
              f"{available_cores()} decoding workers run (more would only slow it)", file=sys.stderr, flush=True)
    if not validator.enabled and run.main:  # said even with --quiet: it changes what the run writes
        print(f"note: no validation split (val_size 0): no per-epoch validation, and {BEST_WEIGHTS} will be "
              "the last epoch's weights", file=sys.stderr, flush=True)


def _resume(ckpt, run: Run, folder: RunFolder, nonfinite: NonFiniteGuard, overfit: OverfitGuard) -> int:
    epoch = run.restore(ckpt)
    folder.best = ckpt["best"]
    guard = ckpt.get("guard", {})
    overfit.load_state_dict(guard)
    nonfinite.skipped_total = int(guard.get("skipped_steps", 0))
    run.log(f"resuming {folder.path} after epoch {epoch}/{run.passes}")
    if (folder.path / EVENTS).is_file():  # events after this line redo epochs past the checkpoint's
        folder.event(epoch, "resumed", note=f"from the checkpoint of epoch {epoch}; later epochs are redone")
    return epoch


def _validate(row, run: Run, epoch: int, validator: Validator, guards, folder: RunFolder) -> bool:
    """Validate after ``epoch`` into ``row``; keep the best weights; whether robustness collapsed."""
    nonfinite, overfit = guards
    with nonfinite.outputs(epoch):
        row.update(validator(run.net, epoch))
    collapsed = overfit.observe(row)
    if not collapsed:
        folder.offer_best(run.net, row["epoch"], row["val_clean"] if row["val_robust"] is None else row["val_robust"])
    return collapsed


def _state(run: Run, epoch: int, folder: RunFolder, nonfinite: NonFiniteGuard, overfit: OverfitGuard,
           metrics: list[dict[str, Any]]):
    """The checkpoint after ``epoch`` (a collective; None on ranks other than 0), with a
    digest of the metrics rows it has done, so that a resume sees that file edited or swapped."""
    guard = {**overfit.state_dict(), "skipped_steps": nonfinite.skipped_total}
    return run.snapshot(epoch, best=folder.best, guard=guard, metrics_sha256=metrics_digest(metrics))


def _epoch_line(row: dict[str, Any], epochs: int, adversarial: bool = False) -> str:
    # on adversarial inputs, accuracy near or below chance is expected, not a bug: the label says so
    acc = "train acc (adversarial inputs)" if adversarial else "train acc"
    if row["train_loss"] is None:  # every step was skipped: nothing was trained, nothing to average
        parts = [f"epoch {row['epoch']:>3}/{epochs}", "every step skipped (non-finite): no loss, no accuracy"]
    else:
        parts = [f"epoch {row['epoch']:>3}/{epochs}", f"loss {row['train_loss']:.4f}",
                 f"{acc} {100 * row['train_acc']:5.1f}%"]
    for key, label in (("val_clean", "val clean"), ("val_pgd", "pgd"), ("val_cw", "cw")):
        if key in row:
            parts.append(f"{label} {100 * row[key]:5.1f}%")
    if "seed_frac" in row:
        parts.append(f"seeds {100 * row['seed_frac']:4.1f}%")
    parts.append(f"{row['seconds']:.2f} s")
    return " | ".join(parts)
