"""The training loop, written once for every method.

Per epoch: one pass over the device-resident training split (the method turns
each clean batch into a loss), timed with CUDA events on GPU; then validation
on the held-out split (clean, PGD and CW-margin PGD, fp32, eval mode, timed
separately and not counted as training time); one JSON line in
``metrics.jsonl``; a checkpoint. The test set is never touched here.

Under ``torchrun`` the same loop runs in every process (see ``eae.distributed``):
each rank trains on its slice of every global batch through DDP, epoch metrics and
validation are reduced across ranks, and only rank 0 prints and writes files; the
checkpoint holds every rank's RNG and method state, so ``--resume`` is exact.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from . import __version__
from . import distributed as dist
from .attacks import CW, PGD
from .checkpoint import (BEST_CHECKPOINT, BEST_WEIGHTS, CHECKPOINT, CONFIG, EVENTS, METRICS, WEIGHTS,
                         CheckpointError, RunLock, RunLocked, load_checkpoint, save_checkpoint, save_weights)
from .config import TrainConfig
from .data import training_data
from .evaluation import run_suite
from .evaluation.core import shard_across_ranks
from .methods import create_method
from .models import count_parameters, create_model
from .utils import Timer, atomic_write_bytes, atomic_write_json, device_name, progress_bar


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
        "world_size": dist.world_size(),
        "backend": torch.distributed.get_backend() if dist.initialized() else None,
    }


class TrainingStopped(RuntimeError):
    """A guard stopped the run (non-finite numbers, catastrophic overfitting)."""


_ERRORS = {c.__name__: c for c in (ValueError, FileExistsError, RunLocked, CheckpointError)}


def _open_run(cfg: TrainConfig, resume: bool, lock: RunLock) -> dict[str, Any] | None:
    """Lock the run directory and return the checkpoint to resume from (None: a fresh
    run). Rank 0 decides and every rank gets its answer, so all raise together (files
    may live on rank 0's node only)."""
    run_dir = Path(cfg.out)
    ckpt_path = run_dir / CHECKPOINT
    answer: tuple[tuple[str, str] | None, dict[str, Any] | None] = (None, None)
    if dist.is_main():
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            lock.acquire()
            for tmp in run_dir.glob(".*.pt.*"):  # half-written files of a killed run (we hold the lock)
                tmp.unlink(missing_ok=True)
            if resume and ckpt_path.is_file():
                ckpt = load_checkpoint(ckpt_path)
                diff = TrainConfig.from_dict(ckpt["config"], strict=False).differences(cfg)
                if diff:
                    raise ValueError(f"cannot resume {run_dir}: config differs from the checkpoint's: "
                                     + ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items()))
                answer = (None, ckpt)
            elif not resume and (ckpt_path.exists() or (run_dir / METRICS).exists()):
                raise FileExistsError(f"{run_dir} already holds a run; pass --resume to continue it "
                                      "or choose another --out")
        except tuple(_ERRORS.values()) as e:
            lock.release()
            answer = ((type(e).__name__, str(e)), None)
    error, ckpt = dist.broadcast_object(answer)
    if error:
        raise _ERRORS.get(error[0], RuntimeError)(error[1])
    return ckpt


def _check_names(cfg: TrainConfig) -> None:
    from .methods import METHODS
    from .models import MODELS

    for field, reg in (("method", METHODS), ("arch", MODELS)):
        if getattr(cfg, field) not in reg and not (field == "arch" and ":" in cfg.arch):  # timm:/torchvision:
            raise ValueError(f"config field {field}: unknown {reg.kind} {getattr(cfg, field)!r}; "
                             f"available: {', '.join(reg.names())}")


def _finite(tensors) -> torch.Tensor:
    """One device boolean: every tensor finite. No host sync, and few kernels: the
    per-tensor norms are one multi-tensor launch on CUDA (a NaN or inf anywhere makes
    the sum of norms non-finite)."""
    tensors = [t.detach() for t in tensors if t is not None and t.is_floating_point()]
    if not tensors:
        return torch.ones((), dtype=torch.bool)
    return torch.isfinite(torch.stack([n.float() for n in torch._foreach_norm(tensors)]).sum())


