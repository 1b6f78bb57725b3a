"""Where eae may write: the one owner of every output folder and report file.

Every command that writes (``train``, ``eval``, ``bench``, ``demo``) asks this module
first. The rules, in one place:

- A folder is written only when it is new, empty, or already ours *of the same kind*:
  a run of ``eae train``, a benchmark of ``eae bench``, a ``demo`` or a ``headline``
  folder. Ours means our marker file is there (a regular file, never a link, whose text
  names its kind), or, for folders made before the marker existed, our own files
  recognised by their content. Anything else is refused with the reason and the fix
  (:class:`~eae.errors.OutputRefused`); nothing has been written then.
- Marker and lock files are opened without following symbolic links (``O_NOFOLLOW``),
  and a new marker with ``O_EXCL``: a link planted where they go is refused, never
  written through.
- What a refused or failed command created itself (folders, marker, lock) is removed
  again when nothing else was written: a refusal leaves the disk as it found it.
- A report file (``eval-*.json`` and its ``.md``) is replaced only when eae wrote it and
  nobody changed it since (the JSON says ``written_by``; the JSON records the SHA-256
  of its Markdown). Replacing one is said, never silent.
- A generated document (a benchmark's ``REPORT.md``, ``report.html``, plots) is sealed by its
  SHA-256 in ``.eae-reports.json``; one changed since (a user's notes), or one eae cannot show
  it wrote, is never replaced.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Callable

from .errors import OutputRefused
from .utils import loads_json

# kind -> marker file name; the run marker predates the others and keeps its name
MARKERS = {"run": ".eae-run", "bench": ".eae-bench", "demo": ".eae-demo", "headline": ".eae-headline"}
WHAT = {"run": "a run of `eae train`", "bench": "a benchmark of `eae bench`", "demo": "the folder of `eae demo`",
        "headline": "the folder of `eae bench headline`"}
LOCK = ".lock"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def open_nofollow(path: Path, flags: int, mode: int = 0o644) -> int:
    """``os.open`` that refuses a symbolic link at ``path`` (ELOOP) with a clear error."""
    try:
        return os.open(path, flags | _NOFOLLOW | _CLOEXEC, mode)
    except OSError as e:
        if path.is_symlink():
            raise OutputRefused(f"{path} is a symbolic link; eae does not write through links it did not make: "
                                "remove the link (or choose another folder)") from None
        raise e


def _regular(path: Path) -> bool:
    """A regular file at ``path`` itself (a link to one does not count)."""
    try:
        return path.lstat().st_mode & 0o170000 == 0o100000
    except OSError:
        return False


def _read_small(path: Path, limit: int = 1 << 20) -> str | None:
    """The text of a small regular file (not a link), or None."""
    if not _regular(path) or path.lstat().st_size > limit:
        return None
    try:
        return path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def kind_of(path: Path) -> str | None:
    """Which of our kinds the folder ``path`` is, by its marker, else by its content."""
    for kind, name in MARKERS.items():
        text = _read_small(path / name)
        if text is not None and (kind == "run" or kind in text):
            return kind
    for kind, recognise in _LEGACY.items():
        if recognise(path):
            return kind
    return None


def _json(path: Path) -> Any:
    text = _read_small(path)
    try:
        return loads_json(text) if text is not None else None
    except ValueError:
        return None


# What a run of an older eae (before markers) holds; anything else in the folder makes it not ours.
_RUN_FILES = {"config.json", "dataset.json", "environment.json", "metrics.jsonl", "events.jsonl", "checkpoint.pt",
              "checkpoint_best.pt", "model.safetensors", "model_best.safetensors", "tensorboard", LOCK}
_RUN_CONFIG_KEYS = {"out", "method", "arch", "epochs", "eps", "batch_size", "lr_max", "seed", "dataset"}


def _legacy_run(path: Path) -> bool:
    """A run folder written before markers: eae's config.json (its fields, not four of them),
    results that only training writes, and nothing that is not a run's file."""
    d = _json(path / "config.json")
    if not (isinstance(d, dict) and _RUN_CONFIG_KEYS <= set(d)):
        return False
    names = {p.name for p in path.iterdir()}
    foreign = {n for n in names - _RUN_FILES if not re.fullmatch(r"eval.*\.(json|md)|\..*\.eae-tmp-\w+", n)}
    return bool(names & {"metrics.jsonl", "checkpoint.pt", "model.safetensors"}) and not foreign


