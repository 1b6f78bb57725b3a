"""The training loop, written once for every method.

Per epoch: one pass over the device-resident training split (the method turns
each clean batch into a loss), timed with CUDA events on GPU; then validation
on the held-out split (clean, PGD and CW-margin PGD, fp32, eval mode, timed
separately and not counted as training time); one JSON line in
``metrics.jsonl``; a checkpoint. The test set is never touched here.
"""
from __future__ import annotations

import contextlib
import json
import math
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from . import __version__
from .attacks import CW, PGD
from .checkpoint import (BEST_WEIGHTS, CHECKPOINT, CONFIG, METRICS, WEIGHTS, load_checkpoint, save_checkpoint,
                         save_weights)
from .config import TrainConfig
from .data import DeviceLoader, load_splits
from .evaluation import run_suite
from .methods import create_method
from .models import count_parameters, create_model
from .utils import Timer, atomic_write_json, device_name, progress_bar, resolve_device


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


def lr_factor(cfg: TrainConfig, total_steps: int) -> Callable[[int], float]:
    """LR multiplier (of ``lr_max``) for the optimiser step with index ``step``."""

    def factor(step: int) -> float:
        t = (step + 1) / total_steps  # progress at the end of this step, as in Wong et al.
        if cfg.lr_schedule == "onecycle":
            p = cfg.lr_peak_frac
            return t / p if t <= p else max(0.0, (1 - t) / (1 - p))
        if cfg.lr_schedule == "piecewise":
            return cfg.lr_gamma ** sum(t > m for m in cfg.lr_milestones)
        return 1.0

    return factor


def _autocast(cfg: TrainConfig, device: torch.device):
    use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    if use_bf16:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _environment(device: torch.device) -> dict[str, Any]:
    return {
        "eae_version": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": device_name(device),
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "platform": platform.platform(),
    }


def _read_metrics(path: Path, upto_epoch: int) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["epoch"] <= upto_epoch]


