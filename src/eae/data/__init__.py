"""Datasets as uint8 tensors, split into train / validation / test.

The validation split is held out of the training set with a fixed seed and is
what training looks at (per-epoch checks, checkpoint selection). The test set is
only read by ``eae eval``.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch

from .cifar10 import MEAN, STD, Cifar10Arrays, DatasetError, load_cifar10, locate, prepare_cifar10
from .loader import DeviceLoader, random_crop_flip
from .synthetic import make_synthetic

__all__ = [
    "DataSource", "Splits", "split_indices", "read_splits", "load_splits", "read_test_set", "load_test_set",
    "count_test_images", "num_test_images", "class_names_of", "dataset_identity", "cifar10_arrays",
    "DeviceLoader", "random_crop_flip", "TrainingData", "build_training_data", "training_data",
    "make_synthetic", "prepare_cifar10", "load_cifar10", "locate", "DatasetError", "OFFICIAL", "official_arrays",
    "copy_record",
]


@dataclass(frozen=True)
class DataSource:
    """Which dataset to read and how: the data fields of a :class:`~eae.config.TrainConfig`
    (``DataSource.of(cfg)``), without the rest of the run."""
    dataset: str = "cifar10"
    data_dir: str | None = None
    image_size: int = 224  # imagefolder: side of the crops
    workers: int = 8  # imagefolder: decoding processes
    bad_images: str = "error"  # imagefolder: "error" or "skip"
    synthetic_train_size: int = 2048
    synthetic_test_size: int = 512
    synthetic_image_size: int = 32
    cifar100_labels: str = "fine"  # cifar100: "fine" (100 classes) or "coarse" (20)
    svhn_extra: bool = False  # svhn: add extra_32x32.mat to the training set
    unverified_data: bool = False  # accept a copy that is not the published files (recorded)

    @classmethod
    def of(cls, cfg) -> "DataSource":
        return cls(**{f.name: getattr(cfg, f.name) for f in fields(cls)})


@dataclass
class Splits:
    train_x: torch.Tensor  # uint8 (N, C, H, W)
    train_y: torch.Tensor  # int64 (N,)
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[-1])


@functools.lru_cache(maxsize=2)
def _verified(folder: str, stamp: tuple) -> Cifar10Arrays:
    return load_cifar10(folder)


def cifar10_arrays(data_dir=None, download: bool = True) -> Cifar10Arrays:
    """CIFAR-10, found (or fetched) and verified once per process and folder state: a
    benchmark that trains and evaluates many runs reads and hashes the files once. The
    arrays are shared: do not modify them in place."""
    folder = locate(data_dir) or prepare_cifar10(data_dir, download=download)
    files = sorted(p for p in folder.iterdir() if p.is_file())
    stamp = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files)  # changed files: re-verify
    return _verified(str(folder.resolve()), stamp)


OFFICIAL = ("cifar100", "svhn", "tiny-imagenet")  # read from their official files (see official.py)


def _stamp(folder: Path) -> tuple:
    """What changes when the files of a dataset folder change (the top two levels)."""
    paths = [folder, *folder.iterdir(), *(q for p in folder.iterdir() if p.is_dir() for q in p.iterdir())]
    return tuple(sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths))


@functools.lru_cache(maxsize=2)
def _official_cached(dataset: str, folder: str, stamp: tuple, labels: str, extra: bool, allow: bool,
                     workers: int):
    from . import cifar100, svhn, tiny_imagenet

    if dataset == "cifar100":
        a = cifar100.load_cifar100(folder, labels=labels, allow_unverified=allow)
    elif dataset == "svhn":
        a = svhn.load_svhn(folder, extra=extra, allow_unverified=allow)
    else:
        a = tiny_imagenet.load_tiny_imagenet(folder, allow_unverified=allow, workers=workers)
    return a.check(dataset), a.stats()


def official_arrays(src: DataSource, download: bool = True):
    """(ArraySet, (mean, std)) of CIFAR-100, SVHN or Tiny-ImageNet, found (or fetched) and
    checked once per process and folder state. The arrays are shared: do not modify them."""
    from . import cifar100, svhn, tiny_imagenet

    if src.dataset == "cifar100":
        folder = cifar100.locate_cifar100(src.data_dir, download)
    elif src.dataset == "svhn":
        folder = svhn.locate_svhn(src.data_dir, extra=src.svhn_extra, download=download)
    else:
        folder = tiny_imagenet.locate_tiny_imagenet(src.data_dir, download)
    return _official_cached(src.dataset, str(folder.resolve()), _stamp(folder), src.cifar100_labels,
                            src.svhn_extra, src.unverified_data, src.workers)


def _arrays(src: DataSource):
    """(train_x, train_y, test_x, test_y, classes, mean, std) as numpy arrays."""
    if src.dataset in OFFICIAL:
        a, (mean, std) = official_arrays(src)
        return a.train_x, a.train_y, a.test_x, a.test_y, a.classes, mean, std
    if src.dataset == "cifar10":
        a = cifar10_arrays(src.data_dir)
        return a.train_x, a.train_y, a.test_x, a.test_y, a.classes, MEAN, STD
    if src.dataset == "synthetic":
        tx, ty = make_synthetic(src.synthetic_train_size, size=src.synthetic_image_size, seed=0)
        vx, vy = make_synthetic(src.synthetic_test_size, size=src.synthetic_image_size, seed=1)
        mean = tuple(float(m) for m in (tx.reshape(len(tx), 3, -1) / 255).mean(axis=(0, 2)))
        std = tuple(float(s) for s in (tx.reshape(len(tx), 3, -1) / 255).std(axis=(0, 2)))
        return tx, ty, vx, vy, tuple(f"class{i}" for i in range(10)), mean, std
    raise ValueError(f"unknown dataset {src.dataset!r}; available: cifar10, cifar100, svhn, tiny-imagenet, "
                     "synthetic, imagefolder")


def split_indices(n: int, val_size: int, val_seed: int = 0, train_subset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(validation indices, training indices) of a training set of n items: ``val_size``
    held out by a fixed shuffle (``val_seed``); ``train_subset`` > 0 keeps that many of the rest."""
    if val_size >= n:
        from ..errors import ConfigError

        raise ConfigError(f"val_size={val_size} leaves no training images (the training set has {n:,})",
                          cli=f"--val-size {val_size} leaves no training images (the training set has {n:,}): "
                              "give a smaller --val-size", field="val_size")
    perm = np.random.default_rng(val_seed).permutation(n)
    val_idx, train_idx = perm[:val_size], perm[val_size:]
    return val_idx, (train_idx[:train_subset] if train_subset else train_idx)


