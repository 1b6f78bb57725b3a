"""SVHN (Netzer et al. 2011), cropped digits, from the official MATLAB files.

``train_32x32.mat`` (73,257 images), ``test_32x32.mat`` (26,032) and, as an option,
``extra_32x32.mat`` (531,131, added to the training set): ``X`` uint8 (32, 32, 3, N),
``y`` (N, 1) labels 1..10, where 10 is the digit 0. Read by eae's own MAT-file reader
(numeric arrays only, no scipy) and checked against the MD5s published with the files (as
torchvision lists them).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import official
from .cifar10 import DatasetError
from .matlab import read_mat

FOLDER = "svhn"
URL = "http://ufldl.stanford.edu/housenumbers/{}"
FILE_MD5 = {"train_32x32.mat": "e26dedcc434d2e4c54c9b2d4a06d8373",
            "test_32x32.mat": "eb5a983be6a315427106f1b164d9cef3",
            "extra_32x32.mat": "a93ce644f1a588dc4d68dda5feec44a7"}
CLASSES = tuple(str(d) for d in range(10))  # label d is the digit d (the files' 10 becomes 0)


def read_split(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One .mat file -> (uint8 (N, 3, 32, 32), int64 labels 0..9)."""
    if not path.is_file():
        raise DatasetError(f"missing SVHN file: {path}")
    m = read_mat(path, ("X", "y"))
    x, y = m["X"], m["y"]
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise DatasetError(f"{path}: 'X' must be uint8 of shape (32, 32, 3, N), got {x.dtype} {x.shape}")
    y = y.reshape(-1)
    if len(y) != x.shape[3]:
        raise DatasetError(f"{path}: {len(y):,} labels for {x.shape[3]:,} images")
    if y.size and (not np.all(y == np.round(y)) or y.min() < 1 or y.max() > 10):
        raise DatasetError(f"{path}: labels must be whole numbers 1..10 (10 is the digit 0)")
    y = y.astype(np.int64) % 10
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1)), y


def load_svhn(folder, *, extra: bool = False, allow_unverified: bool = False) -> official.ArraySet:
    """Read and check an SVHN folder (``extra``: add ``extra_32x32.mat`` to the training set)."""
    folder = Path(folder)
    names = ["train_32x32.mat", "test_32x32.mat"] + (["extra_32x32.mat"] if extra else [])
    train_x, train_y = read_split(folder / names[0])  # the format first: a broken file is named as broken
    test_x, test_y = read_split(folder / names[1])
    if extra:
        ex, ey = read_split(folder / names[2])
        train_x, train_y = np.concatenate([train_x, ex]), np.concatenate([train_y, ey])
    reasons = [official.check_md5(folder / n, FILE_MD5[n], allow_unverified) for n in names]
    return official.ArraySet(train_x, train_y, test_x, test_y, CLASSES, folder, official.unverified(reasons))


def locate_svhn(data_dir=None, *, extra: bool = False, download: bool = True) -> Path:
    names = ["train_32x32.mat", "test_32x32.mat"] + (["extra_32x32.mat"] if extra else [])
    found = official.find(data_dir, FOLDER, names[0])
    if found is not None:
        for n in names:
            if (found / n).exists() or (found / n).is_symlink():
                official.regular_file(found / n)
        missing = [n for n in names if not (found / n).is_file()]
        if missing:  # a folder that exists is not written into: it may be the user's
            raise DatasetError(f"{found} holds SVHN but not {', '.join(missing)}: download "
                               + ", ".join(f"{URL.format(n)} (MD5 {FILE_MD5[n]})" for n in missing) + " into it")
        return found
    if not download:
        raise DatasetError(f"SVHN not found: no {FOLDER}/{names[0]} in {official.searched_text(data_dir, FOLDER)}; "
                           + official.fetch_advice(data_dir, FOLDER, "svhn"))

    def fill(staging: Path) -> None:
        for n in names:
            official.download(URL.format(n), staging / n, FILE_MD5[n])
    return official.fetch(data_dir, FOLDER, "SVHN", fill, name="svhn")
