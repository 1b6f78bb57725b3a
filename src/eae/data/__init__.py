"""Datasets as uint8 tensors, split into train / validation / test.

The validation split is held out of the training set with a fixed seed and is
what training looks at (per-epoch checks, checkpoint selection). The test set is
only read by ``eae eval``.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from .cifar10 import MEAN, STD, Cifar10Arrays, DatasetError, load_cifar10, locate, prepare_cifar10
from .loader import DeviceLoader, random_crop_flip
from .synthetic import make_synthetic

__all__ = [
    "Splits", "load_splits", "load_test_set", "cifar10_arrays", "DeviceLoader", "random_crop_flip",
    "TrainingData", "training_data", "num_test_images",
    "make_synthetic", "prepare_cifar10", "load_cifar10", "locate", "DatasetError",
]


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


def _raw(dataset: str, *, data_dir=None, synthetic_train_size=2048, synthetic_test_size=512,
         synthetic_image_size=32, download=True):
    """(train_x, train_y, test_x, test_y, classes, mean, std) as numpy arrays."""
    if dataset == "cifar10":
        a = cifar10_arrays(data_dir, download=download)
        return a.train_x, a.train_y, a.test_x, a.test_y, a.classes, MEAN, STD
    if dataset == "synthetic":
        tx, ty = make_synthetic(synthetic_train_size, size=synthetic_image_size, seed=0)
        vx, vy = make_synthetic(synthetic_test_size, size=synthetic_image_size, seed=1)
        mean = tuple(float(m) for m in (tx.reshape(len(tx), 3, -1) / 255).mean(axis=(0, 2)))
        std = tuple(float(s) for s in (tx.reshape(len(tx), 3, -1) / 255).std(axis=(0, 2)))
        return tx, ty, vx, vy, tuple(f"class{i}" for i in range(10)), mean, std
    raise ValueError(f"unknown dataset {dataset!r}; available: cifar10, synthetic, imagefolder")


def load_splits(cfg) -> Splits:
    """Train / validation / test splits for a :class:`~eae.config.TrainConfig`."""
    tx, ty, sx, sy, classes, mean, std = _raw(
        cfg.dataset, data_dir=cfg.data_dir, synthetic_train_size=cfg.synthetic_train_size,
        synthetic_test_size=cfg.synthetic_test_size, synthetic_image_size=cfg.synthetic_image_size)
    val_idx, train_idx = _held_out(len(tx), cfg)
    t = torch.from_numpy
    return Splits(
        train_x=t(np.ascontiguousarray(tx[train_idx])), train_y=t(ty[train_idx]),
        val_x=t(np.ascontiguousarray(tx[val_idx])), val_y=t(ty[val_idx]),
        test_x=t(np.ascontiguousarray(sx)), test_y=t(sy),
        classes=tuple(classes), mean=tuple(mean), std=tuple(std),
    )


def _held_out(n: int, cfg) -> tuple[np.ndarray, np.ndarray]:
    """(validation indices, training indices) of a training set of n items."""
    if cfg.val_size >= n:
        raise ValueError(f"val_size={cfg.val_size} leaves no training images (dataset has {n})")
    perm = np.random.default_rng(cfg.val_seed).permutation(n)
    val_idx, train_idx = perm[:cfg.val_size], perm[cfg.val_size:]
    return val_idx, (train_idx[:cfg.train_subset] if cfg.train_subset else train_idx)


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

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def training_data(cfg, device, rank: int = 0, world_size: int = 1) -> TrainingData:
    if cfg.dataset == "imagefolder":
        from . import imagefolder as f

        train_dir, _ = f.split_dirs(cfg.data_dir)
        index = f.scan_folder(train_dir, bad_images=cfg.bad_images)
        val_idx, train_idx = _held_out(len(index.samples), cfg)
        val_x, val_y = f.decode_all([index.samples[i] for i in val_idx], cfg.image_size, workers=cfg.workers,
                                    bad_images=cfg.bad_images)
        train = [index.samples[i] for i in train_idx]
        loader = f.FolderLoader(train, cfg.batch_size, cfg.image_size, device=device, augment=cfg.augment,
                                seed=cfg.seed, workers=cfg.workers, bad_images=cfg.bad_images,
                                channels_last=cfg.channels_last, rank=rank, world_size=world_size)
        return TrainingData(loader, val_x, val_y, index.classes, f.MEAN, f.STD, len(train), len(index.skipped))
    s = load_splits(cfg)
    loader = DeviceLoader(s.train_x, s.train_y, cfg.batch_size, device=device, shuffle=True, augment=cfg.augment,
                          seed=cfg.seed, channels_last=cfg.channels_last, rank=rank, world_size=world_size)
    return TrainingData(loader, s.val_x, s.val_y, s.classes, s.mean, s.std, len(s.train_y))


def num_test_images(cfg) -> int:
    if cfg.dataset == "imagefolder":
        from . import imagefolder as f

        train_dir, val_dir = f.split_dirs(cfg.data_dir)
        return len(f.scan_folder(val_dir, classes=f.class_names(train_dir), bad_images=cfg.bad_images).samples)
    return len(_raw(cfg.dataset, data_dir=cfg.data_dir, synthetic_train_size=cfg.synthetic_train_size,
                    synthetic_test_size=cfg.synthetic_test_size, synthetic_image_size=cfg.synthetic_image_size)[3])


def load_test_set(cfg, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` test images (uint8) and labels for the dataset of ``cfg``
    (imagefolder: ``val/`` in a fixed shuffled order, centre-cropped at ``image_size``)."""
    if cfg.dataset == "imagefolder":
        from . import imagefolder as f

        train_dir, val_dir = f.split_dirs(cfg.data_dir)
        samples = f.scan_folder(val_dir, classes=f.class_names(train_dir), bad_images=cfg.bad_images).samples
        # a fixed shuffle of the class-sorted files, so that the first n cover every class
        samples = [samples[i] for i in np.random.default_rng(0).permutation(len(samples))][:n]
        return f.decode_all(samples, cfg.image_size, workers=cfg.workers, bad_images=cfg.bad_images)
    _, _, sx, sy, *_ = _raw(
        cfg.dataset, data_dir=cfg.data_dir, synthetic_train_size=cfg.synthetic_train_size,
        synthetic_test_size=cfg.synthetic_test_size, synthetic_image_size=cfg.synthetic_image_size)
    if n is not None:
        sx, sy = sx[:n], sy[:n]
    return torch.from_numpy(np.array(sx)), torch.from_numpy(np.array(sy))  # copies: the cache is shared
