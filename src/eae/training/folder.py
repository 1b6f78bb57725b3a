"""The run directory and everything training writes there.

- ``.eae-run``: written first; it marks the folder as a run, the only kind of non-empty
  folder training writes into (:func:`check_run_folder`).
- ``.lock``: held while a process writes the run (see :class:`~eae.checkpoint.RunLock`).
- ``config.json``, ``dataset.json`` and ``environment.json``: the resolved config, what
  it was trained on (dataset, class names, image size), and what ran it.
- ``metrics.jsonl``: one JSON line per epoch; ``events.jsonl``: what the guards did
  (append-only, never rewritten).
- ``checkpoint.pt``: the state after the last epoch; ``checkpoint_best.pt`` and
  ``model_best.safetensors``: the epoch with the best validation robust accuracy
  (:attr:`RunFolder.best`); ``model.safetensors``: the final weights.
- ``tensorboard/``: the metrics again, with ``tensorboard = true``.

Only rank 0 touches files; the methods that other ranks must call too (collectives)
say so. A checkpoint or best file that cannot be written (disk full, permissions)
keeps its previous version, and training goes on. Nothing is ever deleted but the
temporary files of our own writes.
"""
from __future__ import annotations

import json
import math
import os
import platform
import re
import shutil
import sys
from pathlib import Path
from typing import Any, Callable

import torch

from .. import __version__
from .. import distributed as dist
from ..checkpoint import (BEST_CHECKPOINT, BEST_WEIGHTS, CHECKPOINT, CONFIG, DATASET, EVENTS, METRICS,
                          WEIGHTS, CheckpointError, RunLock, RunLocked, guard_stop, guard_stop_text, load_checkpoint,
                          not_a_file, read_config, save_checkpoint, save_weights)
from ..config import TrainConfig
from ..errors import ConfigError, OutputRefused, RunExists
from ..outputs import OutputFolder, check_folder, open_nofollow
from ..system import describe_cpu, training_precision
from ..utils import atomic_write_bytes, atomic_write_json, device_name, loads_json
from ..utils import shell_quote as quote

ENVIRONMENT = "environment.json"
_ERRORS = {c.__name__: c for c in (ValueError, FileExistsError, NotADirectoryError, RunLocked, CheckpointError,
                                    OutputRefused, RunExists)}
_WRITTEN = (CHECKPOINT, BEST_CHECKPOINT, WEIGHTS, BEST_WEIGHTS, METRICS, CONFIG, DATASET, ENVIRONMENT)
# our temporary files: atomic writes (".NAME.eae-tmp-" + 8 random characters, see utils) and hard links
# (".NAME.eae-tmp"): a name a user's file does not have by chance (".config.json.original" is theirs)
_TEMPORARY = re.compile(r"\.(" + "|".join(map(re.escape, _WRITTEN)) + r")\.eae-tmp(-[a-z0-9_]{8})?")


class RunSaveError(RuntimeError):
    """The final weights could not be written; the message says how to recover."""


def check_run_folder(path: str | Path) -> None:
    """Training writes only into a new or empty folder or into a run (see
    :mod:`eae.outputs`) whose files are files; anything else raises OutputRefused
    (nothing has been written)."""
    check_folder(path, "run")
    for name in (*_WRITTEN, EVENTS):  # a folder where a file goes: said first, not as a missing file later
        what = not_a_file(Path(path) / name)
        if what:
            raise RunExists(f"{Path(path) / name} is {what}, where the run keeps a file of its own; nothing was "
                            "changed: move it away, then run again")


def environment(device: torch.device, precision: str = "auto") -> dict[str, Any]:
    """What a run ran on (``environment.json``), ``precision`` as resolved on ``device``."""
    return {
        "precision": training_precision(precision, device),
        "eae_version": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": device_name(device),
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "platform": platform.platform(),
        "world_size": dist.world_size(),
        "backend": torch.distributed.get_backend() if dist.initialized() else None,
        **(describe_cpu() if device.type == "cpu" else {}),
    }


