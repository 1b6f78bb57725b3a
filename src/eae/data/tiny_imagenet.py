"""Tiny-ImageNet (Le & Yang 2015): 200 ImageNet classes at 64x64, from the official
``tiny-imagenet-200`` release (Stanford CS231n).

Layout read: ``wnids.txt`` (the 200 class ids), ``train/<wnid>/images/*.JPEG`` (500 per
class) and the labelled validation set, ``val/images/*.JPEG`` with
``val/val_annotations.txt`` (file, wnid, box), used as the test set; ``test/`` has no
labels and is not read. Labels follow the sorted wnids (ImageFolder's order).

Only the archive has a published checksum (its MD5): a downloaded archive is checked.
A folder extracted elsewhere is checked by what the release is: the 200 official class
ids, 500 training and 50 validation images per class, every validation image annotated.
A copy that is not (a subset, other classes) is refused unless ``--unverified-data``.
Every image must decode to 64x64 (greyscale images, as in the release, become RGB).
"""
from __future__ import annotations

import hashlib
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from . import official
from .cifar10 import DatasetError

FOLDER = "tiny-imagenet-200"
URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
ARCHIVE_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
WNIDS_SHA256 = "add4bf0c8712ef7fb4bca98e3bbaf07101636c5db62cce486fd2af71cc11caf8"  # of the sorted ids, one per line
TRAIN_PER_CLASS, VAL_PER_CLASS, SIDE = 500, 50, 64


def read_wnids(folder: Path) -> list[str]:
    path = folder / "wnids.txt"
    official.regular_file(path, "Tiny-ImageNet")
    try:
        wnids: list[str] | None = path.read_text(encoding="utf-8-sig").split()  # a BOM (Notepad) is not a class
    except UnicodeDecodeError:
        wnids = None
    if wnids is None or not all(w.isprintable() for w in wnids):  # binary, or names that would drive a terminal
        raise DatasetError(f"{path} is not a list of class ids (text, one per line)")
    if not wnids or len(set(wnids)) != len(wnids):
        raise DatasetError(f"{path}: expected one class id per line, each once")
    return sorted(wnids)


def train_samples(folder: Path, wnids: list[str]) -> list[tuple[str, int]]:
    samples = []
    for label, w in enumerate(wnids):
        d = folder / "train" / w / "images"
        files = sorted(p for p in d.glob("*") if p.suffix.lower() in (".jpeg", ".jpg")) if d.is_dir() else []
        for f in files:  # a pipe or a device would block the decoder forever
            official.regular_file(f)
        if not files:
            raise DatasetError(f"{d}: no training images for class {w} (expected {folder}/train/<wnid>/images/*.JPEG)")
        samples += [(str(p), label) for p in files]
    return samples


def val_samples(folder: Path, wnids: list[str]) -> list[tuple[str, int]]:
    path = folder / "val" / "val_annotations.txt"
    official.regular_file(path, "Tiny-ImageNet")  # the labels of the validation images
    index = {w: i for i, w in enumerate(wnids)}
    samples = []
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 2 or parts[1] not in index or "/" in parts[0] or parts[0] in ("", ".", ".."):
            raise DatasetError(f"{path}, line {n}: expected 'FILE<tab>WNID...' with a class of wnids.txt, got "
                               f"{line[:80]!r}")
        image = folder / "val" / "images" / parts[0]
        if not image.exists() and not image.is_symlink():
            raise DatasetError(f"{path}, line {n}: {image} is not there")
        official.regular_file(image)
        samples.append((str(image), index[parts[1]]))
    if not samples:
        raise DatasetError(f"{path}: no annotated validation images")
    return samples


def release_differences(wnids: list[str], train: list, val: list) -> str:
    """"" when the folder has the official release's classes and counts; else what differs."""
    why = []
    if hashlib.sha256("\n".join(wnids).encode()).hexdigest() != WNIDS_SHA256:
        why.append(f"wnids.txt: {len(wnids)} class ids that are not Tiny-ImageNet's 200")
    for name, samples, per in (("train", train, TRAIN_PER_CLASS), ("val", val, VAL_PER_CLASS)):
        counts = np.bincount([y for _, y in samples], minlength=len(wnids))
        if not (counts == per).all():
            spread = f"{counts.min()}" if counts.min() == counts.max() else f"{counts.min()} to {counts.max()}"
            why.append(f"{name}: {len(samples):,} images, {spread} per class (the release has {per} per class)")
    return "; ".join(why)