def _any_rank(count: torch.Tensor) -> bool:
    """Whether the count is non-zero on any rank (all ranks get the same answer, so none
    is left waiting in a collective when the others stop)."""
    return dist.all_reduce(count.detach().float().clone()).item() > 0


def _set_deterministic(on: bool) -> None:
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it for determinism
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def _rank_state(ckpt: dict[str, Any], rank: int, world: int, log) -> dict[str, Any] | None:
    """This rank's RNG and method state in a checkpoint (None: reseed)."""
    ranks = ckpt.get("ranks") or [{"rng": ckpt.get("rng"), "method": ckpt.get("method", {})}]
    if len(ranks) == world:
        return ranks[rank]
    log(f"warning: the checkpoint was written by {len(ranks)} process(es), this run has {world}: "
        "random streams restart, so the run is not bit-identical to an uninterrupted one")
    return {"rng": None, "method": ranks[rank % len(ranks)]["method"]}


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
    _check_names(cfg)
    device = dist.init(cfg.device)  # joins torchrun's process group, if any
    rank, world, main = dist.rank(), dist.world_size(), dist.is_main()
    log = (lambda *a: None) if quiet or not main else (lambda *a: print(*a, flush=True))
    run_dir = Path(cfg.out)
    lock = RunLock(run_dir)
    ckpt = _open_run(cfg, resume, lock)
    try:
        return _train(cfg, ckpt, device, rank, world, main, log, quiet, stop_after)
    finally:
        lock.release()


