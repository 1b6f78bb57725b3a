"""Weights and checkpoints on disk.

- ``model.safetensors``: final weights (``model_best.safetensors``: best on the
  validation split). safetensors holds tensors only, so loading runs no code.
- ``checkpoint.pt``: everything needed to resume (model, optimiser, scheduler,
  data order, method state, RNG states), written atomically and read back with
  ``torch.load(weights_only=True)``.

Both carry a SHA-256 of their contents (the checkpoint in an 8-byte magic + 32-byte
digest header, the weights in the safetensors metadata), checked on every load: a
truncated or bit-flipped file is refused with a clear error instead of resuming from
(or evaluating) silently corrupted numbers. A checkpoint whose pickle would need to
run code is refused by ``weights_only=True``.
"""
from __future__ import annotations

import json
import hashlib
import dataclasses
import errno
import io
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import PLACEMENT_FIELDS, TrainConfig, config_identity, exact_types, home_path
from .errors import ConfigError, EaeError, NotARun, OutputRefused
from .utils import atomic_write_bytes, loads_json

MAGIC = b"EAECKPT1"


class CheckpointError(EaeError, ValueError):
    """A checkpoint, weights or run file that is corrupt, truncated or unsafe to load."""


CONFIG = "config.json"
METRICS = "metrics.jsonl"
WEIGHTS = "model.safetensors"
BEST_WEIGHTS = "model_best.safetensors"
CHECKPOINT = "checkpoint.pt"
BEST_CHECKPOINT = "checkpoint_best.pt"  # the full state of the best epoch (rollback target)
EVENTS = "events.jsonl"  # what the training guards did
DATASET = "dataset.json"  # what the run was trained on: dataset, class names, image size


def state_dict_for_saving(model: nn.Module) -> dict[str, torch.Tensor]:
    # channels_last weights are not contiguous; safetensors stores plain layouts
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def tensors_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of the tensors, in name order."""
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_weights(model: nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save

    state = state_dict_for_saving(model)
    atomic_write_bytes(path, save(state, metadata={**(metadata or {}), "sha256": tensors_digest(state)}))


def weights_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a safetensors file (its header alone is read): ``sha256`` of the
    tensors, and for a run's weights its ``config`` and ``epoch`` or ``epochs``. Raises
    CheckpointError for a file that cannot be read or is not safetensors."""
    try:
        with open(path, "rb") as fh:  # by our own open: any path the OS takes (safetensors wants UTF-8 ones)
            head = fh.read(8)
            size = int.from_bytes(head, "little") if len(head) == 8 else -1
            header = fh.read(size) if 0 < size <= 100_000_000 else b""
    except OSError as e:
        raise CheckpointError(f"{path}: cannot be read ({e.strerror or e})") from None
    return _header_metadata(path, header, size)


