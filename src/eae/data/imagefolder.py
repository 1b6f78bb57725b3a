"""ImageNet-style folders: ``DATA/train/<class>/*.JPEG`` and ``DATA/val/<class>/*``.

ImageNet does not fit on a GPU, so this path is the classic one: JPEGs decoded by
worker processes (Pillow), with RandomResizedCrop and a horizontal flip at
``image_size`` for training, resize + centre crop for evaluation. Two things keep
it fast: a JPEG is decoded at the smallest scale libjpeg offers that still covers
the crop (``Image.draft``), and workers hand over uint8 tensors, which become float
on the GPU.

The held-out validation split (``val_size`` images) comes from ``train/``, as for
CIFAR-10; ``val/`` plays the role of the test set and is read only by ``eae eval``.

Images may lie in subfolders of a class folder (as for torchvision's ImageFolder).
Bad input is found where it is cheap to find: at scan time every file must have an
image extension, be non-empty and start with an image signature, every entry must
be a file (not a dangling link or a pipe), and every class folder must hold an image;
at decode time a file that Pillow cannot read is caught.
``bad_images="error"`` (default) stops with the file's path; ``"skip"`` leaves such
files out (and, at decode time, substitutes the next readable image) and counts them.
"""
from __future__ import annotations

import hashlib
import math
import os
import sys
import unicodedata
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from ..errors import ConfigError
from .cifar10 import DatasetError
from .loader import shard_bounds
from ..utils import torch_seed

MEAN = (0.485, 0.456, 0.406)  # ImageNet statistics (the model normalises internally)
STD = (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")
BAD_POLICIES = ("error", "skip")
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"RIFF", b"P6", b"P3", b"II*\x00", b"MM\x00*")


@dataclass
class FolderIndex:
    """The images of one folder: (path, label) pairs, the class names, and what was
    skipped (path, reason)."""
    root: Path
    classes: tuple[str, ...]
    samples: list[tuple[str, int]]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)  # bytes per image, taken when the scan opened it

    def files_sha256(self) -> str:
        """SHA-256 of the images' paths (relative to the root), labels and sizes: a resume
        on a folder with files added, removed, renamed or rewritten is seen (an edit that
        keeps a file's size is not: the pixels are not read twice)."""
        h = hashlib.sha256()
        for path, y in self.samples:
            size = self.sizes[path] if path in self.sizes else os.stat(path).st_size
            h.update(f"{os.path.relpath(path, self.root)}\t{y}\t{size}\n".encode())
        return h.hexdigest()


def _check_file(path: str) -> tuple[str | None, int]:
    """(None if ``path`` looks like an image, else why not; its size in bytes). Reads 12 bytes."""
    if not path.lower().endswith(IMAGE_EXTENSIONS):
        return "not an image file (extension)", 0
    try:
        with open(path, "rb") as fh:
            head, size = fh.read(12), os.fstat(fh.fileno()).st_size
    except OSError as e:
        return f"unreadable ({e.strerror or e})", 0
    if not head:
        return "empty file", 0
    if not head.startswith(_SIGNATURES) or (head.startswith(b"RIFF") and head[8:12] != b"WEBP"):
        return "not an image (no JPEG/PNG/BMP/WebP/PPM/TIFF signature)", size
    return None, size


def _class_files(folder: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """The files of one class folder, subfolders included (as torchvision's ImageFolder,
    which users' folders are laid out for), sorted; and the entries that cannot be images
    (an unreadable folder, a dangling link, a pipe, a linked folder seen before or holding
    the class itself: a cycle), with why. Hidden entries are left out (and said, where they
    are named as images)."""
    files, odd, hidden = [], [], []
    seen = {os.path.realpath(folder)}
    home = os.path.realpath(folder)

    def unreadable(e: OSError) -> None:
        odd.append((e.filename or str(folder), f"unreadable folder ({e.strerror or e})"))

    for top, dirs, names in os.walk(folder, onerror=unreadable, followlinks=True):
        kept = []
        for d in sorted(d for d in dirs if not d.startswith(".")):
            path = os.path.join(top, d)
            real = os.path.realpath(path)
            if real in seen or home.startswith(real + os.sep):  # the link is named, never the folder behind it
                odd.append((path, "a link to a folder already read, or one that holds this class folder "
                                  "(a cycle): remove that link"))
            else:
                seen.add(real)
                kept.append(d)
        dirs[:] = kept
        for name in names:
            if name.startswith("."):  # .DS_Store, ._x.jpg (macOS): not images of the set
                if name.lower().endswith(_IMAGE_NAMES) and not name.startswith("._"):
                    hidden.append(os.path.join(top, name))
                continue
            path = os.path.join(top, name)
            if os.path.isfile(path):
                files.append(path)
            elif os.path.islink(path) and not os.path.exists(path):
                odd.append((path, "a link to nothing (its target is missing)"))
            else:
                odd.append((path, "not a regular file (a pipe, a socket or a device)"))
    if hidden:  # said, not silently left out: a name that looks like an image's
        print(f"note: {len(hidden)} hidden file(s) with an image's name left out ({hidden[0]}"
              f"{', ...' if len(hidden) > 1 else ''}): names starting with '.' are not read; rename them to include "
              "them", file=sys.stderr)
    return sorted(files), odd


_IMAGE_NAMES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".pgm", ".tif", ".tiff", ".gif")