def _note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def read_metrics(path: Path, upto_epoch: int, log: Callable[[str], None] = _note) -> list[dict[str, Any]]:
    """The rows of a metrics.jsonl up to an epoch. A last line that does not parse (a
    crash while it was appended) is dropped with a note; a bad line before it, or any row
    that parses but cannot be one of ours (an accuracy of 1.7, negative seconds, epochs
    out of order), is an error naming the line."""
    if os.path.lexists(path) and (not path.is_file() or path.is_symlink()):
        raise ValueError(f"{path} is not a file ({_kind(path)}): move it away, then resume")
    if not path.is_file():
        return []
    lines = [(i, line) for i, line in enumerate(path.read_bytes().decode("utf-8-sig", "replace").splitlines(), 1)
             if line.strip()]
    rows: list[dict[str, Any]] = []
    for i, line in lines:
        try:
            row = loads_json(line)
        except ValueError as e:
            if i == lines[-1][0]:
                log(f"note: {path}, line {i}: an incomplete last line (cut by a crash) is dropped; "
                    "that epoch is redone")
                break
            raise ValueError(f"{path}, line {i}: not a metrics row ({str(e).splitlines()[0]}); "
                             "repair or delete that line, then resume") from None
        bad = _implausible(row, rows[-1]["epoch"] if rows else 0)
        if bad:  # it parsed: no crash cut it, someone wrote it
            raise ValueError(f"{path}, line {i}: not a metrics row of eae ({bad}); repair or delete that line, "
                             "then resume")
        rows.append(row)
    return [r for r in rows if r["epoch"] <= upto_epoch]


def _implausible(row: Any, previous: int) -> str | None:
    """Why ``row`` cannot be a row eae wrote after epoch ``previous`` (None: it can)."""
    if not isinstance(row, dict) or not isinstance(row.get("epoch"), int) or isinstance(row["epoch"], bool):
        return "not an object with an integer epoch"
    if row["epoch"] <= previous:
        return f"epoch {row['epoch']} after epoch {previous}: epochs are written once each, in order"
    for k, v in row.items():
        if not _measured(k) or v is None:
            continue
        if not _finite_number(v):  # a number a report would print: never a string or a NaN
            return f"{k} is {v!r}, not a finite number"
        if v < 0 or (_accuracy(k) and v > 1):
            return f"{k} is {v!r}, outside {'[0, 1]' if _accuracy(k) else 'the numbers >= 0'}"
    return None


def _accuracy(key: str) -> bool:
    return key == "train_acc" or (key.startswith("val_") and key != "val_seconds")


def _kind(path: Path) -> str:
    return "a symbolic link" if path.is_symlink() else "a folder" if path.is_dir() else "not a regular file"


def _measured(key: str) -> bool:
    return key in ("lr", "train_loss", "train_acc", "seconds") or key.startswith("val_")


def _finite_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _append(path: Path):
    """A file opened for appending, never through a link planted in its place."""
    return os.fdopen(open_nofollow(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT), "a")


