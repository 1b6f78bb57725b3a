"""What the datasets read from their official files share: CIFAR-100, SVHN and
Tiny-ImageNet (CIFAR-10 has its own module, with checksums down to the pixels).

Where: looked for as CIFAR-10 is: ``--data-dir``, else ``$EAE_DATA_DIR``, else the user
cache (``~/.cache/eae``); each may hold the dataset's folder or be it.

Fetching, when none has it: the official files are downloaded into a staging folder beside
the target, checked against their published MD5 before anything reads them, and the folder
is moved into place only when it is complete, so a half-fetched dataset is never used.

Verification, on every load: the files' published checksums (and the counts and classes
they imply). A copy that reads correctly but is not the published one (re-encoded, a
subset, relabelled) is refused with the reason, unless the user asks for it with
``--unverified-data``; the run's ``dataset.json`` then records why it is unverified.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .cifar10 import DatasetError, candidate_roots, refuse_foreign_folder
from .cifar10 import fetch_advice as cifar10_fetch_advice

UNVERIFIED_FLAG = "--unverified-data"


@dataclass
class ArraySet:
    """A dataset as uint8 arrays (N, 3, H, W) with int64 labels."""
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: tuple[str, ...]
    root: Path | None = None
    unverified: str = ""  # why this copy is not the published one; "" when it is
    content_sha256: str = ""  # of the pixels and labels as read: which copy a run was trained on

    def digest(self) -> str:
        """SHA-256 of the images and labels in order (a run resumes only on the same ones)."""
        h = hashlib.sha256()
        for a in (self.train_x, self.train_y, self.test_x, self.test_y):
            h.update(str(a.shape).encode())
            h.update(np.ascontiguousarray(a).data)
        return h.hexdigest()

    def check(self, what: str) -> "ArraySet":
        """Refuse a copy that cannot be trained or scored on: fewer than two classes, or an
        empty split (a user's subset can be either)."""
        where = f"{what} in {self.root}" if self.root else what
        if len(self.classes) < 2:
            raise DatasetError(f"{where} has {len(self.classes)} class; a classifier needs at least 2")
        for split, x in (("training", self.train_x), ("test", self.test_x)):
            if len(x) == 0:
                raise DatasetError(f"{where}: the {split} set is empty")
        self.content_sha256 = self.digest()
        return self

    def stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and (population) std of the training images in [0, 1]: the
        normalisation the models apply, computed from the data rather than copied."""
        s, s2, n = np.zeros(3), np.zeros(3), 0
        for i in range(0, len(self.train_x), 4096):  # in chunks: a float copy of Tiny-ImageNet is 10 GB
            c = self.train_x[i:i + 4096].reshape(-1, 3, self.train_x[0][0].size).astype(np.float64) / 255
            s, s2, n = s + c.sum(axis=(0, 2)), s2 + (c * c).sum(axis=(0, 2)), n + c.shape[0] * c.shape[2]
        mean = s / max(n, 1)
        std = np.sqrt(np.maximum(s2 / max(n, 1) - mean ** 2, 0))
        return tuple(float(m) for m in mean), tuple(float(v) for v in std)


def find(data_dir, folder: str, marker: str) -> Path | None:
    """The dataset's folder: ``ROOT/folder`` or ``ROOT`` itself, holding ``marker``."""
    for root, _ in candidate_roots(data_dir, folder):
        if (root / folder).exists() and not (root / folder).is_dir():
            raise DatasetError(f"{root / folder} is a file where the dataset's folder goes: move it away, or give "
                               "another --data-dir")
        for d in (root / folder, root):
            if (d / marker).is_file():
                return d
            if (d / marker).exists() or (d / marker).is_symlink():
                regular_file(d / marker)
    return None


def regular_file(path: Path, what: str = "") -> None:
    """DatasetError unless ``path`` is a regular file (or a link to one), naming what is wrong
    (``what``: whose file, e.g. "Tiny-ImageNet")."""
    if path.is_file():
        return
    if path.exists() or path.is_symlink():
        raise DatasetError(f"{path} is not a regular file (a folder, a pipe, a device or a link to nowhere): put "
                           "the official file there")
    raise DatasetError(f"missing {what + ' ' if what else ''}file: {path}")


def md5_of(path: Path) -> str:
    h = hashlib.md5()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 23):
            h.update(chunk)
    return h.hexdigest()