def classes_with_images(root: str | Path) -> list[str]:
    """The class folders of ``root`` that hold a file with an image's name: the classes a
    training on it has (an empty one is an error, or left out with --bad-images skip), found
    without reading every file (an evaluation's label set)."""
    return [c for c in class_names(root) if _holds_image(os.path.join(root, c))]


def _holds_image(folder: str) -> bool:
    seen: set[str] = set()
    for top, dirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(top)
        if real in seen:  # a cycle of links
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if any(not n.startswith(".") and n.lower().endswith(IMAGE_EXTENSIONS) for n in names):
            return True
    return False


def class_names(root: str | Path) -> list[str]:
    """The class folders of ``root``, sorted (the label of a class is its position)."""
    return sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))


def scan_folder(root: str | Path, *, classes: Sequence[str] | None = None, bad_images: str = "error",
                threads: int = 16) -> FolderIndex:
    """Index ``root/<class>/<image>``. ``classes``: the label set to use (the training
    folder's, when scanning ``val/``): a class folder outside it is bad input."""
    if bad_images not in BAD_POLICIES:
        raise ValueError(f"bad_images must be one of {', '.join(BAD_POLICIES)}, got {bad_images!r}")
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    found = class_names(root)
    if not found:
        raise DatasetError(f"{root}: no class folders (expected {root}/<class>/<image files>)")
    if classes is None and len(found) < 2:  # the training set defines the classes: one is no classification
        raise DatasetError(f"{root}: one class folder ({found[0]!r}): a classifier needs at least 2 classes, one "
                           f"folder of images per class ({root}/<class>/<images>)")
    seen: dict[str, str] = {}
    for c in found:  # two names that print alike would be two classes no one can tell apart
        other = seen.setdefault(unicodedata.normalize("NFC", c), c)
        if other != c:
            raise DatasetError(f"{root}: class folders {other!r} and {c!r} are the same name in two Unicode forms "
                               "(they print alike but are two classes): rename one")
    testing = classes is not None  # val/, scored by eae eval: every image counts, nothing is skipped
    classes = tuple(found) if classes is None else tuple(classes)
    label = {c: i for i, c in enumerate(classes)}
    skipped: list[tuple[str, str]] = []

    def bad(path: str, reason: str) -> None:
        if bad_images == "error":
            raise DatasetError(f"{path}: {reason} (" + ("an evaluation scores every image of the test folder: "
                               "remove or replace it)" if testing else "remove or replace it, or train with "
                               "--bad-images skip to leave such entries out and count them)"))
        skipped.append((path, reason))

    candidates: list[tuple[str, int]] = []
    for c in found:
        if c not in label:
            bad(str(root / c), f"class folder {c!r} is not a class of the training set")
            continue
        files, odd = _class_files(root / c)
        for path, why in odd:
            bad(path, why)
        candidates += [(p, label[c]) for p in files]
    with ThreadPoolExecutor(max(1, threads)) as pool:  # I/O bound: 12 bytes per file
        checked = list(pool.map(_check_file, [p for p, _ in candidates]))
    samples, sizes = [], {}
    for (p, y), (why, size) in zip(candidates, checked):
        if why is None:
            samples.append((p, y))
            sizes[p] = size
        else:
            bad(p, why)
    present = {y for _, y in samples}
    flagged = {p for p, _ in skipped}
    for c in found:
        if c in label and label[c] not in present and str(root / c) not in flagged:
            bad(str(root / c), "empty class folder (no readable image)")
    if not samples:
        raise DatasetError(f"{root}: no readable images")
    if not testing and len(present) < len(classes):  # an empty class left out is no class (no output for it)
        kept = tuple(c for c in classes if label[c] in present)
        if len(kept) < 2:
            raise DatasetError(f"{root}: one class folder with readable images ({kept[0]!r}): a classifier needs at "
                               f"least 2 classes, one folder of images per class ({root}/<class>/<images>)")
        new = {label[c]: i for i, c in enumerate(kept)}
        classes, samples = kept, [(p, new[y]) for p, y in samples]
    return FolderIndex(root, classes, samples, skipped, sizes)