def train(cfg: TrainConfig, *, resume: bool = False, quiet: bool = False,
          stop_after: int | None = None) -> RunResult:
    """Train according to ``cfg``; write the run directory ``cfg.out``.

    ``resume``: continue from ``cfg.out/checkpoint.pt`` if there is one (the
    config must match, placement fields aside). ``stop_after``: return after this
    many epochs of this call (the run stays resumable).
    """
    log = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    run_dir = Path(cfg.out)
    ckpt_path = run_dir / CHECKPOINT
    ckpt = None
    if resume and ckpt_path.is_file():
        ckpt = load_checkpoint(ckpt_path)
        saved = TrainConfig.from_dict(ckpt["config"], strict=False)
        diff = saved.differences(cfg)
        if diff:
            raise ValueError(f"cannot resume {run_dir}: config differs from the checkpoint's: "
                             + ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items()))
    elif not resume and (ckpt_path.exists() or (run_dir / METRICS).exists()):
        raise FileExistsError(f"{run_dir} already holds a run; pass --resume to continue it "
                              "or choose another --out")
    run_dir.mkdir(parents=True, exist_ok=True)

    device = resolve_device(cfg.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(cfg.seed)
    splits = load_splits(cfg)
    model = create_model(cfg.arch, splits.num_classes, splits.mean, splits.std, head=cfg.head,
                         head_scale=cfg.head_scale).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    method = create_method(cfg)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr_max, momentum=cfg.momentum,
                                nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
    loader = DeviceLoader(splits.train_x, splits.train_y, cfg.batch_size, device=device, shuffle=True,
                          augment=cfg.augment, seed=cfg.seed, channels_last=cfg.channels_last)
    passes = method.passes(cfg.epochs)  # Free-AT: fewer passes, each minibatch replayed
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, passes * len(loader) * method.replays))
    val_x, val_y = splits.val_x.to(device), splits.val_y.to(device)
    val_attacks = {"clean": None}
    if cfg.val_attack_steps:
        val_attacks.update(pgd=PGD(cfg.eps, steps=cfg.val_attack_steps),
                           cw=CW(cfg.eps, steps=cfg.val_attack_steps))

    start_epoch, best = 0, {"epoch": None, "val_robust": -1.0}
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        loader.load_state_dict(ckpt["loader"])
        method.load_state_dict(ckpt["method"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        if device.type == "cuda" and ckpt["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"], device)
        start_epoch, best = ckpt["epoch"], ckpt["best"]
        log(f"resuming {run_dir} after epoch {start_epoch}/{passes}")
    # lines past the checkpoint (a crash between metrics and checkpoint) are redone
    metrics = _read_metrics(run_dir / METRICS, start_epoch)
    with (run_dir / METRICS).open("w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in metrics)
    atomic_write_json(run_dir / CONFIG, cfg.to_dict())
    atomic_write_json(run_dir / "environment.json", _environment(device))

    if cfg.compile:
        model.compile_for_training()  # the first epoch's time includes compilation
    tb = _tensorboard(run_dir) if cfg.tensorboard else None
    log(f"{cfg.method} | {cfg.arch} ({count_parameters(model) / 1e6:.2f}M params) | {cfg.dataset}: "
        f"{len(splits.train_y):,} train / {len(splits.val_y):,} val | {device_name(device)} | "
        f"{passes} epochs x {len(loader)} steps of {cfg.batch_size}"
        + (f" x {method.replays} replays" if method.replays > 1 else ""))

    epochs_this_call = 0
    for epoch in range(start_epoch, passes):
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        logit_norm_sum = torch.zeros((), device=device)
        stat_sums: dict[str, torch.Tensor] = {}
        seen = 0
        bar = progress_bar(len(loader), not quiet, f"epoch {epoch + 1}/{passes}", unit="step")
        with Timer(device) as timer:
            for x, y in loader:
                for _ in range(method.replays):
                    with _autocast(cfg, device):
                        out = method.step(model, x, y, epoch)
                    optimizer.zero_grad(set_to_none=True)
                    out.loss.backward()
                    optimizer.step()
                    scheduler.step()
                    # accumulate on the device: no host sync inside the epoch
                    loss_sum += out.loss.detach().float() * len(y)
                    correct += (out.logits.detach().argmax(1) == y).sum()
                    # logit scale of every method: inflation is the signature of masked CE gradients
                    logit_norm_sum += out.logits.detach().float().norm(dim=1).sum()
                    for k, v in out.stats.items():
                        stat_sums[k] = stat_sums.get(k, 0) + v.detach().float() * len(y)
                    seen += len(y)
                bar.update()
        bar.close()
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "lr": scheduler.get_last_lr()[0],
            "train_loss": (loss_sum / seen).item(),
            "train_acc": (correct / seen).item(),
            "seconds": timer.seconds(),
        }
        if not math.isfinite(row["train_loss"]):
            raise FloatingPointError(f"training diverged at epoch {epoch + 1} (loss {row['train_loss']})")
        row["logit_norm"] = (logit_norm_sum / seen).item()
        row.update({k: (v / seen).item() for k, v in stat_sums.items()})
        last = epoch + 1 == passes
        if (epoch + 1) % cfg.val_every == 0 or last:
            res = run_suite(model, val_x, val_y, val_attacks, cfg.eps, batch_size=cfg.batch_size,
                           device=device, seed=cfg.seed + epoch)
            row.update({f"val_{k}": v for k, v in res.accuracy.items()})
            row["val_robust"] = res.robust_accuracy
            row["val_seconds"] = res.seconds
            if cfg.val_aa_n:
                aa = run_suite(model, val_x[:cfg.val_aa_n], val_y[:cfg.val_aa_n], suite="aa-fast", eps=cfg.eps,
                               batch_size=cfg.batch_size, device=device, seed=cfg.seed + epoch)
                row["val_aa_fast"] = aa.robust_accuracy
                row["val_seconds"] += aa.seconds
            if res.robust_accuracy > best["val_robust"]:
                best = {"epoch": epoch + 1, "val_robust": res.robust_accuracy}
                save_weights(model, run_dir / BEST_WEIGHTS, {"epoch": str(epoch + 1)})
        metrics.append(row)
        with (run_dir / METRICS).open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        if tb is not None:
            for k, v in row.items():
                if k != "epoch":
                    tb.add_scalar(k, v, epoch + 1)
            tb.flush()
        rng = {"torch": torch.get_rng_state(),
               "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}
        save_checkpoint(ckpt_path, {
            "epoch": epoch + 1, "config": cfg.to_dict(), "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "loader": loader.state_dict(), "method": method.state_dict(), "rng": rng, "best": best,
        })
        log(_epoch_line(row, passes))
        epochs_this_call += 1
        if stop_after is not None and epochs_this_call >= stop_after and not last:
            if tb is not None:
                tb.close()
            return RunResult(run_dir, cfg, metrics, finished=False)

    if tb is not None:
        tb.close()
    save_weights(model, run_dir / WEIGHTS, {"arch": cfg.arch, "epochs": str(cfg.epochs)})
    total = sum(m["seconds"] for m in metrics)
    log(f"done: {total:.1f} s of training; weights in {run_dir / WEIGHTS}")
    return RunResult(run_dir, cfg, metrics, finished=True)


def _epoch_line(row: dict[str, Any], epochs: int) -> str:
    parts = [f"epoch {row['epoch']:>3}/{epochs}", f"loss {row['train_loss']:.4f}",
             f"train acc {100 * row['train_acc']:5.1f}%"]
    for key, label in (("val_clean", "val clean"), ("val_pgd", "pgd"), ("val_cw", "cw")):
        if key in row:
            parts.append(f"{label} {100 * row[key]:5.1f}%")
    if "seed_frac" in row:
        parts.append(f"seeds {100 * row['seed_frac']:4.1f}%")
    parts.append(f"{row['seconds']:.2f} s")
    return " | ".join(parts)


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise ImportError("--tensorboard needs the tensorboard package: pip install tensorboard") from e
    return SummaryWriter(str(run_dir / "tensorboard"))