def check_md5(path: Path, published: str, allow_unverified: bool) -> str:
    """"" when ``path`` has its published MD5; else the reason, when unverified copies are
    allowed; else DatasetError naming the file and the way out."""
    regular_file(path)
    found = md5_of(path)
    if found == published:
        return ""
    reason = f"{path.name}: MD5 {found} is not the published {published}"
    if allow_unverified:
        return reason
    raise DatasetError(f"{path}: MD5 {found} is not the published {published}: this is not the official file "
                       f"(re-encoded, cut, or changed). Use the official file, or pass {UNVERIFIED_FLAG} to use "
                       "this copy anyway (runs and reports record it)")


def unverified(reasons) -> str:
    return "; ".join(r for r in reasons if r)


def download(url: str, dest: Path, md5: str, log=print) -> None:
    """``url`` streamed into ``dest``, its MD5 checked (DatasetError when it differs)."""
    log(f"downloading {url}")
    h = hashlib.md5()
    with urllib.request.urlopen(url, timeout=60) as r, dest.open("wb") as out:
        while chunk := r.read(1 << 20):
            h.update(chunk)
            out.write(chunk)
    if h.hexdigest() != md5:
        raise DatasetError(f"{url}: MD5 {h.hexdigest()} is not the published {md5} (a broken download?)")


def fetch(data_dir, folder: str, what: str, fill: Callable[[Path], None], log=print, name: str = "") -> Path:
    """Make ``ROOT/folder`` with ``fill(staging)`` (which downloads and checks the official
    files) in the first place the dataset is looked for; nothing is left half-made, and the
    folders made for it are removed again when it fails."""
    root, source = candidate_roots(data_dir, folder)[0]
    target = root / folder
    if target.is_symlink():  # fetched data is moved into place, never written through a link
        raise DatasetError(f"{target} is a link where {what} goes; eae does not write through links: remove it, "
                           "or put the official files into the folder it points to")
    if target.exists() and any(target.iterdir()):
        raise DatasetError(f"{target} exists but does not hold {what}: remove or complete it")
    refuse_foreign_folder(root, source, what, name or what.lower())
    searched = searched_text(data_dir, folder)
    log(f"{what} not found (looked in: {searched}); fetching it from the official source")
    made = make_dirs(root)
    try:
        with tempfile.TemporaryDirectory(prefix=f".eae-{folder}-", dir=root) as tmp:
            staging = Path(tmp) / folder
            staging.mkdir()
            try:
                fill(staging)
            except (OSError, urllib.error.URLError) as e:
                raise DatasetError(f"could not download {what} ({e}); put {folder} in one of: {searched} "
                                   "(see docs/usage.md for offline machines)") from e
            if target.exists():
                target.rmdir()  # empty (checked above)
            os.replace(staging, target)
    except BaseException:
        for d in reversed(made):  # ours, made a moment ago: gone again, unless something else is in them
            try:
                d.rmdir()
            except OSError:
                break
        raise
    log(f"{what} stored in {target}")
    return target


def searched_text(data_dir, folder: str) -> str:
    return ", ".join(f"{r} ({src})" for r, src in candidate_roots(data_dir, folder))


def fetch_advice(data_dir, folder: str, name: str) -> str:
    """The command that fetches the dataset into the place it was looked for."""
    return cifar10_fetch_advice(*candidate_roots(data_dir, folder)[0], name)


def make_dirs(path: Path) -> list[Path]:
    """``path`` and its missing parents created; the folders made, outermost first."""
    missing = []
    while not path.exists():
        if path.is_symlink():
            raise DatasetError(f"{path} is a link to nowhere (or a loop of links): point it at a folder, or give "
                               "another --data-dir")
        missing.append(path)
        path = path.parent
    if not path.is_dir():
        raise DatasetError(f"{path} is a file, not a folder: give another --data-dir")
    for d in reversed(missing):
        d.mkdir()
    return missing[::-1]


def locate(data_dir, folder: str, marker: str, what: str, fill: Callable[[Path], None],
           download: bool = True, name: str = "") -> Path:
    """The dataset's folder where it is looked for (:func:`find`), else fetched there."""
    found = find(data_dir, folder, marker)
    if found is not None:
        return found
    if not download:
        raise DatasetError(f"{what} not found: no {folder}/{marker} in {searched_text(data_dir, folder)}; "
                           + fetch_advice(data_dir, folder, name))
    return fetch(data_dir, folder, what, fill, name=name)


def copy_member(src, dest: Path) -> None:
    with dest.open("wb") as out:
        shutil.copyfileobj(src, out)
