"""ResNets: PreActResNet-18 (He et al. 2016; the CIFAR-10 network of the fast
adversarial-training literature), a small one for CPU runs, ResNet-50 for ImageNet,
and a tiny BatchNorm-free net for exactness tests."""
from __future__ import annotations

from typing import Sequence

from torch import nn

from .base import Classifier
from .registry import register_model


class PreActBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.relu(self.bn1(x))
        # the projection shortcut sees the pre-activated input, as in the paper
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(self.relu(self.bn2(out)))
        return out + skip


def preact_backbone(widths: Sequence[int], blocks: Sequence[int], stem: int) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(3, stem, 3, 1, 1, bias=False)]
    cin = stem
    for i, (w, n) in enumerate(zip(widths, blocks)):
        for j in range(n):
            layers.append(PreActBlock(cin, w, stride=2 if (i > 0 and j == 0) else 1))
            cin = w
    layers += [nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers)


@register_model("preact_resnet18")
def preact_resnet18(num_classes: int = 10, mean=(0.5,) * 3, std=(0.5,) * 3) -> Classifier:
    """PreActResNet-18, 11.2M parameters."""
    return Classifier(preact_backbone((64, 128, 256, 512), (2, 2, 2, 2), 64), 512, num_classes, mean, std)


@register_model("resnet_small")
def resnet_small(num_classes: int = 10, mean=(0.5,) * 3, std=(0.5,) * 3) -> Classifier:
    """Small 4-stage pre-activation ResNet (0.31M parameters) for CPU runs and tests."""
    return Classifier(preact_backbone((16, 32, 64, 128), (1, 1, 1, 1), 16), 128, num_classes, mean, std)


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck (stride on the 3x3 conv, as torchvision's ResNet-50)."""

    def __init__(self, cin: int, width: int, stride: int = 1):
        super().__init__()
        cout = 4 * width
        self.body = nn.Sequential(
            nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout),
        )
        # zero-initialised last BN: each block starts as the identity, which large-batch
        # ImageNet recipes (Goyal et al. 2017, Fast-AT) rely on
        nn.init.zeros_(self.body[-1].weight)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        skip = x if self.shortcut is None else self.shortcut(x)
        return self.relu(self.body(x) + skip)


@register_model("resnet50")
def resnet50(num_classes: int = 1000, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)) -> Classifier:
    """ResNet-50 (v1.5, 25.6M parameters with 1000 classes): the ImageNet network of Fast-AT and EAE."""
    layers: list[nn.Module] = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
                               nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for i, (width, n) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3))):
        for j in range(n):
            layers.append(Bottleneck(cin, width, stride=2 if (i > 0 and j == 0) else 1))
            cin = 4 * width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return Classifier(nn.Sequential(*layers), cin, num_classes, mean, std)


@register_model("convnet_nobn")
def convnet_nobn(num_classes: int = 10, mean=(0.5,) * 3, std=(0.5,) * 3) -> Classifier:
    """Tiny conv net without BatchNorm (exact multi-process equivalence tests, debugging)."""
    body = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return Classifier(body, 32, num_classes, mean, std)
