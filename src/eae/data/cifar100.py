"""CIFAR-100 from the official ``cifar-100-python`` archive (Krizhevsky 2009).

``train`` and ``test`` are pickles of dicts (``data``: uint8 (N, 3072), ``fine_labels``:
100 classes, ``coarse_labels``: 20 superclasses), ``meta`` holds the class names. They are
read with the restricted unpickler (``safe_pickle``: a tampered file cannot run code) and
checked against the MD5s published with the archive (as torchvision lists them). Fine
labels by default; ``labels="coarse"`` gives the 20 superclasses.
"""
from __future__ import annotations

import pickle
import tarfile
from pathlib import Path

import numpy as np

from . import official
from .cifar10 import DatasetError
from .safe_pickle import safe_load

FOLDER = "cifar-100-python"
URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
ARCHIVE_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"
FILE_MD5 = {"train": "16019d7e3df5f24257cddd939b257f8d", "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
            "meta": "7973b15100ade9c7d40fb424638fde48"}
LABELS = ("fine", "coarse")


def _read(path: Path) -> dict:
    official.regular_file(path, "CIFAR-100")
    try:
        d = safe_load(path)
    except pickle.UnpicklingError as e:
        raise DatasetError(str(e)) from e
    if not isinstance(d, dict):
        raise DatasetError(f"{path}: not a CIFAR-100 file (a pickled dict)")
    return d


def _whole_numbers(y) -> np.ndarray | None:
    """Labels as int64, or None unless every one is an integer (a float, bool or NaN label
    is not truncated into a class)."""
    if isinstance(y, np.ndarray):
        return y.astype(np.int64) if y.dtype.kind in "iu" and y.ndim == 1 else None
    if isinstance(y, list) and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in y):
        try:
            return np.asarray(y, dtype=np.int64)
        except OverflowError:
            return None
    return None


def _split(path: Path, labels: str, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    d = _read(path)
    data, y = d.get("data"), d.get(f"{labels}_labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DatasetError(f"{path}: 'data' must be a uint8 array of shape (N, 3072) (32x32x3 images), got "
                           f"{getattr(data, 'dtype', type(data).__name__)} {getattr(data, 'shape', '')}")
    y = _whole_numbers(y)
    if y is None or y.shape != (len(data),):
        raise DatasetError(f"{path}: '{labels}_labels' must be {len(data):,} whole numbers (class indices)")
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise DatasetError(f"{path}: {labels} labels outside 0..{n_classes - 1}")
    return np.ascontiguousarray(data).reshape(-1, 3, 32, 32), y


def _classes(folder: Path, labels: str) -> tuple[str, ...]:
    names = _read(folder / "meta").get(f"{labels}_label_names")
    want = 100 if labels == "fine" else 20
    if not isinstance(names, list) or len(names) != want:
        raise DatasetError(f"{folder / 'meta'}: expected {want} {labels} class names")
    names = tuple(n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names)
    if not all(n.isprintable() for n in names):  # control characters would drive the terminal they are printed on
        raise DatasetError(f"{folder / 'meta'}: class names with control characters (not CIFAR-100's)")
    return names


def load_cifar100(folder, *, labels: str = "fine", allow_unverified: bool = False) -> official.ArraySet:
    """Read and check a ``cifar-100-python`` folder."""
    folder = Path(folder)
    if labels not in LABELS:
        raise ValueError(f"labels must be fine or coarse, got {labels!r}")
    classes = _classes(folder, labels)  # the format first: a broken file is named as broken
    train_x, train_y = _split(folder / "train", labels, len(classes))
    test_x, test_y = _split(folder / "test", labels, len(classes))
    reasons = [official.check_md5(folder / name, md5, allow_unverified) for name, md5 in FILE_MD5.items()]
    return official.ArraySet(train_x, train_y, test_x, test_y, classes, folder, official.unverified(reasons))


def fetch_cifar100(staging: Path, log=print) -> None:
    """The official archive, MD5-checked, its three files extracted into ``staging``."""
    archive = staging / "cifar-100-python.tar.gz"
    official.download(URL, archive, ARCHIVE_MD5, log)
    with tarfile.open(archive, "r:gz") as tar:
        for name in FILE_MD5:
            member = tar.getmember(f"{FOLDER}/{name}")
            if not member.isfile():
                raise DatasetError(f"{URL}: {member.name} is not a regular file")
            official.copy_member(tar.extractfile(member), staging / name)
    archive.unlink()


def locate_cifar100(data_dir=None, download: bool = True) -> Path:
    return official.locate(data_dir, FOLDER, "train", "CIFAR-100", fetch_cifar100, download, "cifar100")
