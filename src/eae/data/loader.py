"""A loader whose whole dataset lives on the training device (the airbench way).

CIFAR-10 is 150 MB as uint8: it fits on any GPU, so there is no worker process,
no pinned-memory copy and no per-image Python. Each epoch draws one permutation
on the device; random crop (zero pad 4) and horizontal flip (not for digits: SVHN)
are done per batch, on the device, in uint8; conversion to float in [0, 1] happens last.
"""
from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F

from ..errors import ConfigError


def crop_flip_params(n: int, pad: int, generator: torch.Generator | None, device) -> tuple:
    """Per-image offsets (dy, dx) in [0, 2 pad] and flips for ``n`` images."""
    dy = dx = None
    if pad > 0:
        dy = torch.randint(0, 2 * pad + 1, (n,), device=device, generator=generator)
        dx = torch.randint(0, 2 * pad + 1, (n,), device=device, generator=generator)
    flip = torch.rand(n, device=device, generator=generator) < 0.5
    return dy, dx, flip


def apply_crop_flip(x: torch.Tensor, pad: int, dy, dx, flip) -> torch.Tensor:
    n, c, h, w = x.shape
    dev = x.device
    if pad > 0:
        padded = F.pad(x, (pad, pad, pad, pad))
        rows = (dy[:, None] + torch.arange(h, device=dev))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=dev))[:, None, None, :]
        x = padded[torch.arange(n, device=dev)[:, None, None, None],
                   torch.arange(c, device=dev)[None, :, None, None], rows, cols]
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def random_crop_flip(x: torch.Tensor, pad: int, generator: torch.Generator | None) -> torch.Tensor:
    """Random crop after zero padding by ``pad`` and random horizontal flip, in batch.

    ``x``: (N, C, H, W), any dtype. Each image gets its own offset and flip.
    """
    return apply_crop_flip(x, pad, *crop_flip_params(len(x), pad, generator, x.device))


def shard_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """[lo, hi) of rank's slice of n items, as ``torch.tensor_split`` cuts them."""
    q, r = divmod(n, world)
    lo = rank * q + min(rank, r)
    return lo, lo + q + (rank < r)


class DeviceLoader:
    """Iterate over (images float [0,1], labels) batches of a device-resident uint8 dataset.

    Distributed (``world_size`` > 1): every rank holds the whole dataset, draws the
    same permutation and augmentation parameters for each global batch of
    ``batch_size`` (same seed on every rank) and keeps its slice, so N processes see
    exactly the images and crops that one process with the same global batch would.
    ``global_batch`` is the size of the global batch last yielded. A final batch with
    fewer images than ranks is dropped (some rank would get none).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, *,
                 device: torch.device | str = "cpu", shuffle: bool = False, augment: bool = False,
                 drop_last: bool = False, seed: int = 0, pad: int = 4, flip: bool = True,
                 channels_last: bool = False, rank: int = 0, world_size: int = 1):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError("need one label per image")
        if batch_size < world_size:
            raise ConfigError(f"batch_size {batch_size} is the global batch: it must be >= the number of "
                              f"processes ({world_size})", field="batch_size")
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device, torch.long)
        self.batch_size = batch_size
        self.shuffle, self.augment, self.drop_last = shuffle, augment, drop_last
        self.pad, self.flip = pad, flip
        self.channels_last = channels_last
        self.rank, self.world_size = rank, world_size
        self.global_batch = 0
        self.examples: tuple[torch.Tensor, int, int] | None = None  # last batch: indices, this rank's lo, hi
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)

    def __len__(self) -> int:
        full, rest = divmod(self.images.shape[0], self.batch_size)
        return full + (0 < rest and not self.drop_last and rest >= self.world_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = self.images.shape[0]
        if self.shuffle:
            order = torch.randperm(n, device=self.device, generator=self.generator)
        else:
            order = torch.arange(n, device=self.device)
        for i in range(len(self)):
            batch = order[i * self.batch_size:(i + 1) * self.batch_size]
            self.global_batch = len(batch)
            lo, hi = shard_bounds(len(batch), self.rank, self.world_size)
            idx = batch[lo:hi]
            self.examples = (batch, lo, hi)
            x = self.images[idx]
            if self.augment:  # drawn for the global batch: identical on every rank
                dy, dx, flip = crop_flip_params(len(batch), self.pad, self.generator, self.device)
                flip = flip & self.flip  # drawn either way: the crops do not depend on it
                x = apply_crop_flip(x, self.pad, *(None if t is None else t[lo:hi] for t in (dy, dx, flip)))
            x = x.float().div_(255)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.labels[idx]

    # The generator state is part of a checkpoint so that a resumed run sees the
    # same batches as an uninterrupted one.
    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
