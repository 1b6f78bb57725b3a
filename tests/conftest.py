"""Shared fixtures. Everything runs offline on the CPU.

Real CIFAR-10 is found as the command line finds it ($EAE_DATA_DIR, then the user
cache that `eae data cifar10` fills), else in ../shared/data/cifar10 beside the checkout. Tests that need it are skipped when it is absent, unless
EAE_REQUIRE_DATA=1 (set by CI), where its absence is a failure.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from eae.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def _cifar_root() -> Path | None:
    """Where the command line would find it ($EAE_DATA_DIR, then the user cache that
    `eae data cifar10` fills), else ../shared/data/cifar10 beside the checkout."""
    from eae.data.cifar10 import locate

    found = locate()
    if found is not None:
        return found
    shared = REPO.parent / "shared" / "data" / "cifar10"
    return locate(shared)


@pytest.fixture(scope="session")
def cifar_dir() -> Path:
    """The real cifar-10-batches-py folder."""
    d = _cifar_root()
    if d is None:
        from eae.data.cifar10 import default_cache_dir

        msg = (f"real CIFAR-10 not found in $EAE_DATA_DIR or {default_cache_dir()}: run `eae data cifar10` "
               "(downloads and verifies it there) or set EAE_DATA_DIR to the folder holding cifar-10-batches-py")
        if os.environ.get("EAE_REQUIRE_DATA") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return d


@pytest.fixture(scope="session")
def cifar_arrays(cifar_dir):
    from eae.data import load_cifar10

    return load_cifar10(cifar_dir)


@pytest.fixture
def tiny_cfg(tmp_path) -> TrainConfig:
    """A run that takes about a second: synthetic 16x16 data, the small ResNet."""
    return TrainConfig(
        out=str(tmp_path / "run"), dataset="synthetic", arch="resnet_small", device="cpu",
        synthetic_train_size=192, synthetic_test_size=64, synthetic_image_size=16, val_size=64,
        batch_size=64, epochs=2, val_attack_steps=2, lr_max=0.1,
    )


@pytest.fixture(scope="session")
def trained_small(tmp_path_factory):
    """A resnet_small trained with `standard` on synthetic data (accurate, not robust)."""
    from eae import load, train

    out = tmp_path_factory.mktemp("trained") / "standard"
    cfg = TrainConfig(out=str(out), dataset="synthetic", arch="resnet_small", device="cpu", method="standard",
                      synthetic_train_size=1152, synthetic_test_size=256, synthetic_image_size=16, val_size=128,
                      batch_size=64, epochs=4, lr_max=0.1, val_attack_steps=0)
    train(cfg, quiet=True)
    from eae.data import load_test_set

    x, y = load_test_set(cfg)
    return load(out), x.float() / 255, y


class TinyNet(torch.nn.Module):
    """A small CNN for 16x16 images, normalisation inside (images enter in [0, 1])."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                  nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(16, 10))

    def forward(self, x):
        return self.body((x - 0.5) / 0.25)


@pytest.fixture(scope="session")
def tiny16():
    """TinyNet trained for a few seconds (one thread) on synthetic 16x16 images: accurate,
    with some points robust at small ε and some not; returns (model, x, y) with the 64
    test images. Used to compare our attacks with AutoAttack's."""
    from eae.data import make_synthetic

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    x, y = make_synthetic(2048 + 64, size=16, seed=3)  # the last 64 are the test slice
    x, y = torch.from_numpy(x).float() / 255, torch.from_numpy(y)
    model = TinyNet()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(4):
        for idx in torch.randperm(2048, generator=g).split(128):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    torch.set_num_threads(before)
    return model.eval(), x[2048:], y[2048:]


@pytest.fixture(scope="module")
def one_thread():
    """torch on one thread for a module's tests, restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