def _dangling(link: Path) -> str:
    """What is wrong with a link that leads nowhere, and the fix, in the words of a message."""
    try:
        os.stat(link)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "that leads back to itself (a loop of links): remove it,"
    target = os.readlink(link)
    where = Path(target) if os.path.isabs(target) else link.parent / target  # relative to the link's folder
    return f"to {target}, which does not exist: create {os.path.normpath(where)},"


def _legacy_bench(path: Path) -> bool:
    d = _json(path / "bench.json")
    return isinstance(d, dict) and {"suite", "entries"} <= set(d)


def _legacy_demo(path: Path) -> bool:
    d = _json(path / "demo.json")
    return isinstance(d, dict) and {"header", "rows"} <= set(d)


_LEGACY: dict[str, Callable[[Path], bool]] = {"run": _legacy_run, "bench": _legacy_bench, "demo": _legacy_demo}


def _listing(names: list[str]) -> str:
    return ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")


# the folders eae's datasets are fetched into, each known by its name and one of its own files
DATASET_COPIES = {"cifar-10-batches-py": ("batches.meta", "test_batch"), "cifar-100-python": ("meta", "test"),
                  "svhn": ("test_32x32.mat", "train_32x32.mat"), "tiny-imagenet-200": ("wnids.txt",)}


def dataset_copy_above(path: Path) -> Path | None:
    """The dataset copy (a CIFAR-10, CIFAR-100, SVHN or Tiny-ImageNet folder of eae's layout)
    that ``path`` is, or lies inside; None when it lies in none. Read as the system reads it
    (links followed): an output there would sit among the files a dataset check reads."""
    real = Path(os.path.realpath(path))
    for folder in (real, *real.parents):
        markers = DATASET_COPIES.get(folder.name)
        if markers and any((folder / m).is_file() for m in markers):
            return folder
    return None


def _refuse_in_dataset(path: Path, flag: str, api: str | None = None) -> None:
    copy = dataset_copy_above(path)
    if copy is not None:
        why = f"is inside the dataset copy {copy}: eae writes nothing among a dataset's files; give a path outside it"
        raise OutputRefused(f"{api}={str(path)!r} {why}" if api else f"{flag} {path} {why}", cli=f"{flag} {path} {why}")


def check_folder(path: str | Path, kind: str, flag: str = "--out", api: str = "out") -> None:
    """Raise :class:`OutputRefused` unless ``path`` may become (or is) a ``kind`` folder:
    new, empty, or ours of that kind, and not inside a dataset copy. Writes nothing."""
    path = Path(path)
    if ".." in path.parts:  # userproj/new/.. is userproj: named plainly or not at all
        raise OutputRefused(f"{api}={str(path)!r} goes up with '..': give the folder itself",
                            cli=f"{flag} {path} goes up with '..': give the folder itself")
    _refuse_in_dataset(path, flag, api)
    if path.is_symlink() and not path.exists():
        why = _dangling(path)
        raise OutputRefused(f"{api}={str(path)!r} is a symbolic link {why} or choose another",
                            cli=f"{flag} {path} is a symbolic link {why} or choose another {flag}")
    if not path.exists():
        return
    if not path.is_dir():
        raise OutputRefused(f"{api}={str(path)!r} is a file, not a folder: choose a new or empty folder",
                            cli=f"{flag} {path} is a file, not a folder: choose a new or empty folder")
    names = sorted(p.name for p in path.iterdir())
    # an empty lock alone: what an older eae could leave; one holding a pid may be another program's pidfile
    if not names or (names == [LOCK] and _read_small(path / LOCK, limit=64) in ("", "\n")):
        return
    found = kind_of(path)
    if found == kind:
        return
    why = (f"it is {WHAT[found]}" if found else f"it is not empty and was not made by eae (it holds {_listing(names)})")
    fix = f"choose a new or empty folder for {WHAT[kind]}; nothing was written there"
    raise OutputRefused(f"{api}={str(path)!r}: {why}: {fix}", cli=f"{flag} {path}: {why}: {fix}")


