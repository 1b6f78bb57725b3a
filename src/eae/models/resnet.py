"""Pre-activation ResNets: PreActResNet-18 (He et al. 2016; the network of the
fast adversarial-training literature) and a small one for CPU runs."""
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
