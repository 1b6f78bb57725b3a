"""A deterministic synthetic image-classification dataset for tests and demos.

Each class is a smooth random colour template; an image is its class template,
randomly shifted, scaled in contrast and overlaid with noise. Small models learn
it within an epoch or two, so tests can check that training actually trains.
Any size and resolution; the same arguments give the same bytes everywhere.
"""
from __future__ import annotations

import numpy as np


def _templates(num_classes: int, size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0.0, 1.0, size=(num_classes, 3, 4, 4))
    # nearest-neighbour upsampling, then a cheap box blur for smoothness
    reps = -(-size // 4)
    t = coarse.repeat(reps, axis=2).repeat(reps, axis=3)[:, :, :size, :size]
    for _ in range(2):
        t = (t + np.roll(t, 1, 2) + np.roll(t, -1, 2) + np.roll(t, 1, 3) + np.roll(t, -1, 3)) / 5
    return t


def make_synthetic(n: int, *, size: int = 32, num_classes: int = 10, seed: int = 0,
                   template_seed: int = 1234, amplitude: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images as (uint8 array (n, 3, size, size), int64 labels (n,))."""
    if n < 0 or size < 4 or num_classes < 2:
        raise ValueError("need n >= 0, size >= 4, num_classes >= 2")
    templates = _templates(num_classes, size, template_seed)
    rng = np.random.default_rng(seed)
    y = np.arange(n) % num_classes  # balanced
    rng.shuffle(y)
    shifts = rng.integers(-2, 3, size=(n, 2))
    contrast = rng.uniform(0.6, 1.0, size=(n, 1, 1, 1))
    x = templates[y]
    x = np.stack([np.roll(img, tuple(s), axis=(1, 2)) for img, s in zip(x, shifts)]) if n else x
    # low amplitude: classes differ by a few times 8/255 per pixel, so an ε = 8/255
    # attack can move a non-robust model across classes
    x = 0.5 + amplitude * (x - 0.5) * contrast + rng.normal(0.0, 0.08, size=x.shape)
    x = np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)
    return x, y.astype(np.int64)