def read_splits(src: DataSource, val_size: int, val_seed: int = 0, train_subset: int = 0) -> Splits:
    """Train / validation / test splits of an array dataset (cifar10, synthetic)."""
    tx, ty, sx, sy, classes, mean, std = _arrays(src)
    val_idx, train_idx = split_indices(len(tx), val_size, val_seed, train_subset)
    t = torch.from_numpy
    return Splits(
        train_x=t(np.ascontiguousarray(tx[train_idx])), train_y=t(ty[train_idx]),
        val_x=t(np.ascontiguousarray(tx[val_idx])), val_y=t(ty[val_idx]),
        test_x=t(np.ascontiguousarray(sx)), test_y=t(sy),
        classes=tuple(classes), mean=tuple(mean), std=tuple(std),
    )


def load_splits(cfg) -> Splits:
    """Train / validation / test splits for a :class:`~eae.config.TrainConfig`."""
    return read_splits(DataSource.of(cfg), cfg.val_size, cfg.val_seed, cfg.train_subset)


@dataclass
class TrainingData:
    """What the training loop reads: a loader over the training split (this rank's
    slices), the validation split as tensors, and the dataset's constants."""
    loader: object  # DeviceLoader or imagefolder.FolderLoader
    val_x: torch.Tensor  # uint8 (N, C, H, W), CPU
    val_y: torch.Tensor
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    n_train: int
    skipped: int = 0  # files left out at scan time (bad_images="skip")
    image_size: int = 0  # side of the training images in pixels
    files_sha256: str | None = None  # imagefolder: which files (FolderIndex.files_sha256); resumes compare it

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def build_training_data(src: DataSource, *, val_size: int, val_seed: int, train_subset: int, batch_size: int,
                        seed: int, augment: bool = True, channels_last: bool = False, device="cpu",
                        rank: int = 0, world_size: int = 1) -> TrainingData:
    """The training split behind a loader (this rank's slices of every global batch of
    ``batch_size``, shuffled and augmented from ``seed``) and the validation split."""
    placement = dict(device=device, augment=augment, seed=seed, channels_last=channels_last, rank=rank,
                     world_size=world_size)
    if src.dataset == "imagefolder":
        from . import imagefolder as f

        train_dir, _ = f.split_dirs(src.data_dir)
        index = f.scan_folder(train_dir, bad_images=src.bad_images)
        val_idx, train_idx = split_indices(len(index.samples), val_size, val_seed, train_subset)
        val_x, val_y = f.decode_all([index.samples[i] for i in val_idx], src.image_size, workers=src.workers,
                                    bad_images=src.bad_images)
        train = [index.samples[i] for i in train_idx]
        loader = f.FolderLoader(train, batch_size, src.image_size, workers=src.workers, bad_images=src.bad_images,
                                **placement)
        return TrainingData(loader, val_x, val_y, index.classes, f.MEAN, f.STD, len(train), len(index.skipped),
                            src.image_size, index.files_sha256())
    s = read_splits(src, val_size, val_seed, train_subset)
    # digits are not mirror images of digits: crops only on SVHN (as the GradAlign and N-FGSM code)
    loader = DeviceLoader(s.train_x, s.train_y, batch_size, shuffle=True, flip=src.dataset != "svhn", **placement)
    return TrainingData(loader, s.val_x, s.val_y, s.classes, s.mean, s.std, len(s.train_y), 0, s.image_size)