def _train(cfg, ckpt, device, rank, world, main, log, quiet, stop_after) -> RunResult:
    run_dir = Path(cfg.out)
    ckpt_path, best_path = run_dir / CHECKPOINT, run_dir / BEST_CHECKPOINT
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    _set_deterministic(cfg.deterministic)
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    data = training_data(cfg, device, rank, world)
    net = create_model(cfg.arch, data.num_classes, data.mean, data.std, head=cfg.head,
                       head_scale=cfg.head_scale).to(device)
    if cfg.channels_last:
        net = net.to(memory_format=torch.channels_last)
    if cfg.compile:
        net.compile_for_training()  # the first epoch's time includes compilation
    model = dist.wrap(net, device, cfg.sync_bn)  # DDP under torchrun, else net itself
    if rank:
        torch.manual_seed(cfg.seed + 1_000_003 * rank)  # each rank its own attack noise
    method = create_method(cfg)
    params = list(net.parameters())
    optimizer = torch.optim.SGD(params, lr=cfg.lr_max, momentum=cfg.momentum,
                                nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
    loader = data.loader
    passes = method.passes(cfg.epochs)  # Free-AT: fewer passes, each minibatch replayed
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, passes * len(loader) * method.replays))
    val_x, val_y = data.val_x.to(device), data.val_y.to(device)
    val_attacks = {"clean": None}
    if cfg.val_attack_steps:
        val_attacks.update(pgd=PGD(cfg.eps, steps=cfg.val_attack_steps, norm=cfg.norm),
                           cw=CW(cfg.eps, steps=cfg.val_attack_steps, norm=cfg.norm))

    def restore(state: dict[str, Any]) -> tuple[int, dict, dict]:
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        loader.load_state_dict(state["loader"])
        mine = _rank_state(state, rank, world, log)
        method.load_state_dict(mine["method"])
        method.step_scale = float(state.get("step_scale", 1.0))
        if mine["rng"] is not None:
            torch.set_rng_state(mine["rng"]["torch"])
            if device.type == "cuda" and mine["rng"].get("cuda") is not None:
                torch.cuda.set_rng_state(mine["rng"]["cuda"], device)
        return state["epoch"], state["best"], dict(state.get("guard", guard))

    def snapshot(epoch: int) -> dict[str, Any] | None:
        """The full training state after ``epoch`` (a collective; the dict on rank 0)."""
        rng = {"torch": torch.get_rng_state(),
               "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}
        ranks = dist.gather_to_main({"rng": rng, "method": method.state_dict()})
        if not main:
            return None
        return {"epoch": epoch, "config": cfg.to_dict(), "model": net.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "loader": loader.state_dict(), "ranks": ranks, "best": best, "guard": guard,
                "step_scale": method.step_scale}

    def event(epoch: int, kind: str, **info: Any) -> None:
        if main:  # append-only history of what the guards did (never rewritten)
            with (run_dir / EVENTS).open("a") as fh:
                fh.write(json.dumps({"epoch": epoch, "event": kind, **info}) + "\n")

    def save(path: Path, what: Callable[[], None], epoch: int, label: str) -> bool:
        """Write a file; a failure (disk full, permissions) keeps the previous version."""
        try:
            what()
            return True
        except OSError as e:
            log(f"warning: could not write {label} after epoch {epoch} ({e}); the previous {path.name} "
                "is kept and training goes on")
            event(epoch, "save_failed", file=path.name, error=str(e))
            return False

    start_epoch, best = 0, {"epoch": None, "val_robust": -1.0}
    guard = {"rollbacks": 0, "best_pgd": -1.0, "skipped_steps": 0}
    if ckpt is not None:
        start_epoch, best, guard = restore(ckpt)
        log(f"resuming {run_dir} after epoch {start_epoch}/{passes}")
        del ckpt
    metrics = _read_metrics(run_dir / METRICS, start_epoch) if main else []
    if main:  # lines past the checkpoint (a crash between metrics and checkpoint) are redone
        _write_metrics(run_dir / METRICS, metrics)
        atomic_write_json(run_dir / CONFIG, cfg.to_dict())
        atomic_write_json(run_dir / "environment.json", _environment(device))

    tb = _tensorboard(run_dir) if cfg.tensorboard and main else None
    procs = f" x {world} processes ({torch.distributed.get_backend()})" if world > 1 else ""
    log(f"{cfg.method} | {cfg.arch} ({count_parameters(net) / 1e6:.2f}M params) | {cfg.dataset}: "
        f"{data.n_train:,} train / {len(data.val_y):,} val | {device_name(device)}{procs} | "
        f"{passes} epochs x {len(loader)} steps of {cfg.batch_size}"
        + (f" x {method.replays} replays" if method.replays > 1 else ""))

    skip_mode = cfg.nonfinite == "skip"
    epochs_this_call = 0
    epoch = start_epoch
    while epoch < passes:
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        logit_norm_sum = torch.zeros((), device=device)
        bad_steps = torch.zeros((), device=device)
        stat_sums: dict[str, torch.Tensor] = {}
        seen = skipped = 0
        bar = progress_bar(len(loader), not quiet and main, f"epoch {epoch + 1}/{passes}", unit="step")
        with Timer(device) as timer:
            for i, (x, y) in enumerate(loader):
                # DDP averages the ranks' gradients; a rank's share of an uneven global
                # batch is reweighted so that the result is the global batch's mean
                share = len(y) * world / loader.global_batch if world > 1 else 1.0
                for _ in range(method.replays):
                    buffers = [b.clone() for b in net.buffers()] if skip_mode else None
                    with _autocast(cfg, device):
                        out = method.step(model, x, y, epoch)
                    optimizer.zero_grad(set_to_none=True)
                    (out.loss * share if share != 1.0 else out.loss).backward()
                    # a non-finite loss or gradient on this rank (gradients are all-reduced, the
                    # loss is not: ranks agree through the reductions below)
                    ok = _finite([out.loss.detach()] + [p.grad for p in params])
                    if world > 1 and skip_mode:  # every rank must take the same decision
                        ok = dist.all_reduce((~ok).float()) == 0
                    if skip_mode and not ok.item():  # one host sync per step, in this mode only
                        skipped += 1
                        with torch.no_grad():  # BatchNorm statistics of the bad batch are undone
                            for b, saved in zip(net.buffers(), buffers):
                                b.copy_(saved)
                        scheduler.step()
                        continue
                    optimizer.step()
                    scheduler.step()
                    bad_steps += ~ok
                    # accumulate on the device: no host sync inside the epoch
                    loss_sum += out.loss.detach().float() * len(y)
                    correct += (out.logits.detach().argmax(1) == y).sum()
                    # logit scale of every method: inflation is the signature of masked CE gradients
                    logit_norm_sum += out.logits.detach().float().norm(dim=1).sum()
                    for k, v in out.stats.items():
                        stat_sums[k] = stat_sums.get(k, 0) + v.detach().float() * len(y)
                    seen += len(y)
                if not skip_mode and i % 25 == 24 and _any_rank(bad_steps):  # a sync every 25 steps
                    break
                bar.update()
        bar.close()
        if not skip_mode and _any_rank(bad_steps):
            raise TrainingStopped(
                f"non-finite loss or gradient in epoch {epoch + 1} (by step {i + 1}): stopped; the weights "
                f"were not saved, {CHECKPOINT} holds epoch {epoch}. Lower the learning rate, check the data, "
                "or pass --nonfinite skip to skip such steps")
        # one all-reduce for every epoch sum (a no-op in a single process)
        keys = sorted(stat_sums)
        sums = dist.all_reduce(torch.stack([loss_sum, correct.float(), logit_norm_sum,
                                            torch.tensor(float(seen), device=device)]
                                           + [torch.as_tensor(stat_sums[k], device=device) for k in keys]))
        seen_all = sums[3].clamp_min(1)
        seconds = dist.all_reduce(torch.tensor([timer.seconds()]), "max").item()  # the slowest rank
        guard["skipped_steps"] += skipped
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "lr": scheduler.get_last_lr()[0],
            "train_loss": (sums[0] / seen_all).item(),
            "train_acc": (sums[1] / seen_all).item(),
            "seconds": seconds,
        }
        if skip_mode:
            row["skipped_steps"] = skipped
        row["logit_norm"] = (sums[2] / seen_all).item()
        row.update({k: (sums[4 + i] / seen_all).item() for i, k in enumerate(keys)})
        if cfg.dataset == "imagefolder":
            n_skipped = dist.all_reduce(torch.tensor([float(loader.skipped)])).item()
            row["images_skipped"] = int(data.skipped + n_skipped)
        if not _finite(list(net.state_dict().values())).item():
            raise TrainingStopped(f"non-finite weights after epoch {epoch + 1}: stopped without writing them; "
                                  f"{CHECKPOINT} holds epoch {epoch}")
        last = epoch + 1 == passes
        collapsed = False
        if (epoch + 1) % cfg.val_every == 0 or last:
            # every rank attacks its share of the validation points (see run_suite)
            with shard_across_ranks():
                res = run_suite(net, val_x, val_y, val_attacks, cfg.eps, norm=cfg.norm, batch_size=cfg.batch_size,
                                device=device, seed=cfg.seed + epoch)
            row.update({f"val_{k}": v for k, v in res.accuracy.items()})
            row["val_robust"] = res.robust_accuracy
            row["val_seconds"] = res.seconds
            if cfg.val_aa_n:
                with shard_across_ranks():
                    aa = run_suite(net, val_x[:cfg.val_aa_n], val_y[:cfg.val_aa_n], suite="aa-fast",
                                   eps=cfg.eps, norm=cfg.norm, batch_size=cfg.batch_size, device=device, seed=cfg.seed + epoch)
                row["val_aa_fast"] = aa.robust_accuracy
                row["val_seconds"] += aa.seconds
            pgd = row.get("val_pgd")
            if pgd is not None and method.adversarial:
                # catastrophic overfitting: robustness to the multi-step attack collapses
                # within an epoch while training goes on looking fine (standard training
                # loses its chance robustness as it learns: no alarm there)
                collapsed = guard["best_pgd"] - pgd >= cfg.overfit_drop and pgd < 0.5 * guard["best_pgd"]
                if collapsed:
                    row["overfit"] = True
                guard["best_pgd"] = max(guard["best_pgd"], pgd)
            if res.robust_accuracy > best["val_robust"] and not collapsed:
                best = {"epoch": epoch + 1, "val_robust": res.robust_accuracy}
                if main:
                    save(run_dir / BEST_WEIGHTS, lambda: save_weights(net, run_dir / BEST_WEIGHTS,
                                                                      {"epoch": str(epoch + 1)}),
                         epoch + 1, "the best weights")
        metrics.append(row)
        if main:
            with (run_dir / METRICS).open("a") as fh:
                fh.write(json.dumps(row) + "\n")
        if tb is not None:
            for k, v in row.items():
                if k != "epoch":
                    tb.add_scalar(k, float(v), epoch + 1)
            tb.flush()
        log(_epoch_line(row, passes))

        if collapsed:
            action = cfg.overfit_action
            info = {"val_pgd": row["val_pgd"], "best_val_pgd": guard["best_pgd"], "best_epoch": best["epoch"]}
            if action in ("rollback", "rollback_lower_step") and guard["rollbacks"] >= cfg.max_rollbacks:
                action = "stop"
                info["note"] = f"max_rollbacks={cfg.max_rollbacks} reached"
            if action in ("rollback", "rollback_lower_step") and not dist.broadcast_object(
                    best_path.is_file() if main else None):
                action = "stop"
                info["note"] = f"no {BEST_CHECKPOINT} to roll back to"
            msg = (f"catastrophic overfitting at epoch {epoch + 1}: validation PGD accuracy "
                   f"{100 * row['val_pgd']:.1f}% after a best of {100 * guard['best_pgd']:.1f}%")
            if action == "warn":
                log(f"warning: {msg} (--overfit-action warn: training goes on)")
                event(epoch + 1, "catastrophic_overfitting", action="warn", **info)
            elif action == "stop":
                event(epoch + 1, "catastrophic_overfitting", action="stop", **info)
                raise TrainingStopped(f"{msg}: stopped. The best epoch ({best['epoch']}) is in {BEST_WEIGHTS}; "
                                      "try --overfit-action rollback_lower_step, N-FGSM or a smaller step")
            else:
                state = load_checkpoint(best_path) if main else None
                state = dist.broadcast_object(state)
                rollbacks, best_pgd, total_skipped = guard["rollbacks"] + 1, guard["best_pgd"], guard["skipped_steps"]
                scale = method.step_scale  # compounds over successive rollbacks
                epoch, best, guard = restore(state)
                guard.update(rollbacks=rollbacks, best_pgd=best_pgd, skipped_steps=total_skipped)
                method.step_scale = scale
                if action == "rollback_lower_step":
                    if method.scalable_step:
                        method.step_scale = scale * cfg.overfit_step_factor
                    else:
                        log(f"note: {cfg.method} has no attack step to lower; rolling back only")
                # fresh random streams: the retrained epochs must not replay the collapse
                torch.manual_seed(cfg.seed + 7919 * rollbacks + 1_000_003 * rank)
                info.update(action=action, to_epoch=epoch, step_scale=method.step_scale, rollbacks=rollbacks)
                event(row["epoch"], "catastrophic_overfitting", **info)
                log(f"warning: {msg}: rolled back to epoch {epoch}"
                    + (f", attack step x{method.step_scale:g}" if action == "rollback_lower_step" else ""))
                del state
                metrics = [r for r in metrics if r["epoch"] <= epoch]
                if main:
                    _write_metrics(run_dir / METRICS, metrics)
                snap = snapshot(epoch)  # the rollback itself survives a crash
                if main:
                    save(ckpt_path, lambda: save_checkpoint(ckpt_path, snap), epoch, "the checkpoint")
                continue

        snap = snapshot(epoch + 1)
        if main and save(ckpt_path, lambda: save_checkpoint(ckpt_path, snap), epoch + 1, "the checkpoint") \
                and best["epoch"] == epoch + 1:
            save(best_path, lambda: _link_or_copy(ckpt_path, best_path), epoch + 1, "the best checkpoint")
        del snap
        epoch += 1
        epochs_this_call += 1
        if stop_after is not None and epochs_this_call >= stop_after and not last:
            if tb is not None:
                tb.close()
            return RunResult(run_dir, cfg, metrics, finished=False)

    if tb is not None:
        tb.close()
    if main:
        save_weights(net, run_dir / WEIGHTS, {"arch": cfg.arch, "epochs": str(cfg.epochs)})
    dist.barrier()  # the weights exist before any rank returns
    total = sum(m["seconds"] for m in metrics)
    log(f"done: {total:.1f} s of training; weights in {run_dir / WEIGHTS}")
    return RunResult(run_dir, cfg, metrics, finished=True)


def _write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in rows).encode())


def _link_or_copy(src: Path, dst: Path) -> None:
    """dst = the current content of src. A hard link costs no space: src is later
    replaced by a rename, which leaves the linked content in place."""
    tmp = dst.with_name(f".{dst.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


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