def metrics_digest(rows: list[dict[str, Any]]) -> str:
    """SHA-256 of metrics rows as metrics.jsonl holds them: recorded in each checkpoint."""
    import hashlib

    rows = [json.loads(_json_row(r)) for r in rows]  # as read back; the keys sorted: their order is no edit
    return hashlib.sha256("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode()).hexdigest()


def _json_row(row: dict[str, Any]) -> str:
    """One line of strict JSON: a non-finite number is written as null."""
    return json.dumps({k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()},
                      allow_nan=False)


def _link_or_copy(src: Path, dst: Path) -> None:
    """dst = the current content of src. A hard link costs no space: src is later
    replaced by a rename, which leaves the linked content in place."""
    tmp = dst.with_name(f".{dst.name}.eae-tmp")
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
        self.output = OutputFolder(self.path, "run")
        self.best: dict[str, Any] = {"epoch": None, "val_robust": -1.0}  # what the best files hold
        self.saved_epoch: int | None = None  # the epoch checkpoint.pt holds (None: there is none)
        self.tb = None
        self._rows: list[dict[str, Any]] = []  # metrics of the run being resumed

    # --- opening and closing -------------------------------------------------
    def open(self, resume: bool) -> dict[str, Any] | None:
        """Lock the folder; the checkpoint to resume from (None: a fresh run). Rank 0
        decides and every rank gets its answer, so all raise together (a collective)."""
        answer: tuple[tuple[str, str] | None, dict[str, Any] | None] = (None, None)
        failure = None
        if self.main:
            try:
                answer = (None, self._open(resume))
            except Exception as e:
                self.lock.release()
                self.output.abandon()
                failure, answer = e, ((type(e).__name__, str(e)), None)
        error, ckpt = dist.broadcast_object(answer)
        if failure is not None:
            raise failure
        if error:
            raise _ERRORS.get(error[0], RuntimeError)(error[1])
        if ckpt is not None:
            self.saved_epoch = ckpt["epoch"]
        return ckpt

    def _open(self, resume: bool) -> dict[str, Any] | None:
        self.output.claim()  # first: from now on the folder is recognisably a run
        self.lock.acquire()
        for tmp in self.path.iterdir():  # half-written files of a killed run (we hold the lock)
            if _TEMPORARY.fullmatch(tmp.name):
                tmp.unlink(missing_ok=True)
        check_run_folder(self.path)  # (claim checked the folder before the lock: now its files, under it)
        for name in (METRICS, EVENTS):  # appended to as training goes: not even through a link to a file
            if (self.path / name).is_symlink():
                raise RunExists(f"{self.path / name} is not a file ({_kind(self.path / name)}); nothing was changed: "
                                "move it away, then run again")
        ckpt_path = self.path / CHECKPOINT
        if resume and ckpt_path.is_file():
            ckpt = load_checkpoint(ckpt_path)
            stop = ckpt.get("stopped") or guard_stop(self.path)  # (the checkpoint's: events.jsonl may be edited)
            if isinstance(stop, dict):  # a resume would retrain into the same stop
                raise RunExists(f"cannot resume {self.path}: {guard_stop_text(self.path, stop, cli=False)}",
                                cli=f"cannot resume {self.path}: {guard_stop_text(self.path, stop, cli=True)}")
            return self._resumable(ckpt)
        results = [n for n in (CHECKPOINT, METRICS, WEIGHTS, BEST_WEIGHTS) if (self.path / n).exists()]
        stop = guard_stop(self.path) if results and not resume else None
        if stop:
            raise RunExists(f"{self.path} already holds a run: {guard_stop_text(self.path, stop, cli=False)}",
                            cli=f"{self.path} already holds a run: {guard_stop_text(self.path, stop, cli=True)}")
        if not results:  # a new start rewrites the run's description: only files that are one
            self._refuse_foreign_description()
        if results and not resume:
            held = f"{self.path} already holds a run ({', '.join(results)})"
            if CHECKPOINT not in results and not (self.path / CONFIG).is_file():  # --resume would need it
                raise RunExists(f"{held}, with no {CHECKPOINT} and no {CONFIG}: nothing to continue; choose another "
                                "out for a new run", cli=f"{held}, with no {CHECKPOINT} and no {CONFIG}: nothing to "
                                "continue; choose another --out for a new run")
            if CHECKPOINT not in results:
                held += f" and no {CHECKPOINT}, so nothing to continue"
                raise RunExists(f"{held}: resume=True restarts it from epoch 1 as configured, or choose another out",
                                cli=f"{held}: --resume restarts it from epoch 1 as configured, or choose "
                                    "another --out")
            raise RunExists(f"{held}: pass resume=True to continue it, or another out",
                            cli=f"{held}: pass --resume to continue it or choose another --out")
        if resume and results and not (self.path / CONFIG).is_file():
            raise RunExists(f"cannot resume {self.path}: it holds {', '.join(results)} but no {CONFIG} saying what "
                            "run they belong to; nothing was changed: choose another out",
                            cli=f"cannot resume {self.path}: it holds {', '.join(results)} but no {CONFIG} saying "
                                "what run they belong to; nothing was changed: choose another --out")
        if resume and WEIGHTS in results:  # (best weights alone: killed between validating epoch 1 and its checkpoint)
            held = f"cannot resume {self.path}: it holds results ({', '.join(results)}) but no {CHECKPOINT} to continue from"
            raise RunExists(f"{held}; choose another out for a new run",
                            cli=f"{held}; choose another --out for a new run")
        if resume and results:  # killed before its first checkpoint, or the checkpoint was removed: said, never silent
            _note(f"note: {self.path} has no {CHECKPOINT}: the run restarts from epoch 1 as configured "
                  f"({METRICS} is rewritten)")
        return None

    def _refuse_foreign_description(self) -> None:
        """The files a start writes (config, dataset, environment) are replaced only where they
        hold what eae writes there: one of a run killed before its first epoch. Anything else in
        a run folder under those names (a user's notes, after `rm R/*` left the hidden marker)
        is kept and refused."""
        keys = {CONFIG: {"method", "arch", "epochs"}, DATASET: {"dataset", "num_classes"},
                ENVIRONMENT: {"eae_version", "torch"}}
        for name, expected in keys.items():
            path = self.path / name
            if not path.is_file():
                continue
            try:
                d = loads_json(path.read_text(encoding="utf-8-sig"))
            except (OSError, ValueError, UnicodeDecodeError):
                d = None
            if not isinstance(d, dict) or not expected <= set(d):
                raise RunExists(f"{path} is not a file of an eae run (it does not hold what eae writes there), and a "
                                "new run would replace it: move it away, or choose another out",
                                cli=f"{path} is not a file of an eae run (it does not hold what eae writes there), "
                                    "and a new run would replace it: move it away, or choose another --out")

    def _resumable(self, ckpt: dict[str, Any]) -> dict[str, Any]:
        trained = TrainConfig.from_dict(ckpt["config"], strict=False)
        diff = trained.differences(self.cfg)
        if diff:
            changes = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
            if self._config_edited(trained):  # `--resume` reads config.json: name the files, not "the config"
                raise ConfigError(f"cannot resume {self.path}: {CONFIG} and {CHECKPOINT} disagree ({changes}, from "
                                  f"{CHECKPOINT} to {CONFIG}): one of them was changed (edited, or copied from another "
                                  "run); nothing was changed here: restore the one that was, or start a new run "
                                  "(another --out)", field="config")
            raise ConfigError(f"cannot resume {self.path}: the config given differs from the checkpoint's: {changes}; "
                              "resume with the run's own config (eae.checkpoint.read_config(out)), or start a new "
                              "run in another out", field="config",
                              cli=f"cannot resume {self.path}: config differs from the checkpoint's: {changes}")
        self._rows = read_metrics(self.path / METRICS, ckpt["epoch"])  # a note even with --quiet
        missing = sorted(set(range(1, ckpt["epoch"] + 1)) - {r["epoch"] for r in self._rows})
        if missing:  # emptied or cut by hand: resuming would print and keep a history with holes
            which = f"{missing[0]}" if len(missing) == 1 else f"{missing[0]}-{missing[-1]}" \
                if missing == list(range(missing[0], missing[-1] + 1)) else ", ".join(map(str, missing))
            raise RunExists(f"cannot resume {self.path}: {METRICS} has no row for epoch{'s' * (len(missing) > 1)} "
                            f"{which}, which {CHECKPOINT} has done (was it emptied or edited?); nothing was changed: "
                            f"restore {METRICS}, or start a new run (another out)",
                            cli=f"cannot resume {self.path}: {METRICS} has no row for epoch"
                                f"{'s' * (len(missing) > 1)} {which}, which {CHECKPOINT} has done (was it emptied "
                                f"or edited?); nothing was changed: restore {METRICS}, or start a new run "
                                "(another --out)")
        if ckpt.get("metrics_sha256") not in (None, metrics_digest(self._rows)):  # (older checkpoints lack it)
            held = (f"cannot resume {self.path}: {METRICS} is not the history {CHECKPOINT} recorded for epochs "
                    f"1-{ckpt['epoch']} (edited, or copied from another run?); nothing was changed: restore {METRICS}, "
                    "or start a new run")
            raise RunExists(f"{held} (another out)", cli=f"{held} (another --out)")
        return ckpt

    def _config_edited(self, trained: TrainConfig) -> bool:
        """Whether the run's config.json differs from the checkpoint's config (edited by hand)."""
        try:
            return bool(trained.differences(read_config(self.path)))
        except (OSError, ValueError):  # missing or unreadable: named where it is read
            return False

    def start(self, env: dict[str, Any], dataset: dict[str, Any]) -> list[dict[str, Any]]:
        """Write the run's description; the metrics rows of the checkpoint resumed from
        (rank 0; lines past it, from a crash between metrics and checkpoint, are redone)."""
        if not self.main:
            return []
        metrics, self._rows = self._rows, []
        if self.output.marked:  # a new folder: a failure before the first checkpoint takes these away with it
            self.output.written = [METRICS, CONFIG, DATASET, ENVIRONMENT]
        self.rewrite_metrics(metrics)
        atomic_write_json(self.path / CONFIG, self.cfg.to_dict())
        atomic_write_json(self.path / DATASET, dataset)
        atomic_write_json(self.path / ENVIRONMENT, env)
        if self.cfg.tensorboard:
            self.tb = _tensorboard(self.path)
        return metrics

    def close(self, failed: bool = False) -> None:
        """Release the folder; after a failure before the first checkpoint of a new run
        (unreadable data, Ctrl-C in epoch 1), remove what the run created: nothing there
        could be continued, and the same command should start afresh."""
        if self.tb is not None:
            self.tb.close()
            self.tb = None
        self.lock.release()
        if failed and self.main:
            self.output.abandon()

    # --- metrics and events ----------------------------------------------------
    def record(self, row: dict[str, Any]) -> None:
        """Append an epoch's row to metrics.jsonl (and TensorBoard)."""
        if not self.main:
            return
        with _append(self.path / METRICS) as fh:
            fh.write(_json_row(row) + "\n")
        if self.tb is not None:
            for k, v in row.items():
                if k != "epoch" and v is not None:
                    self.tb.add_scalar(k, float(v), row["epoch"])
            self.tb.flush()

    def rewrite_metrics(self, rows: list[dict[str, Any]]) -> None:
        if self.main:
            atomic_write_bytes(self.path / METRICS, "".join(_json_row(r) + "\n" for r in rows).encode())

    def event(self, epoch: int, kind: str, **info: Any) -> None:
        if self.main:  # append-only history of what the guards did (never rewritten)
            path = self.path / EVENTS
            torn = path.is_file() and path.stat().st_size and path.read_bytes()[-1:] != b"\n"
            with _append(path) as fh:  # a line cut by a crash stays alone: the new event is never glued to it
                fh.write(("\n" if torn else "") + json.dumps({"epoch": epoch, "event": kind, **info}) + "\n")

    # --- checkpoints and weights -------------------------------------------------
    def _save(self, path: Path, what: Callable[[], None], epoch: int, label: str) -> bool:
        """Write a file; a failure (disk full, permissions) keeps the previous version."""
        try:
            what()
            return True
        except OSError as e:
            kept = (f"the previous {path.name} is kept" if path.exists()
                    else f"there is no {path.name} yet, so nothing to resume from")
            _note(f"warning: could not write {label} after epoch {epoch} ({e.strerror or e}); {kept}; training "
                  "goes on")  # on stderr even with --quiet: it changes what can be resumed
            self.event(epoch, "save_failed", file=path.name, error=str(e))
            return False

    def save_checkpoint(self, state: dict[str, Any] | None, epoch: int) -> bool:
        """checkpoint.pt (``state``: a :meth:`Run.snapshot`, None on other ranks)."""
        path = self.path / CHECKPOINT
        if not self.main:
            self.saved_epoch = epoch  # as far as other ranks know
            return False
        saved = self._save(path, lambda: self.write_checkpoint(path, state), epoch, "the checkpoint")
        if saved:
            self.saved_epoch = epoch
        return saved

    def mark_stopped(self, event: dict[str, Any]) -> None:
        """The overfitting guard's stop, kept in checkpoint.pt as well as in events.jsonl: a resume
        is refused even when events.jsonl was edited or removed."""
        path = self.path / CHECKPOINT
        if self.main and path.is_file():
            state = load_checkpoint(path)
            state["stopped"] = event
            self._save(path, lambda: self.write_checkpoint(path, state), self.saved_epoch or 0, "the checkpoint")

    def recovery(self) -> str:
        """Where the run can continue from, in words."""
        if self.saved_epoch is None:
            return "no checkpoint has been written, so there is nothing to resume: a new run (another --out) starts over"
        return (f"{self.path / CHECKPOINT} holds epoch {self.saved_epoch} (`eae train --out={quote(str(self.path))} "
                "--resume` continues from it as configured)")

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
                self._save(path, lambda: save_weights(net, path, {"epoch": str(epoch), "config": self.cfg.identity()}),
                           epoch, "the best weights")

    def has_best_checkpoint(self) -> bool:
        """Whether checkpoint_best.pt exists (a collective)."""
        return bool(dist.broadcast_object((self.path / BEST_CHECKPOINT).is_file() if self.main else None))

    def load_best_checkpoint(self) -> dict[str, Any]:
        """checkpoint_best.pt, read by rank 0 and sent to every rank (a collective); one of
        another run (copied in by hand) is refused, never rolled back to."""
        state, error = None, None
        if self.main:
            state = load_checkpoint(self.path / BEST_CHECKPOINT)
            diff = TrainConfig.from_dict(state["config"], strict=False).differences(self.cfg) if "config" in state else {}
            if diff:
                error = (f"{self.path / BEST_CHECKPOINT} is the checkpoint of another run (" +
                         ", ".join(f"{k}: {a!r}, this run {b!r}" for k, (a, b) in diff.items()) +
                         f"); no rollback to it: remove it, then resume ({self.recovery()})")
        error = dist.broadcast_object(error)
        if error:
            raise RunExists(error)
        return dist.broadcast_object(state)

    def save_final(self, net: torch.nn.Module, also_best: bool = False) -> None:
        """model.safetensors (``also_best``: model_best.safetensors too); every rank
        returns after they exist, or raises RunSaveError (a collective)."""
        error = None
        if self.main:
            path = self.path / WEIGHTS
            try:
                save_weights(net, path, {"arch": self.cfg.arch, "epochs": str(self.cfg.epochs),
                                         "config": self.cfg.identity()})
                if also_best:
                    _link_or_copy(path, self.path / BEST_WEIGHTS)
            except OSError as e:
                then = ("make room or fix the permissions, then run that command to write them"
                        if self.saved_epoch is not None else "make room or fix the permissions first")
                error = f"could not write the final weights to {path} ({e.strerror or e}); {self.recovery()}: {then}"
        error = dist.broadcast_object(error)
        if error:
            raise RunSaveError(error)


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise ImportError("--tensorboard needs the tensorboard package: pip install tensorboard") from e
    return SummaryWriter(str(run_dir / "tensorboard"))