class _Images(torch.utils.data.Dataset):
    """Decodes one file per item in a worker; errors come back as text (not a worker's traceback)."""

    def __init__(self, samples):
        self.samples = samples

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        from PIL import Image

        path = self.samples[i][0]
        try:
            with warnings.catch_warnings():  # a huge image warns as it opens: refused below by its size
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                img = Image.open(path)
            with img:
                if img.size != (SIDE, SIDE):  # before decoding: a huge image is refused, not decoded
                    w, h = img.size
                    return torch.zeros(3, SIDE, SIDE, dtype=torch.uint8), f"{path}: {w}x{h} pixels, " \
                                                                           f"Tiny-ImageNet's are {SIDE}x{SIDE}"
                a = np.asarray(img.convert("RGB"), dtype=np.uint8)
        except Exception as e:  # Pillow raises many types for broken files
            return torch.zeros(3, SIDE, SIDE, dtype=torch.uint8), f"{path}: cannot decode ({type(e).__name__}: {e})"
        if a.shape != (SIDE, SIDE, 3):
            return torch.zeros(3, SIDE, SIDE, dtype=torch.uint8), f"{path}: {a.shape[1]}x{a.shape[0]} pixels, " \
                                                                   f"Tiny-ImageNet's are {SIDE}x{SIDE}"
        return torch.from_numpy(a.transpose(2, 0, 1).copy()), ""


def decode(samples, workers: int) -> tuple[np.ndarray, np.ndarray]:
    from ..system import available_cores

    workers = min(workers, available_cores())  # more than the cores only slows it (and torch warns)
    dl = torch.utils.data.DataLoader(_Images(samples), batch_size=512, num_workers=workers)
    xs = []
    for x, errors in dl:
        bad = next((e for e in errors if e), None)
        if bad:
            raise DatasetError(f"{bad}: remove or replace the file")
        xs.append(x.numpy())
    return np.concatenate(xs), np.array([y for _, y in samples], dtype=np.int64)


def load_tiny_imagenet(folder, *, allow_unverified: bool = False, workers: int = 4) -> official.ArraySet:
    """Read and check a ``tiny-imagenet-200`` folder (decoded once: 1.2 GB of uint8)."""
    folder = Path(folder)
    wnids = read_wnids(folder)
    train, val = train_samples(folder, wnids), val_samples(folder, wnids)
    why = release_differences(wnids, train, val)
    if why and not allow_unverified:
        raise DatasetError(f"{folder} is not the Tiny-ImageNet release ({why}). Use the official folder, or pass "
                           f"{official.UNVERIFIED_FLAG} to use this one anyway (runs and reports record it)")
    train_x, train_y = decode(train, workers)
    test_x, test_y = decode(val, workers)
    return official.ArraySet(train_x, train_y, test_x, test_y, tuple(wnids), folder, why)


def fetch_tiny_imagenet(staging: Path, log=print) -> None:
    """The official archive, MD5-checked, extracted into ``staging`` (regular files under
    ``tiny-imagenet-200/`` only: no links, no paths out of the folder)."""
    archive = staging.parent / "tiny-imagenet-200.zip"
    official.download(URL, archive, ARCHIVE_MD5, log)
    with zipfile.ZipFile(archive) as z:
        for info in z.infolist():
            rel = info.filename[len(FOLDER) + 1:] if info.filename.startswith(FOLDER + "/") else None
            parts = Path(rel).parts if rel else ()
            if rel is None or Path(rel).is_absolute() or ".." in parts:
                raise DatasetError(f"{URL}: unexpected member {info.filename!r}")
            if info.is_dir() or not parts:
                continue
            if (info.external_attr >> 16) & 0o170000 == 0o120000:  # a symbolic link
                raise DatasetError(f"{URL}: {info.filename} is a link, not a regular file")
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            official.copy_member(z.open(info), staging / rel)
    archive.unlink()


def locate_tiny_imagenet(data_dir=None, download: bool = True) -> Path:
    return official.locate(data_dir, FOLDER, "wnids.txt", "Tiny-ImageNet", fetch_tiny_imagenet, download,
                          "tiny-imagenet")
