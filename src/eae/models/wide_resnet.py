"""WideResNet-34-10 (Zagoruyko & Komodakis 2016), as used by TRADES and Free-AT."""
from __future__ import annotations

from torch import nn

from .base import Classifier
from .registry import register_model


class WideBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = None if (cin == cout and stride == 1) else nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x):
        out = self.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(out)
        out = self.conv2(self.relu(self.bn2(self.conv1(out))))
        return out + skip


def wide_backbone(depth: int, widen: int) -> tuple[nn.Sequential, int]:
    if (depth - 4) % 6:
        raise ValueError("WideResNet depth must be 6n + 4")
    n = (depth - 4) // 6
    widths = (16 * widen, 32 * widen, 64 * widen)
    layers: list[nn.Module] = [nn.Conv2d(3, 16, 3, 1, 1, bias=False)]
    cin = 16
    for i, w in enumerate(widths):
        for j in range(n):
            layers.append(WideBlock(cin, w, stride=2 if (i > 0 and j == 0) else 1))
            cin = w
    layers += [nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers), cin


@register_model("wide_resnet34_10")
def wide_resnet34_10(num_classes: int = 10, mean=(0.5,) * 3, std=(0.5,) * 3) -> Classifier:
    """WideResNet-34-10, 46.2M parameters."""
    backbone, dim = wide_backbone(34, 10)
    return Classifier(backbone, dim, num_classes, mean, std)
