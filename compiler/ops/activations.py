"""Activation functions beyond relu/sigmoid/tanh/gelu: the ELU family, softplus, shrink, PReLU."""
from __future__ import annotations

import torch

from trident.compiler.ops.registry import Kind, op


@op("elu", Kind.ELEMENTWISE)
def elu(x, *, alpha: float = 1.0):
    return torch.where(x > 0, x, alpha * torch.expm1(x))


@op("celu", Kind.ELEMENTWISE)
def celu(x, *, alpha: float = 1.0):
    return torch.clamp(x, min=0) + torch.clamp(alpha * torch.expm1(x / alpha), max=0)


@op("selu", Kind.ELEMENTWISE)
def selu(x, *, alpha: float = 1.67326319217681884765625, gamma: float = 1.05070102214813232421875):
    return gamma * torch.where(x > 0, x, alpha * torch.expm1(x))


@op("softplus", Kind.ELEMENTWISE)
def softplus(x):
    return torch.clamp(x, min=0) + torch.log1p(torch.exp(-torch.abs(x)))


@op("softsign", Kind.ELEMENTWISE)
def softsign(x):
    return x / (1 + torch.abs(x))


@op("mish", Kind.ELEMENTWISE)
def mish(x):
    return x * torch.tanh(softplus(x))


@op("thresholded_relu", Kind.ELEMENTWISE)
def thresholded_relu(x, *, alpha: float = 1.0):
    return torch.where(x > alpha, x, torch.zeros_like(x))


@op("shrink", Kind.ELEMENTWISE)
def shrink(x, *, bias: float = 0.0, lambd: float = 0.5):
    zero = torch.zeros_like(x)
    return torch.where(x < -lambd, x + bias, torch.where(x > lambd, x - bias, zero)).to(x.dtype)


@op("swish", Kind.ELEMENTWISE)
def swish(x, *, alpha: float = 1.0):
    return x * torch.sigmoid(alpha * x)


@op("prelu", Kind.ELEMENTWISE, same_dtype=True)
def prelu(x, slope):
    """x where x >= 0, slope * x elsewhere; slope broadcasts to x (and never widens it)."""
    return torch.where(x < 0, slope * x, x)
