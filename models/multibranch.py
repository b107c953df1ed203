"""Models whose graphs branch into independent parallel paths (work for several CUDA streams):
an Inception-style CNN (four branches per block, concatenated) and a shared trunk with several
independent heads (several graph outputs)."""
from __future__ import annotations

import torch
import torch.nn as nn

from trident.models.common import calibrate_batchnorm, seeded
from trident.models.resnet import image_inputs


def conv_bn_relu(inp: int, out: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inp, out, kernel, stride, padding=kernel // 2, bias=False),
                         nn.BatchNorm2d(out), nn.ReLU())


class InceptionBlock(nn.Module):
    """GoogLeNet's block: 1x1 | 1x1 -> 3x3 | 1x1 -> 3x3 -> 3x3 (a factorized 5x5) |
    3x3 max pool -> 1x1, concatenated along channels."""

    def __init__(self, inp: int, c1: int, c3: tuple[int, int], c5: tuple[int, int], pool: int):
        super().__init__()
        self.branch1 = conv_bn_relu(inp, c1, 1)
        self.branch3 = nn.Sequential(conv_bn_relu(inp, c3[0], 1), conv_bn_relu(c3[0], c3[1], 3))
        self.branch5 = nn.Sequential(conv_bn_relu(inp, c5[0], 1), conv_bn_relu(c5[0], c5[1], 3),
                                     conv_bn_relu(c5[1], c5[1], 3))
        self.branch_pool = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1),
                                         conv_bn_relu(inp, pool, 1))
        self.out_channels = c1 + c3[1] + c5[1] + pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch3(x), self.branch5(x),
                          self.branch_pool(x)], dim=1)


class InceptionNet(nn.Module):
    def __init__(self, width: int = 16, blocks: int = 2, num_classes: int = 10):
        super().__init__()
        self.stem = conv_bn_relu(3, width, 3, stride=2)
        layers, c = [], width
        for _ in range(blocks):
            block = InceptionBlock(c, width, (width, 2 * width), (width // 2, width), width)
            layers.append(block)
            c = block.out_channels
        self.blocks = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


def inception_tiny(num_classes: int = 10, seed: int = 0) -> InceptionNet:
    with seeded(seed):
        model = InceptionNet(16, 2, num_classes)
        calibrate_batchnorm(model, lambda: image_inputs(4, size=32))
    return model.eval()


class MultiHead(nn.Module):
    """A shared trunk feeding `heads` independent two-layer heads; returns one output per head."""

    def __init__(self, in_features: int = 64, hidden: int = 128, heads: int = 3, out: int = 16):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(in_features, hidden), nn.GELU())
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, out))
            for _ in range(heads))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h = self.trunk(x)
        return tuple(head(h) for head in self.heads)


def multihead(in_features: int = 64, hidden: int = 128, heads: int = 3, out: int = 16,
              seed: int = 0) -> MultiHead:
    with seeded(seed):
        model = MultiHead(in_features, hidden, heads, out)
    return model.eval()
