"""The run directory and everything training writes there.

- ``.lock``: held while a process writes the run (see :class:`~eae.checkpoint.RunLock`).
- ``config.json`` and ``environment.json``: the resolved config, and what ran it.
- ``metrics.jsonl``: one JSON line per epoch; ``events.jsonl``: what the guards did
  (append-only, never rewritten).
- ``checkpoint.pt``: the state after the last epoch; ``checkpoint_best.pt`` and
  ``model_best.safetensors``: the epoch with the best validation robust accuracy
  (:attr:`RunFolder.best`); ``model.safetensors``: the final weights.
- ``tensorboard/``: the metrics again, with ``tensorboard = true``.

Only rank 0 touches files; the methods that other ranks must call too (collectives)
say so. A checkpoint or best file that cannot be written (disk full, permissions)
keeps its previous version, and training goes on.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
from pathlib import Path
from typing import Any, Callable

import torch

from .. import __version__
from .. import distributed as dist
from ..checkpoint import (BEST_CHECKPOINT, BEST_WEIGHTS, CHECKPOINT, CONFIG, EVENTS, METRICS, WEIGHTS,
                          CheckpointError, RunLock, RunLocked, load_checkpoint, save_checkpoint, save_weights)
from ..config import TrainConfig
from ..utils import atomic_write_bytes, atomic_write_json, device_name

ENVIRONMENT = "environment.json"
_ERRORS = {c.__name__: c for c in (ValueError, FileExistsError, RunLocked, CheckpointError)}


def environment(device: torch.device) -> dict[str, Any]:
    """What a run ran on (``environment.json``)."""
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


def read_metrics(path: Path, upto_epoch: int) -> list[dict[str, Any]]:
    """The rows of a metrics.jsonl up to an epoch."""
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["epoch"] <= upto_epoch]


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


class RunFolder:
    """One run directory, written by rank 0. ``write_checkpoint`` writes a checkpoint
    file (:func:`eae.checkpoint.save_checkpoint`)."""

    def __init__(self, cfg: TrainConfig, log: Callable[..., None],
                 write_checkpoint: Callable[[Path, dict], None] = save_checkpoint):
        self.cfg, self.log, self.write_checkpoint = cfg, log, write_checkpoint
        self.path = Path(cfg.out)
        self.main = dist.is_main()
        self.lock = RunLock(self.path)
        self.best: dict[str, Any] = {"epoch": None, "val_robust": -1.0}  # what the best files hold
        self.tb = None

    # --- opening and closing -------------------------------------------------
    def open(self, resume: bool) -> dict[str, Any] | None:
        """Lock the folder; the checkpoint to resume from (None: a fresh run). Rank 0
        decides and every rank gets its answer, so all raise together (a collective)."""
        answer: tuple[tuple[str, str] | None, dict[str, Any] | None] = (None, None)
        if self.main:
            try:
                answer = (None, self._open(resume))
            except tuple(_ERRORS.values()) as e:
                self.lock.release()
                answer = ((type(e).__name__, str(e)), None)
        error, ckpt = dist.broadcast_object(answer)
        if error:
            raise _ERRORS.get(error[0], RuntimeError)(error[1])
        return ckpt

    def _open(self, resume: bool) -> dict[str, Any] | None:
        ckpt_path = self.path / CHECKPOINT
        self.path.mkdir(parents=True, exist_ok=True)
        self.lock.acquire()
        for tmp in self.path.glob(".*.pt.*"):  # half-written files of a killed run (we hold the lock)
            tmp.unlink(missing_ok=True)
        if resume and ckpt_path.is_file():
            ckpt = load_checkpoint(ckpt_path)
            diff = TrainConfig.from_dict(ckpt["config"], strict=False).differences(self.cfg)
            if diff:
                raise ValueError(f"cannot resume {self.path}: config differs from the checkpoint's: "
                                 + ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items()))
            return ckpt
        if not resume and (ckpt_path.exists() or (self.path / METRICS).exists()):
            raise FileExistsError(f"{self.path} already holds a run; pass --resume to continue it "
                                  "or choose another --out")
        return None

    def start(self, epoch: int, env: dict[str, Any]) -> list[dict[str, Any]]:
        """Write the run's description; the metrics rows up to ``epoch`` (rank 0; lines
        past the checkpoint, from a crash between metrics and checkpoint, are redone)."""
        if not self.main:
            return []
        metrics = read_metrics(self.path / METRICS, epoch)
        self.rewrite_metrics(metrics)
        atomic_write_json(self.path / CONFIG, self.cfg.to_dict())
        atomic_write_json(self.path / ENVIRONMENT, env)
        if self.cfg.tensorboard:
            self.tb = _tensorboard(self.path)
        return metrics

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None
        self.lock.release()

    # --- metrics and events ----------------------------------------------------
    def record(self, row: dict[str, Any]) -> None:
        """Append an epoch's row to metrics.jsonl (and TensorBoard)."""
        if not self.main:
            return
        with (self.path / METRICS).open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        if self.tb is not None:
            for k, v in row.items():
                if k != "epoch":
                    self.tb.add_scalar(k, float(v), row["epoch"])
            self.tb.flush()

    def rewrite_metrics(self, rows: list[dict[str, Any]]) -> None:
        if self.main:
            atomic_write_bytes(self.path / METRICS, "".join(json.dumps(r) + "\n" for r in rows).encode())

    def event(self, epoch: int, kind: str, **info: Any) -> None:
        if self.main:  # append-only history of what the guards did (never rewritten)
            with (self.path / EVENTS).open("a") as fh:
                fh.write(json.dumps({"epoch": epoch, "event": kind, **info}) + "\n")

    # --- checkpoints and weights -------------------------------------------------
    def _save(self, path: Path, what: Callable[[], None], epoch: int, label: str) -> bool:
        """Write a file; a failure (disk full, permissions) keeps the previous version."""
        try:
            what()
            return True
        except OSError as e:
            self.log(f"warning: could not write {label} after epoch {epoch} ({e}); the previous {path.name} "
                     "is kept and training goes on")
            self.event(epoch, "save_failed", file=path.name, error=str(e))
            return False

    def save_checkpoint(self, state: dict[str, Any] | None, epoch: int) -> bool:
        """checkpoint.pt (``state``: a :meth:`Run.snapshot`, None on other ranks)."""
        path = self.path / CHECKPOINT
        return self.main and self._save(path, lambda: self.write_checkpoint(path, state), epoch, "the checkpoint")

    def save_epoch(self, state: dict[str, Any] | None, epoch: int) -> None:
        """The checkpoint after ``epoch``; the best checkpoint too if it is the best epoch."""
        if self.save_checkpoint(state, epoch) and self.best["epoch"] == epoch:
            best = self.path / BEST_CHECKPOINT
            self._save(best, lambda: _link_or_copy(self.path / CHECKPOINT, best), epoch, "the best checkpoint")

    def offer_best(self, net: torch.nn.Module, epoch: int, val_robust: float) -> None:
        """Keep ``net`` as the best weights if ``val_robust`` beats the best so far."""
        if val_robust > self.best["val_robust"]:
            self.best = {"epoch": epoch, "val_robust": val_robust}
            if self.main:
                path = self.path / BEST_WEIGHTS
                self._save(path, lambda: save_weights(net, path, {"epoch": str(epoch)}), epoch, "the best weights")

    def has_best_checkpoint(self) -> bool:
        """Whether checkpoint_best.pt exists (a collective)."""
        return bool(dist.broadcast_object((self.path / BEST_CHECKPOINT).is_file() if self.main else None))

    def load_best_checkpoint(self) -> dict[str, Any]:
        """checkpoint_best.pt, read by rank 0 and sent to every rank (a collective)."""
        return dist.broadcast_object(load_checkpoint(self.path / BEST_CHECKPOINT) if self.main else None)

    def save_final(self, net: torch.nn.Module) -> None:
        """model.safetensors; every rank returns after it exists (a collective)."""
        if self.main:
            save_weights(net, self.path / WEIGHTS, {"arch": self.cfg.arch, "epochs": str(self.cfg.epochs)})
        dist.barrier()


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise ImportError("--tensorboard needs the tensorboard package: pip install tensorboard") from e
    return SummaryWriter(str(run_dir / "tensorboard"))