# --------------------------------------------------------------------------- decoding
def _pil():
    try:
        from PIL import Image
    except ImportError as e:
        raise ImportError("image folders need Pillow: pip install pillow") from e
    return Image


def decode(path: str, size: int, *, train: bool, rng: np.random.Generator | None = None) -> np.ndarray:
    """(3, size, size) uint8: RandomResizedCrop(scale 0.08-1, ratio 3/4-4/3) + flip when
    ``train``, else resize the shorter side to size/0.875 and centre crop."""
    Image = _pil()
    with warnings.catch_warnings():  # a large photo is decoded (an image over Pillow's hard limit is named as bad)
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        img = Image.open(path)
    with img:
        if img.mode in ("I", "F") or img.mode.startswith("I;"):  # Pillow's convert("RGB") clips these to 0-255
            raise ValueError(f"a {img.mode} image (16-bit or floating-point pixels) would be read white or black: "
                             "convert it to 8-bit")
        w, h = img.size
        if train:
            left, top, cw, ch = _rrc_box(w, h, rng)
        else:
            short = min(w, h)
            side = short * 0.875  # the centre crop of a shorter-side resize to size / 0.875
            left, top, cw, ch = (w - side) / 2, (h - side) / 2, side, side
        # decode JPEGs at a reduced scale when the crop stays >= size pixels (libjpeg's
        # DCT scaling: 2-8x less work for large photos)
        img.draft("RGB", (max(1, math.ceil(w * size / cw)), max(1, math.ceil(h * size / ch))))
        fx, fy = img.size[0] / w, img.size[1] / h
        box = (left * fx, top * fy, (left + cw) * fx, (top + ch) * fy)
        out = img.convert("RGB").resize((size, size), Image.BILINEAR, box=box)
    arr = np.asarray(out, dtype=np.uint8)
    if train and rng.random() < 0.5:
        arr = arr[:, ::-1]
    return arr.transpose(2, 0, 1).copy()  # a copy: ascontiguousarray keeps a flipped 1-pixel row's negative stride


def _rrc_box(w: int, h: int, rng: np.random.Generator) -> tuple[float, float, float, float]:
    area = w * h
    for _ in range(10):
        target = area * rng.uniform(0.08, 1.0)
        ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        cw, ch = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < cw <= w and 0 < ch <= h:
            return float(rng.integers(0, w - cw + 1)), float(rng.integers(0, h - ch + 1)), float(cw), float(ch)
    side = min(w, h)  # fallback, as torchvision: the central square-ish crop
    return (w - side) / 2, (h - side) / 2, float(side), float(side)


class FolderDataset(torch.utils.data.Dataset):
    """Decodes one image per item in a worker; returns (uint8 CHW, label, files skipped,
    "" or why the file cannot be decoded).

    Augmentation draws from a generator seeded by (seed, epoch, index), so an image's
    crop does not depend on which worker or rank decodes it."""

    def __init__(self, samples: Sequence[tuple[str, int]], size: int, *, train: bool, seed: int = 0,
                 bad_images: str = "error"):
        self.samples, self.size, self.train = list(samples), size, train
        self.seed, self.epoch, self.bad_images = seed, 0, bad_images

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        # A file that cannot be decoded under "error" comes back as its message, not as an
        # exception: a worker's exception reaches the user wrapped in the worker's traceback.
        for tries in range(len(self.samples)):
            path, y = self.samples[(i + tries) % len(self.samples)]
            rng = np.random.default_rng([self.seed, self.epoch, i]) if self.train else None
            try:
                return torch.from_numpy(decode(path, self.size, train=self.train, rng=rng)), y, tries, ""
            except Exception as e:  # Pillow raises many types for broken files
                if self.bad_images == "error":
                    blank = torch.zeros((3, self.size, self.size), dtype=torch.uint8)
                    return blank, y, tries, f"{path}: cannot decode ({type(e).__name__}: {e})"
        raise DatasetError("no image of the folder could be decoded")


def _raise_undecodable(errors: Sequence[str], advice: str) -> None:
    first = next((e for e in errors if e), None)
    if first is not None:
        raise DatasetError(f"{first}; {advice}")


TRAIN_ADVICE = "remove or replace the file, or pass --bad-images skip to substitute the next readable image and count it"
TEST_ADVICE = "remove or replace the file (an evaluation scores every image of val/)"


class _GlobalBatches(torch.utils.data.Sampler):
    """This rank's slice of each global batch of one epoch's permutation."""

    def __init__(self, batches: list[list[int]], rank: int, world: int):
        self.parts = [b[slice(*shard_bounds(len(b), rank, world))] for b in batches]

    def __iter__(self):
        return iter(self.parts)

    def __len__(self) -> int:
        return len(self.parts)


