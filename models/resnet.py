"""ResNet-50 v1.5 in plain torch, layer for layer what torchvision builds (same module names, so
torchvision weights load with load_state_dict), and a narrow, shallow variant for fast tests.

v1.5: the stride of a downsampling Bottleneck sits on its 3x3 conv, not on the first 1x1.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from trident.models.common import calibrate_batchnorm, seeded


def conv3x3(inp: int, out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(inp, out, 3, stride=stride, padding=1, bias=False)


def conv1x1(inp: int, out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(inp, out, 1, stride=stride, bias=False)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    def __init__(self, layers: list[int], num_classes: int = 1000, width: int = 64):
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(width, layers[0])
        self.layer2 = self._make_layer(width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(width * 8, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(width * 8 * Bottleneck.expansion, num_classes)
        for m in self.modules():  # torchvision's initialization
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
            out = planes * Bottleneck.expansion
            downsample = nn.Sequential(conv1x1(self.inplanes, out, stride), nn.BatchNorm2d(out))
        layers = [Bottleneck(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _build(layers: list[int], num_classes: int, width: int, seed: int) -> ResNet:
    with seeded(seed):
        model = ResNet(layers, num_classes, width)
        calibrate_batchnorm(model, lambda: image_inputs(4, size=64))
    with torch.no_grad():
        # Trained ResNets keep their residual branches small (torchvision can even start them
        # at zero: zero_init_residual); without this the residual stream grows block by block.
        for m in model.modules():
            if isinstance(m, Bottleneck):
                m.bn3.weight.mul_(0.2)
    return model.eval()


def resnet50(num_classes: int = 1000, seed: int = 0) -> ResNet:
    """ResNet-50 v1.5 (25.6M parameters at 1000 classes), eval mode, deterministic weights."""
    return _build([3, 4, 6, 3], num_classes, 64, seed)


def resnet_tiny(num_classes: int = 10, seed: int = 0) -> ResNet:
    """The same architecture with one Bottleneck per stage and width 8: every kind of layer
    (stem, downsample, residual, pool, fc) in a model the interpreter runs in moments."""
    return _build([1, 1, 1, 1], num_classes, 8, seed)


def image_inputs(batch: int, size: int = 224, channels: int = 3,
                 dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor]:
    return (torch.randn(batch, channels, size, size).to(dtype),)