def training_data(cfg, device, rank: int = 0, world_size: int = 1) -> TrainingData:
    """:func:`build_training_data` for a :class:`~eae.config.TrainConfig`."""
    return build_training_data(DataSource.of(cfg), val_size=cfg.val_size, val_seed=cfg.val_seed,
                               train_subset=cfg.train_subset, batch_size=cfg.batch_size, seed=cfg.seed,
                               augment=cfg.augment, channels_last=cfg.channels_last, device=device, rank=rank,
                               world_size=world_size)


def _test_samples(src: DataSource) -> list:
    from . import imagefolder as f

    train_dir, val_dir = f.class_dir(src.data_dir), Path(src.data_dir) / "val"
    if not val_dir.is_dir():  # training needs only train/; scoring needs the test images
        raise DatasetError(f"{val_dir}: not a folder: an evaluation scores the test images of {val_dir}/<class>/"
                           f"<images>, with the class folders of {train_dir}; put them there (training holds out its "
                           "validation images from train/, never from val/)")
    # always "error": a test set with images left out (or substituted) would be scored as if whole
    return f.scan_folder(val_dir, classes=f.classes_with_images(train_dir), bad_images="error").samples


def count_test_images(src: DataSource) -> int:
    if src.dataset == "imagefolder":
        return len(_test_samples(src))
    return len(_arrays(src)[3])


def read_test_set(src: DataSource, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` test images (uint8) and labels (imagefolder: ``val/`` in a fixed
    shuffled order, centre-cropped at ``image_size``)."""
    if src.dataset == "imagefolder":
        from . import imagefolder as f

        samples = _test_samples(src)
        # a fixed shuffle of the class-sorted files, so that the first n cover every class
        samples = [samples[i] for i in np.random.default_rng(0).permutation(len(samples))][:n]
        return f.decode_all(samples, src.image_size, workers=src.workers, bad_images="error",
                            advice=f.TEST_ADVICE)
    _, _, sx, sy, *_ = _arrays(src)
    if n is not None:
        sx, sy = sx[:n], sy[:n]
    return torch.from_numpy(np.array(sx)), torch.from_numpy(np.array(sy))  # copies: the cache is shared


def class_names_of(src: DataSource) -> tuple[str, ...]:
    """The class names of a dataset, in label order."""
    if src.dataset == "imagefolder":
        from . import imagefolder as f

        return tuple(f.classes_with_images(f.class_dir(src.data_dir)))
    return tuple(_arrays(src)[4])


def dataset_identity(src: DataSource) -> dict:
    """What a model trained or evaluated on this dataset sees: its name, class names (in
    label order) and image size (``dataset.json`` of a run holds the same)."""
    classes = class_names_of(src)
    size = src.image_size if src.dataset == "imagefolder" else int(_arrays(src)[2].shape[-1])
    out = {"dataset": src.dataset, "num_classes": len(classes), "classes": list(classes), "image_size": size}
    return {**out, **copy_record(src)}


def copy_record(src: DataSource) -> dict:
    """Which copy of an official dataset this is: published or not (and what differs, with
    --unverified-data), and the digest of its pixels and labels; {} for the others."""
    if src.dataset not in OFFICIAL:
        return {}
    a = official_arrays(src)[0]
    return {"verified": not a.unverified, **({"unverified_data": a.unverified} if a.unverified else {}),
            "content_sha256": a.content_sha256}


def num_test_images(cfg) -> int:
    return count_test_images(DataSource.of(cfg))


def load_test_set(cfg, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`read_test_set` for the dataset of a :class:`~eae.config.TrainConfig`."""
    return read_test_set(DataSource.of(cfg), n)
