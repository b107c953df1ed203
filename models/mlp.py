"""A plain multi-layer perceptron: `depth` hidden Linear + activation layers, then a Linear out."""
from __future__ import annotations

import torch
import torch.nn as nn

from trident.models.common import seeded

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}


def mlp(in_features: int = 64, hidden: int = 256, out: int = 10, depth: int = 3,
        activation: str = "relu", seed: int = 0) -> nn.Sequential:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation {activation!r}: one of {sorted(ACTIVATIONS)}")
    with seeded(seed):
        layers: list[nn.Module] = []
        width = in_features
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), ACTIVATIONS[activation]()]
            width = hidden
        layers.append(nn.Linear(width, out))
        model = nn.Sequential(*layers)
    return model.eval()


def mlp_gelu(seed: int = 0) -> nn.Sequential:
    return mlp(activation="gelu", seed=seed)


def feature_inputs(batch: int, features: int = 64,
                   dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor]:
    return (torch.randn(batch, features).to(dtype),)
