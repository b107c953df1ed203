"""Small fusion patterns for `trident fusion-check` and check_fusion(): functions over torch
tensors, each declaring its input shapes with @pattern (shapes that are not multiples of the
block sizes, so masks are exercised).

    trident fusion-check trident.models.patterns:bias_gelu
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from trident.compiler.testing import pattern


@pattern((8, 100), (100,))
def bias_gelu(x, b):
    """A pointwise chain: one kernel."""
    return F.gelu(x + b)


@pattern((4, 6, 37), (4, 6, 37))
def add_relu_scale(x, y):
    return torch.relu(x + y) * 0.5


@pattern((2, 4, 16, 16))
def scaled_softmax(scores):
    """Softmax with its scaling fused into the reduction's loads."""
    return torch.softmax(scores * 0.125, dim=-1)


@pattern((6, 48), (6, 48), (48,), (48,))
def residual_layer_norm(x, residual, weight, bias):
    """Residual add fused in front of a layer norm."""
    return F.layer_norm(x + residual, (48,), weight, bias)


@pattern((20, 24), (24, 40), (40,))
def matmul_bias_relu(x, w, b):
    """A GEMM with a bias + ReLU epilogue."""
    return torch.relu(x @ w + b)


__all__ = ["bias_gelu", "add_relu_scale", "scaled_softmax", "residual_layer_norm",
           "matmul_bias_relu"]