def _header_metadata(path, header: bytes, size: int) -> dict[str, str]:
    try:
        if len(header) != size:
            raise ValueError("no safetensors header")
        meta = json.loads(header).get("__metadata__") or {}
        if not isinstance(meta, dict):
            raise ValueError("its metadata is not a table")
    except (ValueError, AttributeError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    return meta


def load_weights(path: str | Path, config: dict[str, Any] | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, after checking their SHA-256 (when recorded) and,
    given the run's ``config`` (config.json as read), that a run of that config saved them."""
    return read_weights(path, config)[0]


def read_weights(path: str | Path, config: dict[str, Any] | None = None
                 ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """:func:`load_weights`, with the metadata of the same bytes (one read: a file replaced
    meanwhile, as training replaces the best weights, cannot mix two versions)."""
    from safetensors.torch import load

    try:
        with open(path, "rb") as fh:  # read here: safetensors' own reader refuses paths that are not UTF-8
            data = fh.read()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot be read ({e.strerror or e})") from None
    size = int.from_bytes(data[:8], "little") if len(data) >= 8 else -1
    meta = _header_metadata(path, data[8:8 + size] if 0 < size <= len(data) - 8 else b"", size)
    try:
        state = load(data)
    except Exception as e:  # safetensors raises its own error types for malformed files
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    if "sha256" in meta and tensors_digest(state) != meta["sha256"]:
        raise CheckpointError(f"{path}: SHA-256 of the weights does not match the one recorded at save time "
                              "(the file was modified or corrupted)")
    if config is not None and meta.get("config") not in (None, config_identity(config)):
        raise CheckpointError(f"{path} was saved by a run with other settings than {Path(path).parent / CONFIG} "
                              f"describes ({_settings_differ(loads_json(meta['config']), config)}): weights copied "
                              "from another run, or config.json edited since; evaluate the run they came from")
    return state, meta


def _settings_differ(saved: dict[str, Any], now: dict[str, Any]) -> str:
    """The first settings that differ, in words; a key only one side has is named as such."""
    keys = sorted(k for k in (set(saved) | set(now)) - set(PLACEMENT_FIELDS)
                  if k not in saved or k not in now or saved[k] != now[k])

    def one(k: str) -> str:
        if k not in saved:
            return f"{k}: {now[k]!r} in config.json, not a setting of the weights' run"
        if k not in now:
            return f"{k}: missing from config.json, {saved[k]!r} for the weights"
        return f"{k}: {now[k]!r} in config.json, {saved[k]!r} for the weights"

    return ", ".join(one(k) for k in keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "") \
        or "its settings"



def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    atomic_write_bytes(path, MAGIC + hashlib.sha256(payload).digest() + payload)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    data = Path(path).read_bytes()
    if data.startswith(MAGIC):
        digest, data = data[len(MAGIC):len(MAGIC) + 32], data[len(MAGIC) + 32:]
        if hashlib.sha256(data).digest() != digest:
            raise CheckpointError(f"{path}: SHA-256 mismatch: the checkpoint is truncated or corrupted "
                                  f"({len(data):,} bytes of payload); it was not used")
    try:  # weights_only: tensors and plain containers only; a pickle that would run code is refused
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as e:
        if "weights only load failed" in str(e).lower():  # PyTorch's own hint would run the code: not relayed
            raise CheckpointError(f"{path}: refused: it holds objects other than tensors and plain containers, "
                                  "and loading them could run code; it was not used") from None
        raise CheckpointError(f"{path}: refused or unreadable checkpoint ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''})") from None


class RunLocked(EaeError, RuntimeError):
    """Another live process holds the run directory."""


def live_holder(run_dir: str | Path) -> str | None:
    """The pid of a live process training ``run_dir`` (it holds the run's lock), else None."""
    try:
        import fcntl

        fd = os.open(Path(run_dir) / ".lock", os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except (ImportError, OSError):
        return None
    with os.fdopen(fd) as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return fh.read().strip() or "?"
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    return None


class RunLock:
    """An exclusive lock on a run directory (``.lock``, flock): a second process that
    would write the same run stops with an error. The kernel drops the lock when its
    holder dies, even by ``kill -9``, so a crash never leaves a stale lock."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / ".lock"
        self._fh = None

    def acquire(self) -> "RunLock":
        try:
            import fcntl
        except ImportError:  # no flock (Windows): no protection, as before
            return self
        from .outputs import open_nofollow  # a .lock planted as a link is refused, never written through

        if self.path.is_dir() and not self.path.is_symlink():
            raise OutputRefused(f"{self.path} is a folder where eae keeps its lock file; eae does not remove it: "
                                "move it away, or choose another --out")
        fh = os.fdopen(open_nofollow(self.path, os.O_RDWR | os.O_CREAT), "r+")
        if os.fstat(fh.fileno()).st_nlink > 1:  # a hard link to someone's file: never written into
            fh.close()
            raise OutputRefused(f"{self.path} is a hard link to another file; eae does not write into it: remove it")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "?"
            fh.close()
            raise RunLocked(f"{self.path.parent} is being written by another run (pid {holder}); "
                               "wait for it or choose another --out") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()  # closing the descriptor releases the flock
            self._fh = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def not_a_file(path: Path) -> str | None:
    """What stands where a run keeps one of its files, when it is not a file (None: a file,
    or nothing): said as such, not as a missing file or an unfinished run."""
    if not os.path.lexists(path) or path.is_file():
        return None
    return ("a folder" if path.is_dir() else "a symbolic link to nothing" if path.is_symlink() and not path.exists()
            else "not a regular file")


def check_run_file(path: Path) -> None:
    """Refuse to read a run's file that is a folder (or a device, a link to nothing)."""
    what = not_a_file(path)
    if what:
        raise CheckpointError(f"{path} is {what}, where the run keeps a file of its own; nothing was read from it: "
                              "move it away (or restore the run's file there)")


def read_config(run_dir: str | Path) -> TrainConfig:
    run_dir = home_path(run_dir)  # "~/runs/a", as the run's out was read
    path = Path(run_dir) / CONFIG
    if Path(run_dir).is_file():
        from .utils import shell_quote

        raise NotARun(f"{run_dir} is a file, not a run folder: give the folder that holds it "
                      f"({shell_quote(Path(run_dir).parent)})"
                      + (" or, for weights alone, eae eval --model NAME --weights FILE"
                         if str(run_dir).endswith((".safetensors", ".pt", ".pth")) else ""))
    check_run_file(path)
    if not path.is_file():
        if Path(run_dir).is_symlink() and not Path(run_dir).exists():
            try:
                os.stat(run_dir)
                why = "to nowhere"
            except OSError as e:
                why = ("that leads back to itself (a loop of links)" if e.errno == errno.ELOOP
                       else f"to {os.readlink(run_dir)}, which does not exist")
            raise NotARun(f"{run_dir} is a symbolic link {why}: give the run's folder itself")
        if not os.path.lexists(run_dir):
            raise NotARun(f"{run_dir}: no such folder: give the folder of a run of `eae train`")
        holder = live_holder(run_dir) if Path(run_dir).is_dir() else None
        if holder:  # claimed and locked by a training that is starting: its files come in a moment
            raise NotARun(f"{path} not found yet: {run_dir} is being started by eae train (pid {holder}); wait "
                          "for its first epoch (or for it to finish)")
        raise NotARun(_not_a_run_text(Path(run_dir), path))
    try:
        d = loads_json(path.read_text(encoding="utf-8-sig"))  # a BOM from an editor is no error
        if not isinstance(d, dict):
            raise ValueError("not a JSON object")
        exact_types(d, path)  # "epochs": "2" was typed by hand: said, not converted
        _check_registered(d, Path(run_dir))
        return TrainConfig.from_dict(d, strict=False)
    except (ValueError, TypeError) as e:  # json.JSONDecodeError is a ValueError
        raise CheckpointError(f"{path}: not a valid run config ({e})") from None


def _runs_within(folder: Path, limit: int = 3) -> list[Path]:
    """Up to ``limit`` runs of `eae train` in ``folder`` or one level below (a benchmark keeps
    them in runs/), looking at a bounded number of entries: a home folder is not walked."""
    from itertools import islice

    from .outputs import dataset_copy_above, kind_of

    def subfolders(p: Path) -> list[Path]:
        try:
            return sorted(q for q in islice(p.iterdir(), 200) if q.is_dir())
        except OSError:
            return []

    found = []
    for p in subfolders(folder):
        for q in [p] if kind_of(p) == "run" else subfolders(p)[:50]:
            if kind_of(q) == "run" and dataset_copy_above(q) is None:  # (one inside a dataset copy: not advised)
                found.append(q)
            if len(found) == limit:
                return found
    return found


def _not_a_run_text(run_dir: Path, config: Path) -> str:
    """Why ``run_dir`` (a folder without config.json) is no run, and which runs it holds."""
    from .utils import shell_quote as quote

    from .outputs import WHAT, kind_of

    kind = kind_of(run_dir) if run_dir.is_dir() else None
    what = f"{run_dir} is {WHAT[kind]}, not a run of `eae train`" if kind and kind != "run" else None
    runs = _runs_within(run_dir) if run_dir.is_dir() else []
    if runs:
        listed = ", ".join(quote(str(r)) for r in runs) + (", ..." if len(runs) == 3 else "")
        return f"{what or f'{config} not found: {run_dir} is not a run'}: give one of the runs it holds ({listed})"
    return f"{what}: give the folder of one of its runs" if what else \
        f"{config} not found: is {run_dir} a run directory of `eae train`?"


def _check_registered(d: dict[str, Any], run_dir: Path) -> None:
    """A run of a model or method registered in the process that trained it: the name is
    unknown here until that code runs again. Said as such, not as a bad config.json."""
    from .methods import METHODS
    from .models import MODELS
    from .models.library import is_library_arch

    for key, registry, name in (("arch", MODELS, "MODELS"), ("method", METHODS, "METHODS")):
        v = d.get(key)
        if not isinstance(v, str) or v in registry.names() or (key == "arch" and is_library_arch(v)):
            continue
        alt = (f"; or evaluate its weights with eae eval --model FILE.py:Class --weights "
               f"{run_dir / WEIGHTS} --dataset {d.get('dataset')}" if key == "arch" and d.get("dataset") != "synthetic"
               else "")
        raise NotRegistered(f"{run_dir} was trained with the {registry.kind} {v!r}, which is not registered in this "
                            f"process (registered with eae.{name}.register where it was trained?): import the code "
                            f"that registers it, then load the run{alt}")


class NotRegistered(EaeError, LookupError):
    """A run's architecture or method is not registered in this process."""


def _device(device: str | torch.device) -> torch.device:
    """A device to load onto, or ConfigError naming ``device`` (not torch's assertion)."""
    from .utils import as_device

    return as_device(device)


class MissingWeights(EaeError, FileNotFoundError):
    """A run folder without the weights asked for (training unfinished or stopped early)."""


def _epochs_done(run_dir: Path) -> int:
    """The last epoch metrics.jsonl records (0: none, or unreadable): whether the run finished."""
    try:
        lines = [line for line in (run_dir / METRICS).read_text(encoding="utf-8-sig").splitlines() if line.strip()]
        epoch = loads_json(lines[-1]).get("epoch") if lines else 0
    except (OSError, ValueError, AttributeError, UnicodeDecodeError):
        return 0
    return epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else 0


def guard_stop(run_dir: str | Path) -> dict[str, Any] | None:
    """The overfitting guard's stop, when it is the run's last event (``events.jsonl``): a resume
    would retrain that epoch towards the collapse the guard was asked to stop at."""
    try:
        lines = (Path(run_dir) / EVENTS).read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    for line in reversed(lines):
        try:
            event = loads_json(line)
        except ValueError:  # a line cut by a crash
            continue
        if not isinstance(event, dict):
            return None
        stopped = event.get("event") == "catastrophic_overfitting" and event.get("action") == "stop"
        return event if stopped and isinstance(event.get("epoch"), int) else None
    return None


def guard_stop_text(run_dir: Path, event: dict[str, Any], cli: bool) -> str:
    """Where a run the guard stopped stands, and what a user does next (a new run, not a resume)."""
    from .utils import shell_quote as quote

    best = event.get("best_epoch")
    best = f"its best epoch{f' ({best})' if isinstance(best, int) and not isinstance(best, bool) else ''}"
    if (run_dir / BEST_WEIGHTS).is_file():
        score = (f"`eae eval {quote(str(run_dir))} --weights best`" if cli
                 else f"eae.evaluate(eae.load({str(run_dir)!r}, weights='best'), ...)")
        best += f" is in {BEST_WEIGHTS}: {score} scores it"
    else:
        best += f" was in {BEST_WEIGHTS}, which was moved or deleted: put it back to score it"
    spent = "max_rollbacks" in str(event.get("note", ""))  # rolling back with a lower step did not prevent it
    if cli:
        tries = ("N-FGSM, a smaller step or a higher --max-rollbacks" if spent
                 else "--overfit-action rollback_lower_step, N-FGSM or a smaller step")
        new_run = f"start a new run (another --out), e.g. with {tries}"
    else:
        tries = ("method='n_fgsm', a smaller step or a higher max_rollbacks" if spent
                 else "overfit_action='rollback_lower_step', method='n_fgsm' or a smaller step")
        new_run = f"train a new run (another out), e.g. with {tries}"
    return (f"the overfitting guard stopped it at epoch {event.get('epoch')} (catastrophic overfitting"
            f"{', after its last rollback' if spent else ''}); {best}; to train further, {new_run}")


def _unfinished_hint(run_dir: Path, weights: str, cli: bool, epochs: int = 0) -> str:
    """What a run without those weights has instead, said as it is (no promise of a file
    that is not there), in the words of the command line or of the Python API."""
    from .utils import shell_quote as quote

    has_ckpt, has_best = (run_dir / CHECKPOINT).is_file(), (run_dir / BEST_WEIGHTS).is_file()
    best = "--weights best" if cli else "weights='best'"
    holder = live_holder(run_dir)
    if weights == "final" and holder:
        return (f": it is still being trained (pid {holder}): wait for it to finish"
                + (f", or evaluate the best epoch so far with {best}" if has_best else ""))
    if weights == "final" and has_ckpt:
        go_on = (f"`eae train --out={quote(str(run_dir))} --resume`" if cli
                 else f"eae.train(config, resume=True) with out={str(run_dir)!r}")
        stop = guard_stop(run_dir)
        if stop:  # a resume would only repeat the stop (and is refused)
            return f": training did not finish: {guard_stop_text(run_dir, stop, cli)}"
        if epochs and _epochs_done(run_dir) >= epochs:  # finished: the file was moved or deleted since
            return f": the run finished all {epochs} epochs, but its final weights were moved or deleted; {go_on} " \
                   f"writes them again from {CHECKPOINT}"
        return (f": training has not finished; {go_on} continues it"
                + (f" (or evaluate the best epoch so far with {best})" if has_best else ""))
    if weights == "final" and has_best:
        return f": training did not finish; evaluate the best epoch so far with {best}"
    if weights == "best" and not has_best:
        return (": it is written when an epoch is validated: none has been yet, or the file was moved or deleted"
                + (f" (the final weights are there: {'--weights final' if cli else 'weights=' + repr('final')})"
                   if (run_dir / WEIGHTS).is_file() else ""))
    return ": training stopped before any epoch was saved; there are no weights to evaluate"


def read_dataset(run_dir: str | Path) -> dict[str, Any] | None:
    """What a run was trained on (``dataset.json``: dataset, num_classes, classes,
    image_size); None for runs that did not record it."""
    path = Path(run_dir) / DATASET
    check_run_file(path)  # a folder there would skip the class and size checks without a word
    if not path.is_file():
        return None
    try:
        d = loads_json(path.read_text(encoding="utf-8-sig"))  # a BOM from an editor is no error
        if not (isinstance(d, dict) and isinstance(d.get("classes"), list) and isinstance(d.get("image_size"), int)):
            raise ValueError("expected an object with classes and image_size")
        bad = _dataset_record_errors(d)
        if bad:  # written by hand: a count or size no run records
            raise ValueError(bad)
    except ValueError as e:
        raise CheckpointError(f"{path}: not a valid dataset record ({e})") from None
    return d


def _dataset_record_errors(d: dict[str, Any]) -> str | None:
    def integer(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if not all(isinstance(c, str) for c in d["classes"]) or len(d["classes"]) < 2:
        return "classes must be a list of at least 2 class names"
    if "num_classes" in d and not (integer(d["num_classes"]) and d["num_classes"] == len(d["classes"])):
        return f"num_classes is {d['num_classes']!r}, but classes lists {len(d['classes'])}"
    if isinstance(d["image_size"], bool) or d["image_size"] < 1:
        return f"image_size is {d['image_size']!r}, not a size in pixels"
    if "dataset" in d and not isinstance(d["dataset"], str):
        return f"dataset is {d['dataset']!r}, not a dataset name"
    return None


def _classes_text(classes: list[str]) -> str:
    shown = ", ".join(c if c.isprintable() else repr(c) for c in classes[:4]) + (", ..." if len(classes) > 4 else "")
    return f"{len(classes)} classes ({shown})"


def check_dataset(run_dir: str | Path, found: dict[str, Any], resume: bool = False) -> str | None:
    """Refuse (ConfigError) data (``found``: classes, image_size) other than what the run
    recorded at training time; to ``resume``, also another copy of an official dataset (the
    published files against an unverified copy, or two copies that differ). Runs without
    the record are not checked: for an image folder (whose folders may have been renamed since,
    swapping labels without a word) the caveat is returned, for the report to carry."""
    rec = read_dataset(run_dir)
    if rec is None:
        if found.get("dataset") == "imagefolder":
            return (f"{run_dir} has no {DATASET} (a run of an older version): the class folders and image size here "
                    f"({len(found['classes'])} classes, {found['image_size']} px) cannot be checked against its "
                    "training's; its numbers hold only if they are the same")
        return None
    trained, here, image_size = list(rec["classes"]), list(found["classes"]), found["image_size"]
    there = "the data here" if resume else "the test set here"
    if trained != here:
        first = next((i for i, (a, b) in enumerate(zip(trained, here)) if a != b), min(len(trained), len(here)))
        at = (f"; label {first} is {trained[first]!r} there, {here[first]!r} here"
              if first < min(len(trained), len(here)) else "")
        what = f"{_classes_text(trained)}, {there} has {_classes_text(here)}{at}"
    elif rec["image_size"] != image_size:
        what = f"{rec['image_size']}x{rec['image_size']} images, {there} has {image_size}x{image_size} images"
    elif resume and rec.get("files_sha256") and rec["files_sha256"] != found.get("files_sha256"):
        what = (f"training files whose names, labels and sizes hash to {rec['files_sha256'][:12]}...; the folder here "
                f"hashes to {str(found.get('files_sha256'))[:12]}... (files added, removed, renamed or rewritten)")
    elif resume and any(rec.get(k) != found.get(k) for k in ("verified", "unverified_data", "content_sha256")
                        if k in rec or k != "content_sha256"):  # runs from before the digest: not compared
        what = f"{_copy_text(rec)}; the copy here is {_copy_text(found)}"
    else:
        return
    if found.get("dataset") == "synthetic":  # generated from config.json, read from nowhere: the record was edited
        raise CheckpointError(f"{Path(run_dir) / DATASET} says {what.replace(there, 'the synthetic data of its config')}"
                              f": it was edited (or copied from another run); restore it")
    action = "resume it" if resume else "evaluate it"
    message = f"{run_dir} was trained on {rec.get('dataset', '?')} with {what}: {action} on the data it was trained on"
    raise ConfigError(message + " (data_dir)", cli=message + " (--data-dir)", field="data_dir")


def _copy_text(rec: dict[str, Any]) -> str:
    if rec.get("verified") is None:
        return "a copy that was not checked"
    digest = f", pixels and labels SHA-256 {rec['content_sha256'][:12]}..." if rec.get("content_sha256") else ""
    if rec["verified"]:
        return f"the published files{digest}"
    return f"an unverified copy ({rec.get('unverified_data')}{digest})"


def load(run_dir: str | Path, *, weights: str = "final", device: str | torch.device = "cpu") -> nn.Module:
    """The trained network of a run directory, in eval mode, ready for any PyTorch code.

    The architecture is rebuilt from ``config.json``; weights (normalisation
    constants included) come from ``model.safetensors`` (``weights="best"``: the
    epoch with the best validation robust accuracy).
    """
    return load_run(run_dir, weights=weights, device=device)[0]


def load_run(run_dir: str | Path, *, weights: str = "final", device: str | torch.device = "cpu"
             ) -> tuple[nn.Module, dict[str, str]]:
    """:func:`load`, with the metadata of the weights file it read (``sha256`` of the
    tensors, ``epoch`` of best weights)."""
    from .models import create_model

    if not isinstance(run_dir, (str, os.PathLike)) or isinstance(os.fspath(run_dir), bytes):
        raise ConfigError(f"run_dir must be a path (str or pathlib.Path), got {type(run_dir).__name__}",
                          field="run_dir")
    if not str(run_dir).strip():
        raise ConfigError("run_dir is empty: give the run's folder", field="run_dir")
    run_dir = Path(home_path(run_dir))
    cfg = read_config(run_dir)
    name = {"final": WEIGHTS, "best": BEST_WEIGHTS}.get(weights)
    if name is None:
        raise ConfigError(f"weights must be 'final' or 'best', got {weights!r}",
                          cli=f"--weights for a run folder is final or best, got {weights!r}", field="weights")
    path = run_dir / name
    check_run_file(path)
    if not path.is_file():
        raise MissingWeights(f"{path} not found{_unfinished_hint(run_dir, weights, False, cfg.epochs)}",
                             cli=f"{path} not found{_unfinished_hint(run_dir, weights, True, cfg.epochs)}")
    raw = loads_json((run_dir / CONFIG).read_text(encoding="utf-8-sig"))
    state, meta = read_weights(path, raw)
    # a run whose config.json holds every field of this version wrote its settings into its weights too
    # (earlier versions did not: their weights are tied to the run by their digest and epoch only)
    settings = "config" in meta or not {f.name for f in dataclasses.fields(TrainConfig)} <= set(raw)
    if "sha256" not in meta or not {"epoch", "epochs"} & set(meta) or not settings:  # else no check could act
        raise CheckpointError(f"{path} lacks what eae train records in a run's weights (the SHA-256 of its tensors, "
                              "its epoch, its run's settings): re-saved by another program, or copied from elsewhere, they could be any "
                              "run's; restore the run's own file, or score these weights as a model of your own "
                              "(eae eval --model ... --weights FILE)")
    _check_kind(path, weights, meta, cfg)
    num_classes = state["head.weight"].shape[0]
    model = create_model(cfg.arch, num_classes=num_classes, head=cfg.head, head_scale=cfg.head_scale)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:  # the weights of another architecture, or an edited config.json
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(f"{path}: these weights do not fit a {cfg.arch!r} network as {run_dir / CONFIG} "
                              f"describes ({first})") from None
    return model.to(_device(device)).eval(), meta


def _check_kind(path: Path, weights: str, meta: dict[str, str], cfg: TrainConfig) -> None:
    """Final weights are saved with the run's ``epochs``, best ones with their ``epoch``: one
    copied over the other is refused (its numbers would be reported under the other's name).
    A run without validation keeps its final weights as its best: that is no copy."""
    if weights == "best" and cfg.val_size > 0 and "epochs" in meta and "epoch" not in meta:
        raise CheckpointError(f"{path} holds final weights (no best epoch recorded), but the run validated and kept "
                              f"its best epoch there: the final weights copied over it?; evaluate the final weights, "
                              f"or restore {BEST_WEIGHTS}")
    if weights == "final" and "epoch" in meta and "epochs" not in meta:
        raise CheckpointError(f"{path} holds the best weights of epoch {meta['epoch']}, not the final ones: the best "
                              f"weights copied over them?; evaluate them with --weights best, or restore {WEIGHTS}")
