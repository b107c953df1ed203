"""Normalizations and softmax."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from trident.compiler.errors import ModelError
from trident.compiler.ops.registry import Kind, op


def check_epsilon(epsilon: float) -> None:
    """A normalization's epsilon: finite and >= 0 (a NaN one would make every output NaN)."""
    if not math.isfinite(epsilon) or epsilon < 0:
        raise ModelError(f"attribute epsilon is {epsilon}; expected a finite number >= 0")


@op("batch_norm", Kind.ELEMENTWISE, same_dtype=True)
def batch_norm(x, scale, bias, mean, var, *, epsilon: float = 1e-5):
    check_epsilon(epsilon)
    return F.batch_norm(x, mean, var, scale, bias, training=False, eps=epsilon)


@op("layer_norm", Kind.REDUCTION)
def layer_norm(x, scale, bias=None, *, axis: int = -1, epsilon: float = 1e-5):
    check_epsilon(epsilon)
    axis = axis % x.dim()
    return F.layer_norm(x, x.shape[axis:], scale.expand(x.shape[axis:]),
                        None if bias is None else bias.expand(x.shape[axis:]), epsilon)


@op("softmax", Kind.REDUCTION)
def softmax(x, *, axis: int = -1):
    return torch.softmax(x, axis)


@op("log_softmax", Kind.REDUCTION)
def log_softmax(x, *, axis: int = -1):
    return torch.log_softmax(x, axis)


@op("rms_norm", Kind.REDUCTION)
def rms_norm(x, scale, *, axis: int = -1, epsilon: float = 1e-5):
    """x / sqrt(mean(x^2 over axes [axis, rank)) + epsilon) * scale."""
    axes = tuple(range(axis % x.dim(), x.dim()))
    inv_rms = torch.rsqrt(torch.mean(x * x, dim=axes, keepdim=True) + epsilon)
    return (x * inv_rms * scale).to(x.dtype)


@op("lrn", Kind.OPAQUE)
def lrn(x, *, size: int, alpha: float = 1e-4, beta: float = 0.75, bias: float = 1.0):
    """Local response normalization across channels (ONNX LRN: the window has
    floor((size - 1) / 2) channels before the centre and ceil((size - 1) / 2) after)."""
    channels = x.shape[1]
    before = (size - 1) // 2
    square = torch.movedim(x * x, 1, -1)
    padded = F.pad(square, [before, size - 1 - before])  # zeros outside the channels
    summed = sum(padded.narrow(-1, k, channels) for k in range(size))
    return x / (bias + alpha / size * torch.movedim(summed, -1, 1)).pow(beta)