class FolderLoader:
    """Training batches (float [0, 1] on ``device``, labels) decoded by ``workers``
    processes; the same interface and distributed semantics as ``DeviceLoader``
    (global batches cut into rank slices; ``global_batch``; state = the epoch, whose
    seed fixes the order and the crops). ``skipped`` counts substituted images."""

    def __init__(self, samples: Sequence[tuple[str, int]], batch_size: int, size: int, *,
                 device: torch.device | str = "cpu", augment: bool = True, seed: int = 0, workers: int = 4,
                 bad_images: str = "error", channels_last: bool = False, rank: int = 0, world_size: int = 1):
        if batch_size < world_size:
            raise ConfigError(f"batch_size {batch_size} is the global batch: it must be >= the number of "
                              f"processes ({world_size})", field="batch_size")
        self.dataset = FolderDataset(samples, size, train=augment, seed=seed, bad_images=bad_images)
        self.batch_size, self.device = batch_size, torch.device(device)
        from ..system import available_cores

        # more decoding processes than cores only slows it (and torch warns, naming its own file)
        self.seed, self.workers, self.channels_last = seed, min(workers, available_cores()), channels_last
        self.rank, self.world_size = rank, world_size
        self.epoch, self.global_batch, self.skipped = 0, 0, 0
        self.examples: tuple[torch.Tensor, int, int] | None = None  # last batch: indices, this rank's lo, hi

    def _batches(self) -> list[list[int]]:
        n = len(self.dataset)
        g = torch.Generator().manual_seed(torch_seed(self.seed * 1_000_003 + self.epoch))
        order = torch.randperm(n, generator=g).tolist()
        out = [order[i:i + self.batch_size] for i in range(0, n, self.batch_size)]
        return [b for b in out if len(b) >= self.world_size]

    def __len__(self) -> int:
        return len(self._batches())

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        batches = self._batches()
        self.dataset.epoch = self.epoch
        cuda = self.device.type == "cuda"
        dl = torch.utils.data.DataLoader(self.dataset, batch_sampler=_GlobalBatches(batches, self.rank, self.world_size),
                                         num_workers=self.workers, pin_memory=cuda,
                                         prefetch_factor=4 if self.workers else None)
        self.epoch += 1
        for b, (x, y, tries, errors) in zip(batches, dl):
            _raise_undecodable(errors, TRAIN_ADVICE)
            self.global_batch = len(b)
            lo, hi = shard_bounds(len(b), self.rank, self.world_size)
            self.examples = (torch.tensor(b, device=self.device), lo, hi)
            self.skipped += int(tries.sum())
            x = x.to(self.device, non_blocking=True).float().div_(255)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y.to(self.device, non_blocking=True)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "skipped": self.skipped}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.skipped = int(state["epoch"]), int(state.get("skipped", 0))


def decode_all(samples: Sequence[tuple[str, int]], size: int, *, workers: int = 4, bad_images: str = "error",
               batch_size: int = 256, advice: str = TRAIN_ADVICE) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre crops of ``samples`` as one uint8 tensor (N, 3, size, size), with labels;
    ``advice`` follows the name of a file that cannot be decoded."""
    if not samples:  # no validation split (val_size 0)
        return torch.zeros((0, 3, size, size), dtype=torch.uint8), torch.zeros(0, dtype=torch.long)
    from ..system import available_cores

    ds = FolderDataset(samples, size, train=False, bad_images=bad_images)
    dl = torch.utils.data.DataLoader(ds, batch_size=batch_size, num_workers=min(workers, available_cores()))
    xs, ys = [], []
    for x, y, _, errors in dl:
        _raise_undecodable(errors, advice)
        xs.append(x)
        ys.append(y)
    return torch.cat(xs), torch.cat(ys).long()


def class_dir(data_dir: str | Path | None) -> Path:
    """The folder whose class subfolders define the labels: train/ (as training used it), or
    val/ alone for a network trained elsewhere and scored on val/."""
    if data_dir and not (Path(data_dir) / "train").is_dir() and (Path(data_dir) / "val").is_dir():
        return Path(data_dir) / "val"
    return split_dirs(data_dir)[0]


def split_dirs(data_dir: str | Path | None) -> tuple[Path, Path]:
    if not data_dir:
        raise ValueError("dataset imagefolder needs --data-dir D, with D/train/<class>/... and D/val/<class>/...")
    root = Path(data_dir)
    train, val = root / "train", root / "val"
    if not train.is_dir():
        raise DatasetError(f"{train}: not a folder (expected the ImageNet layout {root}/train/<class>/<images>)")
    return train, val
