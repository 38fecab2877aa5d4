"""Per-stream CNN backbones: one DI in, one spatial feature map out.

Written here (no torchvision) so the engines package depends on torch alone and every layer exports to
ONNX opset 17. Each backbone exposes ``out_channels`` and ``feature_size(input_size)`` so fusion modules can
be sized at build time without a dry run.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["BACKBONES", "DEFAULT_WIDTHS", "Backbone", "FastCNN", "ResNet18", "build_backbone"]


class Backbone(nn.Module):
    """Base class: ``forward(x (B, C, H, W)) -> (B, out_channels, h, w)``."""

    out_channels: int
    total_stride: int  # number of stride-2 layers' product: H -> ceil(H / total_stride)

    def feature_size(self, input_size: int) -> int:
        """Side of the output feature map for a square input of ``input_size`` pixels."""
        size = input_size
        for _ in range(int(math.log2(self.total_stride))):
            size = (size + 1) // 2  # 3x3, stride 2, padding 1
        return size


def _conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class FastCNN(Backbone):
    """Small CNN for live use: stride-2 stem and three stages of widths w, 2w, 4w, 6w (16-32-64-96).

    Output stride 8 (a 64 px DI gives an 8x8 map of 96 channels), about 200 K parameters at width 16.
    """

    total_stride = 8

    def __init__(self, in_channels: int = 1, width: int = 16) -> None:
        super().__init__()
        w1, w2, w3, w4 = width, 2 * width, 4 * width, 6 * width
        self.stem = _conv_bn_relu(in_channels, w1, stride=2)
        self.stage1 = nn.Sequential(_conv_bn_relu(w1, w2, stride=2), _conv_bn_relu(w2, w2))
        self.stage2 = nn.Sequential(_conv_bn_relu(w2, w3, stride=2), _conv_bn_relu(w3, w3))
        self.stage3 = nn.Sequential(_conv_bn_relu(w3, w4), _conv_bn_relu(w4, w4))
        self.out_channels = w4
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stage3(self.stage2(self.stage1(self.stem(x))))


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs and an identity (or 1x1 projection) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.downsample(x))


class ResNet18(Backbone):
    """ResNet-18 (BasicBlock [2, 2, 2, 2], widths w, 2w, 4w, 8w) adapted to 64 px DIs.

    The 7x7 stride-2 stem and max-pool of the ImageNet model are replaced by one 3x3 stride-2 conv, so a
    64 px DI still ends as a 4x4 map (output stride 16) instead of 2x2. Width 64 is the standard ResNet-18.
    """

    total_stride = 16

    def __init__(self, in_channels: int = 1, width: int = 64) -> None:
        super().__init__()
        self.stem = _conv_bn_relu(in_channels, width, stride=2)
        widths = (width, 2 * width, 4 * width, 8 * width)
        layers: list[nn.Module] = []
        cin = width
        for i, cout in enumerate(widths):
            stride = 1 if i == 0 else 2
            layers.append(nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout)))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.out_channels = widths[-1]
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def _init_weights(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


BACKBONES: dict[str, type[Backbone]] = {"fast": FastCNN, "resnet18": ResNet18}
DEFAULT_WIDTHS: dict[str, int] = {"fast": 16, "resnet18": 64}


def build_backbone(name: str, *, in_channels: int, width: int) -> Backbone:
    """The backbone called ``name`` (``"fast"`` or ``"resnet18"``)."""
    try:
        cls = BACKBONES[name]
    except KeyError:
        raise KeyError(f"unknown backbone {name!r}; known: {sorted(BACKBONES)}") from None
    return cls(in_channels=in_channels, width=width)