class OutputFolder:
    """A folder of one kind, claimed for writing: checked, created (remembering which
    levels it created), marked. :meth:`abandon` undoes the claim if nothing else was
    written, so a command that is refused or fails early leaves no trace."""

    def __init__(self, path: str | Path, kind: str, flag: str = "--out", api: str = "out"):
        self.path, self.kind, self.flag, self.api = Path(path), kind, flag, api
        self.created: list[Path] = []  # folders this claim made, outermost first
        self.marked = False  # whether this claim wrote the marker
        self.written: list[str] = []  # files this claim wrote that abandon() may remove (e.g. a manifest)
        self.found_lock = False  # a lock was there before the claim: abandon() leaves it

    @property
    def marker(self) -> Path:
        return self.path / MARKERS[self.kind]

    def claim(self) -> "OutputFolder":
        check_folder(self.path, self.kind, self.flag, self.api)
        missing = [p for p in [self.path, *self.path.parents] if not p.exists()]
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            why = f"cannot create it ({e.strerror or e}{': ' + str(e.filename) if e.filename else ''})"
            raise OutputRefused(f"{self.api}={str(self.path)!r}: {why}: choose a folder you can write",
                                cli=f"{self.flag} {self.path}: {why}: choose a folder you can write") from None
        self.created = list(reversed(missing))
        self.found_lock = os.path.lexists(self.path / LOCK)
        if not self.marker.exists() and not self.marker.is_symlink():
            fd = open_nofollow(self.marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            with os.fdopen(fd, "w") as fh:
                fh.write(f"{self.kind}: {WHAT[self.kind]} writes here, and only here.\n")
            self.marked = True
        elif not _regular(self.marker):
            raise OutputRefused(f"{self.marker} is not a regular file; eae does not write through it: remove it")
        return self

    def abandon(self) -> None:
        """Remove what this claim made, when the folder holds nothing else (lock aside)."""
        if not self.marked:
            return
        ours = [*self.written, *([] if self.found_lock else [LOCK]), self.marker.name]  # the marker last
        if {p.name for p in self.path.iterdir()} - {*ours, LOCK}:
            return
        for name in ours:
            if _regular(self.path / name):
                (self.path / name).unlink()
        for folder in reversed(self.created):
            try:
                folder.rmdir()
            except OSError:
                break
        self.created, self.marked = [], False


# --------------------------------------------------------------------------- generated documents
SEALS = ".eae-reports.json"  # name -> SHA-256 of each document eae generated in a folder


def edited_documents(folder: Path, names) -> list[str]:
    """Those of ``names`` in ``folder`` that eae cannot show it wrote as they are: changed since
    (notes added to a REPORT.md), not sealed (a user's own file of that name, or a folder of an
    earlier version), or not a regular file. A rewrite would lose them."""
    seals = _json(folder / SEALS)
    seals = seals if isinstance(seals, dict) else {}
    return [n for n in names if os.path.lexists(folder / n) and (
        not _regular(folder / n) or hashlib.sha256((folder / n).read_bytes()).hexdigest() != seals.get(n))]


def documents_refused(folder: Path, names, owner: str) -> str | None:
    """Why ``owner`` may not start work that ends by rewriting ``names`` in ``folder`` (None:
    it may): every document it cannot show it wrote, named at once, and the seals file itself
    when that is the cause."""
    seals = folder / SEALS
    if os.path.lexists(seals) and not _regular(seals):
        return (f"{seals} is {'a folder' if seals.is_dir() else 'not a regular file'}, where {owner} keeps the "
                "SHA-256 of the documents it wrote: move it away, then run the same command again")
    edited = edited_documents(folder, names)
    if not edited:
        return None
    listed = ", ".join(edited)
    if not isinstance(_json(seals), dict):  # missing or unreadable: no document can be shown to be ours
        return (f"{folder}: {listed} cannot be shown to be as {owner} wrote them ({seals} is "
                f"{'missing' if not os.path.lexists(seals) else 'not readable JSON'}), and they are rewritten when it "
                "ends: copy what you want to keep, move them away, then run the same command again")
    return (f"{folder}: {listed} {'is' if len(edited) == 1 else 'are'} not as {owner} wrote "
            f"{'it' if len(edited) == 1 else 'them'} (changed since, or another program's), and rewritten when it "
            "ends: copy what you added elsewhere, move them away, then run the same command again")


def write_documents(folder: Path, documents: dict[str, str | bytes]) -> list[str]:
    """Write generated documents (name -> text or bytes), each sealed; one that eae cannot
    show it wrote as it is (see :func:`edited_documents`) is kept. Returns the names kept."""
    from .utils import atomic_write_bytes, atomic_write_json

    kept = edited_documents(folder, documents)
    seals = _json(folder / SEALS)
    seals = seals if isinstance(seals, dict) else {}
    for name, content in documents.items():
        if name not in kept:
            data = content.encode() if isinstance(content, str) else content
            atomic_write_bytes(folder / name, data)
            seals[name] = hashlib.sha256(data).hexdigest()
    atomic_write_json(folder / SEALS, seals)
    return kept


# --------------------------------------------------------------------------- report files
def _digest(d: dict[str, Any]) -> str:
    body = {k: v for k, v in d.items() if k != "report_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def sealed(report: dict[str, Any]) -> dict[str, Any]:
    """The report with the SHA-256 of its own content: an edit of the JSON is then seen."""
    return {**report, "report_sha256": _digest(report)}


def _differs(was: Any, now: Any, where: Any = None) -> str:
    """What makes an earlier evaluation another one, in words: its settings or its subject
    (with the run folder it was made in, ``where``, when it recorded one)."""
    from .config import short  # (an edited report's values can be any size: cut in messages)

    if not isinstance(was, dict) or not isinstance(now, dict):
        return "written by an earlier eae, which did not record what it evaluated"
    parts = [f"{label} {short(was.get(key), 300)}, this one {short(now.get(key), 300)}" for key, label in
             (("settings", "its settings are"), ("of", "it scored")) if was.get(key) != now.get(key)]
    if was.get("of") != now.get("of") and isinstance(where, str):
        parts[-1] = parts[-1].replace("it scored", f"it scored (in {where[:300]})", 1)
    other = sorted(map(str, set(was) ^ set(now)))
    return "; ".join(parts) or f"its record of what it evaluated has other fields ({', '.join(other)[:200]})"


def _writable_folder(path: Path, flag: str) -> None:
    """The folder a report goes into can be made and written: said before the work that
    fills it (a parent that is a file, a read-only file system)."""
    above = next((p for p in path.absolute().parents if os.path.lexists(p)), None)
    if above is None:
        return
    if not above.is_dir():
        raise OutputRefused(f"{flag} {path}: {above} is {'a link to nothing' if not above.exists() else 'a file'}, "
                            f"not a folder: give {flag} a path in a folder")
    if not os.access(above, os.W_OK | os.X_OK):
        raise OutputRefused(f"{flag} {path}: {above} cannot be written (read-only, or no permission): give {flag} "
                            "a path in a folder you can write")


def check_report(json_path: Path, owner: str, flag: str = "--output", evaluation: Any = None) -> str | None:
    """Whether ``json_path`` and the ``.md`` beside it may be (re)written by ``owner``.
    Returns a line saying what would be replaced (None: nothing), or raises
    :class:`OutputRefused` for a file that is not ours, was changed since we wrote it, or
    (with ``evaluation``, the new report's ``evaluation`` field, or a list of the forms an
    earlier report of it may hold, this version's first) holds another evaluation."""
    if ".." in json_path.parts:
        raise OutputRefused(f"{flag} {json_path} goes up with '..': give the path itself")
    if json_path.suffix != ".json" or json_path.stem in ("", "."):
        raise OutputRefused(f"{flag} must be a file name ending in .json (a .md is written beside it), "
                            f"got {str(json_path)!r}")
    _writable_folder(json_path, flag)
    _refuse_in_dataset(json_path, flag)
    md_path = json_path.with_suffix(".md")
    d = _json(json_path)
    d = d if isinstance(d, dict) else {}
    for p in (json_path, md_path):
        if p.is_symlink():
            raise OutputRefused(f"{p} is a symbolic link; eae does not write through links it did not make: "
                                f"remove it or give {flag} another path")
        if p.exists() and d.get("written_by") != owner:
            raise OutputRefused(f"{p} exists and was not written by {owner}; it is left as it is: give {flag} "
                                "another path")
    if json_path.exists():
        recorded = d.get("report_sha256")
        # reports of this version carry both digests (and the evaluation they hold): one without its seal was edited
        sealed_kind = "markdown_sha256" in d or "evaluation" in d
        if (recorded is None and sealed_kind) or (recorded is not None and recorded != _digest(d)):
            raise OutputRefused(f"{json_path} was changed since {owner} wrote it; it is left as it is: move it away, "
                                f"or give {flag} another path")
    if md_path.exists():
        recorded = d.get("markdown_sha256")
        text = md_path.read_bytes() if _regular(md_path) else b""
        if (recorded is None and "evaluation" in d) or (recorded is not None
                                                        and hashlib.sha256(text).hexdigest() != recorded):
            raise OutputRefused(f"{md_path} was changed since {owner} wrote it; it is left as it is: move it away, "
                                f"or give {flag} another path")
    forms = evaluation if isinstance(evaluation, list) else [evaluation]  # this version's first, then older ones'
    if json_path.exists() and evaluation is not None and d.get("evaluation") not in forms:
        raise OutputRefused(f"{json_path} holds the report of another evaluation "
                            f"({_differs(d.get('evaluation'), forms[0], d.get('run_dir'))}); "
                            f"it is left as it is: give {flag} another path, or move that one away")
    return f"replaces {json_path} (an earlier report of the same evaluation)" if json_path.exists() else None
