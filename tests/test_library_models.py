"""timm and torchvision networks as eae architectures (``--arch timm:NAME``).

The libraries are optional. Where they are installed, the real ones are tested; the
plumbing (features/head split, normalisation, training with every method, reload,
evaluation) is always tested against stand-ins that have the libraries' interfaces:
timm's ``create_model(name, pretrained, num_classes=0)`` returning pre-logits features
with ``num_features`` and ``pretrained_cfg``, torchvision's ``models.get_model`` with a
final linear layer."""
from __future__ import annotations

import importlib.util
import os
import sys
import types

import pytest
import torch
from torch import nn

from eae import load, train
from eae.config import TrainConfig, own_settings
from eae.evaluation import evaluate
from eae.methods import list_methods
from eae.models import create_model


class _Body(nn.Module):
    def __init__(self, num_classes: int, width: int = 8):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.num_features = width
        self.fc = nn.Linear(width, num_classes) if num_classes else nn.Identity()
        self.pretrained_cfg = {"mean": (0.1, 0.2, 0.3), "std": (0.4, 0.5, 0.6)}

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


@pytest.fixture()
def stand_ins(monkeypatch):
    """Stand-ins for timm and torchvision, unless the real ones are installed."""
    if importlib.util.find_spec("timm") is None:
        timm = types.ModuleType("timm")
        timm.create_model = lambda name, pretrained=False, num_classes=1000, **kw: _Body(num_classes)
        monkeypatch.setitem(sys.modules, "timm", timm)
    if importlib.util.find_spec("torchvision") is None:
        tv, tvm = types.ModuleType("torchvision"), types.ModuleType("torchvision.models")
        tvm.get_model = lambda name, weights=None, num_classes=1000: _Body(num_classes)
        tv.models = tvm
        monkeypatch.setitem(sys.modules, "torchvision", tv)
        monkeypatch.setitem(sys.modules, "torchvision.models", tvm)


ARCHS = ["timm:resnet18", "torchvision:resnet18"]


@pytest.mark.parametrize("arch", ARCHS)
def test_library_model_splits_into_features_and_head(arch, stand_ins):
    m = create_model(arch, num_classes=7).eval()
    x = torch.rand(3, 3, 16, 16)
    logits, z = m(x, return_features=True)
    assert logits.shape == (3, 7) and z.shape == (3, m.feature_dim)
    torch.testing.assert_close(m.head(z), logits)
    assert isinstance(m.head, nn.Linear)
    assert not any(isinstance(mod, nn.Linear) and mod.out_features == 7 for mod in m.backbone.modules())


@pytest.mark.parametrize("method", list_methods())
@pytest.mark.parametrize("arch", ARCHS)
def test_library_model_trains_with_every_method_and_reloads(arch, method, stand_ins, tmp_path):
    # 32-pixel images, as CIFAR's: at 16 pixels an ImageNet network's last stage sees a 1x1 feature map,
    # where torch's CPU bf16 channels_last convolutions give non-finite weight gradients (docs/models.md)
    cfg = TrainConfig(out=str(tmp_path / "run"), dataset="synthetic", arch=arch, method=method, device="cpu",
                      synthetic_train_size=96, synthetic_test_size=32, synthetic_image_size=32, val_size=32,
                      batch_size=32, epochs=1, val_attack_steps=1, **own_settings({"free_replays": 2}, method))
    result = train(cfg, quiet=True)
    assert result.finished and all(torch.isfinite(torch.tensor(result.final["train_loss"])).reshape(-1))
    model = load(tmp_path / "run")
    assert model.head.out_features == 10
    x, y = torch.rand(8, 3, 32, 32), torch.randint(0, 10, (8,))
    if method == "fgsm_rs":  # one AutoAttack run per library keeps the test short
        report = evaluate(model, x, y, suite="aa", diagnostics="off")
        assert 0 <= report.robust_accuracy <= report.clean_accuracy <= 1


def test_unknown_library_model_and_missing_library(monkeypatch):
    with pytest.raises(ValueError, match="timm:NAME / torchvision:NAME"):
        TrainConfig(arch="keras:resnet")
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm -> ImportError
    from eae.models.library import MissingDependency

    with pytest.raises(MissingDependency, match=r"eae-at\[timm\]"):
        create_model("timm:resnet18")


REAL = [pytest.param(arch, marks=pytest.mark.skipif(importlib.util.find_spec(arch.split(":")[0]) is None,
                                                    reason=f"{arch.split(':')[0]} not installed"))
        for arch in ("timm:convnext_atto", "timm:mobilenetv3_small_050", "timm:efficientnet_b0",
                     "torchvision:mobilenet_v3_small", "torchvision:shufflenet_v2_x0_5",
                     "torchvision:efficientnet_b0")]


@pytest.mark.skipif(not os.environ.get("EAE_REQUIRE_LIBS"), reason="EAE_REQUIRE_LIBS not set")
def test_real_libraries_are_installed_when_required():
    """`make test-libs` sets EAE_REQUIRE_LIBS=1: there the tests above must run against the
    real timm and torchvision, never silently against the stand-ins."""
    import timm
    import torchvision

    assert hasattr(timm, "create_model") and hasattr(torchvision.models, "get_model")
    assert not isinstance(create_model("timm:resnet18", num_classes=3).backbone, _Body)


@pytest.mark.parametrize("arch", REAL)
def test_real_library_families_train_with_eae(arch, tmp_path):
    """Other families than ResNet (ConvNeXt, MobileNet, EfficientNet, ShuffleNet), where the
    libraries are installed: the split is found, EAE trains one epoch and the run reloads."""
    m = create_model(arch, num_classes=5).eval()
    logits, z = m(torch.rand(2, 3, 32, 32), return_features=True)
    torch.testing.assert_close(m.head(z), logits)
    cfg = TrainConfig(out=str(tmp_path / "run"), dataset="synthetic", arch=arch, method="eae", device="cpu",
                      synthetic_train_size=64, synthetic_test_size=32, synthetic_image_size=32, val_size=32,
                      batch_size=32, epochs=1, val_attack_steps=1)
    assert train(cfg, quiet=True).finished
    assert load(tmp_path / "run").head.out_features == 10
